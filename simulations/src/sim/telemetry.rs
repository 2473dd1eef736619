//! A device's durable telemetry queue, as `agent/src/telemetry/queue.rs` behaves: records with
//! consecutive sequence numbers, drop-oldest at a cap, deleted only once acknowledged, shipped oldest
//! first in bounded batches. Records are kept compact (a window is a few integers) and become the real
//! protocol records only when a batch is built, so 100,000 devices with hours of backlog fit in memory.

use super::catalog::Catalog;
use outpost_protocol::messages::TelemetryBatch;
use outpost_protocol::telemetry::{InferenceWindow, Record, RecordBody, ShadowStats, UpdateEvent};
use std::collections::VecDeque;

/// One inference window: the active model and, when shadowing, the candidate's comparisons.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub model: u8,
    pub candidate: Option<u8>,
    pub window_secs: u32,
    pub requests: u32,
    pub errors: u32,
    pub p95_us: u32,
    pub compared: u32,
    pub agreed: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Window(Window),
    Update(Box<UpdateEvent>),
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    seq: u64,
    /// Device clock, Unix seconds.
    at: u64,
    body: Body,
}

#[derive(Debug, Clone)]
pub struct Queue {
    entries: VecDeque<Entry>,
    next_seq: u64,
    pub dropped: u64,
}

impl Default for Queue {
    fn default() -> Self {
        Queue { entries: VecDeque::new(), next_seq: 1, dropped: 0 }
    }
}

impl Queue {
    /// Appends; past `cap` the oldest record goes (the controller sees the gap and counts it missing).
    pub fn append(&mut self, at: u64, body: Body, cap: usize) {
        self.entries.push_back(Entry { seq: self.next_seq, at, body });
        self.next_seq += 1;
        while self.entries.len() > cap {
            self.entries.pop_front();
            self.dropped += 1;
        }
    }

    /// Deletes what the controller acknowledged; nothing else.
    pub fn ack(&mut self, up_to: u64) {
        while self.entries.front().is_some_and(|e| e.seq <= up_to) {
            self.entries.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest `max` records as a protocol batch.
    pub fn batch(&self, max: usize, catalog: &Catalog) -> Option<TelemetryBatch> {
        let records: Vec<Record> = self.entries.iter().take(max).map(|e| record(e, catalog)).collect();
        Some(TelemetryBatch { first_seq: records.first()?.seq, last_seq: records.last()?.seq, records })
    }
}

fn record(e: &Entry, catalog: &Catalog) -> Record {
    let body = match &e.body {
        Body::Update(u) => RecordBody::Update((**u).clone()),
        Body::Window(w) => {
            let m = catalog.get(w.model);
            let shadow = w.candidate.filter(|_| w.compared > 0).map(|c| {
                let c = catalog.get(c);
                ShadowStats {
                    candidate_version: c.running.version,
                    candidate_digest: c.running.digest,
                    compared: w.compared.into(),
                    agreed_top1: w.agreed.into(),
                    max_abs_diff: 0.0,
                    candidate_p95_us: c.p95_us,
                    candidate_mem_bytes: 0,
                }
            });
            RecordBody::Inference(InferenceWindow {
                model: m.running.name.clone(),
                version: m.running.version,
                digest: m.running.digest,
                window_start: e.at.saturating_sub(w.window_secs.into()),
                window_secs: w.window_secs,
                requests: w.requests.into(),
                errors: w.errors.into(),
                timeouts: 0,
                rejected: 0,
                latency_hist: vec![],
                latency_p50_us: w.p95_us / 2,
                latency_p95_us: w.p95_us,
                cache_hits: 0,
                cache_misses: 0,
                shadow,
                features: vec![],
                output_classes: vec![],
                class_psi: None,
            })
        }
    };
    Record { seq: e.seq, at: e.at, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::scenario::Scenario;

    fn catalog() -> Catalog {
        Catalog::new(&Scenario::parse("name = \"x\"\nexpect = \"completed\"\n", "x.toml").unwrap().models())
    }

    fn window(requests: u32) -> Body {
        Body::Window(Window {
            model: 0,
            candidate: None,
            window_secs: 60,
            requests,
            errors: 0,
            p95_us: 1,
            compared: 0,
            agreed: 0,
        })
    }

    #[test]
    fn batches_are_oldest_first_and_only_acked_records_go() {
        let catalog = catalog();
        let mut q = Queue::default();
        for i in 0..5 {
            q.append(100 + i, window(i as u32), 10);
        }
        let b = q.batch(2, &catalog).unwrap();
        assert_eq!((b.first_seq, b.last_seq, b.records.len()), (1, 2, 2));
        q.ack(2);
        assert_eq!(q.batch(10, &catalog).unwrap().first_seq, 3);
        q.ack(1);
        assert_eq!(q.batch(10, &catalog).unwrap().records.len(), 3, "an old ack deletes nothing more");
        q.ack(5);
        assert!(q.is_empty() && q.batch(10, &catalog).is_none());
    }

    #[test]
    fn the_oldest_record_is_dropped_at_the_cap() {
        let catalog = catalog();
        let mut q = Queue::default();
        for i in 0..5 {
            q.append(i, window(1), 3);
        }
        assert_eq!(q.dropped, 2);
        assert_eq!(q.batch(10, &catalog).unwrap().first_seq, 3);
    }
}
