//! The controller's state behind one narrow interface, [`Backend`]: keyed documents in four tables
//! (devices, bundle metadata, rollouts, enrollment token hashes) and an append-only audit log. The daemon
//! reads and writes only through [`Store`], which turns values into JSON documents (a few KB per device,
//! readable with any tool, tolerant of added fields) and back.
//!
//! The embedded default is redb in the data directory ([`super::store_redb`]). Another backend, a shared
//! database behind several controller replicas, implements the five methods of [`Backend`] with the same
//! guarantees:
//! - `put_many` is one atomic, durable commit: all of its items or none, on disk before it returns (the
//!   daemon acks a device's telemetry and performs a rollout's actions only after it returns);
//! - `get` and `scan` see every commit that returned before they began;
//! - `append_audit` numbers entries uniquely and in the order they were appended.
//!
//! What is not in it yet, for replicas: rollouts and device records are cached in the daemon's memory
//! (loaded at start, written through), so two replicas would each act on their own copy; they will need
//! a lease per rollout and a compare-and-set on writes. Bundle files are content-addressed and never
//! change: they live under `<data>/bundles/` beside the store (a shared directory or object store for
//! replicas), and only their metadata is in the store.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

/// Which table a keyed document lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Device records by device id (`registry::DeviceRecord`).
    Devices,
    /// Pushed bundles' metadata by bundle digest (`bundles::BundleMeta`).
    Bundles,
    /// Rollouts (spec and state) by rollout id.
    Rollouts,
    /// Enrollment tokens by the SHA-256 of their secret (the secret itself is never stored).
    EnrollTokens,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Devices, Table::Bundles, Table::Rollouts, Table::EnrollTokens];

    pub fn name(self) -> &'static str {
        match self {
            Table::Devices => "devices",
            Table::Bundles => "bundles",
            Table::Rollouts => "rollouts",
            Table::EnrollTokens => "enroll_tokens",
        }
    }
}

/// Where the controller's state is kept. Values are opaque bytes (JSON documents made by [`Store`]).
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Stores every item in one atomic, durable commit.
    fn put_many(&self, table: Table, items: &[(String, Vec<u8>)]) -> Result<(), StoreError>;
    /// The document under `key`.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every document of `table`, in key order.
    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Appends an entry durably; returns its number (1, 2, ...: unique, in append order).
    fn append_audit(&self, entry: &[u8]) -> Result<u64, StoreError>;
    /// The whole audit log, in order.
    fn audit_log(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
}

/// The daemon's typed access to its [`Backend`], and the data directory the bundle files live in.
#[derive(Debug)]
pub struct Store {
    backend: Box<dyn Backend>,
    dir: PathBuf,
    /// How long durable writes take, whatever the backend (fsync included for redb):
    /// `outpost_store_write_seconds` on /metrics.
    write_seconds: super::prom::Histogram,
}

impl Store {
    /// The embedded default: redb at `<dir>/controller.redb` (the directory is made private, see
    /// [`super::store_redb::RedbBackend::open`]).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let backend = super::store_redb::RedbBackend::open(dir)?;
        Store::with_backend(dir, Box::new(backend))
    }

    /// A store on any backend; bundle files still go under `<dir>/bundles/`.
    pub fn with_backend(dir: &Path, backend: Box<dyn Backend>) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir.join("bundles")).map_err(|e| err(dir, e))?;
        Ok(Store { backend, dir: dir.to_owned(), write_seconds: super::prom::Histogram::seconds() })
    }

    pub fn write_latency(&self) -> &super::prom::Histogram {
        &self.write_seconds
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), StoreError> {
        self.put_many(table, &[(key.to_owned(), serde_json::to_vec(value).expect("serializable"))])
    }

    /// Writes several documents in one durable commit.
    pub fn put_many(&self, table: Table, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let done = self.backend.put_many(table, items);
        self.write_seconds.observe(started.elapsed().as_secs_f64());
        done
    }

    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, StoreError> {
        match self.backend.get(table, key)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|e| err(&self.dir, format!("{key}: {e}"))),
        }
    }

    /// Every value in a table, in key order. Undecodable entries are skipped with a warning.
    pub fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.backend.scan(table)? {
            match serde_json::from_slice(&v) {
                Ok(x) => out.push(x),
                Err(e) => {
                    tracing::warn!(table = table.name(), key = k, error = %e, "skipping an unreadable stored value")
                }
            }
        }
        Ok(out)
    }

    /// Appends an audit entry; returns its number.
    pub fn audit<T: Serialize>(&self, entry: &T) -> Result<u64, StoreError> {
        let started = std::time::Instant::now();
        let done = self.backend.append_audit(&serde_json::to_vec(entry).expect("serializable"));
        self.write_seconds.observe(started.elapsed().as_secs_f64());
        done
    }

    pub fn audit_log(&self) -> Result<Vec<(u64, serde_json::Value)>, StoreError> {
        Ok(self
            .backend
            .audit_log()?
            .into_iter()
            .filter_map(|(n, v)| Some((n, serde_json::from_slice(&v).ok()?)))
            .collect())
    }

    pub fn bundle_path(&self, digest: &outpost_protocol::Digest) -> PathBuf {
        self.dir.join("bundles").join(format!("{}.obundle", digest.to_hex()))
    }
}

