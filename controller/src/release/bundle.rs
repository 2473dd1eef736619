//! `bundle create | sign | verify | inspect`.

use super::ReleaseError;
use super::keys::{read_private, read_public};
use super::payload_size;
use super::reference;
use super::selftest::{self, Inputs, SampleFile};
use crate::files;
use outpost_models::onnx;
use outpost_protocol::bundle::{self as obundle, Inspected};
use outpost_protocol::compress;
use outpost_protocol::manifest::{MANIFEST_FORMAT, Manifest, ModelFormat, Targets};
use outpost_protocol::trust::RootKeys;
use outpost_protocol::verify::{self, DeviceFacts, VerifiedBundle, VerifyRequest};
use outpost_protocol::{Arch, Limits, ModelName, Version};
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Create {
    pub model: PathBuf,
    pub name: ModelName,
    pub version: Version,
    pub sequence: u64,
    pub keys: Vec<PathBuf>,
    pub base: Option<PathBuf>,
    /// `--selftest-input`: the input each file feeds (`None`: the model's only input) and its path.
    pub selftest_inputs: Vec<(Option<String>, PathBuf)>,
    pub selftest_count: usize,
    pub archs: Vec<Arch>,
    pub min_agent: Version,
    pub now: u64,
    pub lifetime_secs: u64,
    pub out: PathBuf,
    /// The limits the bundle must fit: devices' (`Limits::default()`); tests make them small.
    pub limits: Limits,
}

/// Converts the ONNX model to NNEF and probes it with tract, computes self-test vectors, compresses (full
/// or delta), signs, writes. The bundle carries the NNEF model: what the agent loads.
pub fn create(c: &Create) -> Result<Inspected, ReleaseError> {
    if c.keys.is_empty() {
        return Err(ReleaseError::Invalid("bundle create needs at least one --key".into()));
    }
    if c.sequence == 0 {
        return Err(ReleaseError::Invalid("--sequence must be at least 1 (devices start with floor 0)".into()));
    }
    let keys = c.keys.iter().map(|p| read_private(p)).collect::<Result<Vec<_>, _>>()?;
    let model = files::read(&c.model)?;
    let model_err = |source| ReleaseError::Model { path: c.model.display().to_string(), source };
    let probe = onnx::convert(&model).map_err(model_err)?;
    // Before the self-test runs and the compression, which take minutes for a model of hundreds of MB.
    payload_size::before_compressing(
        probe.nnef.len() as u64,
        c.base.is_some(),
        || compress::estimate_full(&probe.nnef),
        &c.limits,
    )?;
    let inputs = if c.selftest_inputs.is_empty() {
        Inputs::Seeded
    } else {
        let files = c
            .selftest_inputs
            .iter()
            .map(|(input, p)| {
                let (input, p) = sample_target(&probe, input.as_deref(), p);
                Ok(SampleFile { input, path: p.display().to_string(), bytes: files::read(&p)? })
            })
            .collect::<Result<Vec<_>, ReleaseError>>()?;
        Inputs::Files(files)
    };
    let vectors = selftest::make_vectors(&probe, &inputs, c.selftest_count)?;
    // With real samples, also record what inputs and answers looked like, for on-device drift (PSI).
    let reference = match &inputs {
        Inputs::Files(files) => {
            let samples = selftest::samples(&probe, files)?;
            reference::profile(&probe, &samples).map_err(model_err)?
        }
        Inputs::Seeded => None,
    };
    // Devices hold the base as the NNEF it was shipped as; the conversion is deterministic, so converting
    // the base ONNX again gives exactly those bytes (a delta against a model devices could not be running
    // is useless; at least it must load).
    let base = match &c.base {
        Some(path) => Some(
            onnx::convert(&files::read(path)?)
                .map_err(|source| ReleaseError::Model { path: path.display().to_string(), source })?
                .nnef,
        ),
        None => None,
    };
    let (payload, bytes) = obundle::prepare_payload(&probe.nnef, base.as_deref(), ModelFormat::Nnef);
    payload_size::after_compressing(payload.compressed_size, base.is_some(), &c.limits)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: c.name.clone(),
        version: c.version,
        sequence: c.sequence,
        payload,
        targets: Targets { archs: c.archs.clone(), min_agent: c.min_agent },
        interface: probe.interface.clone(),
        selftest: Default::default(),
        created: c.now,
        expires: c.now + c.lifetime_secs,
        reference,
    };
    let file = obundle::create(&manifest, &keys, &bytes, &vectors);
    files::write_atomic(&c.out, &file, None)?;
    Ok(obundle::inspect(&file, &Limits::default())?)
}

/// Parses one `--selftest-input`: `NAME=FILE`, or a bare `FILE`. A NAME holding '/' may be an ONNX input
/// name (`gpu_0/data_0`) or part of a path holding '=': [`sample_target`] decides with the model's names.
pub fn sample_arg(arg: &str) -> (Option<String>, PathBuf) {
    match arg.split_once('=') {
        Some((name, path)) if !name.is_empty() => (Some(name.to_owned()), PathBuf::from(path)),
        _ => (None, PathBuf::from(arg)),
    }
}

/// The input a sample file feeds, by the name devices serve (NNEF's spelling), and the file. The release
/// engineer may name an input as the ONNX model does (`gpu_0/data_0=FILE`) or as devices serve it
/// (`gpu_0_data_0=FILE`). A NAME with a path separator that names no input was part of a path holding '='
/// (`runs/a=1.bin`), taken whole; any other unknown NAME stays, for the sample check to name.
fn sample_target(probe: &onnx::Converted, input: Option<&str>, path: &std::path::Path) -> (Option<String>, PathBuf) {
    match input.map(|name| (name, probe.input_index(name))) {
        None => (None, path.to_owned()),
        Some((_, Some(i))) => (Some(probe.interface.inputs[i].name.clone()), path.to_owned()),
        Some((name, None)) if name.contains('/') => (None, PathBuf::from(format!("{name}={}", path.display()))),
        Some((name, None)) => (Some(name.to_owned()), path.to_owned()),
    }
}

