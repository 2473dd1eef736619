//! Readings of the whole run at one moment (a `Mark`: processes, broker counters, telemetry received by
//! the controller), and what happened between two of them (a `Span`). Taking a mark reads `/proc` and the
//! latest `$SYS` values; the arithmetic on marks is pure.

use super::broker::SysCounters;
use super::procstat::{self, Sample};
use outpost_controller::daemon::registry::DeviceRecord;
use std::collections::BTreeMap;

/// The processes measured. The controller is `None` when it runs inside this process.
#[derive(Debug, Clone, Copy)]
pub struct Pids {
    pub broker: u32,
    pub controller: Option<u32>,
    pub this: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Mark {
    /// Seconds since the run started.
    pub at: f64,
    pub broker: Sample,
    pub controller: Option<Sample>,
    pub this: Sample,
    pub sys: BTreeMap<String, u64>,
    /// Telemetry records the controller has stored, over all devices.
    pub telemetry: u64,
    pub online: usize,
    /// Devices per running version, as the controller sees them.
    pub versions: BTreeMap<String, u32>,
    /// Bytes of the controller's device listing (`GET /api/v1/devices`) this mark read.
    pub listing_bytes: u64,
}

impl Mark {
    pub fn take(at: f64, pids: Pids, sys: &SysCounters, devices: &[DeviceRecord], listing_bytes: u64) -> Mark {
        Mark {
            at,
            broker: procstat::sample(pids.broker).unwrap_or_default(),
            controller: pids.controller.and_then(procstat::sample),
            this: procstat::sample(pids.this).unwrap_or_default(),
            sys: sys.snapshot(),
            telemetry: devices.iter().map(|d| d.telemetry.received).sum(),
            online: devices.iter().filter(|d| d.online).count(),
            versions: crate::demo::progress::versions(devices),
            listing_bytes,
        }
    }
}

/// Between two marks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub secs: f64,
    /// Average cores busy (CPU seconds / wall seconds).
    pub broker_cores: f64,
    pub controller_cores: Option<f64>,
    pub this_cores: f64,
    /// `$SYS` counter increases (only counters present at both ends).
    pub sys: BTreeMap<String, u64>,
    pub telemetry_per_sec: f64,
}

pub fn span(a: &Mark, b: &Mark) -> Span {
    let secs = (b.at - a.at).max(1e-9);
    let cores = |x: &Sample, y: &Sample| (y.cpu_secs - x.cpu_secs).max(0.0) / secs;
    let sys = a.sys.iter().filter_map(|(k, v)| b.sys.get(k).map(|w| (k.clone(), w.saturating_sub(*v)))).collect();
    Span {
        secs,
        broker_cores: cores(&a.broker, &b.broker),
        controller_cores: a.controller.zip(b.controller).map(|(x, y)| cores(&x, &y)),
        this_cores: cores(&a.this, &b.this),
        sys,
        telemetry_per_sec: b.telemetry.saturating_sub(a.telemetry) as f64 / secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(at: f64, cpu: f64, bytes: u64, telemetry: u64) -> Mark {
        let s = Sample { cpu_secs: cpu, ..Sample::default() };
        Mark {
            at,
            broker: s,
            controller: Some(s),
            this: s,
            sys: [("bytes/sent".to_owned(), bytes)].into(),
            telemetry,
            ..Mark::default()
        }
    }

    #[test]
    fn a_span_gives_cores_busy_counter_increases_and_ingest_rate() {
        let s = span(&mark(10.0, 1.0, 100, 50), &mark(20.0, 6.0, 1100, 250));
        assert_eq!(s.secs, 10.0);
        assert_eq!(s.broker_cores, 0.5);
        assert_eq!(s.controller_cores, Some(0.5));
        assert_eq!(s.sys["bytes/sent"], 1000);
        assert_eq!(s.telemetry_per_sec, 20.0);
    }

    #[test]
    fn counters_missing_at_either_end_are_left_out() {
        let mut a = mark(0.0, 0.0, 0, 0);
        a.sys.clear();
        a.controller = None;
        let s = span(&a, &mark(1.0, 0.0, 5, 0));
        assert!(s.sys.is_empty());
        assert_eq!(s.controller_cores, None);
    }
}
