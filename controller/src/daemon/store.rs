//! The controller's state in redb under the data directory: devices, bundle metadata (the bundle files
//! sit beside it, content-addressed), rollouts, and an append-only audit log. Values are JSON: a few KB
//! per device, readable with any redb tool, and tolerant of added fields.

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const BUNDLES: TableDefinition<&str, &[u8]> = TableDefinition::new("bundles");
const ROLLOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rollouts");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Enrollment tokens by the SHA-256 of their secret (the secret itself is never stored).
const ENROLL_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("enroll_tokens");

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Debug)]
pub struct Store {
    db: Database,
    dir: PathBuf,
}

/// Which table a keyed value lives in.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Devices,
    Bundles,
    Rollouts,
    EnrollTokens,
}

impl Table {
    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Table::Devices => DEVICES,
            Table::Bundles => BUNDLES,
            Table::Rollouts => ROLLOUTS,
            Table::EnrollTokens => ENROLL_TOKENS,
        }
    }
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir.join("bundles")).map_err(|e| err(dir, e))?;
        let path = dir.join("controller.redb");
        let db = Database::builder().set_cache_size(16 << 20).create(&path).map_err(|e| err(&path, e))?;
        let store = Store { db, dir: dir.to_owned() };
        // Create every table up front so readers never meet a missing one.
        let txn = store.db.begin_write().map_err(|e| err(&path, e))?;
        for def in [DEVICES, BUNDLES, ROLLOUTS, ENROLL_TOKENS] {
            txn.open_table(def).map_err(|e| err(&path, e))?;
        }
        txn.open_table(AUDIT).map_err(|e| err(&path, e))?;
        txn.commit().map_err(|e| err(&path, e))?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.join("controller.redb")
    }

    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), StoreError> {
        self.put_many(table, &[(key.to_owned(), serde_json::to_vec(value).expect("serializable"))])
    }

    /// Writes several values in one durable commit.
    pub fn put_many(&self, table: Table, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let p = self.path();
        let mut txn = self.db.begin_write().map_err(|e| err(&p, e))?;
        txn.set_durability(Durability::Immediate).map_err(|e| err(&p, e))?;
        {
            let mut t = txn.open_table(table.def()).map_err(|e| err(&p, e))?;
            for (k, v) in items {
                t.insert(k.as_str(), v.as_slice()).map_err(|e| err(&p, e))?;
            }
        }
        txn.commit().map_err(|e| err(&p, e))
    }

    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>, StoreError> {
        let p = self.path();
        let txn = self.db.begin_read().map_err(|e| err(&p, e))?;
        let t = txn.open_table(table.def()).map_err(|e| err(&p, e))?;
        match t.get(key).map_err(|e| err(&p, e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(|e| err(&p, format!("{key}: {e}"))),
        }
    }

    /// Every value in a table, in key order. Undecodable entries are skipped with a warning.
    pub fn all<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        let p = self.path();
        let txn = self.db.begin_read().map_err(|e| err(&p, e))?;
        let t = txn.open_table(table.def()).map_err(|e| err(&p, e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err(&p, e))? {
            let (k, v) = row.map_err(|e| err(&p, e))?;
            match serde_json::from_slice(v.value()) {
                Ok(x) => out.push(x),
                Err(e) => tracing::warn!(key = k.value(), error = %e, "skipping an unreadable stored value"),
            }
        }
        Ok(out)
    }

    /// Appends an audit entry; returns its number.
    pub fn audit<T: Serialize>(&self, entry: &T) -> Result<u64, StoreError> {
        let p = self.path();
        let mut txn = self.db.begin_write().map_err(|e| err(&p, e))?;
        txn.set_durability(Durability::Immediate).map_err(|e| err(&p, e))?;
        let n;
        {
            let mut t = txn.open_table(AUDIT).map_err(|e| err(&p, e))?;
            n = t.last().map_err(|e| err(&p, e))?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            let bytes = serde_json::to_vec(entry).expect("serializable");
            t.insert(n, bytes.as_slice()).map_err(|e| err(&p, e))?;
        }
        txn.commit().map_err(|e| err(&p, e))?;
        Ok(n)
    }

    pub fn audit_log(&self) -> Result<Vec<(u64, serde_json::Value)>, StoreError> {
        let p = self.path();
        let txn = self.db.begin_read().map_err(|e| err(&p, e))?;
        let t = txn.open_table(AUDIT).map_err(|e| err(&p, e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| err(&p, e))? {
            let (k, v) = row.map_err(|e| err(&p, e))?;
            if let Ok(x) = serde_json::from_slice(v.value()) {
                out.push((k.value(), x));
            }
        }
        Ok(out)
    }

    pub fn bundle_path(&self, digest: &outpost_protocol::Digest) -> PathBuf {
        self.dir.join("bundles").join(format!("{}.obundle", digest.to_hex()))
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError { path: path.to_owned(), message: e.to_string() }
}
