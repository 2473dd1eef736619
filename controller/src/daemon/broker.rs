//! The embedded MQTT broker for the quick start and tests: rumqttd in-process, on loopback only (its
//! sample config binds 0.0.0.0 and opens console and metrics ports: DESIGN.md). Retained messages and
//! sessions live in memory, so the controller republishes every desired state when it starts.
//! Production points the controller at mosquitto or EMQX instead.
//!
//! What it can enforce (rumqttd 0.20, read from its source): authentication only, by a callback given
//! the client id, username and password of each CONNECT; no per-topic authorization at all (no ACLs),
//! and a client that connects with a taken client id disconnects the one that had it. So:
//! - the controller's client id and username need the controller's password (random, made at first
//!   start in `<data>/broker-password`, mode 0600): no other process can take its place or knock it off;
//! - every other client logs in with any username (rumqttd refuses a CONNECT without a login once it
//!   authenticates; agents send their client id): a name, not a proof;
//! - it trusts every process on this host beyond that: a local process can connect as any device, publish
//!   on any topic (a device's hello, or a desired state to a device) and read any topic, enrollment
//!   requests and their tokens included. docs/security.md says so; use mosquitto for devices on a network.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
#[error("embedded broker: {0}")]
pub struct BrokerError(String);

/// The one client the embedded broker authenticates: the controller.
#[derive(Clone)]
pub struct Controller {
    /// Its client id, which is also its username.
    pub client_id: String,
    pub password: String,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// Whether a CONNECT may pass: the controller's name (as client id or username) only with both and its
/// password; anyone else with a non-empty client id.
pub fn admits(controller: &Controller, client_id: &str, username: &str, password: &str) -> bool {
    if client_id == controller.client_id || username == controller.client_id {
        return client_id == username && super::api::same_secret(password, &controller.password);
    }
    !client_id.is_empty()
}

/// The controller's broker password in `<data>/broker-password`, made at first start (random, 0600).
pub fn password(data_dir: &std::path::Path) -> Result<String, BrokerError> {
    let path = data_dir.join("broker-password");
    if let Ok(p) = std::fs::read_to_string(&path) {
        return Ok(p.trim().to_owned());
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| BrokerError(format!("no OS randomness for the broker password: {e}")))?;
    let password = hex::encode(bytes);
    crate::files::write_atomic(&path, password.as_bytes(), Some(0o600)).map_err(|e| BrokerError(e.to_string()))?;
    Ok(password)
}

/// Starts rumqttd on `listen` (use port 0 for a free port) in its own threads; returns the bound address.
pub fn start(listen: SocketAddr, max_payload: usize, controller: Controller) -> Result<SocketAddr, BrokerError> {
    let listen = if listen.port() == 0 {
        // rumqttd binds by itself and does not report the port: pick a free one first.
        let probe = std::net::TcpListener::bind(listen).map_err(|e| BrokerError(format!("{listen}: {e}")))?;
        probe.local_addr().map_err(|e| BrokerError(e.to_string()))?
    } else {
        listen
    };
    if !listen.ip().is_loopback() {
        return Err(BrokerError(format!(
            "{listen} is not a loopback address; the embedded broker has no TLS and no ACLs, use mosquitto for a network"
        )));
    }
    let config = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "outpost-embedded"
listen = "{listen}"
next_connection_delay_ms = 1
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = {max_payload}
    max_inflight_count = 100
    dynamic_filters = true
"#
    );
    let mut config: rumqttd::Config = toml::from_str(&config).map_err(|e| BrokerError(format!("config: {e}")))?;
    for server in config.v4.iter_mut().flat_map(|v4| v4.values_mut()) {
        let controller = controller.clone();
        server.set_auth_handler(move |client_id: String, username: String, password: String| {
            let ok = admits(&controller, &client_id, &username, &password);
            if !ok {
                tracing::warn!(client_id, username, "embedded broker: connection refused");
            }
            async move { ok }
        });
    }
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("outpost-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "the embedded broker stopped");
            }
        })
        .map_err(|e| BrokerError(e.to_string()))?;
    // Wait until it accepts connections, so callers can connect right away.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(listen).is_err() {
        if std::time::Instant::now() > deadline {
            return Err(BrokerError(format!("did not start listening on {listen}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(listen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_controller_may_use_its_name_and_others_log_in_under_their_own() {
        let c = Controller { client_id: "outpost-controller".into(), password: "s3cret".into() };
        assert!(admits(&c, "outpost-controller", "outpost-controller", "s3cret"));
        assert!(!admits(&c, "outpost-controller", "outpost-controller", "guess"));
        assert!(!admits(&c, "outpost-controller", "dev-1", ""), "the controller's client id under another name");
        assert!(!admits(&c, "dev-1", "outpost-controller", "s3cret"), "its name under another client id");
        assert!(admits(&c, "dev-1", "dev-1", ""));
        assert!(admits(&c, "dev-1", "", ""), "devices and tools of the quick start send no credentials");
        assert!(!admits(&c, "", "", ""));
    }
}
