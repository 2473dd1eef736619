//! Root rotation on the release engineer's machine (`outpost trust rotate-root`) and the trust update
//! `outpost trust push` sends. The chain is a directory of root documents, `root-2.root`, `root-3.root`, …:
//! the image's root is version 1 and has no document (its public keys are what devices pin).

use super::ReleaseError;
use super::keys::{read_private, read_public};
use crate::files;
use outpost_protocol::Limits;
use outpost_protocol::keys::PublicKey;
use outpost_protocol::messages::TrustUpdate;
use outpost_protocol::root::{self, ROOT_FORMAT, RootDocument, TrustedRoot};
use std::path::{Path, PathBuf};

/// The file of root version `version` in a chain directory.
pub fn root_path(chain: &Path, version: u64) -> PathBuf {
    chain.join(format!("root-{version}.root"))
}

/// Reads `root-2.root`, `root-3.root`, … from `chain` until the first missing version. A missing
/// directory is an empty chain. A file beyond a gap is refused: it could never be walked to.
pub fn read_chain(chain: &Path) -> Result<Vec<Vec<u8>>, ReleaseError> {
    let mut docs = Vec::new();
    if !chain.exists() {
        return Ok(docs);
    }
    while let Some(bytes) = read_if_exists(&root_path(chain, docs.len() as u64 + 2))? {
        docs.push(bytes);
    }
    let entries = std::fs::read_dir(chain).map_err(|source| files::FileError { path: chain.to_owned(), source })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let version =
            name.strip_prefix("root-").and_then(|n| n.strip_suffix(".root")).and_then(|n| n.parse::<u64>().ok());
        if let Some(v) = version
            && v > docs.len() as u64 + 1
        {
            return Err(ReleaseError::Invalid(format!(
                "{}: root-{} .. root-{} are missing, so {name} can never be walked to",
                chain.display(),
                docs.len() + 2,
                v - 1
            )));
        }
    }
    Ok(docs)
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, ReleaseError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(files::FileError { path: path.to_owned(), source }.into()),
    }
}

/// The image's root: the public keys devices pin, version 1.
pub fn image_root(pubs: &[PathBuf], threshold: usize) -> Result<TrustedRoot, ReleaseError> {
    if pubs.is_empty() {
        return Err(ReleaseError::Invalid("name the root public keys devices pin (--image-root-pub)".into()));
    }
    let keys = pubs.iter().map(|p| read_public(p)).collect::<Result<Vec<PublicKey>, _>>()?;
    Ok(TrustedRoot::pinned(keys, threshold))
}

/// Walks the chain directory from the image's root: the root the fleet is at.
pub fn current_root(image: &TrustedRoot, chain: &[Vec<u8>]) -> Result<TrustedRoot, ReleaseError> {
    Ok(root::walk(image, 2, chain, &Limits::default())?.into_inner().root)
}

#[derive(Debug, Clone)]
pub struct RotateRoot {
    pub image_root_pubs: Vec<PathBuf>,
    pub image_root_threshold: usize,
    pub chain: PathBuf,
    /// Private keys of the current root that sign (at least its threshold).
    pub root_keys: Vec<PathBuf>,
    /// Private keys of the new root; each is listed and signs.
    pub new_keys: Vec<PathBuf>,
    /// Public keys listed in the new root that do not sign now (a backup key kept offline).
    pub new_pubs: Vec<PathBuf>,
    pub threshold: u8,
    pub now: u64,
    pub lifetime_secs: u64,
}

/// Writes the next root document into the chain directory, signed by the current root's and the new
/// root's keys, after checking devices would take it (nothing is written otherwise).
pub fn rotate_root(r: &RotateRoot) -> Result<(PathBuf, RootDocument), ReleaseError> {
    let image = image_root(&r.image_root_pubs, r.image_root_threshold)?;
    let chain = read_chain(&r.chain)?;
    let current = current_root(&image, &chain)?;
    if r.new_keys.is_empty() {
        return Err(ReleaseError::Invalid("a new root needs at least one --new-key that signs it".into()));
    }
    let old_signers = r.root_keys.iter().map(|p| read_private(p)).collect::<Result<Vec<_>, _>>()?;
    let new_signers = r.new_keys.iter().map(|p| read_private(p)).collect::<Result<Vec<_>, _>>()?;
    let mut keys: Vec<[u8; 32]> = Vec::new();
    let listed = new_signers.iter().map(|k| Ok(k.verifying_key())).chain(r.new_pubs.iter().map(|p| read_public(p)));
    for k in listed {
        let k = k?.to_bytes();
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let version = current.version + 1;
    let doc = RootDocument {
        format: ROOT_FORMAT,
        version,
        created: r.now,
        expires: r.now.saturating_add(r.lifetime_secs),
        threshold: r.threshold,
        keys,
    };
    let signers: Vec<_> = old_signers.into_iter().chain(new_signers).collect();
    let bytes = root::create_root(&doc, &signers);
    // The same check every device makes: too few old or new signatures, or a bad key set, stop here.
    root::verify_next(&current, &bytes, &Limits::default())?;
    std::fs::create_dir_all(&r.chain).map_err(|source| files::FileError { path: r.chain.clone(), source })?;
    let path = root_path(&r.chain, version);
    if path.exists() {
        return Err(ReleaseError::Invalid(format!("{} exists; refusing to overwrite a root", path.display())));
    }
    files::write_atomic(&path, &bytes, None)?;
    Ok((path, doc))
}

/// The update `trust push` sends: the whole chain (devices skip what they have) and the policy.
pub fn trust_update(policy: &Path, chain: Option<&Path>) -> Result<TrustUpdate, ReleaseError> {
    let roots = match chain {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(ReleaseError::Invalid(format!("{}: no such root chain directory", dir.display())));
            }
            read_chain(dir)?
        }
        None => Vec::new(),
    };
    Ok(TrustUpdate { first_root: 2, roots, policy: files::read(policy)? })
}
