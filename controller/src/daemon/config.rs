//! `outpost serve` configuration: TOML with unknown keys refused, flags override, validated before any
//! socket is bound. With no file: embedded broker on loopback, API on 127.0.0.1:8480, data in
//! ./outpost-data.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_CONFIG: &str = include_str!("default-controller.toml");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<PathBuf>,
    pub api: Option<String>,
    #[serde(default)]
    pub broker: RawBroker,
    #[serde(default)]
    pub trust: RawTrust,
    #[serde(default)]
    pub enroll: RawEnroll,
    #[serde(default)]
    pub api_tls: RawApiTls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnroll {
    pub on_revoke: Option<Vec<String>>,
    pub broker: Option<String>,
    pub cert_lifetime: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    pub embedded: Option<String>,
    pub url: Option<String>,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub client_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    pub policy: Option<PathBuf>,
    pub root_pub: Option<Vec<PathBuf>>,
    pub root_threshold: Option<usize>,
    pub director_key: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Broker {
    /// rumqttd in-process on this loopback address.
    Embedded(SocketAddr),
    External {
        url: String,
        ca: Option<PathBuf>,
        client_cert: Option<PathBuf>,
        client_key: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub api: SocketAddr,
    pub broker: Broker,
    pub client_id: String,
    pub trust_policy: Option<PathBuf>,
    pub root_pubs: Vec<PathBuf>,
    pub root_threshold: usize,
    /// The director key (ed25519, PKCS#8 PEM) that signs every desired state for its device. `None`:
    /// `<data_dir>/director.key`, made at first start (with `director.pub` beside it).
    pub director_key: Option<PathBuf>,
    /// Run after `devices revoke` rewrote `<data>/ca/crl.pem`, so the broker reloads it (empty: nothing).
    pub on_revoke: Vec<String>,
    /// Certificate chain and key (PEM) when the API and console listener serves TLS.
    pub api_tls: Option<(PathBuf, PathBuf)>,
    /// How long device certificates last; devices renew them in the second half.
    pub cert_lifetime_secs: u64,
    /// The enrollment broker (`mqtts://host:8885`, mosquitto-enroll.conf) when enrollment has a broker of its
    /// own; reached with `[broker]`'s CA and client certificate. `None`: enrollment rides `[broker]`.
    pub enroll_broker: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub api: Option<String>,
    pub mqtt_listen: Option<String>,
    pub broker: Option<String>,
    pub trust: Option<PathBuf>,
    pub root_pubs: Vec<PathBuf>,
    pub director_key: Option<PathBuf>,
}

pub fn load(path: Option<&std::path::Path>, o: &Overrides) -> Result<ServeConfig, String> {
    let (mut raw, name): (RawConfig, String) = match path {
        None => (RawConfig::default(), "defaults".into()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            (toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?, p.display().to_string())
        }
    };
    if o.data_dir.is_some() {
        raw.data_dir.clone_from(&o.data_dir);
    }
    if o.api.is_some() {
        raw.api.clone_from(&o.api);
    }
    if o.mqtt_listen.is_some() {
        raw.broker.embedded.clone_from(&o.mqtt_listen);
        raw.broker.url = None;
    }
    if o.broker.is_some() {
        raw.broker.url.clone_from(&o.broker);
    }
    if o.trust.is_some() {
        raw.trust.policy.clone_from(&o.trust);
    }
    if !o.root_pubs.is_empty() {
        raw.trust.root_pub = Some(o.root_pubs.clone());
    }
    if o.director_key.is_some() {
        raw.trust.director_key.clone_from(&o.director_key);
    }
    let bad = |key: &str, msg: String| format!("{name}: `{key}`: {msg}");
    let api_text = raw.api.unwrap_or_else(|| "127.0.0.1:8480".into());
    let api = api_text.parse().map_err(|e| bad("api", format!("{api_text:?} is not IP:PORT ({e})")))?;
    let broker = match raw.broker.url {
        Some(url) => {
            if !(url.starts_with("mqtt://") || url.starts_with("mqtts://")) {
                return Err(bad("broker.url", format!("{url:?} must start with mqtt:// or mqtts://")));
            }
            Broker::External {
                url,
                ca: raw.broker.ca,
                client_cert: raw.broker.client_cert,
                client_key: raw.broker.client_key,
            }
        }
        None => {
            let text = raw.broker.embedded.unwrap_or_else(|| "127.0.0.1:1883".into());
            let addr: SocketAddr = text.parse().map_err(|e| bad("broker.embedded", format!("{text:?}: {e}")))?;
            if !addr.ip().is_loopback() {
                return Err(bad(
                    "broker.embedded",
                    format!("{addr} is not loopback: the embedded broker has no TLS or ACLs"),
                ));
            }
            Broker::Embedded(addr)
        }
    };
    let api_tls = match (raw.api_tls.cert, raw.api_tls.key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err(bad("api_tls", "needs both `cert` and `key`".into())),
    };
    let cert_lifetime_secs = match &raw.enroll.cert_lifetime {
        None => crate::pki::ca::DEVICE_LIFETIME_SECS,
        Some(text) => match crate::duration::parse(text) {
            // Short lifetimes are for trying renewal out; under 10 s a certificate would expire in transit.
            Ok(d) if d.as_secs() >= 10 => d.as_secs(),
            Ok(_) => return Err(bad("enroll.cert_lifetime", format!("{text:?} is under 10 seconds"))),
            Err(e) => return Err(bad("enroll.cert_lifetime", e)),
        },
    };
    let enroll_broker = match (raw.enroll.broker, &broker) {
        (Some(_), Broker::Embedded(_)) => {
            return Err(bad(
                "enroll.broker",
                "needs an external [broker] (the embedded one serves enrollment itself)".into(),
            ));
        }
        (b, _) => b,
    };
    Ok(ServeConfig {
        data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("outpost-data")),
        api,
        broker,
        client_id: raw.broker.client_id.unwrap_or_else(|| "outpost-controller".into()),
        trust_policy: raw.trust.policy,
        root_pubs: raw.trust.root_pub.unwrap_or_default(),
        root_threshold: raw.trust.root_threshold.unwrap_or(1).max(1),
        director_key: raw.trust.director_key,
        on_revoke: raw.enroll.on_revoke.unwrap_or_default(),
        api_tls,
        cert_lifetime_secs,
        enroll_broker,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_parses_to_the_built_in_defaults_and_unknown_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("outpost-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("controller.toml");
        std::fs::write(&path, DEFAULT_CONFIG).unwrap();
        assert_eq!(load(Some(&path), &Overrides::default()).unwrap(), load(None, &Overrides::default()).unwrap());
        std::fs::write(&path, "[broker]\nembeded = \"127.0.0.1:1\"\n").unwrap();
        assert!(load(Some(&path), &Overrides::default()).unwrap_err().contains("embeded"));
        let o = Overrides { mqtt_listen: Some("0.0.0.0:1883".into()), ..Overrides::default() };
        assert!(load(None, &o).unwrap_err().contains("not loopback"));
    }
}
