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
