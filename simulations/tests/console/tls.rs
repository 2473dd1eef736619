//! The API, the console and `/metrics` over TLS.

use super::*;

/// `[api_tls]`: the API, the console and /metrics over TLS with a certificate from the device CA
/// (`outpost certs server`); a client that trusts that CA gets in, sessions are `Secure` cookies, plain
/// HTTP gets nothing, and the CLI reaches it with `--ca`.
#[test]
fn the_console_and_the_api_serve_tls_with_secure_session_cookies() {
    let dir = tempdir("console-tls");
    let (_broker, port) = mosquitto(&dir);
    let (policy, root_pub) = trust_files(&dir);
    let data = dir.join("controller-data");
    let d = |p: &Path| p.display().to_string();
    let tls = dir.join("api-tls");
    let out = outpost(&["certs", "server", "--host", "127.0.0.1", "--out", &d(&tls), "--data-dir", &d(&data)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = dir.join("controller.toml");
    std::fs::write(
        &config,
        format!("[api_tls]\ncert = {:?}\nkey = {:?}\n", d(&tls.join("server.crt")), d(&tls.join("server.key"))),
    )
    .unwrap();
    let broker = format!("mqtt://127.0.0.1:{port}");
    let ctl = Controller::start(
        &dir,
        &["--config", &d(&config), "--broker", &broker, "--trust", &d(&policy), "--root-pub", &d(&root_pub)],
    );
    let api_port = ctl.api_port;
    let token = std::fs::read_to_string(data.join("api-token")).unwrap().trim().to_owned();
    let ca = data.join("ca/ca.pem");
    let roots: Vec<_> = ureq::tls::parse_pem(&std::fs::read(&ca).unwrap())
        .filter_map(|i| match i {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    let https: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
                .unversioned_rustls_crypto_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .build(),
        )
        .build()
        .into();
    let url = format!("https://127.0.0.1:{api_port}");

    // The console's page and a sign-in: the session cookie is Secure, HttpOnly, SameSite.
    let mut page = https.get(format!("{url}/")).call().unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.body_mut().read_to_string().unwrap().contains("<html"), "the console's page");
    let login = https
        .post(format!("{url}/console/login"))
        .header("Content-Type", "application/json")
        .send(json!({ "token": token }).to_string())
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);
    let cookie = login.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let devices = https.get(format!("{url}/api/v1/devices")).header("Cookie", &session).call().unwrap();
    assert_eq!(devices.status().as_u16(), 200);
    let mut metrics =
        https.get(format!("{url}/metrics")).header("Authorization", format!("Bearer {token}")).call().unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    assert!(!parse_prometheus(&metrics.body_mut().read_to_string().unwrap()).is_empty());

    // Plain HTTP to the TLS port answers nothing usable.
    let plain: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let r = plain
        .get(format!("http://127.0.0.1:{api_port}/api/v1/devices"))
        .header("Authorization", format!("Bearer {token}"))
        .call();
    assert!(r.as_ref().map_or(true, |r| r.status().as_u16() != 200), "plain HTTP was served");

    // The CLI: with the CA it works; without it (a bundle that lacks the device CA) it says what to do.
    let cli = |extra: &[&str]| {
        Command::new(outpost_bin())
            .args(["devices", "list", "--controller", &url, "--data-dir", &d(&data)])
            .args(extra)
            .env_remove("OUTPOST_CA")
            .env("SSL_CERT_FILE", dir.join("no-such-bundle.pem"))
            .output()
            .unwrap()
    };
    let ok = cli(&["--ca", &d(&ca)]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let refused = cli(&[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{err}");
    assert!(err.contains("--ca"), "{err}");
    let wrong_ca = cli(&["--ca", &d(&root_pub)]);
    assert_eq!(wrong_ca.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&wrong_ca.stderr).contains("no PEM certificate"));
}
