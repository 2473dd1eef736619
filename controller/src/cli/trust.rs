//! `outpost trust init | inspect | rotate-root | push | status`

use super::audit::utc;
use super::client::Remote;
use super::{Failure, Output, parse_lifetime};
use crate::files;
use crate::release::{self, keys::TrustInit, roots::RotateRoot};
use outpost_protocol::messages::Message;
use outpost_protocol::{Limits, codec, root, trust};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Write a trust policy naming the release keys, signed by the root key(s).
    ///
    /// Example: outpost trust init --root-key keys/root.key --release-pub keys/release-1.pub --out trust.policy
    Init {
        /// Root private key(s) that sign the policy: the current root's (after a rotation, the new root's).
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        /// Release public key(s) allowed to sign manifests; a key left out is revoked once devices take
        /// the policy.
        #[arg(long = "release-pub", required = true)]
        release_pubs: Vec<PathBuf>,
        /// The controller's director public key(s) (`<data-dir>/director.pub` of `outpost serve`): devices
        /// take a revert or a removal only when one of them signed it. Without one, devices refuse every
        /// revert and removal from the fleet.
        #[arg(long = "director-pub")]
        director_pubs: Vec<PathBuf>,
        /// Distinct release signatures a manifest needs (k of n).
        #[arg(long, default_value_t = 1)]
        threshold: u8,
        /// Policy version; raise it with every rotation (devices take only a higher one).
        #[arg(long = "policy-version", default_value_t = 1)]
        version: u64,
        /// Lifetime, e.g. 365d.
        #[arg(long, default_value = "365d", value_parser = parse_lifetime)]
        expires: u64,
        /// The policy file to write.
        #[arg(long)]
        out: PathBuf,
        /// table for people, json for scripts: the policy written, as `trust inspect` shows it, with its
        /// `file` (docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Print a trust policy's or root document's contents (signatures are not checked).
    ///
    /// Example: outpost trust inspect trust.policy -o json
    Inspect {
        /// A trust policy or a root document (root-N.root).
        file: PathBuf,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Write the next root document (root-N.root in --chain), signed by the current root and the new one.
    ///
    /// Example: outpost trust rotate-root --image-root-pub keys/root.pub --chain roots --root-key
    /// keys/root.key --new-key keys/root-2.key
    RotateRoot {
        /// The root public key(s) devices pin in their image (root v1).
        #[arg(long = "image-root-pub", required = true)]
        image_root_pubs: Vec<PathBuf>,
        /// How many image root keys must sign (the devices' `root_threshold`).
        #[arg(long = "image-root-threshold", default_value_t = 1)]
        image_root_threshold: usize,
        /// The directory of root documents (root-2.root, root-3.root, …); the new one is written there.
        #[arg(long)]
        chain: PathBuf,
        /// Private keys of the current root that sign the new one (at least its threshold).
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        /// Private keys of the new root: listed in it, and each signs it.
        #[arg(long = "new-key", required = true)]
        new_keys: Vec<PathBuf>,
        /// Public keys also listed in the new root that do not sign now (e.g. a backup kept offline).
        #[arg(long = "new-pub")]
        new_pubs: Vec<PathBuf>,
        /// Distinct new root keys needed to sign a policy or the next root.
        #[arg(long, default_value_t = 1)]
        threshold: u8,
        /// Lifetime of the new root, e.g. 1825d: after it, devices take no policy it signs.
        #[arg(long, default_value = "1825d", value_parser = parse_lifetime)]
        expires: u64,
        /// table for people, json for scripts: the root document written, as `trust inspect` shows it,
        /// with its `file` (docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// Publish a trust policy (and the root chain) to the fleet through the controller.
    ///
    /// Example: outpost trust push --policy trust-2.policy --chain roots
    Push {
        /// The signed trust policy to publish.
        #[arg(long)]
        policy: PathBuf,
        /// The root chain directory, if the root was ever rotated.
        #[arg(long)]
        chain: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
    /// The fleet's current root and policy, and which versions devices attest to.
    ///
    /// Example: outpost trust status
    Status {
        #[command(flatten)]
        remote: Remote,
        /// table for people, json for scripts (documented shapes: docs/cli-json.md).
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Output,
    },
}

pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        Command::Init { root_keys, release_pubs, director_pubs, threshold, version, expires, out, output } => {
            let now = release::now();
            let p = release::keys::trust_init(&TrustInit {
                root_keys,
                release_pubs,
                director_pubs,
                threshold,
                version,
                now,
                lifetime_secs: expires,
                out: out.clone(),
            })?;
            match output {
                Output::Json => super::json::print(&written(&out)?),
                Output::Table => println!(
                    "trust policy v{} → {}: {} of {} release key(s), expires {} UTC",
                    p.version,
                    out.display(),
                    p.threshold,
                    p.release_keys.len(),
                    utc(p.expires)
                ),
            }
            if p.director_keys.is_empty() {
                eprintln!(
                    "note: no --director-pub: devices will refuse every revert and removal from the fleet \
                     (name the controller's <data-dir>/director.pub to allow them)"
                );
            }
            Ok(())
        }
        Command::Inspect { file, output } => inspect(&file, output),
        Command::RotateRoot {
            image_root_pubs,
            image_root_threshold,
            chain,
            root_keys,
            new_keys,
            new_pubs,
            threshold,
            expires,
            output,
        } => {
            let (path, doc) = release::roots::rotate_root(&RotateRoot {
                image_root_pubs,
                image_root_threshold,
                chain,
                root_keys,
                new_keys,
                new_pubs,
                threshold,
                now: release::now(),
                lifetime_secs: expires,
            })?;
            match output {
                Output::Json => super::json::print(&written(&path)?),
                Output::Table => println!(
                    "root v{} → {}: {} of {} key(s), expires {} UTC; sign a policy with the new keys, then `outpost \
                     trust push`",
                    doc.version,
                    path.display(),
                    doc.threshold,
                    doc.keys.len(),
                    utc(doc.expires)
                ),
            }
            Ok(())
        }
        Command::Push { policy, chain, remote, output } => {
            let update = release::roots::trust_update(&policy, chain.as_deref())?;
            let status = remote.post_bytes("/api/v1/trust", &codec::encode(&Message::Trust(update)))?;
            print_status(&status, output, "pushed");
            Ok(())
        }
        Command::Status { remote, output } => {
            let status = remote.get("/api/v1/trust")?;
            print_status(&status, output, "fleet trust");
            Ok(())
        }
    }
}

/// The file `init` or `rotate-root` just wrote, read back as `trust inspect -o json` shows it, with its path:
/// what a script reads is what is on disk.
fn written(file: &std::path::Path) -> Result<serde_json::Value, Failure> {
    let mut json = document(file)?;
    json["file"] = file.display().to_string().into();
    Ok(json)
}

/// A trust policy's or root document's contents (signatures unchecked), as `trust inspect -o json` prints
/// them.
fn document(file: &std::path::Path) -> Result<serde_json::Value, Failure> {
    let bytes = files::read(file).map_err(|e| Failure::Error(e.to_string()))?;
    let limits = Limits::default();
    Ok(if bytes.starts_with(root::ROOT_MAGIC) {
        let (d, sigs) = root::read_root_unverified(&bytes, &limits).map_err(|r| Failure::Rejected(r.to_string()))?;
        let keys: Vec<String> = d.keys.iter().map(|k| outpost_protocol::keys::KeyId::of_bytes(k).to_string()).collect();
        serde_json::json!({
            "kind": "root", "version": d.version, "created": d.created, "expires": d.expires,
            "threshold": d.threshold, "keys": keys,
            "signed_by": sigs.iter().map(|s| s.key_id.to_string()).collect::<Vec<_>>(),
        })
    } else {
        let (p, sigs) = trust::read_policy_unverified(&bytes, &limits).map_err(|r| Failure::Rejected(r.to_string()))?;
        serde_json::json!({
            "kind": "policy", "version": p.version, "created": p.created, "expires": p.expires,
            "threshold": p.threshold,
            "release_keys": p.release_key_ids().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "director_keys": p.director_keys.iter().map(|k| outpost_protocol::keys::KeyId::of_bytes(k).to_string()).collect::<Vec<_>>(),
            "signed_by": sigs.iter().map(|s| s.key_id.to_string()).collect::<Vec<_>>(),
        })
    })
}

fn inspect(file: &std::path::Path, output: Output) -> Result<(), Failure> {
    let json = document(file)?;
    match output {
        Output::Json => println!("{json}"),
        Output::Table => {
            let list = |v: &serde_json::Value| {
                v.as_array().into_iter().flatten().filter_map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            };
            let (keys_label, keys) =
                if json["kind"] == "root" { ("root keys", &json["keys"]) } else { ("release", &json["release_keys"]) };
            println!("{:<11} {}", json["kind"].as_str().unwrap_or("?"), json["version"]);
            let at = |k: &str| json[k].as_u64().map_or_else(|| "?".into(), |t| format!("{} UTC", utc(t)));
            println!("expires     {} (created {})", at("expires"), at("created"));
            println!("threshold   {} of {}", json["threshold"], keys.as_array().map_or(0, |a| a.len()));
            println!("{keys_label:<11} {}", list(keys));
            if json["kind"] == "policy" {
                let directors = list(&json["director_keys"]);
                println!(
                    "director    {}",
                    if directors.is_empty() { "none (no revert or removal is taken)" } else { &directors }
                );
            }
            println!("signed by   {}", list(&json["signed_by"]));
        }
    }
    Ok(())
}

/// Prints the controller's trust status (`GET /api/v1/trust`, also the answer to a push).
fn print_status(s: &serde_json::Value, output: Output, what: &str) {
    if output == Output::Json {
        println!("{s}");
        return;
    }
    let keys = |v: &serde_json::Value| v.as_array().map_or(0, |a| a.len());
    let root = &s["root"];
    let expires = match root["expires"].as_u64() {
        Some(e) => format!("expires {} UTC", utc(e)),
        None => "the image's root, no expiry".into(),
    };
    println!("{what}: root v{} ({} of {} key(s), {expires})", root["version"], root["threshold"], keys(&root["keys"]));
    let p = &s["policy"];
    if p.is_null() {
        println!("policy      none: push one with `outpost trust push`");
    } else {
        println!(
            "policy      v{} ({} of {} release key(s), expires {} UTC) from {}",
            p["version"],
            p["threshold"],
            keys(&p["release_keys"]),
            utc(p["expires"].as_u64().unwrap_or(0)),
            s["source"].as_str().unwrap_or("?")
        );
    }
    let mut parts: Vec<String> = s["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| format!("root v{} policy v{}: {}", d["root_version"], d["policy_version"], d["devices"]))
        .collect();
    parts.push(format!("no signed report: {}", s["unattested"]));
    println!("devices     {}", parts.join("; "));
    for r in s["refused"].as_array().into_iter().flatten() {
        println!(
            "refused     {}: {}: {}",
            r["device"].as_str().unwrap_or("?"),
            r["reason"].as_str().unwrap_or("?"),
            r["detail"].as_str().unwrap_or("")
        );
    }
}
