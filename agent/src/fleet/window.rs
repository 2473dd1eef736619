//! Every telemetry window, the runtime's figures become records in the durable queue: one inference
//! aggregate per served model (requests, errors, latency histogram, cache, shadow, drift), each naming
//! its model, and one device health record.

use crate::runtime::{Runtime, Served};
use crate::telemetry::queue::TelemetryQueue;
use outpost_protocol::telemetry::{DeviceHealth, InferenceWindow, RecordBody};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub async fn produce(rt: Arc<Runtime>, queue: Arc<TelemetryQueue>, window: Duration, data_dir: PathBuf) {
    let mut tick = tokio::time::interval(window);
    tick.tick().await;
    let mut cpu = crate::sys::CpuMeter::new();
    // Cache counters are cumulative per model: each window reports the difference.
    let mut cache_seen: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    loop {
        tick.tick().await;
        let now = crate::fleet::driver::now_ms() / 1000;
        let mut records = Vec::new();
        let departed = rt.take_departed();
        for served in rt.models().iter().chain(&departed) {
            if let Some(w) = model_window(served, now, window, &mut cache_seen) {
                records.push((now, RecordBody::Inference(w)));
            }
        }
        for gone in &departed {
            if rt.model(gone.name()).is_none() {
                cache_seen.remove(gone.name());
            }
        }
        let stats = queue.stats().ok();
        records.push((
            now,
            RecordBody::Health(DeviceHealth {
                rss_bytes: crate::sys::rss_bytes(),
                cpu_percent: cpu.percent(),
                disk_free_bytes: crate::sys::disk_free_bytes(&data_dir),
                uptime_secs: crate::sys::uptime_secs(),
                temperature_c: crate::sys::temperature_c(),
                queue_len: stats.as_ref().map(|s| s.len).unwrap_or(0),
                dropped_total: stats.as_ref().map(|s| s.dropped_total).unwrap_or(0),
            }),
        ));
        if let Err(e) = queue.append(&records) {
            tracing::error!(error = %e, "cannot buffer telemetry");
        }
    }
}

/// One model's inference aggregate for the window, or `None` when it served nothing and shadowed nothing.
fn model_window(
    served: &Served,
    now: u64,
    window: Duration,
    cache_seen: &mut BTreeMap<String, (u64, u64)>,
) -> Option<InferenceWindow> {
    let w = served.metrics.take_telemetry_window();
    let hits = served.metrics.cache_hits.load(Ordering::Relaxed);
    let misses = served.metrics.cache_misses.load(Ordering::Relaxed);
    let (hits0, misses0) = cache_seen.insert(served.name().to_owned(), (hits, misses)).unwrap_or((0, 0));
    let drift = served.take_drift();
    let shadow = served.take_shadow_stats();
    let model = served.active()?;
    if w.requests == 0 && shadow.is_none() {
        return None;
    }
    let (features, output_classes, class_psi) = match drift {
        Some((digest, d)) if digest == model.digest => (d.features, d.output_classes, d.class_psi),
        _ => (vec![], vec![], None),
    };
    Some(InferenceWindow {
        model: model.manifest.name.clone(),
        version: model.manifest.version,
        digest: model.digest,
        window_start: now.saturating_sub(window.as_secs()),
        window_secs: window.as_secs() as u32,
        requests: w.requests,
        errors: w.errors,
        timeouts: w.timeouts,
        rejected: w.rejected,
        latency_hist: w.latency.counts(),
        latency_p50_us: w.latency.quantile_us(0.5),
        latency_p95_us: w.latency.quantile_us(0.95),
        cache_hits: hits.saturating_sub(hits0),
        cache_misses: misses.saturating_sub(misses0),
        shadow,
        features,
        output_classes,
        class_psi,
    })
}
