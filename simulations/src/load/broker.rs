//! Debian's mosquitto as the fleet broker, started by the load run on a free loopback port with a
//! generated config, and its own counters (`$SYS/broker/...`) read by an MQTT subscriber.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The config: loopback only, anonymous (the load run measures the fleet path, not TLS and ACLs), no
/// persistence, no connection cap, and `$SYS` counters every second. `max_queued_messages` is raised from
/// mosquitto's 1000 because the controller is one client taking every device's messages: when 1,000
/// devices say hello at once, a queue of 1000 drops QoS 1 messages while the controller catches up.
pub fn config(port: u16, log: &Path) -> String {
    format!(
        "listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence false\n\
         max_connections -1\n\
         max_queued_messages 100000\n\
         sys_interval 1\n\
         log_dest file {}\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n",
        log.display()
    )
}

#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Mosquitto {
    pub fn start(dir: &Path) -> anyhow::Result<Mosquitto> {
        std::fs::create_dir_all(dir)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let conf = dir.join("mosquitto.conf");
        let log = dir.join("mosquitto.log");
        std::fs::write(&conf, config(port, &log))?;
        let bin = if Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {bin} (apt-get install mosquitto): {e}"))?;
        let mut m = Mosquitto { child, addr: SocketAddr::from(([127, 0, 0, 1], port)), log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(m.addr).is_err() {
            if let Some(status) = m.child.try_wait()? {
                anyhow::bail!("mosquitto exited at start ({status}); see {}", m.log.display());
            }
            if Instant::now() > deadline {
                anyhow::bail!("mosquitto does not listen on {} after 10 s", m.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(m)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The latest value of each `$SYS` counter.
#[derive(Debug, Clone, Default)]
pub struct SysCounters(Arc<Mutex<BTreeMap<String, u64>>>);

impl SysCounters {
    /// Subscribes to `$SYS/broker/#` on `rt` with its own client.
    pub fn subscribe(rt: &tokio::runtime::Runtime, broker: SocketAddr) -> SysCounters {
        let counters = SysCounters::default();
        let values = counters.0.clone();
        let mut o = rumqttc::MqttOptions::new("outpost-load-sys", broker.ip().to_string(), broker.port());
        o.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = rumqttc::AsyncClient::new(o, 16);
        rt.spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        let _ = client.subscribe("$SYS/broker/#", rumqttc::QoS::AtMostOnce).await;
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let Some(name) = p.topic.strip_prefix("$SYS/broker/") else { continue };
                        if let Some(v) = std::str::from_utf8(&p.payload).ok().and_then(|s| s.trim().parse().ok()) {
                            values.lock().expect("counters").insert(name.to_owned(), v);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        counters
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().expect("counters").clone()
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.lock().expect("counters").get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_listens_on_loopback_only_and_publishes_counters_every_second() {
        let c = config(18830, Path::new("/tmp/m.log"));
        assert!(c.starts_with("listener 18830 127.0.0.1\n"));
        assert!(c.contains("sys_interval 1\n") && c.contains("max_connections -1\n"));
        assert!(c.contains("log_dest file /tmp/m.log\n"));
    }
}
