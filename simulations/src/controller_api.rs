//! The demo and the load run talk to the controller the way the CLI does: its HTTP API with the operator
//! token. Answers are read into the controller's own types.

use outpost_controller::daemon::registry::DeviceRecord;
use outpost_controller::rollout::{AuditEntry, Rollout};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct Controller {
    base: String,
    token: String,
    http: ureq::Agent,
}

impl Controller {
    /// Reads the token `outpost serve` made in its data directory at first start.
    pub fn connect(api: SocketAddr, data_dir: &Path) -> anyhow::Result<Controller> {
        let path = data_dir.join("api-token");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let token = loop {
            match std::fs::read_to_string(&path) {
                Ok(t) if !t.trim().is_empty() => break t.trim().to_owned(),
                _ if std::time::Instant::now() > deadline => anyhow::bail!("no API token in {}", path.display()),
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        };
        let http = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Ok(Controller { base: format!("http://{api}"), token, http })
    }

    fn read<T: DeserializeOwned>(
        &self,
        what: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut r = r.map_err(|e| anyhow::anyhow!("{what}: cannot reach the controller: {e}"))?;
        let status = r.status();
        let body = outpost_controller::cli::client::answer_json(&mut r);
        if !status.is_success() {
            let body = body.unwrap_or_default();
            anyhow::bail!("{what}: HTTP {status}: {}", body["error"].as_str().unwrap_or("(no reason given)"));
        }
        let body = body.map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        serde_json::from_value(body).map_err(|e| anyhow::anyhow!("{what}: unexpected answer: {e}"))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let auth = format!("Bearer {}", self.token);
        self.read(path, self.http.get(&format!("{}{path}", self.base)).header("Authorization", &auth).call())
    }

    pub fn push_bundle(&self, bytes: &[u8]) -> anyhow::Result<serde_json::Value> {
        let auth = format!("Bearer {}", self.token);
        let url = format!("{}/api/v1/bundles", self.base);
        self.read("bundle push", self.http.post(&url).header("Authorization", &auth).send(bytes))
    }

    /// `body` is what `outpost rollout start` sends (`daemon::rollouts::StartRequest`).
    pub fn start_rollout(&self, body: &serde_json::Value) -> anyhow::Result<Rollout> {
        let auth = format!("Bearer {}", self.token);
        let url = format!("{}/api/v1/rollouts", self.base);
        self.read("rollout start", self.http.post(&url).header("Authorization", &auth).send_json(body))
    }

    pub fn rollout(&self, id: &str) -> anyhow::Result<Rollout> {
        self.get(&format!("/api/v1/rollouts/{id}"))
    }

    pub fn devices(&self) -> anyhow::Result<Vec<DeviceRecord>> {
        self.get("/api/v1/devices")
    }

    /// Every device, and the listing's size in bytes as the controller sent it (its `Content-Length`; 0
    /// when absent): the listing grows with the fleet, each device's models and their update events, and
    /// the load run reports it.
    pub fn devices_sized(&self) -> anyhow::Result<(Vec<DeviceRecord>, u64)> {
        let auth = format!("Bearer {}", self.token);
        let r = self.http.get(&format!("{}/api/v1/devices", self.base)).header("Authorization", &auth).call();
        let size = r.as_ref().ok().and_then(|r| r.headers().get("content-length")?.to_str().ok()?.parse().ok());
        Ok((self.read("/api/v1/devices", r)?, size.unwrap_or(0)))
    }

    /// The rollout decisions of the audit log, in order (the log also records bundle pushes and
    /// operator actions of other shapes, left out here).
    pub fn audit(&self) -> anyhow::Result<Vec<AuditEntry>> {
        let log: Vec<serde_json::Value> = self.get("/api/v1/audit")?;
        Ok(log.into_iter().filter_map(|n| serde_json::from_value(n["entry"].clone()).ok()).collect())
    }
}
