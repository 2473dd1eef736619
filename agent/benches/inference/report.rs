//! Latency summaries and the Markdown tables the benchmark prints (pasted as-is into BENCHMARKS.md).

use std::time::Duration;

/// Per-request latencies and the wall time of one measured run.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: Duration,
    pub p95: Duration,
    /// Requests per second over the whole run.
    pub throughput: f64,
}

impl Summary {
    pub fn new(mut latencies: Vec<Duration>, wall: Duration) -> Summary {
        latencies.sort_unstable();
        let n = latencies.len();
        let at =
            |q: f64| latencies.get(((n as f64 * q) as usize).min(n.saturating_sub(1))).copied().unwrap_or_default();
        Summary { median: at(0.5), p95: at(0.95), throughput: n as f64 / wall.as_secs_f64().max(1e-9) }
    }

    /// From onnxruntime's JSON line (`median_us`, `p95_us`, `throughput`).
    pub fn from_ort(v: &serde_json::Value) -> Option<Summary> {
        let us = |k: &str| v[k].as_f64().map(|x| Duration::from_nanos((x * 1e3) as u64));
        Some(Summary { median: us("median_us")?, p95: us("p95_us")?, throughput: v["throughput"].as_f64()? })
    }
}

/// `123 µs` below 10 ms, `12.3 ms` above.
pub fn dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.1} µs")
    } else if us < 10_000.0 {
        format!("{us:.0} µs")
    } else {
        format!("{:.1} ms", us / 1e3)
    }
}

pub fn rate(r: f64) -> String {
    if r >= 100.0 { format!("{r:.0}/s") } else { format!("{r:.1}/s") }
}

pub fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

/// A Markdown table, columns padded so it also reads well in a terminal.
#[derive(Debug)]
pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table { head: head.iter().map(|s| (*s).to_owned()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let n = self.head.len();
        let width = |i: usize| {
            self.rows
                .iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .chain([self.head[i].chars().count()])
                .max()
        };
        let widths: Vec<usize> = (0..n).map(|i| width(i).unwrap_or(0)).collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..n)
                .map(|i| {
                    let c = cells.get(i).map_or("", String::as_str);
                    format!("{c}{}", " ".repeat(widths[i].saturating_sub(c.chars().count())))
                })
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(&self.head);
        println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
        for r in &self.rows {
            line(r);
        }
        println!();
    }
}
