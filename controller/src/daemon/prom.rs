//! Prometheus text exposition (format 0.0.4): a writer that puts `# HELP` and `# TYPE` before each
//! family and escapes label values, and a lock-free histogram with fixed buckets.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Builds one exposition. Each family is written whole (help, type, samples), once.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

/// A label set: `(name, value)` pairs; values are escaped when written.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Text {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}\n# TYPE {name} {kind}", help.replace('\\', "\\\\"));
    }

    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        let (buckets, count, sum) = h.snapshot();
        let mut cumulative = 0;
        for (le, n) in h.bounds.iter().zip(buckets) {
            cumulative += n;
            self.sample(&format!("{name}_bucket"), &[("le", &number(*le))], cumulative as f64);
        }
        self.sample(&format!("{name}_bucket"), &[("le", "+Inf")], count as f64);
        self.sample(&format!("{name}_sum"), &[], sum);
        self.sample(&format!("{name}_count"), &[], count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Observations in fixed buckets; the sum is kept in micro-units so it can be an atomic integer.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// One counter per bound, plus one for above the last bound.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Buckets for durations in seconds, 100 µs to 10 s.
    pub fn seconds() -> Histogram {
        Histogram::new(&[0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0])
    }

    pub fn observe(&self, v: f64) {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        let i = self.bounds.iter().position(|b| v <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative, the overflow bucket excluded), the total count and the sum.
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let all: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let count = all.iter().sum();
        (all[..self.bounds.len()].to_vec(), count, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_written_cumulative_with_inf_sum_and_count() {
        let h = Histogram::new(&[1.0, 5.0]);
        for v in [0.5, 2.0, 3.0, 9.0] {
            h.observe(v);
        }
        let mut t = Text::default();
        t.histogram("x_seconds", "X.", &h);
        let text = t.finish();
        for line in [
            "x_seconds_bucket{le=\"1\"} 1",
            "x_seconds_bucket{le=\"5\"} 3",
            "x_seconds_bucket{le=\"+Inf\"} 4",
            "x_seconds_sum 14.5",
            "x_seconds_count 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut t = Text::default();
        t.sample("m", &[("k", "a\"b\\c\nd")], 1.0);
        assert_eq!(t.finish(), "m{k=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
