//! Wiring of `outpost serve`: store, token, broker, fleet ingest, API.

use super::api::{self, Api};
use super::config::{Broker, ServeConfig};
use super::fleet::Fleet;
use super::fleet_trust::FleetTrust;
use super::store::Store;
use outpost_protocol::keys;
use outpost_protocol::root::TrustedRoot;
use rumqttc::{MqttOptions, TlsConfiguration, Transport};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Reads the API token, making one (random, mode 0600) at first start.
pub fn token(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join("api-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(t.trim().to_owned());
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness for the API token: {e}"))?;
    let token = hex::encode(bytes);
    crate::files::write_atomic(&path, token.as_bytes(), Some(0o600))?;
    Ok(token)
}

/// The root devices pin and the configured policy; the pushed trust on top (`fleet_trust.rs`).
fn trust(cfg: &ServeConfig) -> anyhow::Result<FleetTrust> {
    let mut roots = Vec::new();
    for p in &cfg.root_pubs {
        let pem = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        roots.push(keys::public_key_from_pem(&pem, &p.display().to_string())?);
    }
    let policy = match &cfg.trust_policy {
        Some(path) => Some(std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?),
        None => None,
    };
    if policy.is_some() && roots.is_empty() {
        anyhow::bail!("a trust policy needs at least one root public key (trust.root_pub)");
    }
    let pinned = (!roots.is_empty()).then(|| TrustedRoot::pinned(roots, cfg.root_threshold));
    Ok(FleetTrust::load(&cfg.data_dir, pinned, policy))
}

fn mqtt_options(cfg: &ServeConfig, broker_addr: Option<std::net::SocketAddr>) -> anyhow::Result<MqttOptions> {
    let (host, port, tls) = match (&cfg.broker, broker_addr) {
        (_, Some(addr)) => (addr.ip().to_string(), addr.port(), None),
        (Broker::External { url, ca, client_cert, client_key }, None) => {
            let (tls, rest) = match url.strip_prefix("mqtts://") {
                Some(r) => (true, r),
                None => (false, url.trim_start_matches("mqtt://")),
            };
            let (host, port) = rest
                .rsplit_once(':')
                .map(|(h, p)| (h.to_owned(), p.parse().unwrap_or(1883)))
                .unwrap_or((rest.to_owned(), if tls { 8883 } else { 1883 }));
            let tls = if tls {
                let read = |p: &Option<std::path::PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
                    p.as_ref()
                        .map(|p| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display())))
                        .transpose()
                };
                let ca = read(ca)?.ok_or_else(|| anyhow::anyhow!("mqtts:// needs broker.ca"))?;
                let client_auth = match (read(client_cert)?, read(client_key)?) {
                    (Some(c), Some(k)) => Some((c, k)),
                    _ => None,
                };
                let _ = rustls_provider();
                Some(TlsConfiguration::Simple { ca, alpn: None, client_auth })
            } else {
                None
            };
            (host, port, tls)
        }
        (Broker::Embedded(_), None) => anyhow::bail!("embedded broker not started"),
    };
    let mut o = MqttOptions::new(cfg.client_id.clone(), host, port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(2 << 20, 2 << 20);
    o.set_request_channel_capacity(1024);
    if let Some(tls) = tls {
        o.set_transport(Transport::tls_with_config(tls));
    }
    Ok(o)
}

/// The enrollment broker's options when `[enroll] broker` names one: `[broker]`'s TLS files, and a random
/// client id, because anonymous enrolling clients share that broker and one that knew the id could take
/// the controller's session there.
fn enroll_mqtt_options(cfg: &ServeConfig) -> anyhow::Result<Option<MqttOptions>> {
    let (Some(url), Broker::External { ca, client_cert, client_key, .. }) = (&cfg.enroll_broker, &cfg.broker) else {
        return Ok(None);
    };
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no OS randomness for a client id: {e}"))?;
    let enroll = ServeConfig {
        broker: Broker::External {
            url: url.clone(),
            ca: ca.clone(),
            client_cert: client_cert.clone(),
            client_key: client_key.clone(),
        },
        client_id: format!("{}-enroll-{}", cfg.client_id, hex::encode(random)),
        ..cfg.clone()
    };
    mqtt_options(&enroll, None).map(Some)
}

