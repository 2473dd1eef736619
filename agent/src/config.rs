//! Agent configuration: TOML → `RawConfig` (unknown keys refused, naming the key) → validated `Config`.
//! The default config ships in the binary (`print-default-config`) and every field has a default, so an
//! empty file is a valid config. Flags override the file.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The documented default configuration, printed by `outpost-agent print-default-config`.
pub const DEFAULT_CONFIG: &str = include_str!("default-agent.toml");

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    #[serde(default)]
    pub trust: RawTrust,
    #[serde(default)]
    pub inference: RawInference,
    #[serde(default)]
    pub models: RawModels,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub shadow: RawShadow,
    #[serde(default)]
    pub drift: RawDrift,
    #[serde(default)]
    pub link: RawLink,
    #[serde(default)]
    pub telemetry: RawTelemetry,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    pub broker: Option<String>,
    pub device_id: Option<String>,
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub keepalive: Option<String>,
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    /// A file holding the enrollment token (first boot only).
    pub enroll_token: Option<PathBuf>,
    /// The enrollment endpoint when it differs from `broker` (mosquitto: the server-auth TLS listener).
    pub enroll_broker: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub window: Option<String>,
    pub max_records: Option<u64>,
    pub max_batch_bytes: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    pub policy: Option<PathBuf>,
    pub root_pub: Option<Vec<PathBuf>>,
    pub root_threshold: Option<usize>,
    pub expiry_grace: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInference {
    pub workers: Option<usize>,
    pub threads: Option<usize>,
    pub max_batch: Option<usize>,
    pub max_delay: Option<String>,
    pub queue_capacity: Option<usize>,
    pub request_timeout: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub max_rows: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    pub accept: Option<Vec<String>>,
    pub memory_budget: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_entries: Option<usize>,
    pub max_bytes: Option<usize>,
    pub ttl: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadow {
    pub sample_percent: Option<u8>,
    pub queue_capacity: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrift {
    pub lo: Option<f32>,
    pub hi: Option<f32>,
    pub bins: Option<usize>,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub trust: TrustConfig,
    pub inference: InferenceConfig,
    pub models: ModelsConfig,
    pub cache: CacheConfig,
    pub shadow: ShadowConfig,
    pub drift: DriftConfig,
    /// The fleet link; `None` runs inference only (telemetry is still buffered).
    pub link: Option<crate::link::LinkConfig>,
    pub labels: Vec<(String, String)>,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    pub window: Duration,
    pub max_records: u64,
    pub max_batch_bytes: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrustConfig {
    pub policy: Option<PathBuf>,
    pub root_pubs: Vec<PathBuf>,
    pub root_threshold: usize,
    pub expiry_grace: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InferenceConfig {
    pub workers: usize,
    /// Threads tract's matrix products use within one run (one pool shared by every worker). Above 1 only
    /// in builds with the `multithread` feature: the 8 MB aarch64 device build leaves it out.
    pub threads: usize,
    pub max_batch: usize,
    pub max_delay: Duration,
    pub queue_capacity: usize,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Most rows (batch entries) one request may carry: rows drive run loops and output allocations, and a
    /// model with an empty row would otherwise take any count.
    pub max_rows: usize,
}

/// Which models the device takes, and how much memory they may take together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelsConfig {
    /// `None`: every model name.
    pub accept: Option<Vec<outpost_protocol::ModelName>>,
    pub memory_budget: u64,
}

impl ModelsConfig {
    pub fn accepts(&self, name: &str) -> bool {
        self.accept.as_ref().is_none_or(|names| names.iter().any(|n| n.as_str() == name))
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig { accept: None, memory_budget: default_memory_budget() }
    }
}

/// Half of the machine's memory: the models may take that much together, the rest is left to the
/// application beside them and the system. 1 GiB where `/proc/meminfo` cannot be read.
pub fn default_memory_budget() -> u64 {
    crate::sys::mem_total_bytes().map(|t| t / 2).unwrap_or(1 << 30)
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub max_entries: usize,
    pub max_bytes: usize,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    pub sample_percent: u8,
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DriftConfig {
    pub lo: f32,
    pub hi: f32,
    pub bins: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid { path: String, key: &'static str, message: String },
}

/// Settings given as command-line flags; each overrides the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub trust: Option<PathBuf>,
    pub root_pubs: Vec<PathBuf>,
    pub broker: Option<String>,
    pub device_id: Option<String>,
    pub telemetry_window: Option<String>,
}

impl Config {
    /// Reads `path` (or uses the defaults when `None`), applies `overrides`, validates.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (raw, name) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?;
                (parse(&text, &p.display().to_string())?, p.display().to_string())
            }
            None => (RawConfig::default(), "defaults".to_string()),
        };
        Config::validate(raw, overrides, &name)
    }

    pub fn validate(mut raw: RawConfig, o: &Overrides, name: &str) -> Result<Config, ConfigError> {
        if o.data_dir.is_some() {
            raw.data_dir.clone_from(&o.data_dir);
        }
        if o.listen.is_some() {
            raw.listen.clone_from(&o.listen);
        }
        if o.trust.is_some() {
            raw.trust.policy.clone_from(&o.trust);
        }
        if !o.root_pubs.is_empty() {
            raw.trust.root_pub = Some(o.root_pubs.clone());
        }
        if o.broker.is_some() {
            raw.link.broker.clone_from(&o.broker);
        }
        if o.device_id.is_some() {
            raw.link.device_id.clone_from(&o.device_id);
        }
        if o.telemetry_window.is_some() {
            raw.telemetry.window.clone_from(&o.telemetry_window);
        }
        let invalid = |key, message: String| ConfigError::Invalid { path: name.to_owned(), key, message };
        let dur = |key, v: Option<String>, default: Duration| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => parse_duration(&s).map_err(|m| invalid(key, m)),
            }
        };
        let listen_text = raw.listen.unwrap_or_else(|| "127.0.0.1:8470".into());
        let listen: SocketAddr =
            listen_text.parse().map_err(|e| invalid("listen", format!("{listen_text:?} is not IP:PORT ({e})")))?;
        let i = raw.inference;
        let workers = i.workers.unwrap_or(1);
        let max_batch = i.max_batch.unwrap_or(8);
        let queue_capacity = i.queue_capacity.unwrap_or(64);
        if workers == 0 || workers > 64 {
            return Err(invalid("inference.workers", format!("{workers} must be between 1 and 64")));
        }
        let threads = i.threads.unwrap_or(1);
        if threads == 0 || threads > 64 {
            return Err(invalid("inference.threads", format!("{threads} must be between 1 and 64")));
        }
        if threads > 1 && !cfg!(feature = "multithread") {
            return Err(invalid(
                "inference.threads",
                format!(
                    "{threads} needs an agent built with the `multithread` feature (cargo build -p outpost-agent \
                     --features multithread); this build runs each model on one thread"
                ),
            ));
        }
        if max_batch == 0 || max_batch > 256 {
            return Err(invalid("inference.max_batch", format!("{max_batch} must be between 1 and 256")));
        }
        if queue_capacity == 0 {
            return Err(invalid("inference.queue_capacity", "must be at least 1".into()));
        }
        let sample_percent = raw.shadow.sample_percent.unwrap_or(10);
        if sample_percent > 100 {
            return Err(invalid("shadow.sample_percent", format!("{sample_percent} is over 100")));
        }
        let drift = DriftConfig {
            lo: raw.drift.lo.unwrap_or(0.0),
            hi: raw.drift.hi.unwrap_or(1.0),
            bins: raw.drift.bins.unwrap_or(outpost_protocol::drift::DEFAULT_BINS),
        };
        if drift.lo.partial_cmp(&drift.hi) != Some(std::cmp::Ordering::Less) || drift.bins == 0 || drift.bins > 1000 {
            return Err(invalid("drift", format!("need lo < hi and 1..=1000 bins, got {drift:?}")));
        }
        let models = ModelsConfig {
            accept: match raw.models.accept {
                None => None,
                Some(names) => Some(
                    names
                        .into_iter()
                        .map(|n| {
                            outpost_protocol::ModelName::new(n).map_err(|e| invalid("models.accept", e.to_string()))
                        })
                        .collect::<Result<_, _>>()?,
                ),
            },
            memory_budget: match raw.models.memory_budget {
                None => default_memory_budget(),
                Some(s) => parse_size(&s).map_err(|m| invalid("models.memory_budget", m))?,
            },
        };
        let l = raw.link;
        let link = match l.broker {
            None => None,
            Some(url) => {
                let broker = url.parse().map_err(|m| invalid("link.broker", m))?;
                // Unset: the machine's own stable id, so one image flashed on many boards needs no hand work.
                let id = l.device_id.or_else(crate::sys::default_device_id).ok_or_else(|| {
                    invalid(
                        "link.device_id",
                        "a broker needs a device id, and this machine has no /etc/machine-id or hostname to derive one"
                            .into(),
                    )
                })?;
                let device =
                    outpost_protocol::DeviceId::new(id).map_err(|e| invalid("link.device_id", e.to_string()))?;
                let enroll = match (l.enroll_token, l.enroll_broker) {
                    (Some(token_file), endpoint) => Some(crate::identity::enroll::EnrollConfig {
                        broker: match endpoint {
                            Some(u) => u.parse().map_err(|m| invalid("link.enroll_broker", m))?,
                            None => url.parse().map_err(|m| invalid("link.broker", m))?,
                        },
                        token_file,
                    }),
                    (None, Some(_)) => {
                        return Err(invalid("link.enroll_broker", "needs link.enroll_token (the token file)".into()));
                    }
                    (None, None) => None,
                };
                Some(crate::link::LinkConfig {
                    broker,
                    device,
                    ca: l.ca,
                    client_cert: l.client_cert,
                    client_key: l.client_key,
                    keepalive: dur("link.keepalive", l.keepalive, Duration::from_secs(30))?,
                    backoff_min: Duration::from_millis(200),
                    backoff_max: Duration::from_secs(60),
                    enroll,
                })
            }
        };
        let telemetry = TelemetryConfig {
            window: dur("telemetry.window", raw.telemetry.window, Duration::from_secs(60))?,
            max_records: raw.telemetry.max_records.unwrap_or(100_000),
            max_batch_bytes: raw.telemetry.max_batch_bytes.unwrap_or(64 << 10),
        };
        if telemetry.window.is_zero() {
            return Err(invalid("telemetry.window", "must be longer than 0".into()));
        }
        Ok(Config {
            link,
            labels: l.labels.unwrap_or_default().into_iter().collect(),
            telemetry,
            data_dir: raw.data_dir.unwrap_or_else(|| PathBuf::from("/var/lib/outpost")),
            listen,
            trust: TrustConfig {
                policy: raw.trust.policy,
                root_pubs: raw.trust.root_pub.unwrap_or_default(),
                root_threshold: raw.trust.root_threshold.unwrap_or(1).max(1),
                expiry_grace: dur("trust.expiry_grace", raw.trust.expiry_grace, Duration::from_secs(86_400))?,
            },
            inference: InferenceConfig {
                workers,
                threads,
                max_batch,
                max_delay: dur("inference.max_delay", i.max_delay, Duration::ZERO)?,
                queue_capacity,
                request_timeout: dur("inference.request_timeout", i.request_timeout, Duration::from_secs(2))?,
                max_body_bytes: i.max_body_bytes.unwrap_or(4 << 20),
                max_rows: match i.max_rows.unwrap_or(1024) {
                    0 => return Err(invalid("inference.max_rows", "must be at least 1".into())),
                    n => n,
                },
            },
            models,
            cache: CacheConfig {
                max_entries: raw.cache.max_entries.unwrap_or(1024),
                max_bytes: raw.cache.max_bytes.unwrap_or(8 << 20),
                ttl: dur("cache.ttl", raw.cache.ttl, Duration::from_secs(60))?,
            },
            shadow: ShadowConfig { sample_percent, queue_capacity: raw.shadow.queue_capacity.unwrap_or(16) },
            drift,
        })
    }
}

