use super::*;
use outpost_protocol::telemetry::DeviceHealth;
use proptest::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("outpost-telemetry-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn db(&self) -> PathBuf {
        self.0.join("telemetry.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn health(n: u64) -> RecordBody {
    RecordBody::Health(DeviceHealth {
        rss_bytes: n * 1_000,
        cpu_percent: 1.5,
        disk_free_bytes: 1 << 30,
        uptime_secs: n,
        temperature_c: n.is_multiple_of(2).then_some(41.0),
        queue_len: n,
        dropped_total: 0,
    })
}

fn healths(range: std::ops::Range<u64>) -> Vec<(UnixTime, RecordBody)> {
    range.map(|n| (1_700_000_000 + n, health(n))).collect()
}

fn cfg(max_records: u64) -> QueueConfig {
    QueueConfig { max_records, ..QueueConfig::default() }
}

fn pending(q: &TelemetryQueue) -> Vec<Record> {
    q.batch_after(0, usize::MAX).unwrap().map(|b| b.records).unwrap_or_default()
}

fn seqs(q: &TelemetryQueue) -> Vec<u64> {
    pending(q).iter().map(|r| r.seq).collect()
}

#[test]
fn the_default_config_keeps_100k_records_with_a_4_mib_cache() {
    assert_eq!(QueueConfig::default(), QueueConfig { max_records: 100_000, cache_bytes: 4 << 20 });
}

#[test]
fn the_queue_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<TelemetryQueue>();
}

#[test]
fn appended_records_get_contiguous_sequence_numbers_starting_at_one() {
    let dir = TempDir::new("contiguous");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    assert_eq!(q.last_seq().unwrap(), 0);
    assert_eq!(q.append(&healths(0..3)).unwrap(), 1..=3);
    assert_eq!(q.append(&healths(3..4)).unwrap(), 4..=4);
    assert_eq!(seqs(&q), [1, 2, 3, 4]);
    assert_eq!((q.len().unwrap(), q.last_seq().unwrap()), (4, 4));
    assert_eq!(pending(&q)[2], Record { seq: 3, at: 1_700_000_002, body: health(2) });
}

#[test]
fn an_empty_append_gives_no_numbers_and_writes_nothing() {
    let dir = TempDir::new("empty");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    q.append(&healths(0..2)).unwrap();
    assert!(q.append(&[]).unwrap().is_empty());
    assert_eq!(q.append(&healths(0..1)).unwrap(), 3..=3);
}

#[test]
fn records_and_counters_survive_a_reopen() {
    let dir = TempDir::new("reopen");
    let q = TelemetryQueue::open(&dir.db(), cfg(5)).unwrap();
    q.append(&healths(0..4)).unwrap();
    q.append(&healths(4..6)).unwrap(); // 6 + marker > 5: drops 2
    q.ack(4).unwrap();
    let before = (pending(&q), q.stats().unwrap());
    drop(q);
    let q = TelemetryQueue::open(&dir.db(), cfg(5)).unwrap();
    assert_eq!((pending(&q), q.stats().unwrap()), before);
    assert_eq!(q.stats().unwrap(), QueueStats { len: 3, last_seq: 7, acked_up_to: 4, dropped_total: 2 });
}

#[test]
fn sequence_numbers_are_never_reused_after_everything_was_acked_and_the_queue_reopened() {
    let dir = TempDir::new("never-reused");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    q.append(&healths(0..5)).unwrap();
    assert_eq!(q.ack(5).unwrap(), 5);
    assert!(q.is_empty().unwrap());
    drop(q);
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    assert_eq!(q.last_seq().unwrap(), 5);
    assert_eq!(q.append(&healths(0..1)).unwrap(), 6..=6);
}

#[test]
fn batch_after_returns_the_oldest_records_after_the_given_sequence() {
    let dir = TempDir::new("batch-after");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    q.append(&healths(0..10)).unwrap();
    let batch = q.batch_after(4, usize::MAX).unwrap().unwrap();
    assert_eq!((batch.first_seq, batch.last_seq), (5, 10));
    assert_eq!(batch.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [5, 6, 7, 8, 9, 10]);
    assert_eq!(q.batch_after(10, usize::MAX).unwrap(), None);
    assert_eq!(q.batch_after(u64::MAX, usize::MAX).unwrap(), None);
}

#[test]
fn batch_after_is_none_when_nothing_is_pending() {
    let dir = TempDir::new("none-pending");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    assert_eq!(q.batch_after(0, 1 << 16).unwrap(), None);
    q.append(&healths(0..2)).unwrap();
    q.ack(2).unwrap();
    assert_eq!(q.batch_after(0, 1 << 16).unwrap(), None);
}

