//! Histograms: the fixed-bucket latency histogram that telemetry windows carry, and a generic one the
//! Prometheus exporter prints.

use outpost_protocol::telemetry::LATENCY_BUCKETS_US;
use std::fmt::Write as _;
use std::time::Duration;

/// Number of latency slots: one per bound in [`LATENCY_BUCKETS_US`] plus the open-ended overflow slot.
const LATENCY_SLOTS: usize = LATENCY_BUCKETS_US.len() + 1;

/// Request latencies in the protocol's fixed buckets, so windows from every device add up at the
/// controller. A bucket counts durations up to and including its bound (Prometheus `le` semantics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; LATENCY_SLOTS],
    count: u64,
    sum_us: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram { counts: [0; LATENCY_SLOTS], count: 0, sum_us: 0 }
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, latency: Duration) {
        // Saturate rather than wrap: a stuck request of 584,000 years still belongs in the overflow slot.
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let slot = LATENCY_BUCKETS_US.partition_point(|&bound| u64::from(bound) < us);
        self.counts[slot] += 1;
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// Per-bucket (not cumulative) counts, overflow last: the layout of `InferenceWindow::latency_hist`.
    pub fn counts(&self) -> Vec<u64> {
        self.counts.to_vec()
    }

    /// Estimated `q`-quantile in µs: linear interpolation inside the bucket that holds the q-th
    /// observation, as Prometheus' `histogram_quantile` does. The overflow bucket has no upper bound, so
    /// it reports the last bound. 0 when empty.
    pub fn quantile_us(&self, q: f64) -> u32 {
        if self.count == 0 {
            return 0;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        for (slot, &n) in self.counts.iter().enumerate() {
            // Skipping empty buckets keeps q = 0 from answering with an empty leading bucket.
            if n == 0 || ((below + n) as f64) < rank {
                below += n;
                continue;
            }
            let Some(&upper) = LATENCY_BUCKETS_US.get(slot) else {
                return LATENCY_BUCKETS_US[LATENCY_BUCKETS_US.len() - 1];
            };
            let lower = if slot == 0 { 0 } else { LATENCY_BUCKETS_US[slot - 1] };
            let fraction = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return (f64::from(lower) + f64::from(upper - lower) * fraction).round() as u32;
        }
        // Unreachable while counts sum to count; the last bound is the honest fallback.
        LATENCY_BUCKETS_US[LATENCY_BUCKETS_US.len() - 1]
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// A histogram over arbitrary finite bounds (ascending), with an overflow slot, kept non-cumulative and
/// printed cumulative in the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// # Panics
    /// When `bounds` are not strictly ascending finite numbers: bounds are constants in the exporter, so
    /// this is a programming error, and Prometheus would reject the output anyway.
    pub fn new(bounds: Vec<f64>) -> Self {
        assert!(bounds.iter().all(|b| b.is_finite()), "histogram bounds must be finite: {bounds:?}");
        assert!(bounds.windows(2).all(|w| w[0] < w[1]), "histogram bounds must ascend strictly: {bounds:?}");
        let counts = vec![0; bounds.len() + 1];
        Histogram { bounds, counts, sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, value: f64) {
        let slot = if value.is_nan() { self.bounds.len() } else { self.bounds.partition_point(|&b| b < value) };
        self.counts[slot] += 1;
        self.count += 1;
        // A NaN is still counted (in +Inf) but kept out of the sum, which it would poison forever.
        if !value.is_nan() {
            self.sum += value;
        }
    }

    pub fn bounds(&self) -> &[f64] {
        &self.bounds
    }

    /// Per-bucket (not cumulative) counts, overflow last.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Appends `name_bucket{labels,le="…"}` lines (cumulative, ending with `le="+Inf"`), `name_sum` and
    /// `name_count`. `labels` is the inside of the braces (`model="digits",version="1.0.0"`) or empty.
    pub fn prometheus(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (slot, &n) in self.counts.iter().enumerate() {
            cumulative += n;
            let le = self.bounds.get(slot).map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braced = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braced} {}", self.count);
    }
}

/// Latencies in seconds, the Prometheus base unit, over the protocol's buckets.
impl From<&LatencyHistogram> for Histogram {
    fn from(latency: &LatencyHistogram) -> Self {
        Histogram {
            bounds: LATENCY_BUCKETS_US.iter().map(|&us| f64::from(us) / 1e6).collect(),
            counts: latency.counts(),
            sum: latency.sum_us as f64 / 1e6,
            count: latency.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn durations_land_in_the_bucket_whose_bound_they_do_not_exceed() {
        let mut h = LatencyHistogram::new();
        for d in [us(0), us(100), us(101), us(5_000_000), us(5_000_001), Duration::MAX] {
            h.record(d);
        }
        let counts = h.counts();
        assert_eq!(counts.len(), LATENCY_BUCKETS_US.len() + 1);
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 1);
        assert_eq!(counts[LATENCY_BUCKETS_US.len() - 1], 1);
        assert_eq!(counts[LATENCY_BUCKETS_US.len()], 2);
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum_us(), u64::MAX);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.quantile_us(0.5), 0);
        // 10 observations in (1000, 2500]: the median sits halfway through that bucket.
        for _ in 0..10 {
            h.record(us(2_000));
        }
        assert_eq!(h.quantile_us(0.5), 1_750);
        assert_eq!(h.quantile_us(1.0), 2_500);
        assert_eq!(h.quantile_us(0.0), 1_000);
        // 90 fast ones in [0, 100] push the median down there, the p95 stays in the slow bucket.
        for _ in 0..90 {
            h.record(us(50));
        }
        assert_eq!(h.quantile_us(0.5), 56);
        assert_eq!(h.quantile_us(0.95), 1_750);
    }

    #[test]
    fn the_overflow_bucket_reports_the_last_bound() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_secs(60));
        assert_eq!(h.quantile_us(0.5), 5_000_000);
    }

    #[test]
    fn merge_adds_and_reset_empties() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(us(10));
        b.record(us(300));
        b.record(us(300));
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.sum_us(), 610);
        assert_eq!(a.counts()[0..3], [1, 0, 2]);
        a.reset();
        assert_eq!(a, LatencyHistogram::default());
    }

    #[test]
    fn prometheus_lines_are_cumulative_and_end_with_inf() {
        let mut h = Histogram::new(vec![0.5, 1.0]);
        for v in [0.25, 0.75, 0.875, 3.0, f64::NAN] {
            h.observe(v);
        }
        let mut out = String::new();
        h.prometheus("outpost_x", "model=\"m\"", &mut out);
        let expected = "outpost_x_bucket{model=\"m\",le=\"0.5\"} 1\n\
                        outpost_x_bucket{model=\"m\",le=\"1\"} 3\n\
                        outpost_x_bucket{model=\"m\",le=\"+Inf\"} 5\n\
                        outpost_x_sum{model=\"m\"} 4.875\n\
                        outpost_x_count{model=\"m\"} 5\n";
        assert_eq!(out, expected);
    }

    #[test]
    fn prometheus_lines_without_labels_have_no_leading_comma() {
        let mut h = Histogram::new(vec![1.0]);
        h.observe(1.0);
        let mut out = String::new();
        h.prometheus("x", "", &mut out);
        assert_eq!(out, "x_bucket{le=\"1\"} 1\nx_bucket{le=\"+Inf\"} 1\nx_sum 1\nx_count 1\n");
    }

    #[test]
    fn latency_converts_to_seconds_for_prometheus() {
        let mut l = LatencyHistogram::new();
        l.record(us(1_500));
        let h = Histogram::from(&l);
        assert_eq!(h.bounds()[0], 0.0001);
        assert_eq!(h.counts()[4], 1);
        assert_eq!(h.sum(), 0.0015);
        assert_eq!(h.count(), 1);
    }
}
