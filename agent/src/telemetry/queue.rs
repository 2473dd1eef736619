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

/// The first bytes of a redb file are its magic number, written only once the new file's structure is
/// on disk and before any commit. A non-empty file whose magic number is still all zeros is one whose
/// creation was interrupted: it never held data.
fn interrupted_creation(path: &Path) -> bool {
    const MAGIC_LEN: usize = 9;
    let Ok(file) = std::fs::File::open(path) else { return false };
    let mut head = Vec::with_capacity(MAGIC_LEN);
    use std::io::Read;
    if file.take(MAGIC_LEN as u64).read_to_end(&mut head).is_err() {
        return false;
    }
    !head.is_empty() && head.iter().all(|b| *b == 0)
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
        let create = || redb::Builder::new().set_cache_size(cfg.cache_bytes).create(path);
        let db = match create() {
            Err(e) if interrupted_creation(path) => {
                // Killed during the very first start, after the file was sized and before redb wrote its
                // magic number: no commit ever happened (redb writes the magic number before the first
                // one), so no record and no sequence number can be in it. Kept aside, not deleted.
                let aside = path.with_extension("redb.unfinished");
                tracing::warn!(path = %path.display(), aside = %aside.display(), error = %e,
                    "the telemetry queue was never fully created (the agent was killed during its first start); \
                     creating it again");
                std::fs::rename(path, &aside).map_err(|source| QueueError::Io { path: path.to_owned(), source })?;
                create().map_err(db_err(path))?
            }
            r => r.map_err(db_err(path))?,
        };
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

    /// When the oldest record still stored (not yet acknowledged) was made, by this device's clock: how
    /// far behind the controller's view is. `None` when the queue is empty or that record is corrupt.
    pub fn oldest_at(&self) -> Result<Option<UnixTime>, QueueError> {
        self.run(|| {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(RECORDS)?;
            let first = table.first()?;
            Ok(first.and_then(|(k, v)| decode(k.value(), v.value())).map(|r| r.at))
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
#[path = "queue_tests.rs"]
mod tests;