#[test]
fn a_batch_stays_within_max_bytes_but_always_carries_one_record() {
    let dir = TempDir::new("max-bytes");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    q.append(&healths(0..200)).unwrap();
    let one = postcard::to_allocvec(&q.batch_after(0, 1).unwrap().unwrap()).unwrap().len();
    assert_eq!(q.batch_after(0, 1).unwrap().unwrap().records.len(), 1, "alone larger than 1 byte");
    for max in [one, one + 1, 100, 1_000, 4_096] {
        let batch = q.batch_after(0, max).unwrap().unwrap();
        let size = postcard::to_allocvec(&batch).unwrap().len();
        assert!(size <= max, "{size} > {max}");
        assert_eq!(q.batch_after(0, size).unwrap(), Some(batch.clone()), "a limit of exactly {size} bytes");
        let mut bigger = batch.clone();
        let next = q.batch_after(batch.last_seq, usize::MAX).unwrap().unwrap().records[0].clone();
        bigger.last_seq = next.seq;
        bigger.records.push(next);
        assert!(postcard::to_allocvec(&bigger).unwrap().len() > max, "batch for {max} could hold one more");
    }
}

#[test]
fn ack_deletes_only_the_records_up_to_the_acked_sequence() {
    let dir = TempDir::new("ack");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    q.append(&healths(0..10)).unwrap();
    assert_eq!(q.ack(4).unwrap(), 4);
    assert_eq!(seqs(&q), [5, 6, 7, 8, 9, 10]);
    assert_eq!(q.acked_up_to().unwrap(), 4);
}

#[test]
fn a_repeated_or_older_ack_is_a_no_op() {
    let dir = TempDir::new("ack-idempotent");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    q.append(&healths(0..10)).unwrap();
    assert_eq!(q.ack(6).unwrap(), 6);
    assert_eq!(q.ack(6).unwrap(), 0);
    assert_eq!(q.ack(2).unwrap(), 0);
    assert_eq!(q.ack(0).unwrap(), 0);
    assert_eq!((q.acked_up_to().unwrap(), seqs(&q)), (6, vec![7, 8, 9, 10]));
}

#[test]
fn an_ack_beyond_the_last_sequence_is_clamped_and_does_not_pre_ack_later_records() {
    let dir = TempDir::new("ack-clamped");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    q.append(&healths(0..3)).unwrap();
    assert_eq!(q.ack(u64::MAX).unwrap(), 3);
    assert_eq!(q.acked_up_to().unwrap(), 3);
    assert_eq!(q.append(&healths(0..2)).unwrap(), 4..=5);
    assert_eq!(seqs(&q), [4, 5]);
    assert_eq!(q.ack(5).unwrap(), 2);
}

#[test]
fn a_full_queue_drops_the_oldest_records_and_says_so_in_the_data() {
    let dir = TempDir::new("drop-oldest");
    let q = TelemetryQueue::open(&dir.db(), cfg(5)).unwrap();
    q.append(&healths(0..5)).unwrap();
    assert_eq!(q.append(&healths(5..7)).unwrap(), 6..=7);
    // 5 + 2 new + 1 marker = 8 > 5: the 3 oldest go.
    assert_eq!(seqs(&q), [4, 5, 6, 7, 8]);
    assert_eq!(pending(&q)[4].body, RecordBody::Dropped { count: 3 });
    assert_eq!(pending(&q)[4].at, 1_700_000_006);
    assert_eq!((q.dropped_total().unwrap(), q.last_seq().unwrap(), q.len().unwrap()), (3, 8, 5));
    // The marker itself is a record: it can be dropped, and counts when it is.
    q.append(&healths(7..11)).unwrap();
    assert_eq!(seqs(&q), [9, 10, 11, 12, 13]);
    assert_eq!(pending(&q)[4].body, RecordBody::Dropped { count: 5 });
    assert_eq!(q.dropped_total().unwrap(), 8);
}

#[test]
fn an_append_larger_than_the_cap_keeps_its_newest_records_and_the_marker() {
    let dir = TempDir::new("huge-append");
    let q = TelemetryQueue::open(&dir.db(), cfg(3)).unwrap();
    q.append(&healths(0..1)).unwrap();
    assert_eq!(q.append(&healths(1..6)).unwrap(), 2..=6);
    assert_eq!(seqs(&q), [5, 6, 7]);
    assert_eq!(pending(&q)[2].body, RecordBody::Dropped { count: 4 });
    assert_eq!(q.dropped_total().unwrap(), 4);
}