pub(super) fn err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError { path: path.to_owned(), message: e.to_string() }
}

/// A backend in memory: for tests of the daemon's parts, and the second implementation that keeps
/// [`Backend`] honest (the contract tests run against both).
#[derive(Debug, Default)]
pub struct MemoryBackend {
    tables: std::sync::Mutex<std::collections::BTreeMap<(Table, String), Vec<u8>>>,
    audit: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Backend for MemoryBackend {
    fn put_many(&self, table: Table, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut t = self.tables.lock().expect("tables");
        for (k, v) in items {
            t.insert((table, k.clone()), v.clone());
        }
        Ok(())
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables.lock().expect("tables").get(&(table, key.to_owned())).cloned())
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let t = self.tables.lock().expect("tables");
        Ok(t.iter().filter(|((tb, _), _)| *tb == table).map(|((_, k), v)| (k.clone(), v.clone())).collect())
    }

    fn append_audit(&self, entry: &[u8]) -> Result<u64, StoreError> {
        let mut a = self.audit.lock().expect("audit");
        a.push(entry.to_vec());
        Ok(a.len() as u64)
    }

    fn audit_log(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self.audit.lock().expect("audit").iter().enumerate().map(|(i, v)| (i as u64 + 1, v.clone())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("outpost-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// What every backend must do, as the daemon relies on it.
    fn contract(store: &Store) {
        store.put(Table::Devices, "b", &serde_json::json!({"id": "b"})).unwrap();
        store.put(Table::Devices, "a", &serde_json::json!({"id": "a"})).unwrap();
        store.put(Table::Rollouts, "a", &serde_json::json!({"rollout": 1})).unwrap();
        let devices: Vec<serde_json::Value> = store.all(Table::Devices).unwrap();
        assert_eq!(devices, vec![serde_json::json!({"id": "a"}), serde_json::json!({"id": "b"})], "key order");
        let r: Option<serde_json::Value> = store.get(Table::Rollouts, "a").unwrap();
        assert_eq!(r, Some(serde_json::json!({"rollout": 1})), "tables are apart");
        assert_eq!(store.get::<serde_json::Value>(Table::Bundles, "a").unwrap(), None);
        store.put(Table::Devices, "a", &serde_json::json!({"id": "a", "v": 2})).unwrap();
        assert_eq!(store.get::<serde_json::Value>(Table::Devices, "a").unwrap().unwrap()["v"], 2, "replaced");
        store
            .put_many(Table::EnrollTokens, &[("x".into(), b"{}".to_vec()), ("y".into(), b"not json".to_vec())])
            .unwrap();
        assert_eq!(store.all::<serde_json::Value>(Table::EnrollTokens).unwrap().len(), 1, "unreadable skipped");
        let numbers: Vec<u64> = (0..3).map(|i| store.audit(&serde_json::json!({"i": i})).unwrap()).collect();
        assert_eq!(numbers, [1, 2, 3]);
        let log = store.audit_log().unwrap();
        assert_eq!(
            log.iter().map(|(n, e)| (*n, e["i"].as_u64().unwrap())).collect::<Vec<_>>(),
            [(1, 0), (2, 1), (3, 2)]
        );
    }

    #[test]
    fn the_redb_backend_keeps_the_contract_and_its_data_across_a_reopen() {
        let dir = temp("redb");
        contract(&Store::open(&dir).unwrap());
        let again = Store::open(&dir).unwrap();
        assert_eq!(again.all::<serde_json::Value>(Table::Devices).unwrap().len(), 2);
        assert_eq!(again.audit(&serde_json::json!({})).unwrap(), 4, "numbers go on after a restart");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_memory_backend_keeps_the_same_contract() {
        let dir = temp("memory");
        contract(&Store::with_backend(&dir, Box::<MemoryBackend>::default()).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
