//! `outpost image build`: the files a device installer flashes. Everything given is read and checked
//! first (the agent binary's ELF header against the target, the root key, the trust policy against the
//! root, the first bundle against both and the target, the CA, the URL, the labels, the size, the
//! e2fsprogs tools); only then is anything written, so bad input leaves no half-built image behind.
//!
//! `plan` is the pure part (paths, config, unit, tree), `tar` and `ext4` write the two images,
//! `manifest` describes them, `target` knows the ELF identity of each target.

pub mod ext4;
pub mod manifest;
pub mod plan;
pub mod tar;
pub mod target;

use crate::files::{self, FileError};
use crate::release::bundle::Check;
use manifest::{FirstBundle, ImageManifest};
use outpost_protocol::Limits;
use outpost_protocol::keys::public_key_from_pem;
use outpost_protocol::trust::{RootKeys, verify_policy};
use std::path::{Path, PathBuf};
use target::Target;

pub const ROOTFS: &str = "rootfs.tar.zst";
pub const DATA_IMAGE: &str = "outpost-data.ext4";
pub const MANIFEST: &str = "manifest.json";
const FORMAT: u32 = 1;

/// What `outpost image build` was asked for, as given on the command line.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub target: String,
    pub agent: PathBuf,
    pub controller: String,
    pub ca: Option<PathBuf>,
    pub trust: PathBuf,
    pub root_pub: PathBuf,
    pub enroll_token: String,
    pub bundle: Option<PathBuf>,
    pub labels: String,
    pub data_size: String,
    pub out: PathBuf,
    /// Unix seconds: the time the policy and bundle are checked at, and the files' modification time.
    pub now: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Bad input, found before anything was written.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Ext4(#[from] ext4::Ext4Error),
}

fn invalid(what: impl std::fmt::Display) -> ImageError {
    ImageError::Invalid(what.to_string())
}

/// Everything an image holds, read and checked.
#[derive(Debug)]
struct Checked {
    target: Target,
    agent_version: String,
    controller: plan::ControllerUrl,
    labels: Vec<(String, String)>,
    data_size: u64,
    first_bundle: Option<FirstBundle>,
    tree: Vec<plan::Entry>,
}

fn check(spec: &ImageSpec) -> Result<Checked, ImageError> {
    let target = Target::parse(&spec.target).map_err(invalid)?;
    let controller = plan::parse_controller(&spec.controller).map_err(invalid)?;
    if controller.tls && spec.ca.is_none() {
        return Err(invalid("mqtts:// needs --ca: the CA certificate devices verify the broker with"));
    }
    let labels = plan::parse_labels(&spec.labels).map_err(invalid)?;
    let data_size = plan::parse_size(&spec.data_size).map_err(invalid)?;
    plan::check_token(&spec.enroll_token).map_err(invalid)?;

    let agent = files::read(&spec.agent).map_err(|e| invalid(format!("agent binary {e}")))?;
    target::check_binary(target, &agent).map_err(|e| invalid(format!("{}: {e}", spec.agent.display())))?;
    let agent_version = target::agent_version(&agent)
        .ok_or_else(|| invalid(format!("{}: not an outpost-agent binary (no version marker)", spec.agent.display())))?;

    let ca = match &spec.ca {
        None => None,
        Some(p) => {
            let pem = files::read(p)?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(invalid(format!("{}: no PEM certificate (-----BEGIN CERTIFICATE-----)", p.display())));
            }
            Some(pem)
        }
    };
    let root_pem = files::read_string(&spec.root_pub)?;
    let root = public_key_from_pem(&root_pem, &spec.root_pub.display().to_string()).map_err(invalid)?;
    // A policy the pinned root did not sign would make every install on the device fail.
    let trust = files::read(&spec.trust)?;
    verify_policy(&trust, &RootKeys::new(vec![root]), spec.now, 0, 0, &Limits::default())
        .map_err(|r| invalid(format!("{}: refused with {}: {r}", spec.trust.display(), spec.root_pub.display())))?;
    // The first bundle goes through the device's own verification, for this target and agent version.
    let (bundle, first_bundle) = match &spec.bundle {
        None => (None, None),
        Some(p) => {
            let verified = crate::release::bundle::check(&Check {
                bundle: p.clone(),
                trust: spec.trust.clone(),
                root_pubs: vec![spec.root_pub.clone()],
                root_threshold: 1,
                floor: 0,
                policy_floor: 0,
                arch: target.arch(),
                agent_version: agent_version.parse().map_err(invalid)?,
                base: None,
                now: spec.now,
                grace_secs: 0,
            })
            .map_err(|e| invalid(format!("first bundle {}: {e}", p.display())))?;
            let m = &verified.manifest;
            let first = FirstBundle {
                path: plan::FIRST_BUNDLE.into(),
                model: m.name.to_string(),
                version: m.version.to_string(),
                sequence: m.sequence,
            };
            (Some(files::read(p)?), Some(first))
        }
    };
    ext4::find_tool("mke2fs")?;
    ext4::find_tool("debugfs")?;

    let contents = plan::Contents {
        config: plan::agent_toml(target, &agent_version, &controller, &labels, ca.is_some()),
        unit: plan::systemd_unit(bundle.is_some()),
        agent,
        trust,
        root_pub: root_pem.into_bytes(),
        ca,
        enroll_token: spec.enroll_token.clone(),
        bundle,
    };
    let tree = plan::layout(&contents);
    let need = plan::min_data_size(&tree);
    if data_size < need {
        return Err(invalid(format!("--data-size {data_size} bytes is too small for this tree: at least {need}")));
    }
    if spec.out.exists() && !spec.out.is_dir() {
        return Err(invalid(format!("{}: exists and is not a directory", spec.out.display())));
    }
    Ok(Checked { target, agent_version, controller, labels, data_size, first_bundle, tree })
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::File(FileError { path: path.to_owned(), source })
}