#[test]
fn acked_records_leave_room_so_nothing_is_dropped() {
    let dir = TempDir::new("ack-room");
    let q = TelemetryQueue::open(&dir.db(), cfg(5)).unwrap();
    q.append(&healths(0..5)).unwrap();
    q.ack(3).unwrap();
    q.append(&healths(5..8)).unwrap();
    assert_eq!((seqs(&q), q.dropped_total().unwrap()), (vec![4, 5, 6, 7, 8], 0));
}

#[test]
fn a_corrupt_record_is_skipped_and_counted_once_and_acking_the_batch_deletes_it() {
    let dir = TempDir::new("corrupt");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    q.append(&healths(0..4)).unwrap();
    let txn = q.db.begin_write().unwrap();
    txn.open_table(RECORDS).unwrap().insert(2, [0xff_u8, 0xff, 0xff].as_slice()).unwrap();
    txn.commit().unwrap();
    let batch = q.batch_after(0, usize::MAX).unwrap().unwrap();
    assert_eq!((batch.first_seq, batch.last_seq), (1, 4));
    assert_eq!(batch.records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 3, 4]);
    q.batch_after(0, usize::MAX).unwrap();
    assert_eq!(q.corrupt_skipped(), 1);
    assert_eq!(q.ack(batch.last_seq).unwrap(), 4);
    assert!(q.is_empty().unwrap());
}

#[test]
fn a_record_stored_under_another_number_counts_as_corrupt() {
    let dir = TempDir::new("misnumbered");
    let q = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap();
    q.append(&healths(0..2)).unwrap();
    let txn = q.db.begin_write().unwrap();
    txn.open_table(RECORDS).unwrap().insert(2, encode(1, 0, &health(0)).as_slice()).unwrap();
    txn.commit().unwrap();
    assert_eq!(seqs(&q), [1]);
    assert_eq!(q.corrupt_skipped(), 1);
}

#[test]
fn stored_values_are_postcard_records() {
    let body = health(7);
    let record = Record { seq: 9, at: 1_700_000_000, body: body.clone() };
    assert_eq!(encode(9, 1_700_000_000, &body), postcard::to_allocvec(&record).unwrap());
    assert_eq!(decode(9, &encode(9, 1_700_000_000, &body)), Some(record));
}

#[test]
fn a_cap_of_zero_records_is_refused_naming_the_path() {
    let dir = TempDir::new("zero-cap");
    let err = TelemetryQueue::open(&dir.db(), cfg(0)).unwrap_err();
    assert!(err.to_string().contains("telemetry.redb"), "{err}");
}

