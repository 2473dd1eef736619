//! Where models run: inline on a lone caller's thread, on the worker threads that drain the batching
//! queue, and on the shadow thread; each run's answers, drift statistics and shadow samples.

use super::model::{self, LoadedModel, Outputs};
use super::{InferError, Job, Runtime, Served, ShadowJob};
use crate::stats::drift::DriftAccumulator;
use outpost_models::TensorData;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Input values per tensor and batch that feed the drift histogram (a strided sample).
const DRIFT_SAMPLE: usize = 4096;

/// Models whose single run takes at most this long may run on the caller's thread when a worker slot is
/// free and nothing is queued. Below it, the hand-off to a worker thread and back (21–45 µs on the
/// benchmark machine) is a large share of the request; above it the hand-off is noise, and a long run
/// belongs off the HTTP server's threads.
const INLINE_MAX_RUN: Duration = Duration::from_millis(1);

/// Counts one model run (or one request) in progress for as long as it lives.
pub(super) struct RunSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> RunSlot<'a> {
    pub(super) fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> RunSlot<'a> {
        counter.fetch_add(1, Ordering::AcqRel);
        RunSlot(counter)
    }
}

impl Drop for RunSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Runtime {
    /// Runs `job` on the calling thread when that is cheaper than handing it to a worker: the model is
    /// quick (its calibrated run for these rows fits `INLINE_MAX_RUN` and half the timeout), the caller is
    /// on a multi-thread runtime, it is the only request in progress, no worker is polling for work,
    /// nothing is queued (queued requests came first and batching needs them together) and fewer than
    /// `workers` runs are in progress. Hands the job back
    /// otherwise. The answer goes through the job's channel exactly as from a worker, with the same
    /// metrics, drift and shadow sampling.
    pub(super) fn run_inline(&self, job: Job) -> Result<(), Job> {
        let model = job.model.clone();
        // The estimate is per row at the smallest batch; a request of many rows goes to the workers, where
        // the request timeout still applies (an inline run cannot be abandoned).
        let limit = INLINE_MAX_RUN.min(self.cfg.inference.request_timeout / 2);
        let quick = model.run_cost().is_some_and(|cost| cost.saturating_mul(job.rows as u32) <= limit);
        // Inline is for a lone request on an idle agent. Under concurrent requests it cost throughput even
        // with the workers asleep (HTTP, 32 clients, one worker: 27k instead of 37k requests/s): the
        // server's threads then run models instead of connections. A polling worker means load too: it
        // takes the job at once, without a wake-up.
        let alone = self.in_flight.load(Ordering::Acquire) == 1;
        if !quick || !alone || !self.queue.is_empty() || self.queue.has_polling_worker() || !on_multi_thread_runtime() {
            return Err(job);
        }
        let workers = self.cfg.inference.workers;
        let claimed =
            self.running.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < workers).then_some(n + 1));
        if claimed.is_err() {
            return Err(job);
        }
        let _slot = RunSlot(&self.running);
        self.metrics.inline_runs.fetch_add(1, Ordering::Relaxed);
        let served = job.served.clone();
        self.run_batch(&served, &model, vec![job]);
        Ok(())
    }

    pub(super) fn worker(self: Arc<Self>) {
        loop {
            // Each batch holds requests for one loaded model (the queue groups them), up to its batch size.
            let max_delay = self.cfg.inference.max_delay;
            let Some(batch) = self.queue.next_batch(|j: &Job| j.model.max_rows(), max_delay) else { return };
            let (served, model) = (batch[0].served.clone(), batch[0].model.clone());
            let now = Instant::now();
            let (live, expired): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline > now);
            for job in expired {
                let _ = job.reply.send(Err(InferError::Timeout(self.cfg.inference.request_timeout)));
            }
            if live.is_empty() {
                continue;
            }
            let _slot = RunSlot::enter(&self.running);
            self.run_batch(&served, &model, live);
        }
    }

    fn run_batch(&self, served: &Arc<Served>, model: &Arc<LoadedModel>, jobs: Vec<Job>) {
        let rows: usize = jobs.iter().map(|j| j.rows).sum();
        // One job runs on its own buffers; a batch needs its rows back to back.
        let joined: Option<Vec<TensorData>> = (jobs.len() > 1).then(|| join(&jobs));
        served.metrics.batch(rows);
        let result = model.run(rows, joined.as_deref().unwrap_or(&jobs[0].inputs));
        // A model that answers NaN or infinity is broken, not merely wrong: count it as a failure.
        let result = result.and_then(|outs| {
            if outs.iter().all(|(data, _)| data.all_finite()) {
                Ok(outs)
            } else {
                Err(model::ModelError::Run("the model produced non-finite outputs (NaN or infinity)".into()))
            }
        });
        let outs = match result {
            Ok(outs) => outs,
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(InferError::Failed(e.to_string())));
                }
                return;
            }
        };
        // Answer first; drift and shadow work happen after every caller has its result.
        let mut offset = 0;
        let mut answered = Vec::with_capacity(jobs.len());
        for Job { rows: n, inputs, shadow, reply, .. } in jobs {
            let mine: Outputs = if n == rows {
                outs.clone()
            } else {
                outs.iter()
                    .map(|(data, row_shape)| {
                        let per: usize = row_shape.iter().product();
                        (data.slice(offset * per..(offset + n) * per).unwrap_or_default(), row_shape.clone())
                    })
                    .collect()
            };
            offset += n;
            let primary = shadow.then(|| mine.clone());
            let _ = reply.send(Ok(mine));
            answered.push((n, inputs, primary));
        }
        self.observe_drift(served, model, joined.as_deref().unwrap_or(&answered[0].1), &outs);
        for (rows, inputs, primary) in answered {
            let Some(primary) = primary else { continue };
            let work = ShadowJob { served: served.clone(), rows, inputs, primary, enqueued: Instant::now() };
            if self.shadow_queue.try_push(work).is_err() {
                served.metrics.shadow_skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn observe_drift(&self, served: &Served, model: &LoadedModel, inputs: &[TensorData], outs: &Outputs) {
        let mut d = served.drift.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if d.as_ref().map(|(digest, _)| *digest) != Some(model.digest) {
            let names: Vec<String> = model.interface().inputs.iter().map(|t| t.name.clone()).collect();
            let dc = &self.cfg.drift;
            let acc = DriftAccumulator::new(model.manifest.reference.as_ref(), &names, dc.lo, dc.hi, dc.bins);
            *d = Some((model.digest, acc));
        }
        let Some((_, acc)) = d.as_mut() else { return };
        for (i, values) in inputs.iter().enumerate() {
            acc.observe_tensor(i, values, DRIFT_SAMPLE);
        }
        acc.observe_outputs(outs);
        let rows = outs.first().map(|(data, shape)| data.len() / shape.iter().product::<usize>().max(1)).unwrap_or(0);
        served.drift_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub(super) fn shadow_worker(self: Arc<Self>) {
        while let Some(batch) = self.shadow_queue.next_batch(|_| 1, Duration::ZERO) {
            for job in batch {
                let Some(candidate) = job.served.candidate() else { continue };
                // Lower priority than live traffic: while requests wait for a worker, the shadow sample
                // waits too; if they keep waiting, the sample is dropped rather than competing for CPU.
                if !self.yield_to_live_traffic() {
                    job.served.metrics.shadow_skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let start = Instant::now();
                // A candidate that cannot run what the active model answered (a smaller vocabulary, a
                // failure) disagrees with it: no outputs compare structurally different.
                let outs = candidate.run(job.rows, &job.inputs).unwrap_or_default();
                let latency = start.elapsed();
                job.served.shadow.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(
                    &job.primary,
                    &outs,
                    latency,
                );
            }
        }
    }
}

/// Whether the calling task runs on a multi-thread tokio runtime (the agent's server does). On a
/// current-thread runtime one thread serves every task: running models there would serialise concurrent
/// callers (an inline run never yields) and leave the workers and the batcher idle.
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Each input's rows of every job, back to back (the jobs were checked against one model: same types).
fn join(jobs: &[Job]) -> Vec<TensorData> {
    let mut joined: Vec<TensorData> = jobs[0].inputs.clone();
    for job in &jobs[1..] {
        for (all, mine) in joined.iter_mut().zip(&job.inputs) {
            // Same model, same types: `extend_from` cannot fail here.
            let _ = all.extend_from(mine);
        }
    }
    joined
}

impl Runtime {
    /// Waits up to 50 ms for the live queue to empty; `false` when it never did.
    fn yield_to_live_traffic(&self) -> bool {
        let deadline = Instant::now() + Duration::from_millis(50);
        while !self.queue.is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }
}
