//! The CLI's client for the controller API: `--controller URL` or `OUTPOST_CONTROLLER` (default
//! http://127.0.0.1:8480), token from `OUTPOST_TOKEN` or the data directory's `api-token`. An `https://`
//! controller (`[api_tls]`) is checked against `--ca` (`OUTPOST_CA`), or else the system's CA bundle.

use super::Failure;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct Remote {
    /// The controller API.
    #[arg(long, env = "OUTPOST_CONTROLLER", default_value = "http://127.0.0.1:8480", global = true)]
    pub controller: String,
    /// Where `outpost serve` keeps its data (the API token is read from there).
    #[arg(long = "data-dir", default_value = "outpost-data", global = true)]
    pub data_dir: PathBuf,
    /// PEM certificate(s) to trust for an https:// controller, e.g. the device CA's `ca/ca.pem` when
    /// `outpost certs server` made its certificate. Default: the system's CA bundle.
    #[arg(long = "ca", env = "OUTPOST_CA", global = true)]
    pub ca: Option<PathBuf>,
}

/// Where Debian, Ubuntu and Alpine keep the system's CA bundle (`SSL_CERT_FILE` overrides it, as for OpenSSL).
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Remote {
    fn token(&self) -> Result<String, Failure> {
        if let Ok(t) = std::env::var("OUTPOST_TOKEN") {
            return Ok(t);
        }
        let path = self.data_dir.join("api-token");
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(t.trim().to_owned()),
            Err(e) => {
                // A missing token is the second question: first whether anything answers at that address.
                let probe = self.agent()?.get(&self.url("/api/v1/health")?).call();
                if let Err(Failure::Unreachable(m)) = self.answer(probe) {
                    return Err(Failure::Unreachable(m));
                }
                Err(Failure::Error(format!(
                    "no API token: set OUTPOST_TOKEN or point --data-dir at the controller's data ({}: {e})",
                    path.display()
                )))
            }
        }
    }

    fn agent(&self) -> Result<ureq::Agent, Failure> {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if self.controller.starts_with("https://") {
            config = config.tls_config(self.tls()?);
        }
        Ok(config.build().into())
    }

    /// The roots an https controller is checked against: `--ca`, else the system's bundle.
    fn tls(&self) -> Result<ureq::tls::TlsConfig, Failure> {
        let system = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from).unwrap_or_else(|| SYSTEM_BUNDLE.into());
        let path = self.ca.clone().unwrap_or(system);
        let pem = std::fs::read(&path).map_err(|e| {
            Failure::Error(format!(
                "{} is https: give the CA that signed its certificate with --ca FILE (or OUTPOST_CA) ({}: {e})",
                self.controller,
                path.display()
            ))
        })?;
        let roots: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if roots.is_empty() {
            return Err(Failure::Error(format!("{}: no PEM certificate in it", path.display())));
        }
        Ok(ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
            .unversioned_rustls_crypto_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .build())
    }

    /// `127.0.0.1:8480` means `http://127.0.0.1:8480`: the scheme people leave out is the default one.
    /// Any scheme but http and https (an MQTT broker's address, a typo) is refused by name.
    fn url(&self, path: &str) -> Result<String, Failure> {
        url(&self.controller, path).map_err(Failure::Error)
    }

    fn answer(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<serde_json::Value, Failure> {
        let mut r =
            r.map_err(|e| Failure::Unreachable(format!("cannot reach the controller at {}: {e}", self.controller)))?;
        let status = r.status();
        let body = answer_json(&mut r);
        if status.is_success() {
            body.map_err(Failure::Error)
        } else {
            let body = body.unwrap_or_default();
            let msg = body["error"].as_str().map(str::to_owned).unwrap_or_else(|| format!("HTTP {status}"));
            Err(if status.as_u16() == 422 {
                Failure::Rejected(msg.trim_start_matches("rejected: ").to_owned())
            } else {
                Failure::Error(msg)
            })
        }
    }

    pub fn get(&self, path: &str) -> Result<serde_json::Value, Failure> {
        let token = self.token()?;
        self.answer(self.agent()?.get(&self.url(path)?).header("Authorization", &format!("Bearer {token}")).call())
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, Failure> {
        let token = self.token()?;
        self.answer(
            self.agent()?.post(&self.url(path)?).header("Authorization", &format!("Bearer {token}")).send_json(body),
        )
    }

    pub fn delete(&self, path: &str) -> Result<serde_json::Value, Failure> {
        let token = self.token()?;
        self.answer(self.agent()?.delete(&self.url(path)?).header("Authorization", &format!("Bearer {token}")).call())
    }

    pub fn post_bytes(&self, path: &str, bytes: &[u8]) -> Result<serde_json::Value, Failure> {
        let token = self.token()?;
        self.answer(
            self.agent()?.post(&self.url(path)?).header("Authorization", &format!("Bearer {token}")).send(bytes),
        )
    }
}

/// The largest controller answer read. The device listing grows with the fleet (about 13 KB a device with
/// two models and their update events): at 1,000 devices it passed ureq's default of 10 MiB, and the
/// answer, unread, counted as an empty fleet.
pub const ANSWER_LIMIT: u64 = 256 << 20;

/// The JSON body of a controller answer, or what was wrong with it (over [`ANSWER_LIMIT`], not JSON).
pub fn answer_json(r: &mut ureq::http::Response<ureq::Body>) -> Result<serde_json::Value, String> {
    r.body_mut()
        .with_config()
        .limit(ANSWER_LIMIT)
        .read_json()
        .map_err(|e| format!("cannot read the controller's answer: {e}"))
}

/// `s` as one path segment or query value: every byte but the unreserved ones percent-encoded (a device id may hold
/// `&`, `=`, `%` or a space; a label value `+`, which a query would read as a space).
pub fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The API URL of `path` on `controller` (see [`Remote::url`]).
pub fn url(controller: &str, path: &str) -> Result<String, String> {
    let given = controller.trim();
    match given.split_once("://") {
        None if given.trim_end_matches('/').is_empty() => {
            Err("--controller is empty: give the API address, e.g. http://127.0.0.1:8480".into())
        }
        None => Ok(format!("http://{}{path}", given.trim_end_matches('/'))),
        Some((scheme @ ("http" | "https"), rest)) if !rest.trim_end_matches('/').is_empty() => {
            Ok(format!("{scheme}://{}{path}", rest.trim_end_matches('/')))
        }
        Some((scheme, _)) => Err(format!(
            "--controller {controller:?}: the controller's API is http:// or https:// (e.g. http://127.0.0.1:8480, \
             the address `outpost serve --api` listens on), not {scheme}://"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    /// A controller that answers any request with `body` (HTTP/1.1, JSON).
    fn answering(body: Vec<u8>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut head = [0u8; 4096];
            let _ = c.read(&mut head);
            let h =
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n", body.len());
            let _ = c.write_all(h.as_bytes()).and_then(|()| c.write_all(&body));
        });
        format!("http://{addr}")
    }

    fn remote(controller: String, name: &str) -> super::Remote {
        let data_dir = std::env::temp_dir().join(format!("outpost-client-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::write(data_dir.join("api-token"), "t").unwrap();
        super::Remote { controller, data_dir, ca: None }
    }

    #[test]
    fn url_escapes_keep_only_unreserved_bytes() {
        assert_eq!(super::url_escape("edge-eu_01.x~"), "edge-eu_01.x~");
        assert_eq!(super::url_escape("a&b=c d%+,é"), "a%26b%3Dc%20d%25%2B%2C%C3%A9");
    }

    #[test]
    fn a_device_listing_over_ten_mib_is_read_whole_and_an_unreadable_answer_is_an_error() {
        // 1,200 devices of 9 KB each: over ureq's default read limit (10 MiB), as a 1,000-device fleet's was.
        let device = serde_json::json!({"id": "d", "note": "x".repeat(9_000)});
        let big = serde_json::to_vec(&vec![device; 1_200]).unwrap();
        assert!(big.len() > 10 << 20);
        let read = remote(answering(big), "big").get("/api/v1/devices").unwrap();
        assert_eq!(read.as_array().map(Vec::len), Some(1_200), "the whole listing, not an empty answer");
        let Err(super::Failure::Error(e)) = remote(answering(b"[{\"id\": ".to_vec()), "cut").get("/api/v1/devices")
        else {
            panic!("a cut answer must not read as an empty one");
        };
        assert!(e.contains("cannot read the controller's answer"), "{e}");
    }

    #[test]
    fn a_controller_address_gets_the_http_scheme_and_other_schemes_are_refused_by_name() {
        assert_eq!(super::url("127.0.0.1:8480", "/api/v1/health").unwrap(), "http://127.0.0.1:8480/api/v1/health");
        assert_eq!(super::url("https://ctl.example/", "/x").unwrap(), "https://ctl.example/x");
        let e = super::url("mqtt://127.0.0.1:1883", "/x").unwrap_err();
        assert!(e.contains("not mqtt://") && e.contains("http://127.0.0.1:8480"), "{e}");
        assert!(super::url("", "/x").unwrap_err().contains("empty"));
        assert!(super::url("http://", "/x").is_err());
    }
}