/// Adds a signature by `key` to the bundle at `path`, in place.
pub fn sign(path: &std::path::Path, key: &std::path::Path) -> Result<Inspected, ReleaseError> {
    let key = read_private(key)?;
    let bytes = files::read(path)?;
    let signed = obundle::add_signature(&bytes, &key, &Limits::default())?;
    files::write_atomic(path, &signed, None)?;
    Ok(obundle::inspect(&signed, &Limits::default())?)
}

pub fn inspect(path: &std::path::Path) -> Result<Inspected, ReleaseError> {
    Ok(obundle::inspect(&files::read(path)?, &Limits::default())?)
}

#[derive(Debug, Clone)]
pub struct Check {
    pub bundle: PathBuf,
    pub trust: PathBuf,
    pub root_pubs: Vec<PathBuf>,
    pub root_threshold: usize,
    pub floor: u64,
    pub policy_floor: u64,
    pub arch: Arch,
    pub agent_version: Version,
    pub base: Option<PathBuf>,
    pub now: u64,
    pub grace_secs: u64,
}

/// Runs exactly the verification a device runs, with the given device facts.
pub fn check(c: &Check) -> Result<VerifiedBundle, ReleaseError> {
    let roots = RootKeys {
        keys: c.root_pubs.iter().map(|p| read_public(p)).collect::<Result<_, _>>()?,
        threshold: c.root_threshold,
    };
    let policy = files::read(&c.trust)?;
    let bundle = files::read(&c.bundle)?;
    let base = match &c.base {
        Some(path) => Some(device_model(path)?),
        None => None,
    };
    let device = DeviceFacts { arch: c.arch, agent_version: c.agent_version };
    let verified = verify::verify(&VerifyRequest {
        policy: &policy,
        roots: &roots,
        bundle: &bundle,
        now: c.now,
        expiry_grace: c.grace_secs,
        floor: c.floor,
        policy_floor: c.policy_floor,
        device: &device,
        base: base.as_deref(),
        limits: &Limits::default(),
    })?;
    Ok(verified.into_inner())
}

/// A device's model file as it holds it: an ONNX model is converted as `create` converts it; anything else
/// (the device's own NNEF file) is taken as it is, as the device takes its base: as opaque bytes.
fn device_model(path: &std::path::Path) -> Result<Vec<u8>, ReleaseError> {
    let bytes = files::read(path)?;
    Ok(onnx::to_nnef(&bytes).unwrap_or(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::RejectReason;
    use std::path::Path;

    /// `bundle create` of digits v1 with `limits`, into a fresh directory; the outcome and the output path.
    fn create_digits(dir: &str, limits: Limits) -> (Result<Inspected, ReleaseError>, PathBuf) {
        let d = std::env::temp_dir().join(format!("outpost-payload-size-{dir}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (key, ..) = super::super::keys::generate(&d, "release").unwrap();
        let out = d.join("digits.obundle");
        let c = Create {
            model: Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulations/models/digits-v1.onnx"),
            name: ModelName::new("digits").unwrap(),
            version: Version::new(1, 0, 0),
            sequence: 1,
            keys: vec![key],
            base: None,
            selftest_inputs: vec![],
            selftest_count: 1,
            archs: vec![],
            min_agent: Version::new(0, 1, 0),
            now: 1_800_000_000,
            lifetime_secs: 86_400,
            out: out.clone(),
            limits,
        };
        (create(&c), out)
    }

    fn digits_payload_len() -> u64 {
        let model = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../simulations/models/digits-v1.onnx"));
        compress::compress_full(&onnx::to_nnef(&model.unwrap()).unwrap()).len() as u64
    }

    #[test]
    fn a_model_over_devices_payload_limit_is_refused_naming_its_size_and_the_limit_and_nothing_is_written() {
        // Devices' limit scaled down to the committed model: digits compresses to about 100 KB, like VGG-19's
        // 550 MB against the default 512 MiB.
        let limits = Limits { max_payload: 32 << 10, ..Limits::default() };
        let (r, out) = create_digits("early", limits);
        let Err(ReleaseError::Rejected(e)) = &r else { panic!("not refused: {r:?}") };
        assert_eq!(e.reason, RejectReason::OverLimits);
        let want = format!("compresses to about {} bytes", digits_payload_len());
        assert!(e.detail.contains(&want), "{e}");
        assert!(e.detail.contains("devices fetch payloads of at most 32768 bytes (32.0 KiB)"), "{e}");
        assert!(!out.exists(), "nothing is signed");
    }

    #[test]
    fn a_model_just_over_the_limit_is_compressed_and_refused_by_the_exact_size() {
        // Within the estimate's margin: compressed, then refused by the real size.
        let real = digits_payload_len();
        let (r, out) = create_digits("exact", Limits { max_payload: real - 1, ..Limits::default() });
        let Err(ReleaseError::Rejected(e)) = &r else { panic!("not refused: {r:?}") };
        assert!(e.detail.contains(&format!("the compressed payload is {real} bytes")), "{e}");
        assert!(!out.exists(), "nothing is signed");
        let (r, out) = create_digits("fits", Limits { max_payload: real, ..Limits::default() });
        assert_eq!(r.unwrap().manifest.payload.compressed_size, real);
        assert!(out.exists());
    }
}
