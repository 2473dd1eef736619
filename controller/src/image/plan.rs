//! What goes into a device image, as pure functions: the flags parsed and checked, the agent's config and
//! systemd unit rendered, and the file tree laid out. No I/O here; `build` reads the inputs and writes
//! the outputs around these.

use super::target::Target;

/// Where things live on the device. The agent's config names these paths, the unit names the config.
pub const AGENT_BIN: &str = "/usr/bin/outpost-agent";
pub const CONFIG: &str = "/etc/outpost/agent.toml";
pub const TRUST: &str = "/etc/outpost/trust.policy";
pub const ROOT_PUB: &str = "/etc/outpost/root.pub";
pub const CA: &str = "/etc/outpost/ca.pem";
pub const ENROLL_TOKEN: &str = "/etc/outpost/enroll-token";
pub const DATA_DIR: &str = "/var/lib/outpost";
/// Read-only, beside the agent rather than in its data partition: the store under `DATA_DIR` belongs to
/// the agent alone, and the first bundle is installed from here through the normal verify path.
pub const FIRST_BUNDLE: &str = "/usr/share/outpost/first.obundle";
pub const UNIT: &str = "/usr/lib/systemd/system/outpost-agent.service";
/// `systemctl enable` without systemctl: the unit starts at boot because this link exists.
pub const UNIT_WANTS: &str = "/etc/systemd/system/multi-user.target.wants/outpost-agent.service";

/// The controller's broker as the agent will dial it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for ControllerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `mqtts://HOST[:PORT]` (default 8883) or `mqtt://HOST[:PORT]` (default 1883; loopback tests and labs).
/// The same grammar the agent's link accepts, checked here so a typo fails at build time, not at boot.
pub fn parse_controller(s: &str) -> Result<ControllerUrl, String> {
    let bad = |why: &str| format!("controller URL {s:?}: {why}");
    let (tls, rest) = if let Some(r) = s.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(bad("must start with mqtts:// (or mqtt:// without TLS)"));
    };
    let (host, port) = match rest.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed [ in an IPv6 address"))?;
            (h, after.strip_prefix(':'))
        }
        None => match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    let host_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    if host.is_empty() || host.len() > 253 || !host.chars().all(host_ok) {
        return Err(bad("needs a host name or address (no path, user or query)"));
    }
    let port = match port {
        None => {
            if tls {
                8883
            } else {
                1883
            }
        }
        Some(p) => p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| bad("port must be 1-65535"))?,
    };
    Ok(ControllerUrl { tls, host: host.to_owned(), port })
}

/// `k=v,k2=v2`. Keys are names (letters, digits, `_.-`, up to 63); values are up to 128 printable
/// characters without `,` or `=`. Duplicates are refused rather than silently losing one.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').ok_or_else(|| format!("label {item:?} is not key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        let key_ok = !k.is_empty()
            && k.len() <= 63
            && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !key_ok {
            return Err(format!("label key {k:?}: use 1-63 letters, digits, _ . -"));
        }
        if v.len() > 128 || v.contains('=') || v.chars().any(|c| c.is_control()) {
            return Err(format!("label {k}: value {v:?} must be at most 128 printable characters without ="));
        }
        if out.iter().any(|(have, _)| have == k) {
            return Err(format!("label {k} is given twice"));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    out.sort();
    Ok(out)
}