/// Parses TOML, naming the offending key when a field is unknown or mistyped.
pub fn parse(text: &str, name: &str) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse { path: name.to_owned(), message: e.to_string() })
}

/// `1048576`, `64KiB`, `512MiB`, `2GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a size like 512MiB, 2GiB or 1048576");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().map_err(|_| bad())?;
    let unit: u64 = match s[split..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).ok_or_else(bad)
}

/// `250us`, `5ms`, `2s`, `10m`, `12h`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 500us, 5ms, 2s, 10m, 12h or 1d");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let n: u64 = s[..split].parse().map_err(|_| bad())?;
    Ok(match &s[split..] {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_default_config_parses_to_the_built_in_defaults() {
        let shipped = Config::validate(parse(DEFAULT_CONFIG, "default").unwrap(), &Overrides::default(), "d").unwrap();
        let built_in = Config::validate(RawConfig::default(), &Overrides::default(), "d").unwrap();
        assert_eq!(shipped, built_in);
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = parse("[inference]\nmax_batchh = 4\n", "agent.toml").unwrap_err().to_string();
        assert!(err.contains("max_batchh"), "{err}");
        assert!(err.contains("agent.toml"), "{err}");
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        for (text, key) in [
            ("listen = \"localhost\"", "listen"),
            ("[inference]\nmax_batch = 0", "inference.max_batch"),
            ("[inference]\nthreads = 0", "inference.threads"),
            ("[inference]\nthreads = 65", "inference.threads"),
            ("[inference]\nmax_delay = \"soon\"", "inference.max_delay"),
            ("[shadow]\nsample_percent = 150", "shadow.sample_percent"),
            ("[models]\nmemory_budget = \"lots\"", "models.memory_budget"),
            ("[models]\naccept = [\"../etc\"]", "models.accept"),
        ] {
            let err = Config::validate(parse(text, "a.toml").unwrap(), &Overrides::default(), "a.toml").unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn threads_above_one_need_a_build_with_the_multithread_feature() {
        let two = Config::validate(parse("[inference]\nthreads = 2", "a").unwrap(), &Overrides::default(), "a");
        if cfg!(feature = "multithread") {
            assert_eq!(two.unwrap().inference.threads, 2);
        } else {
            let err = two.unwrap_err().to_string();
            assert!(err.contains("inference.threads") && err.contains("`multithread` feature"), "{err}");
        }
        let default = Config::validate(RawConfig::default(), &Overrides::default(), "a").unwrap();
        assert_eq!(default.inference.threads, 1);
    }

    #[test]
    fn link_flags_override_the_file_and_a_broker_needs_a_valid_device_id() {
        let raw = parse("[link]\nbroker = \"mqtt://a:1\"\ndevice_id = \"from-file\"\n", "a").unwrap();
        let o = Overrides {
            broker: Some("mqtts://b:8883".into()),
            device_id: Some("from-flag".into()),
            telemetry_window: Some("5s".into()),
            ..Overrides::default()
        };
        let c = Config::validate(raw, &o, "a").unwrap();
        let link = c.link.unwrap();
        assert_eq!((link.broker.host.as_str(), link.broker.tls, link.device.as_str()), ("b", true, "from-flag"));
        assert_eq!(c.telemetry.window, Duration::from_secs(5));
        // No device id in the file: the machine's own (machine-id or hostname), or a refusal naming the key.
        let unnamed =
            Config::validate(parse("[link]\nbroker = \"mqtt://a:1\"\n", "a").unwrap(), &Overrides::default(), "a");
        match crate::sys::default_device_id() {
            Some(id) => assert_eq!(unnamed.unwrap().link.unwrap().device.as_str(), id),
            None => assert!(unnamed.unwrap_err().to_string().contains("link.device_id")),
        }
        let enroll = "[link]\nbroker = \"mqtts://b:8883\"\ndevice_id = \"d\"\nenroll_token = \"/etc/outpost/token\"\n";
        let c = Config::validate(parse(enroll, "a").unwrap(), &Overrides::default(), "a").unwrap();
        let e = c.link.unwrap().enroll.unwrap();
        assert_eq!((e.broker.port, e.token_file), (8883, PathBuf::from("/etc/outpost/token")), "same endpoint");
        let split = format!("{enroll}enroll_broker = \"mqtts://b:8884\"\n");
        let c = Config::validate(parse(&split, "a").unwrap(), &Overrides::default(), "a").unwrap();
        assert_eq!(c.link.unwrap().enroll.unwrap().broker.port, 8884);
        let orphan = "[link]\nbroker = \"mqtt://b\"\ndevice_id = \"d\"\nenroll_broker = \"mqtt://c\"\n";
        let err = Config::validate(parse(orphan, "a").unwrap(), &Overrides::default(), "a").unwrap_err();
        assert!(err.to_string().contains("link.enroll_broker"), "{err}");
        let o = Overrides { device_id: Some("..".into()), broker: Some("mqtt://a".into()), ..Overrides::default() };
        let err = Config::validate(RawConfig::default(), &o, "a").unwrap_err().to_string();
        assert!(err.contains("link.device_id") && err.contains("traversal"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let raw = parse("data_dir = \"/from/file\"\nlisten = \"127.0.0.1:1\"", "a").unwrap();
        let o = Overrides { data_dir: Some("/from/flag".into()), ..Overrides::default() };
        let c = Config::validate(raw, &o, "a").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(c.listen.port(), 1);
    }
}
