//! The shipped production broker setup (`controller/deploy/mosquitto/`) on loopback: the real
//! mosquitto.conf, acl and enroll.acl, with `/etc/mosquitto/outpost/` pointed at a test folder holding
//! certificates from `outpost certs`, and free ports instead of 8883/8884. Shared with the simulations'
//! enrollment test through `#[path]`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ProdBroker {
    /// Mutual TLS: devices and the controller.
    pub tls_port: u16,
    /// Server-auth TLS, anonymous: enrollment only.
    pub enroll_port: u16,
    pub dir: PathBuf,
    child: Child,
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

impl ProdBroker {
    /// Starts mosquitto with the shipped config. `dir` must hold `ca.pem`, `server.crt`, `server.key` and
    /// `crl.pem` (a symlink to the controller's `<data>/ca/crl.pem` works, as in production).
    pub fn start(dir: &Path) -> ProdBroker {
        let (tls_port, enroll_port) = (free_port(), free_port());
        let shipped = std::fs::read_to_string(deploy_dir().join("mosquitto.conf")).unwrap();
        let d = format!("{}/", dir.display());
        let conf = shipped
            .replace("/etc/mosquitto/outpost/", &d)
            .replace("listener 8883", &format!("listener {tls_port} 127.0.0.1"))
            .replace("listener 8884", &format!("listener {enroll_port} 127.0.0.1"))
            .replace("persistence true", "persistence false");
        assert!(conf.contains(&format!("listener {tls_port} 127.0.0.1")), "the shipped config has listener 8883");
        assert!(conf.contains(&format!("listener {enroll_port} 127.0.0.1")), "the shipped config has listener 8884");
        for f in ["acl", "enroll.acl"] {
            std::fs::copy(deploy_dir().join(f), dir.join(f)).unwrap();
        }
        // mosquitto started as root drops to its own user: let it read the (throwaway) test key.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let conf_path = dir.join("mosquitto.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let bin = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
        let log = std::fs::File::create(dir.join("mosquitto.log")).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto is installed (apt-get install mosquitto)");
        wait_port(tls_port);
        wait_port(enroll_port);
        ProdBroker { tls_port, enroll_port, dir: dir.to_owned(), child }
    }

    /// SIGHUP: mosquitto reloads its configuration, ACLs and the listeners' CRL.
    pub fn reload(&self) {
        // The shell's builtin kill: no procps needed on a minimal machine.
        let ok = Command::new("sh").args(["-c", &format!("kill -HUP {}", self.child.id())]).status().unwrap().success();
        assert!(ok, "SIGHUP to mosquitto");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for ProdBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
