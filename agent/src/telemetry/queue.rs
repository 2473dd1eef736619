//! The durable telemetry queue: records numbered by a sequence that is never reused, kept in redb until
//! the controller acks them.
//!
//! ```text
//! records  u64 seq -> postcard(outpost_protocol::telemetry::Record)
//! meta     "next_seq" | "acked_up_to" | "dropped_total" -> u64
//! ```
//! Stored sequence numbers are always one contiguous run: appends add at the end, acks and the size cap
//! delete from the front. `next_seq` lives in `meta`, so numbers go on rising after everything was acked
//! and deleted, and across restarts.
//!
//! Durability: every append is one redb commit with [`Durability::Immediate`] (checksummed commit slot,
//! then fdatasync), so when [`TelemetryQueue::append`] returns `Ok` the records survive `kill -9` and power
//! loss. Commits cost an fsync (1–20 ms on flash, DESIGN.md): callers batch records per append. redb's
//! default cache is 1 GiB; [`QueueConfig`] sets a few MiB.
//!
//! Size cap, drop-oldest: an append that would take the queue past `max_records` deletes the oldest
//! records in the same commit, adds their count to the persisted `dropped_total`, and appends one
//! [`RecordBody::Dropped`] record after the new ones, so the loss shows in the data the controller gets.

use outpost_protocol::UnixTime;
use outpost_protocol::messages::TelemetryBatch;
use outpost_protocol::telemetry::{Record, RecordBody};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_SEQ: &str = "next_seq";
const ACKED_UP_TO: &str = "acked_up_to";
const DROPPED_TOTAL: &str = "dropped_total";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// Records kept at most, the `Dropped` markers included; beyond it the oldest go. At least 1.
    pub max_records: u64,
    /// redb's page cache. Its default (1 GiB) is far too much for a device.
    pub cache_bytes: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { max_records: 100_000, cache_bytes: 4 << 20 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("telemetry queue {path}: {source}")]
    Db { path: PathBuf, source: Box<redb::Error> },
    #[error("telemetry queue {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("telemetry queue {path}: {message}")]
    Config { path: PathBuf, message: String },
}

/// One read of the queue's counters, all from the same snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Records stored: not yet acked and not dropped.
    pub len: u64,
    /// The highest sequence number given out; 0 when none ever was.
    pub last_seq: u64,
    pub acked_up_to: u64,
    pub dropped_total: u64,
}

/// Encodes exactly as [`Record`] does (postcard writes fields in order; `&T` as `T`), without cloning the
/// body to build one.
#[derive(Serialize)]
struct RecordRef<'a> {
    seq: u64,
    at: UnixTime,
    body: &'a RecordBody,
}

fn encode(seq: u64, at: UnixTime, body: &RecordBody) -> Vec<u8> {
    postcard::to_allocvec(&RecordRef { seq, at, body }).expect("record encodes to memory")
}

/// A stored value that is not exactly one postcard `Record` numbered `seq` is corrupt: `None`.
fn decode(seq: u64, bytes: &[u8]) -> Option<Record> {
    match postcard::take_from_bytes::<Record>(bytes) {
        Ok((record, [])) if record.seq == seq => Some(record),
        _ => None,
    }
}

/// Bytes postcard uses for a varint-encoded integer.
fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// postcard size of a `TelemetryBatch` whose records take `record_bytes` together.
fn batch_size(first_seq: u64, last_seq: u64, count: usize, record_bytes: usize) -> usize {
    varint_len(first_seq) + varint_len(last_seq) + varint_len(count as u64) + record_bytes
}

fn meta_get(meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, redb::StorageError> {
    Ok(meta.get(key)?.map_or(0, |v| v.value()))
}

fn db_err<E: Into<redb::Error>>(path: &Path) -> impl Fn(E) -> QueueError + '_ {
    move |e| QueueError::Db { path: path.to_owned(), source: Box::new(e.into()) }
}

