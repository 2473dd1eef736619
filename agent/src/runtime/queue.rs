//! The bounded request queue between the HTTP handlers and the model workers, shared by every model,
//! with dynamic batching: a worker takes the oldest request, then more requests of the same group (the
//! same loaded model) until the batch reaches that model's `max_rows` or the oldest has waited
//! `max_delay`. Requests of other models stay queued in order for the next worker. Bounded so overload
//! turns into a fast 429, not into memory and latency growth.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Anything queued: it knows its row count and when it arrived.
pub trait Queued {
    fn rows(&self) -> usize;
    fn enqueued(&self) -> Instant;
    /// Jobs batch only with jobs of the same group (the runtime: one loaded model).
    fn group(&self) -> usize {
        0
    }
}

/// How long an idle worker polls for the next job before blocking.
const SPIN: Duration = Duration::from_micros(50);

#[derive(Debug)]
pub struct BatchQueue<J> {
    inner: Mutex<State<J>>,
    cv: Condvar,
    capacity: usize,
    /// Workers polling for a job right now (they finished one moments ago): handing them work is cheap.
    polling: AtomicUsize,
}

#[derive(Debug)]
struct State<J> {
    jobs: VecDeque<J>,
    closed: bool,
}

impl<J: Queued> BatchQueue<J> {
    pub fn new(capacity: usize) -> Self {
        BatchQueue {
            inner: Mutex::new(State { jobs: VecDeque::new(), closed: false }),
            cv: Condvar::new(),
            capacity,
            polling: AtomicUsize::new(0),
        }
    }

    /// Queues `job`, or hands it back when the queue is full or closed.
    pub fn try_push(&self, job: J) -> Result<(), J> {
        let mut s = self.inner.lock().expect("queue lock");
        if s.closed || s.jobs.len() >= self.capacity {
            return Err(job);
        }
        s.jobs.push_back(job);
        drop(s);
        self.cv.notify_one();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("queue lock").jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a worker is polling for its next job: it finished one within the last `SPIN`, so the
    /// system is under load and a job pushed now is taken without waking a sleeping thread.
    pub fn has_polling_worker(&self) -> bool {
        self.polling.load(Ordering::Acquire) > 0
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().expect("queue lock").closed
    }

    /// Wakes every waiting worker and makes `next_batch` return `None` once drained.
    pub fn close(&self) {
        self.inner.lock().expect("queue lock").closed = true;
        self.cv.notify_all();
    }

    /// Blocks for the next batch: the oldest job, then more of its group while their rows fit in
    /// `max_rows(first)` and the first job has waited less than `max_delay`. A job too large for the batch
    /// so far waits for the next; jobs of other groups keep their places.
    pub fn next_batch(&self, max_rows: impl Fn(&J) -> usize, max_delay: Duration) -> Option<Vec<J>> {
        let mut s = self.inner.lock().expect("queue lock");
        // Poll briefly before sleeping: waking a blocked thread costs ~40 µs on small VMs (measured in
        // BENCHMARKS.md), twice a model's whole run time for small models under steady load.
        let spin_until = Instant::now() + SPIN;
        self.polling.fetch_add(1, Ordering::AcqRel);
        while s.jobs.is_empty() && !s.closed && Instant::now() < spin_until {
            drop(s);
            std::thread::yield_now();
            s = self.inner.lock().expect("queue lock");
        }
        self.polling.fetch_sub(1, Ordering::AcqRel);
        while s.jobs.is_empty() {
            if s.closed {
                return None;
            }
            s = self.cv.wait(s).expect("queue lock");
        }
        let first = s.jobs.pop_front().expect("non-empty");
        let (limit, group) = (max_rows(&first), first.group());
        let deadline = first.enqueued() + max_delay;
        let mut rows = first.rows();
        let mut batch = vec![first];
        loop {
            // Rescanned from the front after every wait: other workers may have taken jobs meanwhile.
            let mut i = 0;
            while i < s.jobs.len() {
                let next = &s.jobs[i];
                if next.group() != group {
                    i += 1;
                    continue;
                }
                if rows + next.rows() > limit {
                    return Some(batch);
                }
                rows += next.rows();
                batch.push(s.jobs.remove(i).expect("index in range"));
            }
            let now = Instant::now();
            if rows >= limit || now >= deadline || s.closed {
                return Some(batch);
            }
            s = self.cv.wait_timeout(s, deadline - now).expect("queue lock").0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct J(usize, Instant);
    impl Queued for J {
        fn rows(&self) -> usize {
            self.0
        }
        fn enqueued(&self) -> Instant {
            self.1
        }
    }

    #[test]
    fn a_full_queue_hands_the_job_back() {
        let q = BatchQueue::new(2);
        assert!(q.try_push(J(1, Instant::now())).is_ok());
        assert!(q.try_push(J(1, Instant::now())).is_ok());
        assert!(q.try_push(J(1, Instant::now())).is_err());
    }

    #[test]
    fn waiting_jobs_are_batched_up_to_max_rows_in_arrival_order() {
        let q = BatchQueue::new(10);
        let t = Instant::now();
        for rows in [1, 2, 1, 4] {
            q.try_push(J(rows, t)).ok().unwrap();
        }
        let b = q.next_batch(|_| 4, Duration::ZERO).unwrap();
        assert_eq!(b.iter().map(|j| j.0).collect::<Vec<_>>(), vec![1, 2, 1]);
        let b = q.next_batch(|_| 4, Duration::ZERO).unwrap();
        assert_eq!(b.iter().map(|j| j.0).collect::<Vec<_>>(), vec![4]);
    }

    struct G(usize, usize);
    impl Queued for G {
        fn rows(&self) -> usize {
            1
        }
        fn enqueued(&self) -> Instant {
            Instant::now() - Duration::from_secs(1)
        }
        fn group(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn a_batch_holds_one_group_and_other_groups_keep_their_order() {
        let q = BatchQueue::new(10);
        for (group, id) in [(1, 0), (2, 1), (1, 2), (2, 3), (1, 4)] {
            q.try_push(G(group, id)).ok().unwrap();
        }
        let ids = |b: Vec<G>| b.iter().map(|j| j.1).collect::<Vec<_>>();
        assert_eq!(ids(q.next_batch(|_| 2, Duration::ZERO).unwrap()), vec![0, 2], "group 1 up to its limit");
        assert_eq!(ids(q.next_batch(|j| if j.0 == 2 { 8 } else { 1 }, Duration::ZERO).unwrap()), vec![1, 3]);
        assert_eq!(ids(q.next_batch(|_| 8, Duration::ZERO).unwrap()), vec![4]);
    }

    #[test]
    fn a_lone_job_waits_at_most_max_delay_for_company() {
        let q = BatchQueue::new(10);
        q.try_push(J(1, Instant::now())).ok().unwrap();
        let start = Instant::now();
        let b = q.next_batch(|_| 8, Duration::from_millis(30)).unwrap();
        assert_eq!(b.len(), 1);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(25) && waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn closing_releases_waiting_workers() {
        let q = std::sync::Arc::new(BatchQueue::<J>::new(1));
        let q2 = q.clone();
        let worker = std::thread::spawn(move || q2.next_batch(|_| 1, Duration::ZERO).is_none());
        std::thread::sleep(Duration::from_millis(20));
        q.close();
        assert!(worker.join().unwrap());
    }
}