/// `64M`, `1G`, `512K` or plain bytes (binary units, as mke2fs reads them).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("size {s:?}: use bytes or a number with K, M or G");
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// An enrollment token goes into a file the agent reads: one line of printable ASCII.
pub fn check_token(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 4096 || !t.chars().all(|c| c.is_ascii_graphic()) {
        return Err("enrollment token must be 1-4096 printable ASCII characters without spaces".into());
    }
    Ok(())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// The agent's config on the device. Paths only; the identity is the agent's own (made on the device at
/// first boot), so one image serves a whole batch of devices.
pub fn agent_toml(
    target: Target,
    agent_version: &str,
    url: &ControllerUrl,
    labels: &[(String, String)],
    ca: bool,
) -> String {
    let mut t = format!(
        "# Written by `outpost image build` for {} (outpost-agent {agent_version}).\n\
         data_dir = {}\n\n[trust]\npolicy = {}\nroot_pub = [{}]\n\n[link]\nbroker = {}\n",
        target.triple(),
        toml_str(DATA_DIR),
        toml_str(TRUST),
        toml_str(ROOT_PUB),
        toml_str(&url.to_string()),
    );
    if ca {
        t += &format!("ca = {}\n", toml_str(CA));
    }
    // First boot: the agent enrolls with this token (device key and certificate under
    // `<data_dir>/identity/`); later boots use the identity and never read the token again.
    t += &format!("enroll_token = {}\n", toml_str(ENROLL_TOKEN));
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{} = {}", toml_str(k), toml_str(v))).collect();
    t += &format!("labels = {{ {} }}\n", pairs.join(", "));
    t
}

/// The systemd unit. `Type=notify` with a watchdog: the agent says READY=1 once it serves and pings
/// every half `WatchdogSec`; a hung agent is restarted. The first bundle is installed by `ExecStartPre`
/// only while no model is active (`--if-no-model`), and a failure there (say, a clock so wrong the bundle
/// looks expired) must not keep the agent from starting and fetching its model from the fleet: hence `-`.
pub fn systemd_unit(first_bundle: bool) -> String {
    let pre = if first_bundle {
        format!("ExecStartPre=-{AGENT_BIN} install --config {CONFIG} --if-no-model {FIRST_BUNDLE}\n")
    } else {
        String::new()
    };
    format!(
        "[Unit]\n\
Description=Outpost agent: local inference and verified model updates\n\
Wants=network-online.target\n\
After=network-online.target time-sync.target\n\
# Never stop restarting (systemd's default gives up after 5 starts in 10 s): the agent aborts on a panic,\n\
# and its update machine, not systemd, ends a crash loop by refusing or rolling back the new model.\n\
StartLimitIntervalSec=0\n\
\n\
[Service]\n\
Type=notify\n\
NotifyAccess=main\n\
{pre}ExecStart={AGENT_BIN} run --config {CONFIG}\n\
Restart=always\n\
RestartSec=2s\n\
# Model loading (tract optimises the model) happens before READY=1; big models on slow boards take a while.\n\
TimeoutStartSec=180s\n\
WatchdogSec=30s\n\
Environment=OUTPOST_LOG=info\n\
# The agent needs its data partition, the network and nothing else.\n\
ProtectSystem=strict\n\
ReadWritePaths={DATA_DIR}\n\
ProtectHome=yes\n\
PrivateTmp=yes\n\
PrivateDevices=yes\n\
NoNewPrivileges=yes\n\
CapabilityBoundingSet=\n\
AmbientCapabilities=\n\
ProtectKernelTunables=yes\n\
ProtectKernelModules=yes\n\
ProtectKernelLogs=yes\n\
ProtectControlGroups=yes\n\
ProtectClock=yes\n\
ProtectHostname=yes\n\
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n\
RestrictNamespaces=yes\n\
RestrictRealtime=yes\n\
RestrictSUIDSGID=yes\n\
LockPersonality=yes\n\
MemoryDenyWriteExecute=yes\n\
SystemCallArchitectures=native\n\
SystemCallFilter=@system-service\n\
SystemCallErrorNumber=EPERM\n\
UMask=0077\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n"
    )
}

/// One node of the image's tree; `path` is absolute on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub node: Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// The file contents of an image, read and checked by `build`.
#[derive(Debug, Clone)]
pub struct Contents {
    pub agent: Vec<u8>,
    pub config: String,
    pub unit: String,
    pub trust: Vec<u8>,
    pub root_pub: Vec<u8>,
    pub ca: Option<Vec<u8>>,
    pub enroll_token: String,
    pub bundle: Option<Vec<u8>>,
}

/// The whole tree, parents before children, sorted: the tar and the ext4 image hold exactly this.
pub fn layout(c: &Contents) -> Vec<Entry> {
    let file = |path: &str, mode, bytes: &[u8]| Entry { path: path.into(), mode, node: Node::File(bytes.to_vec()) };
    let mut files = vec![
        file(AGENT_BIN, 0o755, &c.agent),
        file(CONFIG, 0o644, c.config.as_bytes()),
        file(TRUST, 0o644, &c.trust),
        file(ROOT_PUB, 0o644, &c.root_pub),
        // The token lets whoever holds it enroll a device: readable by root (the agent) only.
        file(ENROLL_TOKEN, 0o600, format!("{}\n", c.enroll_token).as_bytes()),
        file(UNIT, 0o644, c.unit.as_bytes()),
        Entry { path: UNIT_WANTS.into(), mode: 0o777, node: Node::Symlink(UNIT.into()) },
        // The agent's store: model slots, update state, telemetry queue. Private to the agent.
        Entry { path: DATA_DIR.into(), mode: 0o700, node: Node::Dir },
    ];
    if let Some(ca) = &c.ca {
        files.push(file(CA, 0o644, ca));
    }
    if let Some(b) = &c.bundle {
        files.push(file(FIRST_BUNDLE, 0o644, b));
    }
    let mut dirs: Vec<Entry> = Vec::new();
    for e in &files {
        let mut p = e.path.as_str();
        while let Some((parent, _)) = p.rsplit_once('/').filter(|(parent, _)| !parent.is_empty()) {
            if !dirs.iter().any(|d| d.path == parent) && !files.iter().any(|f| f.path == parent) {
                dirs.push(Entry { path: parent.into(), mode: 0o755, node: Node::Dir });
            }
            p = parent;
        }
    }
    dirs.extend(files);
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    dirs
}

/// Bytes the files need in an ext4 image of 4 KiB blocks, plus room for the journal, inode tables and
/// a first update's staging: below this mke2fs would fail half way, so refuse up front.
pub fn min_data_size(tree: &[Entry]) -> u64 {
    let blocks: u64 = tree
        .iter()
        .map(|e| match &e.node {
            Node::File(b) => (b.len() as u64).div_ceil(4096),
            _ => 1,
        })
        .sum();
    blocks * 4096 + (8 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_urls_are_checked_and_get_default_ports() {
        let u = parse_controller("mqtts://fleet.example.com").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "fleet.example.com", 8883));
        assert_eq!(parse_controller("mqtt://127.0.0.1:1884").unwrap().to_string(), "mqtt://127.0.0.1:1884");
        assert_eq!(parse_controller("mqtts://[::1]:9").unwrap().to_string(), "mqtts://[::1]:9");
        for bad in [
            "https://fleet:8883",
            "fleet:8883",
            "mqtts://",
            "mqtts://fleet:0",
            "mqtts://fleet:99999",
            "mqtts://fleet/path",
            "mqtts://user@fleet",
            "mqtts://fleet:8883?x=1",
            "mqtts://[::1",
        ] {
            assert!(parse_controller(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_parse_sorted_and_refuse_junk_and_duplicates() {
        let l = parse_labels("site=berlin, line = 3,").unwrap();
        assert_eq!(l, [("line".into(), "3".into()), ("site".into(), "berlin".into())]);
        assert_eq!(parse_labels("").unwrap(), []);
        for bad in ["site", "=x", "a b=c", "site=a,site=b", "k=a=b", "k=\u{7}"] {
            assert!(parse_labels(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_read_binary_units() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        for bad in ["", "M", "12X", "-1M", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_agent_config_names_the_image_paths_and_escapes_labels() {
        let url = parse_controller("mqtts://fleet:8883").unwrap();
        let labels = vec![("site".to_owned(), "a \"quoted\" place".to_owned())];
        let t = agent_toml(Target::Aarch64Musl, "0.1.0", &url, &labels, true);
        let v: toml::Value = toml::from_str(&t).unwrap();
        assert_eq!(v["data_dir"].as_str(), Some(DATA_DIR));
        assert_eq!(v["trust"]["policy"].as_str(), Some(TRUST));
        assert_eq!(v["trust"]["root_pub"][0].as_str(), Some(ROOT_PUB));
        assert_eq!(v["link"]["broker"].as_str(), Some("mqtts://fleet:8883"));
        assert_eq!(v["link"]["ca"].as_str(), Some(CA));
        assert_eq!(v["link"]["enroll_token"].as_str(), Some(ENROLL_TOKEN));
        assert_eq!(v["link"]["labels"]["site"].as_str(), Some("a \"quoted\" place"));
        let plain = agent_toml(Target::Aarch64Musl, "0.1.0", &url, &[], false);
        assert!(toml::from_str::<toml::Value>(&plain).unwrap()["link"].get("ca").is_none());
    }

    #[test]
    fn the_unit_is_a_hardened_notify_service_that_installs_the_first_bundle_only_when_given() {
        let u = systemd_unit(true);
        for line in [
            "Type=notify",
            "WatchdogSec=30s",
            "Restart=always",
            "StartLimitIntervalSec=0",
            "ProtectSystem=strict",
            "ReadWritePaths=/var/lib/outpost",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "ExecStart=/usr/bin/outpost-agent run --config /etc/outpost/agent.toml",
            "ExecStartPre=-/usr/bin/outpost-agent install --config /etc/outpost/agent.toml --if-no-model \
             /usr/share/outpost/first.obundle",
            "WantedBy=multi-user.target",
        ] {
            assert!(u.lines().any(|l| l == line), "missing {line:?} in\n{u}");
        }
        assert!(!systemd_unit(false).contains("ExecStartPre"));
    }

    fn contents(bundle: bool) -> Contents {
        Contents {
            agent: b"agent".to_vec(),
            config: "cfg".into(),
            unit: "unit".into(),
            trust: b"trust".to_vec(),
            root_pub: b"root".to_vec(),
            ca: Some(b"ca".to_vec()),
            enroll_token: "tok".into(),
            bundle: bundle.then(|| b"bundle".to_vec()),
        }
    }

    #[test]
    fn the_tree_lists_every_parent_before_its_children() {
        let tree = layout(&contents(true));
        let paths: Vec<&str> = tree.iter().map(|e| e.path.as_str()).collect();
        for (i, e) in tree.iter().enumerate() {
            if let Some((parent, _)) = e.path.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
                let at = paths.iter().position(|p| *p == parent).unwrap_or_else(|| panic!("no parent for {}", e.path));
                assert!(at < i && tree[at].node == Node::Dir, "{parent} before {}", e.path);
            }
        }
        for want in [AGENT_BIN, CONFIG, TRUST, ROOT_PUB, CA, ENROLL_TOKEN, UNIT, UNIT_WANTS, DATA_DIR, FIRST_BUNDLE] {
            assert!(paths.contains(&want), "{want} missing: {paths:?}");
        }
        let token = tree.iter().find(|e| e.path == ENROLL_TOKEN).unwrap();
        assert_eq!((token.mode, &token.node), (0o600, &Node::File(b"tok\n".to_vec())));
        assert!(!layout(&contents(false)).iter().any(|e| e.path == FIRST_BUNDLE));
        assert!(min_data_size(&tree) > 8 << 20);
    }
}