/// Checks everything, then writes `rootfs.tar.zst`, `outpost-data.ext4` and `manifest.json` into
/// `spec.out` (each under a temporary name first, so an interrupted build leaves no torn image).
pub fn build(spec: &ImageSpec) -> Result<ImageManifest, ImageError> {
    let c = check(spec)?;
    let out = &spec.out;
    std::fs::create_dir_all(out).map_err(file_err(out))?;
    // An old manifest must not describe new images if this build stops half way: no manifest, no image.
    let old_manifest = out.join(MANIFEST);
    if let Err(e) = std::fs::remove_file(&old_manifest)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(file_err(&old_manifest)(e));
    }
    let tmp = |name: &str| out.join(format!(".{name}.tmp-{}", std::process::id()));
    let (rootfs_tmp, data_tmp) = (tmp(ROOTFS), tmp(DATA_IMAGE));
    let written = write_images(&c, spec.now, &rootfs_tmp, &data_tmp, &tmp("staging"));
    if written.is_err() {
        let _ = std::fs::remove_file(&rootfs_tmp);
        let _ = std::fs::remove_file(&data_tmp);
    }
    written?;

    let mut images = Vec::new();
    for (from, name) in [(&rootfs_tmp, ROOTFS), (&data_tmp, DATA_IMAGE)] {
        images.push(manifest::sum_file(from, name).map_err(file_err(from))?);
        let to = out.join(name);
        std::fs::rename(from, &to).map_err(file_err(&to))?;
    }
    let m = ImageManifest {
        format: FORMAT,
        target: c.target.triple().into(),
        arch: c.target.arch().as_str().into(),
        agent_version: c.agent_version,
        controller: c.controller.to_string(),
        labels: c.labels.into_iter().collect(),
        first_bundle: c.first_bundle,
        created: spec.now,
        data_size: c.data_size,
        images,
        files: manifest::tree_sums(&c.tree),
    };
    let json = serde_json::to_string_pretty(&m).expect("manifest serialises") + "\n";
    files::write_atomic(&out.join(MANIFEST), json.as_bytes(), None)?;
    Ok(m)
}

fn write_images(c: &Checked, mtime: u64, rootfs: &Path, data: &Path, scratch: &Path) -> Result<(), ImageError> {
    let f = std::fs::File::create(rootfs).map_err(file_err(rootfs))?;
    let mut w = std::io::BufWriter::new(f);
    tar::write(&c.tree, mtime, &mut w).map_err(file_err(rootfs))?;
    let f = w.into_inner().map_err(|e| e.into_error()).map_err(file_err(rootfs))?;
    f.sync_all().map_err(file_err(rootfs))?;
    ext4::write(&c.tree, c.data_size, "outpost-data", scratch, data)?;
    Ok(())
}
