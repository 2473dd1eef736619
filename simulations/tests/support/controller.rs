//! `outpost serve` on a free loopback port, and the operator's CLI pointed at it, as the tests drive it.

use super::{Proc, director_key_into, free_port, outpost, outpost_bin, trust_files, wait_port};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Waits until `ok` holds, polling every 200 ms; on a timeout fails with `what` and what `context` tells.
pub fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {secs} s:\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A running controller. Its log goes to `DIR/controller.log` so a failing test can show its tail.
pub struct Controller {
    _proc: Option<Proc>,
    pub url: String,
    pub api_port: u16,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Controller {
    /// `outpost serve` with its data in `DIR/controller-data`, given `args` after the data dir and API. Its
    /// director key is the one the test trust policy names (`trust_files`).
    pub fn start(dir: &Path, args: &[&str]) -> Controller {
        let (api_port, data, log) = (free_port(), dir.join("controller-data"), dir.join("controller.log"));
        director_key_into(&data);
        let child = Command::new(outpost_bin())
            .args(["serve", "--data-dir", &path(&data), "--api", &format!("127.0.0.1:{api_port}")])
            .args(args)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_port(api_port);
        Controller { _proc: Some(Proc(child)), url: format!("http://127.0.0.1:{api_port}"), api_port, data, log }
    }

    /// A controller some other process runs (the quick-start demo's), on `127.0.0.1:API_PORT`.
    pub fn attach(api_port: u16, data: &Path, log: &Path) -> Controller {
        let url = format!("http://127.0.0.1:{api_port}");
        Controller { _proc: None, url, api_port, data: data.to_owned(), log: log.to_owned() }
    }

    /// The usual set-up: mosquitto on `broker_port` and the trust files of `trust_files(dir)`.
    pub fn with_broker(dir: &Path, broker_port: u16) -> Controller {
        let (policy, root_pub) = trust_files(dir);
        let broker = format!("mqtt://127.0.0.1:{broker_port}");
        Controller::start(dir, &["--broker", &broker, "--trust", &path(&policy), "--root-pub", &path(&root_pub)])
    }

    /// `--controller URL --data-dir DIR`, for commands run some other way.
    pub fn remote(&self) -> Vec<String> {
        vec!["--controller".into(), self.url.clone(), "--data-dir".into(), path(&self.data)]
    }

    /// An operator command against this controller, whatever its outcome.
    pub fn cli(&self, args: &[&str]) -> Output {
        let remote = self.remote();
        let all: Vec<&str> = args.iter().copied().chain(remote.iter().map(String::as_str)).collect();
        outpost(&all)
    }

    /// An operator command that must succeed; its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "outpost {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// As `run`, with `-o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.run(&[args, &["-o", "json"][..]].concat())).unwrap()
    }

    /// The device's record (`null` while the controller does not know it yet).
    pub fn device(&self, id: &str) -> Value {
        serde_json::from_slice(&self.cli(&["devices", "show", id, "-o", "json"]).stdout).unwrap_or_default()
    }

    /// The last 3,000 bytes of the controller's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut at = log.len().saturating_sub(3000);
        while !log.is_char_boundary(at) {
            at += 1;
        }
        log[at..].to_owned()
    }

    /// What a failing wait shows: each device as `devices show` prints it, and the log's tail.
    pub fn context(&self, ids: &[&str]) -> String {
        let shown: Vec<String> = ids.iter().map(|id| self.run(&["devices", "show", id])).collect();
        format!("{}\n--- controller log (tail)\n{}", shown.join("\n"), self.log_tail())
    }

    /// Writes `bytes` to `DIR/NAME.obundle` and pushes it; the command's outcome.
    pub fn push_bundle(&self, dir: &Path, name: &str, bytes: Vec<u8>) -> Output {
        let file = dir.join(format!("{name}.obundle"));
        std::fs::write(&file, bytes).unwrap();
        self.cli(&["bundle", "push", &path(&file)])
    }

    /// Waits until `pred` holds for the device list, printing the list on a timeout.
    pub fn wait_devices(&self, what: &str, secs: u64, pred: impl Fn(&[Value]) -> bool) {
        let list = || self.json(&["devices", "list"]);
        wait_until(what, secs, || pred(list().as_array().unwrap()), || self.run(&["devices", "list"]));
    }

    /// Waits until the rollout's phase is `want`; its status then.
    pub fn wait_phase(&self, id: &str, want: &str, secs: u64) -> Value {
        let status = || self.json(&["rollout", "status", id]);
        let is = |r: &Value| r["state"]["phase"] == want || r["state"]["phase"].get(want).is_some();
        wait_until(&format!("{id} becomes {want}"), secs, || is(&status()), || self.run(&["rollout", "status", id]));
        status()
    }
}

pub fn path(p: &Path) -> String {
    p.display().to_string()
}