pub struct TelemetryQueue {
    db: Database,
    path: PathBuf,
    cfg: QueueConfig,
    /// Sequence numbers of corrupt records seen by `batch_after` and still stored: each counted once.
    corrupt: Mutex<BTreeSet<u64>>,
    corrupt_total: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TelemetryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryQueue").field("path", &self.path).field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl TelemetryQueue {
    /// Opens the queue at `path`, creating the file (and its directory) if missing.
    pub fn open(path: &Path, cfg: QueueConfig) -> Result<Self, QueueError> {
        if cfg.max_records == 0 {
            let message = "max_records must be at least 1".to_owned();
            return Err(QueueError::Config { path: path.to_owned(), message });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| QueueError::Io { path: dir.to_owned(), source })?;
        }
        let db = redb::Builder::new().set_cache_size(cfg.cache_bytes).create(path).map_err(db_err(path))?;
        // Create both tables, so read transactions always find them.
        let txn = db.begin_write().map_err(db_err(path))?;
        txn.open_table(RECORDS).map_err(db_err(path))?;
        txn.open_table(META).map_err(db_err(path))?;
        txn.commit().map_err(db_err(path))?;
        Ok(TelemetryQueue {
            db,
            path: path.to_owned(),
            cfg,
            corrupt: Mutex::new(BTreeSet::new()),
            corrupt_total: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> QueueConfig {
        self.cfg
    }

    /// Runs redb work, naming the file in its error.
    fn run<T>(&self, work: impl FnOnce() -> Result<T, redb::Error>) -> Result<T, QueueError> {
        work().map_err(db_err(&self.path))
    }

    /// Appends in ONE durable commit ([`Durability::Immediate`]): when this returns `Ok`, the records
    /// survive `kill -9` and power loss. Returns the sequence numbers given, contiguous and never reused
    /// (an empty range for no records). Past `max_records` the oldest records are dropped in the same
    /// commit and a [`RecordBody::Dropped`] record follows the new ones; if the append alone exceeds the
    /// cap, its own oldest records are dropped too (their numbers are still used up).
    pub fn append(&self, records: &[(UnixTime, RecordBody)]) -> Result<RangeInclusive<u64>, QueueError> {
        if records.is_empty() {
            let next = self.last_seq()? + 1;
            #[allow(clippy::reversed_empty_ranges)]
            return Ok(next..=next - 1);
        }
        let (given, dropped_below) = self.run(|| self.append_txn(records))?;
        if let Some(below) = dropped_below {
            self.forget_corrupt_below(below);
        }
        Ok(given)
    }

    /// The append commit; also returns, when it dropped records, the sequence number below which none
    /// is stored any more.
    fn append_txn(
        &self,
        records: &[(UnixTime, RecordBody)],
    ) -> Result<(RangeInclusive<u64>, Option<u64>), redb::Error> {
        let mut txn = self.db.begin_write()?;
        // redb's default, set anyway: the guarantee of `append` rests on it.
        txn.set_durability(Durability::Immediate)?;
        let result = {
            let mut meta = txn.open_table(META)?;
            let mut table = txn.open_table(RECORDS)?;
            let after_last_key = table.last()?.map_or(0, |(k, _)| k.value() + 1);
            // `next_seq` is the truth; the stored keys only guard against ever reusing one.
            let next = meta_get(&meta, NEXT_SEQ)?.max(after_last_key).max(1);
            let n = records.len() as u64;
            let len = table.len()?;
            let max = self.cfg.max_records;
            // The marker counts toward the cap too, and is always kept (max >= 1).
            let drop = if len + n > max { len + n + 1 - max } else { 0 };
            let drop_stored = drop.min(len);
            let drop_new = drop - drop_stored;
            let first_stored = table.first()?.map(|(k, _)| k.value());
            for _ in 0..drop_stored {
                table.pop_first()?;
            }
            for (seq, (at, body)) in (next..).zip(records).skip(drop_new as usize) {
                table.insert(seq, encode(seq, *at, body).as_slice())?;
            }
            let mut end = next + n;
            if drop > 0 {
                let at = records.last().map_or(0, |(at, _)| *at);
                let marker = encode(end, at, &RecordBody::Dropped { count: drop });
                table.insert(end, marker.as_slice())?;
                end += 1;
                let dropped = meta_get(&meta, DROPPED_TOTAL)?;
                meta.insert(DROPPED_TOTAL, dropped + drop)?;
            }
            meta.insert(NEXT_SEQ, end)?;
            let dropped_below = (drop > 0).then(|| first_stored.unwrap_or(next) + drop);
            (next..=next + n - 1, dropped_below)
        };
        txn.commit()?;
        Ok(result)
    }

    /// The oldest records with `seq > after`, as a batch whose postcard encoding is at most `max_bytes`
    /// (always at least one record when any is pending, even if alone it is larger). `None` when nothing
    /// is pending. Corrupt records are skipped (and counted, see [`Self::corrupt_skipped`]) but stay inside
    /// `first_seq..=last_seq`, so acking the batch deletes them.
    pub fn batch_after(&self, after: u64, max_bytes: usize) -> Result<Option<TelemetryBatch>, QueueError> {
        let Some(start) = after.checked_add(1) else { return Ok(None) };
        let (batch, corrupt) = self.run(|| self.scan(start, max_bytes))?;
        if !corrupt.is_empty() {
            self.count_corrupt(&corrupt);
        }
        Ok(batch)
    }

    /// Reads the batch starting at `start`; also returns the corrupt sequence numbers it skipped.
    fn scan(&self, start: u64, max_bytes: usize) -> Result<(Option<TelemetryBatch>, Vec<u64>), redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let mut records: Vec<Record> = Vec::new();
        let mut corrupt = Vec::new();
        let (mut first_seq, mut last_seq, mut record_bytes) = (None, 0, 0);
        for entry in table.range(start..)? {
            let (key, value) = entry?;
            let (seq, bytes) = (key.value(), value.value());
            let record = decode(seq, bytes);
            // A valid stored value is the canonical postcard encoding of its record: its length is
            // what the record adds to the batch.
            let added = if record.is_some() { bytes.len() } else { 0 };
            let count = records.len() + usize::from(record.is_some());
            let size = batch_size(first_seq.unwrap_or(seq), seq, count, record_bytes + added);
            if !records.is_empty() && size > max_bytes {
                break;
            }
            first_seq.get_or_insert(seq);
            last_seq = seq;
            record_bytes += added;
            match record {
                Some(r) => records.push(r),
                None => corrupt.push(seq),
            }
        }
        Ok((first_seq.map(|first_seq| TelemetryBatch { first_seq, last_seq, records }), corrupt))
    }

    /// Deletes every record with `seq <= up_to` and returns how many were deleted. Idempotent: an ack
    /// beyond the last sequence given is clamped to it (a confused or hostile controller cannot pre-ack
    /// records not yet written), an ack at or below the previous one is a no-op.
    pub fn ack(&self, up_to: u64) -> Result<u64, QueueError> {
        match self.run(|| self.ack_txn(up_to))? {
            Some((deleted, target)) => {
                self.forget_corrupt_below(target + 1);
                Ok(deleted)
            }
            None => Ok(0),
        }
    }

    /// The ack commit: `(deleted, new acked_up_to)`, or `None` for a no-op (nothing committed).
    fn ack_txn(&self, up_to: u64) -> Result<Option<(u64, u64)>, redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let outcome = {
            let mut meta = txn.open_table(META)?;
            let mut table = txn.open_table(RECORDS)?;
            let last_seq = meta_get(&meta, NEXT_SEQ)?.saturating_sub(1);
            let acked = meta_get(&meta, ACKED_UP_TO)?;
            let target = up_to.min(last_seq);
            if target <= acked {
                None
            } else {
                let before = table.len()?;
                table.retain_in(..=target, |_, _| false)?;
                let after = table.len()?;
                meta.insert(ACKED_UP_TO, target)?;
                Some((before - after, target))
            }
        };
        if outcome.is_some() {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(outcome)
    }

    /// The counters, from one snapshot.
    pub fn stats(&self) -> Result<QueueStats, QueueError> {
        self.run(|| {
            let txn = self.db.begin_read()?;
            let meta = txn.open_table(META)?;
            let len = txn.open_table(RECORDS)?.len()?;
            Ok(QueueStats {
                len,
                last_seq: meta_get(&meta, NEXT_SEQ)?.saturating_sub(1),
                acked_up_to: meta_get(&meta, ACKED_UP_TO)?,
                dropped_total: meta_get(&meta, DROPPED_TOTAL)?,
            })
        })
    }

    /// Records stored: not yet acked and not dropped.
    pub fn len(&self) -> Result<u64, QueueError> {
        Ok(self.stats()?.len)
    }

    pub fn is_empty(&self) -> Result<bool, QueueError> {
        Ok(self.len()? == 0)
    }

    /// The highest sequence the controller acked (clamped to [`Self::last_seq`]).
    pub fn acked_up_to(&self) -> Result<u64, QueueError> {
        Ok(self.stats()?.acked_up_to)
    }

    /// The highest sequence number given out, `Dropped` markers included; 0 when none ever was.
    pub fn last_seq(&self) -> Result<u64, QueueError> {
        Ok(self.stats()?.last_seq)
    }

    /// Records the size cap ever dropped (persisted; devices report it in `DeviceHealth`).
    pub fn dropped_total(&self) -> Result<u64, QueueError> {
        Ok(self.stats()?.dropped_total)
    }

    /// Distinct corrupt (undecodable) records `batch_after` skipped since this queue was opened.
    pub fn corrupt_skipped(&self) -> u64 {
        self.corrupt_total.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_corrupt(&self, seqs: &[u64]) {
        let mut seen = self.corrupt.lock().unwrap_or_else(|p| p.into_inner());
        for &seq in seqs {
            if seen.insert(seq) {
                tracing::warn!(path = %self.path.display(), seq, "telemetry record is corrupt; skipped");
                self.corrupt_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Corrupt records below `seq` are gone from the table: stop remembering them.
    fn forget_corrupt_below(&self, seq: u64) {
        let mut seen = self.corrupt.lock().unwrap_or_else(|p| p.into_inner());
        *seen = seen.split_off(&seq);
    }
}

#[cfg(test)]
mod tests {
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
}
