//! The shipped production broker setup (`controller/deploy/mosquitto/`) on loopback: the real
//! mosquitto.conf (the identity broker) and mosquitto-enroll.conf (the enrollment broker, a process of its
//! own) with their ACL files, `/etc/mosquitto/outpost/` pointed at a test folder holding certificates from
//! `outpost certs`, and free ports instead of 8883/8884/8885. Shared with the simulations' enrollment test
//! through `#[path]`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ProdBroker {
    /// Mutual TLS: devices and the controller (the identity broker).
    pub tls_port: u16,
    /// Server-auth TLS, anonymous: enrollment only (the enrollment broker).
    pub enroll_port: u16,
    /// Mutual TLS on the enrollment broker: the controller reads requests and answers there.
    pub enroll_controller_port: u16,
    pub dir: PathBuf,
    identity: Child,
    enroll: Child,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/deploy/mosquitto")
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The shipped file `name` with its folder and `ports` (shipped → test) replaced; each must be there.
fn config(name: &str, dir: &Path, ports: &[(u16, u16)]) -> String {
    let shipped = std::fs::read_to_string(deploy_dir().join(name)).unwrap();
    let mut conf = shipped
        .replace("/etc/mosquitto/outpost/", &format!("{}/", dir.display()))
        .replace("persistence true", "persistence false");
    for (from, to) in ports {
        let line = format!("listener {from}\n");
        assert!(conf.contains(&line), "the shipped {name} has listener {from}");
        conf = conf.replace(&line, &format!("listener {to} 127.0.0.1\n"));
    }
    conf
}

fn spawn(dir: &Path, name: &str, conf: String) -> Child {
    let conf_path = dir.join(name);
    std::fs::write(&conf_path, conf).unwrap();
    let bin = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new(bin)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("mosquitto is installed (apt-get install mosquitto)")
}

impl ProdBroker {
    /// Starts both brokers with the shipped configs. `dir` must hold `ca.pem`, `server.crt`, `server.key`
    /// and `crl.pem` (a copy of the controller's `<data>/ca/crl.pem`, as in production).
    pub fn start(dir: &Path) -> ProdBroker {
        let (tls_port, enroll_port, enroll_controller_port) = (free_port(), free_port(), free_port());
        for f in ["acl", "enroll.acl", "enroll-controller.acl"] {
            std::fs::copy(deploy_dir().join(f), dir.join(f)).unwrap();
        }
        // mosquitto started as root drops to its own user: let it read the (throwaway) test key.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let identity = spawn(dir, "mosquitto.conf", config("mosquitto.conf", dir, &[(8883, tls_port)]));
        let enroll_conf = config("mosquitto-enroll.conf", dir, &[(8884, enroll_port), (8885, enroll_controller_port)]);
        let enroll = spawn(dir, "mosquitto-enroll.conf", enroll_conf);
        for port in [tls_port, enroll_port, enroll_controller_port] {
            wait_port(port);
        }
        ProdBroker { tls_port, enroll_port, enroll_controller_port, dir: dir.to_owned(), identity, enroll }
    }

    /// SIGHUP to both: mosquitto reloads its configuration, ACLs and the listeners' CRL.
    pub fn reload(&self) {
        // The shell's builtin kill: no procps needed on a minimal machine.
        let ok = Command::new("sh").args(["-c", &self.reload_command()]).status().unwrap().success();
        assert!(ok, "SIGHUP to mosquitto");
    }

    /// A shell command that makes both brokers reload (for `[enroll] on_revoke`).
    pub fn reload_command(&self) -> String {
        format!("kill -HUP {} {}", self.identity.id(), self.enroll.id())
    }

    /// The identity broker's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.conf.log")).unwrap_or_default()
    }

    pub fn enroll_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto-enroll.conf.log")).unwrap_or_default()
    }
}

impl Drop for ProdBroker {
    fn drop(&mut self) {
        for child in [&mut self.identity, &mut self.enroll] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
