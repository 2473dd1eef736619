//! Small reads of the operating system's view of this process and device (Linux `/proc`, `statvfs`-free).

/// Resident set size of this process in bytes (0 where `/proc` is unavailable).
pub fn rss_bytes() -> u64 {
    // statm: size resident shared text lib data dt, in pages. Pages are 4 KiB on every target we ship.
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

/// The machine's memory (`MemTotal` in `/proc/meminfo`), or `None` where it cannot be read.
pub fn mem_total_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Bytes an unprivileged process may still write on the filesystem holding `path` (0 when unknown): the
/// room left for staging a model update and buffering telemetry.
pub fn disk_free_bytes(path: &std::path::Path) -> u64 {
    rustix::fs::statvfs(path).map(|s| s.f_bavail.saturating_mul(s.f_frsize)).unwrap_or(0)
}

/// Seconds since the device booted (0 where `/proc/uptime` is unavailable).
pub fn uptime_secs() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
        .map(|s| s as u64)
        .unwrap_or(0)
}

/// The first thermal zone's temperature, where the device exposes one.
pub fn temperature_c() -> Option<f32> {
    let milli: f32 = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp").ok()?.trim().parse().ok()?;
    Some(milli / 1000.0)
}

/// This process's CPU use between two readings, as a percentage of one core.
#[derive(Debug)]
pub struct CpuMeter {
    last_ticks: u64,
    last: std::time::Instant,
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuMeter {
    pub fn new() -> Self {
        CpuMeter { last_ticks: process_ticks(), last: std::time::Instant::now() }
    }

    pub fn percent(&mut self) -> f32 {
        let ticks = process_ticks();
        let elapsed = self.last.elapsed().as_secs_f64();
        // USER_HZ is 100 on every Linux target we ship.
        let used = ticks.saturating_sub(self.last_ticks) as f64 / 100.0;
        self.last_ticks = ticks;
        self.last = std::time::Instant::now();
        if elapsed <= 0.0 { 0.0 } else { (100.0 * used / elapsed) as f32 }
    }
}

/// utime + stime of this process in clock ticks, from /proc/self/stat (fields 14 and 15).
fn process_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0 };
    // The command name (field 2) may contain spaces; fields after the closing parenthesis are fixed.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    get(11) + get(12)
}

/// The device id when the config names none: `dev-` and the first 16 hex digits of `/etc/machine-id`
/// (stable across boots, unique per installed system), else the hostname. `None` when neither is usable.
pub fn default_device_id() -> Option<String> {
    let machine_id = std::fs::read_to_string("/etc/machine-id").ok();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    device_id_from(machine_id.as_deref(), hostname.as_deref())
}

/// Pure part of [`default_device_id`].
pub fn device_id_from(machine_id: Option<&str>, hostname: Option<&str>) -> Option<String> {
    let valid = |s: String| outpost_protocol::DeviceId::new(s.clone()).ok().map(|_| s);
    let from_machine = machine_id
        .map(str::trim)
        .filter(|m| m.len() >= 16 && m.bytes().all(|b| b.is_ascii_hexdigit()) && m.bytes().any(|b| b != b'0'))
        .and_then(|m| valid(format!("dev-{}", &m[..16].to_ascii_lowercase())));
    from_machine.or_else(|| {
        let h = hostname?.trim();
        let clean: String =
            h.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
        (!clean.is_empty() && clean != "localhost").then_some(clean).and_then(valid)
    })
}

#[cfg(test)]
mod device_id_tests {
    use super::device_id_from;

    #[test]
    fn the_machine_id_names_the_device_else_a_usable_hostname() {
        let mid = "0123456789ABCDEF0123456789abcdef\n";
        assert_eq!(device_id_from(Some(mid), Some("board")), Some("dev-0123456789abcdef".into()));
        // An empty, short, all-zero or garbled machine id falls back to the hostname.
        for bad in ["", "1234", "00000000000000000000000000000000", "not-a-machine-id-at-all-xxxxxxxx"] {
            assert_eq!(device_id_from(Some(bad), Some("edge-7\n")), Some("edge-7".into()), "{bad:?}");
        }
        assert_eq!(device_id_from(None, Some("cam.lobby")), Some("cam-lobby".into()));
        assert_eq!(device_id_from(None, Some("localhost")), None);
        assert_eq!(device_id_from(None, None), None);
    }
}

#[cfg(test)]
mod disk_tests {
    #[test]
    fn free_disk_space_agrees_with_df() {
        let dir = std::env::temp_dir();
        let ours = super::disk_free_bytes(&dir);
        let df = std::process::Command::new("df").args(["-B1", "--output=avail"]).arg(&dir).output().unwrap();
        let df: u64 = String::from_utf8_lossy(&df.stdout).lines().nth(1).unwrap().trim().parse().unwrap();
        assert!(ours > 0);
        // Other processes write meanwhile: agree within 1 % or 64 MiB.
        let tolerance = (df / 100).max(64 << 20);
        assert!(ours.abs_diff(df) <= tolerance, "statvfs {ours} vs df {df}");
        assert_eq!(super::disk_free_bytes(std::path::Path::new("/no/such/dir")), 0);
    }
}
