//! A model through the real binaries as a release engineer and a device run them: `outpost keys gen`,
//! `trust init`, `bundle create`, `bundle inspect`; then `outpost-agent install` (which self-tests the
//! model) and `outpost-agent run`, serving the local API on a free loopback port.

use super::{Proc, free_port, outpost_bin, tempdir, wait_port, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A model released and served by a real agent; the agent stops when this is dropped.
pub struct Served {
    pub dir: PathBuf,
    /// `outpost bundle inspect -o json` of the bundle.
    pub info: Value,
    /// The model's local API: `http://127.0.0.1:PORT/v2/models/NAME`.
    pub url: String,
    /// A client that returns 4xx and 5xx answers instead of failing on them.
    pub http: ureq::Agent,
    _agent: Proc,
}

/// A committed fixture of `simulations/models/typed/`.
pub fn typed(file: &str) -> PathBuf {
    outpost_simulations::models_dir().join("typed").join(file)
}

/// A fixture file of little-endian FP32 values.
pub fn f32s(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

pub fn d(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `bin args`, which must succeed; its standard output.
pub fn succeeds(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(out.status.success(), "{} {args:?}: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Keys, a trust policy, `bundle create --model MODEL --name NAME … CREATE_ARGS`, install and run; waits
/// until the model is ready.
pub fn release_and_serve(test: &str, name: &str, model: &Path, create_args: &[&str]) -> Served {
    let dir = tempdir(test);
    let (outpost, agent) = (outpost_bin(), outpost_bin().with_file_name("outpost-agent"));
    let (keys, policy, bundle) = (dir.join("keys"), dir.join("trust.policy"), dir.join(format!("{name}.obundle")));

    // The release engineer's commands.
    for key in ["root", "release"] {
        succeeds(&outpost, &["keys", "gen", "--out", &d(&keys), "--name", key]);
    }
    let (root_key, release_pub) = (keys.join("root.key"), keys.join("release.pub"));
    let trust_init = ["trust", "init", "--root-key", &d(&root_key), "--release-pub", &d(&release_pub)];
    succeeds(&outpost, &[&trust_init[..], &["--out", &d(&policy)]].concat());
    let (model, key, out) = (d(model), d(&keys.join("release.key")), d(&bundle));
    let create = ["bundle", "create", "--model", &model, "--name", name, "--version", "1.0.0", "--sequence", "1"];
    succeeds(&outpost, &[&create[..], &["--key", &key, "--out", &out], create_args].concat());
    let info: Value = serde_json::from_str(&succeeds(&outpost, &["bundle", "inspect", &out, "-o", "json"])).unwrap();

    // The device's: install (which self-tests the model), then serve.
    let data = dir.join("device");
    let trust = ["--trust", &d(&policy), "--root-pub", &d(&keys.join("root.pub"))];
    succeeds(&agent, &[&["install", &out, "--data-dir", &d(&data)][..], &trust].concat());
    let port = free_port();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let running = Proc(
        Command::new(&agent)
            .args(["run", "--data-dir", &d(&data), "--listen", &format!("127.0.0.1:{port}")])
            .args(trust)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let url = format!("http://127.0.0.1:{port}/v2/models/{name}");
    let log = || std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    wait_until(
        &format!("{name} ready"),
        60,
        || http.get(format!("{url}/ready")).call().is_ok_and(|r| r.status() == 200),
        log,
    );
    Served { dir, info, url, http, _agent: running }
}
