//! The embedded MQTT broker for the quick start and tests: rumqttd in-process, on loopback only (its
//! sample config binds 0.0.0.0 and opens console and metrics ports: DESIGN.md). Retained messages and
//! sessions live in memory, so the controller republishes every desired state when it starts.
//! Production points the controller at mosquitto or EMQX instead.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
#[error("embedded broker: {0}")]
pub struct BrokerError(String);

/// Starts rumqttd on `listen` (use port 0 for a free port) in its own threads; returns the bound address.
pub fn start(listen: SocketAddr, max_payload: usize) -> Result<SocketAddr, BrokerError> {
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
    let config: rumqttd::Config = toml::from_str(&config).map_err(|e| BrokerError(format!("config: {e}")))?;
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