/// `kill -9` during the very first start can leave the file sized but without redb's magic number (redb
/// writes it last, before any commit): the queue opens again, empty, numbering from 1, the unfinished file
/// kept aside. Both states redb passes through are played: sized and all zeros, then the header written
/// without its magic number.
#[test]
fn a_file_whose_creation_was_interrupted_by_a_crash_is_created_again() {
    let dir = TempDir::new("interrupted");
    let q = TelemetryQueue::open(&dir.db(), cfg(10)).unwrap();
    drop(q);
    let mut fresh = std::fs::read(dir.db()).unwrap();
    fresh[..9].fill(0);
    for file in [vec![0u8; fresh.len()], fresh] {
        std::fs::write(dir.db(), &file).unwrap();
        let q = TelemetryQueue::open(&dir.db(), cfg(10)).unwrap();
        assert_eq!(q.append(&healths(0..3)).unwrap(), 1..=3);
        drop(q);
        let q = TelemetryQueue::open(&dir.db(), cfg(10)).unwrap();
        assert_eq!(seqs(&q), vec![1, 2, 3], "and it is a working queue after a reopen");
        drop(q);
        assert_eq!(std::fs::read(dir.db().with_extension("redb.unfinished")).unwrap(), file, "kept aside");
        std::fs::remove_file(dir.db()).unwrap();
    }
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_naming_the_path() {
    let dir = TempDir::new("not-a-db");
    std::fs::write(dir.db(), vec![0x5a; 8192]).unwrap();
    let err = TelemetryQueue::open(&dir.db(), QueueConfig::default()).unwrap_err();
    assert!(matches!(err, QueueError::Db { .. }), "{err:?}");
    assert!(err.to_string().contains("telemetry.redb"), "{err}");
}

// The model: a VecDeque of pending records and three counters.

#[derive(Debug)]
struct Model {
    max: u64,
    pending: VecDeque<Record>,
    next_seq: u64,
    acked: u64,
    dropped: u64,
}

impl Model {
    fn append(&mut self, records: &[(UnixTime, RecordBody)]) -> RangeInclusive<u64> {
        let (next, n) = (self.next_seq, records.len() as u64);
        let len = self.pending.len() as u64;
        for (seq, (at, body)) in (next..).zip(records) {
            self.pending.push_back(Record { seq, at: *at, body: body.clone() });
        }
        self.next_seq += n;
        if len + n > self.max {
            let count = len + n + 1 - self.max;
            let at = records.last().unwrap().0;
            self.pending.push_back(Record { seq: self.next_seq, at, body: RecordBody::Dropped { count } });
            self.next_seq += 1;
            self.pending.drain(..count as usize);
            self.dropped += count;
        }
        next..=next + n - 1
    }

    fn ack(&mut self, up_to: u64) -> u64 {
        let target = up_to.min(self.next_seq - 1);
        if target <= self.acked {
            return 0;
        }
        self.acked = target;
        let before = self.pending.len();
        self.pending.retain(|r| r.seq > target);
        (before - self.pending.len()) as u64
    }

    fn stats(&self) -> QueueStats {
        QueueStats {
            len: self.pending.len() as u64,
            last_seq: self.next_seq - 1,
            acked_up_to: self.acked,
            dropped_total: self.dropped,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// 1–5 records: (time, size seed).
    Append(Vec<(u64, u64)>),
    /// Ack a sequence at this percentage of `last_seq` (above 100: beyond the end).
    Ack(u64),
    /// `batch_after(last_seq * percent / 100, max_bytes)`.
    Batch(u64, usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => prop::collection::vec((0..1u64 << 40, 0..1u64 << 40), 1..=5).prop_map(Op::Append),
        2 => (0..=130u64).prop_map(Op::Ack),
        2 => (0..=110u64, 1..400usize).prop_map(|(p, b)| Op::Batch(p, b)),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_queue_agrees_with_a_simple_model(max in 1..12u64, ops in prop::collection::vec(op(), 1..40)) {
        let dir = TempDir::new("model");
        let mut q = Some(TelemetryQueue::open(&dir.db(), cfg(max)).unwrap());
        let mut model = Model { max, pending: VecDeque::new(), next_seq: 1, acked: 0, dropped: 0 };
        let mut highest_given = 0;
        for op in ops {
            let queue = q.as_ref().unwrap();
            match op {
                Op::Append(seeds) => {
                    let records: Vec<_> = seeds.iter().map(|&(at, n)| (at, health(n))).collect();
                    let given = queue.append(&records).unwrap();
                    prop_assert!(*given.start() > highest_given, "{given:?} after {highest_given}");
                    highest_given = model.next_seq - 1 + records.len() as u64;
                    prop_assert_eq!(given, model.append(&records));
                }
                Op::Ack(percent) => {
                    let up_to = model.stats().last_seq * percent / 100;
                    prop_assert_eq!(queue.ack(up_to).unwrap(), model.ack(up_to));
                }
                Op::Batch(percent, max_bytes) => {
                    let after = model.stats().last_seq * percent / 100;
                    let want: Vec<&Record> = model.pending.iter().filter(|r| r.seq > after).collect();
                    match queue.batch_after(after, max_bytes).unwrap() {
                        None => prop_assert!(want.is_empty()),
                        Some(batch) => {
                            let n = batch.records.len();
                            prop_assert!(n >= 1);
                            prop_assert_eq!(batch.records.iter().collect::<Vec<_>>(), &want[..n]);
                            prop_assert_eq!((batch.first_seq, batch.last_seq), (want[0].seq, want[n - 1].seq));
                            let size = postcard::to_allocvec(&batch).unwrap().len();
                            prop_assert!(n == 1 || size <= max_bytes, "{} bytes > {}", size, max_bytes);
                            // A limit of exactly this batch's size gives this batch again.
                            prop_assert_eq!(queue.batch_after(after, size).unwrap(), Some(batch.clone()));
                            if let Some(&next) = want.get(n) {
                                let mut bigger = batch.clone();
                                bigger.last_seq = next.seq;
                                bigger.records.push(next.clone());
                                prop_assert!(postcard::to_allocvec(&bigger).unwrap().len() > max_bytes);
                            }
                        }
                    }
                }
                Op::Reopen => {
                    drop(q.take());
                    q = Some(TelemetryQueue::open(&dir.db(), cfg(max)).unwrap());
                }
            }
            let queue = q.as_ref().unwrap();
            prop_assert_eq!(pending(queue), model.pending.iter().cloned().collect::<Vec<_>>());
            prop_assert_eq!(queue.stats().unwrap(), model.stats());
            prop_assert!(model.pending.len() as u64 <= max);
        }
    }
}
