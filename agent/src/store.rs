//! The model store on disk: verified models by digest, and the slot table saying, per model name, which
//! one is active, which is the shadow candidate and which is kept as previous for instant rollback
//! (`slots.rs` holds the table and its transitions).
//!
//! ```text
//! DATA_DIR/slots.json                 the slot table (replaced atomically)
//! DATA_DIR/slots.lock                 held by any process changing slots
//! DATA_DIR/models/<sha256>/model          the model file, in the format its manifest names (NNEF)
//! DATA_DIR/models/<sha256>/manifest.bin   postcard Manifest from the verified bundle (the last stored)
//! DATA_DIR/models/<sha256>/manifest-<model>.bin   the same, per model name: identical weights released
//!                                                 under two names keep each its own manifest
//! DATA_DIR/models/<sha256>/selftest-<model>.bin   the bundle's self-test section (postcard vectors), per name
//! ```
//! Crash safety follows Bottlerocket's order: write the new model beside the others, fsync, read it back
//! and check its digest, and only then flip the slot table with write-new, fsync, rename, fsync-dir. A
//! `kill -9` at any point leaves either the old table or the new one, each naming complete models.

pub use crate::slots::{ModelSlots, Slots};
use outpost_protocol::Digest;
use outpost_protocol::manifest::{Manifest, SelfTestVector};
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let models = dir.join("models");
        std::fs::create_dir_all(&models).map_err(|source| StoreError::Io { path: models, source })?;
        Ok(Store { dir: dir.to_owned() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An exclusive lock for changing slots; released when the file is dropped.
    pub fn lock(&self) -> Result<File, StoreError> {
        let path = self.dir.join("slots.lock");
        let f = File::options().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
        f.lock().map_err(io(&path))?;
        Ok(f)
    }

    pub fn slots(&self) -> Result<Slots, StoreError> {
        let path = self.dir.join("slots.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt { path, message: format!("slot table: {e}") }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Slots::default()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    pub fn write_slots(&self, slots: &Slots) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(slots).expect("slots encode");
        write_atomic(&self.dir.join("slots.json"), &bytes)
    }

    fn model_dir(&self, digest: &Digest) -> PathBuf {
        self.dir.join("models").join(digest.to_hex())
    }

    /// Writes a verified model, its manifest and its self-test section, then reads them back and checks
    /// their digests.
    pub fn put_model(&self, model: &[u8], manifest: &Manifest, selftest: &[u8]) -> Result<Digest, StoreError> {
        let digest = manifest.payload.model_sha256;
        let dir = self.model_dir(&digest);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_atomic(&dir.join("model"), model)?;
        write_atomic(&dir.join(format!("selftest-{}.bin", manifest.name)), selftest)?;
        write_atomic(&dir.join("manifest.bin"), &manifest.to_bytes())?;
        // Model names are validated newtypes (no `/`, no `..`): safe as part of a file name.
        write_atomic(&dir.join(format!("manifest-{}.bin", manifest.name)), &manifest.to_bytes())?;
        self.read_model(&digest)?;
        self.read_selftest(&digest, manifest)?;
        Ok(digest)
    }

    /// The stored self-test vectors of a model, refused if the bytes no longer match the digest its
    /// manifest signed (disk corruption).
    pub fn read_selftest(&self, digest: &Digest, manifest: &Manifest) -> Result<Vec<SelfTestVector>, StoreError> {
        let path = self.model_dir(digest).join(format!("selftest-{}.bin", manifest.name));
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        if Digest::of(&bytes) != manifest.selftest.sha256 {
            return Err(StoreError::Corrupt { path, message: "self-test section does not match its digest".into() });
        }
        manifest.selftest.decode(&bytes).map_err(|message| StoreError::Corrupt { path, message })
    }

    /// Reads a stored model, refusing it if the bytes no longer match their digest (disk corruption).
    pub fn read_model(&self, digest: &Digest) -> Result<(Vec<u8>, Manifest), StoreError> {
        let dir = self.model_dir(digest);
        let model_path = dir.join("model");
        let model = std::fs::read(&model_path).map_err(io(&model_path))?;
        if Digest::of(&model) != *digest {
            return Err(StoreError::Corrupt {
                path: model_path,
                message: format!("content does not match its digest {}", digest.short()),
            });
        }
        let manifest_path = dir.join("manifest.bin");
        let bytes = std::fs::read(&manifest_path).map_err(io(&manifest_path))?;
        let manifest = postcard::from_bytes(&bytes)
            .map_err(|e| StoreError::Corrupt { path: manifest_path, message: format!("manifest: {e}") })?;
        Ok((model, manifest))
    }

    /// Reads only the manifest model `name` was stored with (its version and interface), without the
    /// model bytes.
    pub fn read_manifest(&self, digest: &Digest, name: &str) -> Result<Manifest, StoreError> {
        let dir = self.model_dir(digest);
        let named = dir.join(format!("manifest-{name}.bin"));
        let path = if named.is_file() { named } else { dir.join("manifest.bin") };
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        postcard::from_bytes(&bytes).map_err(|e| StoreError::Corrupt { path, message: format!("manifest: {e}") })
    }

    /// `read_model` with the manifest model `name` was stored with.
    pub fn read_model_as(&self, digest: &Digest, name: &str) -> Result<(Vec<u8>, Manifest), StoreError> {
        let (bytes, _) = self.read_model(digest)?;
        Ok((bytes, self.read_manifest(digest, name)?))
    }

    /// Removes stored models no slot names.
    pub fn gc(&self, slots: &Slots) -> Result<(), StoreError> {
        self.gc_keeping(slots, &[])
    }

    /// Removes stored models no slot names, except `pinned` (stored by a verification whose answer the
    /// update machine has not taken yet).
    pub fn gc_keeping(&self, slots: &Slots, pinned: &[Digest]) -> Result<(), StoreError> {
        let pinned: Vec<String> = pinned.iter().map(Digest::to_hex).collect();
        let keep: Vec<&str> = slots.digests().into_iter().chain(pinned.iter().map(String::as_str)).collect();
        let models = self.dir.join("models");
        for entry in std::fs::read_dir(&models).map_err(io(&models))? {
            let entry = entry.map_err(io(&models))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name.as_str()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// Write new, fsync, rename over, fsync the directory (`crate::files`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    outpost_files::write_atomic(path, bytes, 0o644).map_err(io(path))
}
