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