/// The device CA in `<data>/ca`, made at first start. Without it the daemon still runs; enrollment
/// answers `unavailable` and says why in the log.
fn device_ca(data_dir: &Path, lifetime_secs: u64) -> Option<crate::pki::Ca> {
    match crate::pki::Ca::open_or_init(&data_dir.join("ca"), super::fleet::now()) {
        Ok(ca) => Some(ca.with_device_lifetime(lifetime_secs)),
        Err(e) => {
            tracing::error!(error = %e, "no device CA: devices cannot enroll");
            None
        }
    }
}

fn rustls_provider() -> bool {
    // rumqttc builds its TLS config from the process-wide rustls provider.
    rustls::crypto::ring::default_provider().install_default().is_ok()
}

/// Runs the daemon with the API on `api_listener` until `shutdown` resolves.
pub async fn serve(
    cfg: ServeConfig,
    api_listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Arc::new(Store::open(&cfg.data_dir)?);
    let token = token(&cfg.data_dir)?;
    let trust = Arc::new(trust(&cfg)?);
    let (broker_addr, broker_password) = match cfg.broker {
        Broker::Embedded(addr) => {
            let password = super::broker::password(&cfg.data_dir)?;
            let controller = super::broker::Controller { client_id: cfg.client_id.clone(), password: password.clone() };
            let bound = super::broker::start(addr, 2 << 20, controller)?;
            tracing::info!(%bound, "embedded MQTT broker listening");
            (Some(bound), Some(password))
        }
        Broker::External { .. } => (None, None),
    };
    let identity =
        super::enrollment::Identity::new(device_ca(&cfg.data_dir, cfg.cert_lifetime_secs), cfg.on_revoke.clone());
    let mut options = mqtt_options(&cfg, broker_addr)?;
    if let Some(password) = broker_password {
        options.set_credentials(cfg.client_id.clone(), password);
    }
    let (director, director_path) = super::director::open_or_init(&cfg.data_dir, cfg.director_key.as_deref())?;
    if !trust.names_director(&director.verifying_key()) {
        tracing::warn!(
            key = %director_path.display(),
            "the fleet's trust policy does not name this controller's director key: devices will refuse its \
             reverts and removals (outpost trust init --director-pub)"
        );
    }
    let fleet = Fleet::start_with_enrollment(options, enroll_mqtt_options(&cfg)?, store.clone(), identity, director)?;
    // Rewritten at every start: it reflects the registry and never reaches its next-update time.
    if let Err(e) = fleet.write_crl(super::fleet::now()) {
        tracing::warn!(error = %e, "cannot write the certificate revocation list");
    }
    // The embedded broker (or a broker without persistence) forgot the fleet's trust: publish it again.
    if let Some(frame) = trust.frame() {
        fleet.publish_trust(frame).await;
    }
    let rollouts = super::rollouts::Rollouts::load(store.clone(), fleet.clone())?;
    // A broker that restarted (or the embedded one) lost the retained desired states: publish them again.
    rollouts.republish().await;
    let ticker = rollouts.clone();
    let observed = fleet.clone();
    let evaluations = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            ticker.tick().await;
            // The console's gate charts: each rollout's evidence after every evaluation.
            observed.observed.sample_gates(&ticker.list());
        }
    });
    let tls = cfg.api_tls.as_ref().map(|(c, k)| crate::console::tls::server_config(c, k)).transpose()?;
    let access = Arc::new(crate::console::auth::Access::open(&cfg.data_dir, &token, tls.is_some())?);
    let app = api::router(Api { rollouts, fleet, store, trust, access });
    let addr = api_listener.local_addr()?;
    match tls {
        Some(tls) => {
            tracing::info!(%addr, "controller API and console listening (TLS)");
            let listener = crate::console::tls::TlsListener::new(api_listener, tls)?;
            axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
        }
        None => {
            tracing::info!(%addr, "controller API and console listening");
            axum::serve(api_listener, app).with_graceful_shutdown(shutdown).await?;
        }
    }
    evaluations.abort();
    Ok(())
}
