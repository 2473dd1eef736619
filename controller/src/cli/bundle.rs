//! `outpost bundle create | sign | verify | inspect | push | list`

use super::{Failure, Output, parse_lifetime};
use crate::daemon::bundles::BundleMeta;
use crate::release::{self, bundle as rb};
use outpost_protocol::bundle::Inspected;
use outpost_protocol::manifest::{Compression, Dim, TensorSpec};
use outpost_protocol::{Arch, Limits, ModelName, Version};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Package an ONNX model: convert it to the NNEF devices run, check it runs, compute self-test vectors,
    /// compress, sign.
    ///
    /// Example: outpost bundle create --model digits.onnx --name digits --version 2.0.0 --sequence 2
    /// --key release.key --selftest-input samples.f32 --out digits-2.0.0.obundle
    Create {
        /// The ONNX model file.
        #[arg(long)]
        model: PathBuf,
        /// The model's name on devices (what applications ask for: /v2/models/NAME).
        #[arg(long)]
        name: ModelName,
        /// The release's version, MAJOR.MINOR.PATCH.
        #[arg(long)]
        version: Version,
        /// Release sequence: must grow with every release of this model (devices refuse lower ones).
        #[arg(long)]
        sequence: u64,
        /// Release private key(s) to sign with.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Make a delta against this ONNX model (the one devices run now, converted again the same way).
        #[arg(long)]
        base: Option<PathBuf>,
        /// Real samples for the self-test vectors and the drift reference: `NAME=FILE` per input (repeat for
        /// several inputs; NAME as the ONNX model spells it or as devices serve it), or just `FILE` for a
        /// single-input model. A file holds raw little-endian values of
        /// the input's own type (BOOL one byte, 0 or 1) at batch 1, sample after sample. Default: seeded
        /// random inputs (refused when the model fails on them: give samples then).
        #[arg(long = "selftest-input", value_name = "[NAME=]FILE")]
        selftest_inputs: Vec<String>,
        /// How many self-test vectors to record.
        #[arg(long = "selftest-count", default_value_t = 4)]
        selftest_count: usize,
        /// Architectures allowed to install (default: any).
        #[arg(long = "arch", value_delimiter = ',')]
        archs: Vec<Arch>,
        /// Oldest agent version that may install.
        #[arg(long = "min-agent", default_value = "0.1.0")]
        min_agent: Version,
        /// How long devices accept the bundle, e.g. 90d.
        #[arg(long, default_value = "90d", value_parser = parse_lifetime)]
        expires: u64,
        /// The bundle file to write (.obundle).
        #[arg(long)]
        out: PathBuf,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Add a signature to a bundle (for k-of-n thresholds).
    ///
    /// Example: outpost bundle sign digits-2.0.0.obundle --key release-2.key
    Sign {
        /// The bundle file (signed in place).
        bundle: PathBuf,
        /// A release private key.
        #[arg(long)]
        key: PathBuf,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Verify a bundle exactly as a device would; exit 1 naming the reason if it would be refused (with
    /// -o json, `{"ok": false, "reason": CODE, "detail": ...}` on standard output too).
    ///
    /// Example: outpost bundle verify digits-2.0.0.obundle --trust trust.policy --root-pub root.pub --floor 1
    Verify {
        /// The bundle file.
        bundle: PathBuf,
        /// The trust policy devices hold.
        #[arg(long)]
        trust: PathBuf,
        /// The root public key(s) devices pin.
        #[arg(long = "root-pub", required = true)]
        root_pubs: Vec<PathBuf>,
        /// How many root keys must have signed the policy.
        #[arg(long = "root-threshold", default_value_t = 1)]
        root_threshold: usize,
        /// The device's release floor (highest committed sequence).
        #[arg(long, default_value_t = 0)]
        floor: u64,
        /// The highest trust policy version the device already accepted.
        #[arg(long = "policy-floor", default_value_t = 0)]
        policy_floor: u64,
        /// The device's architecture (default: this machine's).
        #[arg(long)]
        arch: Option<Arch>,
        /// The device's agent version (default: this release's).
        #[arg(long = "agent-version")]
        agent_version: Option<Version>,
        /// The device's current model, for delta bundles: its NNEF file, or the ONNX it was packaged from.
        #[arg(long)]
        base: Option<PathBuf>,
        /// Verify as of this Unix time instead of now.
        #[arg(long)]
        now: Option<u64>,
        /// Tolerance on expiry for devices with lagging clocks, e.g. 1d.
        #[arg(long, default_value = "0s", value_parser = parse_lifetime)]
        grace: u64,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Upload a bundle to the controller, which verifies it before storing it.
    ///
    /// Example: outpost bundle push digits-2.0.0.obundle --controller http://127.0.0.1:8480
    Push {
        /// The bundle file.
        bundle: PathBuf,
        #[command(flatten)]
        remote: super::client::Remote,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Bundles the controller holds, oldest push first.
    ///
    /// Example: outpost bundle list -o json
    List {
        #[command(flatten)]
        remote: super::client::Remote,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Show a bundle's manifest and signatures (nothing is verified).
    ///
    /// Example: outpost bundle inspect digits-2.0.0.obundle -o json
    Inspect {
        /// The bundle file.
        bundle: PathBuf,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        Command::Create {
            model,
            name,
            version,
            sequence,
            keys,
            base,
            selftest_inputs,
            selftest_count,
            archs,
            min_agent,
            expires,
            out,
            output,
        } => {
            let b = rb::create(&rb::Create {
                model,
                name,
                version,
                sequence,
                keys,
                base,
                selftest_inputs: selftest_inputs.iter().map(|s| rb::sample_arg(s)).collect(),
                selftest_count,
                archs,
                min_agent,
                now: release::now(),
                lifetime_secs: expires,
                out: out.clone(),
                limits: Limits::default(),
            })?;
            let m = &b.manifest;
            if output == Output::Json {
                let mut v = json(&rb::inspect(&out)?);
                v["file"] = out.display().to_string().into();
                super::json::print(&v);
                return Ok(());
            }
            println!(
                "{} {} (sequence {}) → {}: {} payload {} bytes (model {} bytes), {} self-test vector(s), digest {}",
                m.name,
                m.version,
                m.sequence,
                out.display(),
                compression(&m.payload.compression),
                m.payload.compressed_size,
                m.payload.model_size,
                m.selftest.vectors,
                b.digest
            );
            Ok(())
        }
        Command::Sign { bundle, key, output } => {
            let b = rb::sign(&bundle, &key)?;
            let ids: Vec<String> = b.signatures.iter().map(|s| s.key_id.to_string()).collect();
            if output == Output::Json {
                super::json::print(&serde_json::json!({"file": bundle.display().to_string(), "signatures": ids}));
                return Ok(());
            }
            println!("{}: signed by {}", bundle.display(), ids.join(", "));
            Ok(())
        }
        Command::Verify {
            bundle,
            trust,
            root_pubs,
            root_threshold,
            floor,
            policy_floor,
            arch,
            agent_version,
            base,
            now,
            grace,
            output,
        } => {
            let arch = match arch.or_else(Arch::current) {
                Some(a) => a,
                None => return Err(Failure::Error("this machine's architecture is unsupported: pass --arch".into())),
            };
            let agent_version = agent_version.unwrap_or_else(this_version);
            let checked = rb::check(&rb::Check {
                bundle: bundle.clone(),
                trust,
                root_pubs,
                root_threshold,
                floor,
                policy_floor,
                arch,
                agent_version,
                base,
                now: now.unwrap_or_else(release::now),
                grace_secs: grace,
            });
            let v = match checked {
                Err(release::ReleaseError::Rejected(r)) if output == Output::Json => {
                    super::json::print(&serde_json::json!({
                        "ok": false, "file": bundle.display().to_string(), "reason": r.reason.code(), "detail": r.detail,
                    }));
                    return Err(release::ReleaseError::Rejected(r).into());
                }
                other => other?,
            };
            let m = &v.manifest;
            let ids: Vec<String> = v.signers.iter().map(|k| k.to_string()).collect();
            if output == Output::Json {
                super::json::print(&serde_json::json!({
                    "ok": true,
                    "file": bundle.display().to_string(),
                    "bundle_sha256": v.bundle_digest.to_hex(),
                    "name": m.name.as_str(),
                    "version": m.version.to_string(),
                    "sequence": m.sequence,
                    "signers": ids,
                    "policy_version": v.policy_version,
                    "model_sha256": m.payload.model_sha256.to_hex(),
                    "model_bytes": v.model.len(),
                    "as_device": {"arch": arch.as_str(), "agent_version": agent_version.to_string(), "floor": floor, "policy_floor": policy_floor},
                }));
                return Ok(());
            }
            println!(
                "ok: {} {} (sequence {}) signed by {} [policy v{}], model sha256 {} ({} bytes)",
                m.name,
                m.version,
                m.sequence,
                ids.join(", "),
                v.policy_version,
                m.payload.model_sha256,
                v.model.len()
            );
            Ok(())
        }
        Command::Push { bundle, remote, output } => {
            let bytes = crate::files::read(&bundle).map_err(|e| Failure::Error(e.to_string()))?;
            let meta = remote.post_bytes("/api/v1/bundles", &bytes)?;
            if output == Output::Json {
                let meta: BundleMeta = serde_json::from_value(meta)
                    .map_err(|e| Failure::Error(format!("the controller's answer to the push: {e}")))?;
                super::json::print(&meta);
                return Ok(());
            }
            println!(
                "pushed {}@{} (sequence {}, {}, {} bytes) as {}",
                meta["name"].as_str().unwrap_or("?"),
                meta["version"].as_str().unwrap_or("?"),
                meta["sequence"],
                meta["compression"].as_str().unwrap_or("?"),
                meta["size"],
                meta["digest"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        Command::List { remote, output } => {
            let list = remote.get("/api/v1/bundles")?;
            let mut list: Vec<BundleMeta> = serde_json::from_value(list)
                .map_err(|e| Failure::Error(format!("the controller's bundle list: {e}")))?;
            list.sort_by(|a, b| (a.pushed_at, &a.name, a.sequence).cmp(&(b.pushed_at, &b.name, b.sequence)));
            match output {
                Output::Json => super::json::print(&list),
                Output::Table => print!("{}", list_table(&list, super::now())),
            }
            Ok(())
        }
        Command::Inspect { bundle, output } => {
            let b = rb::inspect(&bundle)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&json(&b)).expect("json")),
                Output::Table => print_table(&b),
            }
            Ok(())
        }
    }
}

/// `bundle list` for people: columns as wide as their widest cell, numbers right-aligned, the digest's
/// first 12 hex digits (enough for `--bundle`), when it was pushed.
pub fn list_table(list: &[BundleMeta], now: u64) -> String {
    let head =
        ["BUNDLE", "SEQUENCE", "KIND", "BYTES", "ARCH", "SIGNERS", "PUSHED", "DIGEST"].map(String::from).to_vec();
    let rows = list.iter().map(|b| {
        vec![
            format!("{}@{}", b.name, b.version),
            b.sequence.to_string(),
            b.compression.clone(),
            b.size.to_string(),
            if b.archs.is_empty() { "any".into() } else { b.archs.join(",") },
            b.signers.len().to_string(),
            super::table::ago(b.pushed_at, now),
            b.digest.chars().take(12).collect(),
        ]
    });
    super::table::render(std::iter::once(head).chain(rows).collect(), &[1, 3, 5])
}

fn this_version() -> Version {
    env!("CARGO_PKG_VERSION").parse().expect("crate version is semver")
}

fn compression(c: &Compression) -> String {
    match c {
        Compression::Full => "full".into(),
        Compression::Delta { base_sha256, .. } => format!("delta(base {})", base_sha256.short()),
    }
}

fn shape(t: &TensorSpec) -> String {
    let dims: Vec<String> = t
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbolic(s) => s.clone(),
        })
        .collect();
    format!("{} {} [{}]", t.name, t.dtype.as_str(), dims.join(","))
}

fn json(b: &Inspected) -> serde_json::Value {
    let m = &b.manifest;
    let p = &m.payload;
    let (kind, base) = match &p.compression {
        Compression::Full => ("full", None),
        Compression::Delta { base_sha256, .. } => ("delta", Some(base_sha256.to_hex())),
    };
    serde_json::json!({
        "bundle_sha256": b.digest.to_hex(),
        "name": m.name.as_str(),
        "version": m.version.to_string(),
        "sequence": m.sequence,
        "created": m.created,
        "expires": m.expires,
        "payload": {
            "compression": kind, "base_sha256": base,
            "compressed_size": p.compressed_size, "compressed_sha256": p.compressed_sha256.to_hex(),
            "model_size": p.model_size, "model_sha256": p.model_sha256.to_hex(),
            "bytes_in_file": b.payload_len,
        },
        "targets": {
            "archs": m.targets.archs.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            "min_agent": m.targets.min_agent.to_string(),
        },
        "inputs": m.interface.inputs.iter().map(shape).collect::<Vec<_>>(),
        "outputs": m.interface.outputs.iter().map(shape).collect::<Vec<_>>(),
        "selftest_vectors": m.selftest.vectors,
        "selftest_bytes": m.selftest.size,
        "reference_samples": m.reference.as_ref().map(|r| r.samples),
        "signatures": b.signatures.iter().map(|s| s.key_id.to_string()).collect::<Vec<_>>(),
    })
}

fn print_table(b: &Inspected) {
    let m = &b.manifest;
    let p = &m.payload;
    let archs: Vec<&str> = m.targets.archs.iter().map(|a| a.as_str()).collect();
    let sigs: Vec<String> = b.signatures.iter().map(|s| s.key_id.to_string()).collect();
    println!("model        {} {} (sequence {})", m.name, m.version, m.sequence);
    println!("bundle       sha256 {}", b.digest);
    println!("payload      {} {} bytes → model {} bytes", compression(&p.compression), p.compressed_size, p.model_size);
    println!("model sha256 {}", p.model_sha256);
    println!(
        "targets      {} (agent ≥ {})",
        if archs.is_empty() { "any arch".into() } else { archs.join(",") },
        m.targets.min_agent
    );
    for t in &m.interface.inputs {
        println!("input        {}", shape(t));
    }
    for t in &m.interface.outputs {
        println!("output       {}", shape(t));
    }
    println!("self-tests   {} vector(s), {} bytes", m.selftest.vectors, m.selftest.size);
    match &m.reference {
        Some(r) => println!("reference    drift profile of {} sample(s)", r.samples),
        None => println!("reference    none (pass --selftest-input to record one)"),
    }
    println!("valid        {} → {}", m.created, m.expires);
    println!("signed by    {}", if sigs.is_empty() { "nobody".into() } else { sigs.join(", ") });
}
