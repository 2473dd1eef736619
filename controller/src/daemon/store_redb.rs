//! The embedded [`Backend`]: one redb file, `<data>/controller.redb`, with a table per [`Table`] (string
//! keys, JSON values) and the audit log keyed by its number. Every write is one `Durability::Immediate`
//! commit (fdatasync before it returns).

use super::store::{Backend, StoreError, Table, err};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::{Path, PathBuf};

const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const BUNDLES: TableDefinition<&str, &[u8]> = TableDefinition::new("bundles");
const ROLLOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rollouts");
const ENROLL_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("enroll_tokens");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

fn def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match table {
        Table::Devices => DEVICES,
        Table::Bundles => BUNDLES,
        Table::Rollouts => ROLLOUTS,
        Table::EnrollTokens => ENROLL_TOKENS,
    }
}

#[derive(Debug)]
pub struct RedbBackend {
    db: Database,
    path: PathBuf,
}

impl RedbBackend {
    /// Opens (or makes) `<dir>/controller.redb`. This is the one place the data directory's and the
    /// database's file modes are set: the directory 0700 and the file 0600, also when an older version
    /// made them looser, because they hold the device registry, enrollment token hashes and, beside
    /// them, the API token.
    pub fn open(dir: &Path) -> Result<RedbBackend, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        private(dir, 0o700)?;
        let path = dir.join("controller.redb");
        let db = Database::builder().set_cache_size(16 << 20).create(&path).map_err(|e| err(&path, e))?;
        private(&path, 0o600)?;
        let b = RedbBackend { db, path };
        // Create every table up front so readers never meet a missing one.
        let txn = b.db.begin_write().map_err(|e| b.err(e))?;
        for t in Table::ALL {
            txn.open_table(def(t)).map_err(|e| b.err(e))?;
        }
        txn.open_table(AUDIT).map_err(|e| b.err(e))?;
        txn.commit().map_err(|e| b.err(e))?;
        Ok(b)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        err(&self.path, e)
    }
}

impl Backend for RedbBackend {
    fn put_many(&self, table: Table, items: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(Durability::Immediate).map_err(|e| self.err(e))?;
        {
            let mut t = txn.open_table(def(table)).map_err(|e| self.err(e))?;
            for (k, v) in items {
                t.insert(k.as_str(), v.as_slice()).map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(def(table)).map_err(|e| self.err(e))?;
        Ok(t.get(key).map_err(|e| self.err(e))?.map(|v| v.value().to_vec()))
    }

    fn scan(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(def(table)).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn append_audit(&self, entry: &[u8]) -> Result<u64, StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(Durability::Immediate).map_err(|e| self.err(e))?;
        let n;
        {
            let mut t = txn.open_table(AUDIT).map_err(|e| self.err(e))?;
            n = t.last().map_err(|e| self.err(e))?.map(|(k, _)| k.value() + 1).unwrap_or(1);
            t.insert(n, entry).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(n)
    }

    fn audit_log(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = txn.open_table(AUDIT).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = row.map_err(|e| self.err(e))?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }
}

/// Sets `mode` on `path` (Unix); a folder or file made looser before is tightened too.
fn private(path: &Path, mode: u32) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| err(path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_is_0700_and_the_database_0600_even_when_made_looser_before() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("outpost-store-modes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for _ in 0..2 {
            drop(super::super::store::Store::open(&dir).unwrap());
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("controller.redb")), 0o600);
            std::fs::set_permissions(dir.join("controller.redb"), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
