//! The link over real TLS: mosquitto with a certificate from a test CA, requiring client certificates
//! (mutual TLS). A device with its certificate installs its first model; one without is refused by the
//! broker and keeps serving locally.

mod support;

use outpost_protocol::DeviceId;
use outpost_protocol::messages::{Mode, Watch};
use outpost_protocol::telemetry::UpdateStage;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::controller::FakeController;
use support::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all EC P-256.
fn make_pki(dir: &Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=outpost test CA"],
        ]
        .concat(),
    );
    for (name, san) in [("server", "subjectAltName=IP:127.0.0.1"), ("device", "subjectAltName=DNS:dev-tls")] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let subj = format!("/CN={name}");
        openssl(dir, &[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &subj]].concat());
        std::fs::write(dir.join(format!("{name}.ext")), format!("{san}\nextendedKeyUsage=serverAuth,clientAuth\n"))
            .unwrap();
        let ext = format!("{name}.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
    // mosquitto started as root drops to its own user: let it read the (throwaway) test keys.
    for f in ["server.key", "server.pem", "ca.pem"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

struct TlsBroker {
    port: u16,
    plain_port: u16,
    child: std::process::Child,
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mosquitto with a mutual-TLS listener for devices and a plain loopback listener for the test's controller.
fn tls_broker(dir: &Path) -> TlsBroker {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, plain_port) = (free(), free());
    let d = |f: &str| dir.join(f).display().to_string();
    let conf = format!(
        "per_listener_settings false\nallow_anonymous true\npersistence false\n\
         listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
         listener {plain_port} 127.0.0.1\n",
        d("ca.pem"),
        d("server.pem"),
        d("server.key")
    );
    std::fs::write(dir.join("mosquitto-tls.conf"), conf).unwrap();
    let bin = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
    let child = Command::new(bin).args(["-c", &d("mosquitto-tls.conf")]).spawn().unwrap();
    for p in [port, plain_port] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
            assert!(std::time::Instant::now() < deadline, "mosquitto TLS listener did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    TlsBroker { port, plain_port, child }
}

#[test]
fn a_device_with_its_certificate_installs_over_mutual_tls_and_one_without_is_refused() {
    let dir = tempdir("tls");
    make_pki(&dir);
    let broker = tls_broker(&dir);
    let ctl = FakeController::start(broker.plain_port);
    let d = |f: &str| dir.join(f).display().to_string();
    let device = DeviceId::new("dev-tls").unwrap();
    let with_cert = format!(
        "[link]\nbroker = \"mqtts://127.0.0.1:{}\"\ndevice_id = \"{device}\"\nca = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
        broker.port,
        d("ca.pem"),
        d("device.pem"),
        d("device.key")
    );
    let agent = Agent::start(config(&dir, &with_cert));
    let v1 = ctl.offer(signed_bundle("v1", "1.0.0", 1));
    ctl.desire(&device, "1.0.0", 1, v1.clone(), Mode::Activate, Watch { secs: 1, ..Watch::default() });
    ctl.wait_event("1.0.0", UpdateStage::Committed);
    agent.wait_for("/v2/models/digits", "v1 over TLS", |r| r.status == 200);
    assert!(ctl.seen.lock().unwrap().hellos >= 1);

    // Same CA, no client certificate: the broker refuses the TLS handshake; nothing is installed.
    let other = tempdir("tls-nocert");
    let stranger = DeviceId::new("dev-nocert").unwrap();
    let without = format!(
        "[link]\nbroker = \"mqtts://127.0.0.1:{}\"\ndevice_id = \"{stranger}\"\nca = {:?}\n",
        broker.port,
        d("ca.pem")
    );
    let lonely = Agent::start(config(&other, &without));
    let events_before = ctl.seen.lock().unwrap().events.len();
    ctl.desire(&stranger, "1.0.0", 1, v1, Mode::Activate, Watch { secs: 1, ..Watch::default() });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lonely.get("/v2/health/ready").status, 503, "no model reached the device without a certificate");
    assert_eq!(ctl.seen.lock().unwrap().events.len(), events_before, "the refused device never reported");
    assert_eq!(lonely.get("/v2/health/live").status, 200, "it still serves its local API");
}
