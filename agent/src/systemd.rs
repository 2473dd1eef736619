//! systemd's notify and watchdog protocol (sd_notify(3)), without libsystemd: when the service manager
//! sets `NOTIFY_SOCKET`, the agent sends `READY=1` once it serves, `WATCHDOG=1` every half
//! `WATCHDOG_USEC`, and `STOPPING=1` when it begins to shut down. Each message is one datagram on a unix
//! socket, a path or (leading `@`) a name in the abstract namespace. Outside systemd nothing is sent.
//!
//! Parsing the environment is pure (`Settings::from_vars`); the `Notifier` only sends. A send that fails
//! is logged and otherwise ignored: the agent's job is serving inference, and systemd restarts it if the
//! watchdog pings stop arriving, which is the behaviour a wedged agent should get.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the service manager listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(PathBuf),
    /// `@name`: Linux's abstract namespace (no file; the name without the `@`).
    Abstract(Vec<u8>),
}

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub target: Target,
    /// How often to send `WATCHDOG=1`: half the manager's timeout, as sd_watchdog_enabled(3) advises, so
    /// one late ping does not get the agent killed.
    pub watchdog_every: Option<Duration>,
}

impl Settings {
    /// From the values of `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` and this process's id.
    /// `None` when not under systemd (or the socket value is unusable). A `WATCHDOG_PID` naming another
    /// process means the watchdog is for that process (e.g. our parent), not for us.
    pub fn from_vars(socket: Option<&str>, usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Settings> {
        let socket = socket.filter(|s| !s.is_empty())?;
        let target = match socket.strip_prefix('@') {
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            None if socket.starts_with('/') => Target::Path(PathBuf::from(socket)),
            None => return None,
        };
        let for_us = pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(own_pid));
        let watchdog_every = usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2).max(Duration::from_millis(1)));
        Some(Settings { target, watchdog_every })
    }

    pub fn from_env() -> Option<Settings> {
        let var = |k| std::env::var(k).ok();
        Settings::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }
}

/// Sends state changes to the service manager; a no-op outside systemd. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<(UnixDatagram, SocketAddr, Option<Duration>)>>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Settings::from_env().map(Notifier::new).unwrap_or_default()
    }

    pub fn new(s: Settings) -> Notifier {
        let addr = match &s.target {
            Target::Path(p) => SocketAddr::from_pathname(p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)
            }
        };
        match (UnixDatagram::unbound(), addr) {
            (Ok(sock), Ok(addr)) => Notifier { inner: Some(Arc::new((sock, addr, s.watchdog_every))) },
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, target = ?s.target, "NOTIFY_SOCKET unusable; not notifying systemd");
                Notifier::default()
            }
        }
    }

    pub fn send(&self, state: &str) {
        if let Some((sock, addr, _)) = self.inner.as_deref()
            && let Err(e) = sock.send_to_addr(state.as_bytes(), addr)
        {
            tracing::warn!(error = %e, state, "cannot notify systemd");
        }
    }

    /// `READY=1`, then `WATCHDOG=1` on the watchdog period from a task on the current tokio runtime
    /// (a stalled runtime stops the pings, and systemd restarts the agent). The task is aborted when the
    /// returned guard drops.
    pub fn ready(&self) -> WatchdogTask {
        self.send("READY=1");
        let every = self.inner.as_deref().and_then(|(_, _, w)| *w);
        let task = every.map(|every| {
            let me = self.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    me.send("WATCHDOG=1");
                }
            })
        });
        WatchdogTask(task)
    }

    /// Resolves with `shutdown` after sending `STOPPING=1`, so systemd knows the stop is ours while the
    /// server drains its connections.
    pub fn stopping_on(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let me = self.clone();
        async move {
            shutdown.await;
            me.send("STOPPING=1");
        }
    }
}

/// Stops the watchdog pings when dropped.
#[derive(Debug)]
pub struct WatchdogTask(Option<tokio::task::JoinHandle<()>>);

impl Drop for WatchdogTask {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_socket_means_not_under_systemd() {
        assert_eq!(Settings::from_vars(None, Some("1000000"), None, 1), None);
        assert_eq!(Settings::from_vars(Some(""), None, None, 1), None);
        assert_eq!(Settings::from_vars(Some("relative/path"), None, None, 1), None);
    }

    #[test]
    fn the_watchdog_pings_at_half_the_timeout_and_only_for_our_pid() {
        let s = Settings::from_vars(Some("/run/systemd/notify"), Some("30000000"), Some("42"), 42).unwrap();
        assert_eq!(s.target, Target::Path("/run/systemd/notify".into()));
        assert_eq!(s.watchdog_every, Some(Duration::from_secs(15)));
        let other = Settings::from_vars(Some("/run/n"), Some("30000000"), Some("41"), 42).unwrap();
        assert_eq!(other.watchdog_every, None);
        let no_pid = Settings::from_vars(Some("@sd"), Some("2000000"), None, 42).unwrap();
        assert_eq!(
            (no_pid.target, no_pid.watchdog_every),
            (Target::Abstract(b"sd".to_vec()), Some(Duration::from_secs(1)))
        );
        for bad in ["0", "soon", "-5"] {
            assert_eq!(Settings::from_vars(Some("/n"), Some(bad), None, 1).unwrap().watchdog_every, None, "{bad}");
        }
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).expect("a datagram within the timeout");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Everything queued on the socket now.
    fn drain(sock: &UnixDatagram) -> Vec<String> {
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    }

    #[tokio::test]
    async fn ready_watchdog_and_stopping_arrive_on_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("outpost-sd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        // WATCHDOG_USEC = 40 ms: a ping every 20 ms, the first at once.
        let n = Notifier::new(Settings::from_vars(path.to_str(), Some("40000"), None, 1).unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stopping = n.stopping_on(async move {
            let _ = rx.await;
        });

        let watchdog = n.ready();
        tokio::time::sleep(Duration::from_millis(150)).await;
        drop(watchdog);
        let got = drain(&manager);
        assert_eq!(got.first().map(String::as_str), Some("READY=1"), "{got:?}");
        // At least two pings in 150 ms, however loaded the machine (a slow one sends fewer, never none).
        assert!(got.len() >= 3 && got[1..].iter().all(|m| m == "WATCHDOG=1"), "{got:?}");

        tx.send(()).unwrap();
        stopping.await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Only STOPPING=1 now: the dropped guard stopped the pings.
        assert_eq!(drain(&manager), ["STOPPING=1"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn abstract_namespace_sockets_are_reached_by_name() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("outpost-sd-test-{}", std::process::id());
        let manager = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        manager.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(Settings::from_vars(Some(&format!("@{name}")), None, None, 1).unwrap());
        n.send("READY=1");
        assert_eq!(recv(&manager), "READY=1");
    }

    #[test]
    fn outside_systemd_sending_does_nothing() {
        Notifier::default().send("READY=1");
    }
}
