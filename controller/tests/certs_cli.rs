//! `outpost certs` as an operator runs it: certificates that openssl verifies against the CA, a CSR made
//! elsewhere (openssl) accepted only for the device it names, keys written 0600, nothing overwritten, and
//! the controller's identity never issued as a device.

#[path = "support/cli.rs"]
mod cli;

use cli::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn outpost(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_outpost")).args(args).arg("--data-dir").arg(data).output().unwrap()
}

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn certificates_verify_against_the_ca_and_keys_are_private() {
    let dir = tempdir("certs-issue");
    let data = dir.join("data");
    // The CA is made at first need, and says so.
    let out = outpost(&data, &["certs", "issue", "--device", "dev-1", "--out", &dir.join("o").display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("made the device CA"), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(data.join("ca/ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(dir.join("o/dev-1.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let v = openssl(&dir.join("o"), &["verify", "-CAfile", "ca.pem", "-purpose", "sslclient", "dev-1.crt"]);
    assert!(v.status.success(), "{}{}", String::from_utf8_lossy(&v.stdout), stderr(&v));
    let subject = openssl(&dir.join("o"), &["x509", "-in", "dev-1.crt", "-noout", "-subject"]);
    assert_eq!(String::from_utf8_lossy(&subject.stdout).trim(), "subject=CN = dev-1");

    // Issuing again into the same folder refuses rather than replacing the device's key.
    let again = outpost(&data, &["certs", "issue", "--device", "dev-1", "--out", &dir.join("o").display().to_string()]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("dev-1.key exists"), "{}", stderr(&again));
    // `certs init` on an existing CA refuses too: replacing it would cut off every device.
    let init = outpost(&data, &["certs", "init"]);
    assert!(!init.status.success() && stderr(&init).contains("refusing to replace"), "{}", stderr(&init));
    // The controller's identity has full access at the broker: no device may be issued under its name.
    let o = dir.join("x").display().to_string();
    let reserved = outpost(&data, &["certs", "issue", "--device", "outpost-controller", "--out", &o]);
    assert!(!reserved.status.success() && stderr(&reserved).contains("controller"), "{}", stderr(&reserved));
    let bad = outpost(&data, &["certs", "issue", "--device", "../etc", "--out", &o]);
    assert!(!bad.status.success() && stderr(&bad).contains("--device"), "{}", stderr(&bad));

    let server = outpost(&data, &["certs", "server", "--host", "broker.example.com", "--out", &o]);
    assert!(server.status.success(), "{}", stderr(&server));
    let v = openssl(&dir.join("x"), &["verify", "-CAfile", "ca.pem", "-purpose", "sslserver", "server.crt"]);
    assert!(v.status.success(), "{}", stderr(&v));
    let san = openssl(&dir.join("x"), &["x509", "-in", "server.crt", "-noout", "-ext", "subjectAltName"]);
    assert!(String::from_utf8_lossy(&san.stdout).contains("DNS:broker.example.com"));
}

#[test]
fn a_csr_made_on_the_device_is_signed_only_for_the_device_it_names() {
    let dir = tempdir("certs-csr");
    let data = dir.join("data");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "device.key"];
    let made = openssl(&dir, &[&["req", "-new"][..], &ec, &["-out", "dev-7.csr", "-subj", "/CN=dev-7"]].concat());
    assert!(made.status.success(), "{}", stderr(&made));
    let out_dir = dir.join("o").display().to_string();
    let csr = dir.join("dev-7.csr").display().to_string();

    // Asked for another device: refused, naming what the CSR says and what it must say.
    let wrong = outpost(&data, &["certs", "issue", "--device", "dev-8", "--csr", &csr, "--out", &out_dir]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr(&wrong).contains("dev-7") && stderr(&wrong).contains("CN=dev-8"), "{}", stderr(&wrong));
    assert!(!dir.join("o/dev-8.crt").exists());

    let ok = outpost(&data, &["certs", "issue", "--device", "dev-7", "--csr", &csr, "--out", &out_dir]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(!dir.join("o/dev-7.key").exists(), "the key stays where the CSR was made");
    // The certificate names the key the device kept.
    let cert_key = openssl(&dir, &["x509", "-in", "o/dev-7.crt", "-noout", "-pubkey"]);
    let own_key = openssl(&dir, &["pkey", "-in", "device.key", "-pubout"]);
    assert_eq!(cert_key.stdout, own_key.stdout);

    // A damaged CSR (one byte of the signed part changed) is refused as not verifying.
    let mut der = openssl(&dir, &["req", "-in", "dev-7.csr", "-outform", "DER"]).stdout;
    let at = der.windows(5).position(|w| w == b"dev-7").unwrap();
    der[at + 4] = b'9';
    std::fs::write(dir.join("bad.der"), der).unwrap();
    let bad = dir.join("bad.der").display().to_string();
    let out = outpost(&data, &["certs", "issue", "--device", "dev-9", "--csr", &bad, "--out", &out_dir]);
    assert!(!out.status.success() && stderr(&out).contains("does not verify"), "{}", stderr(&out));
}
