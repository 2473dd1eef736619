//! Every telemetry window, the runtime's figures become records in the durable queue: one inference
//! aggregate (requests, errors, latency histogram, cache, shadow, drift) and one device health record.

use crate::runtime::Runtime;
use crate::telemetry::queue::TelemetryQueue;
use outpost_protocol::telemetry::{DeviceHealth, InferenceWindow, RecordBody};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub async fn produce(rt: Arc<Runtime>, queue: Arc<TelemetryQueue>, window: Duration, data_dir: PathBuf) {
    let mut tick = tokio::time::interval(window);
    tick.tick().await;
    let mut cpu = crate::sys::CpuMeter::new();
    let (mut hits0, mut misses0) = (0, 0);
    loop {
        tick.tick().await;
        let now = crate::fleet::driver::now_ms() / 1000;
        let mut records = Vec::new();
        let w = rt.metrics.take_telemetry_window();
        let hits = rt.metrics.cache_hits.load(Ordering::Relaxed);
        let misses = rt.metrics.cache_misses.load(Ordering::Relaxed);
        let drift = rt.take_drift();
        let shadow = rt.take_shadow_stats();
        if let Some(model) = rt.active()
            && (w.requests > 0 || shadow.is_some())
        {
            let (features, output_classes, class_psi) = match drift {
                Some((digest, d)) if digest == model.digest => (d.features, d.output_classes, d.class_psi),
                _ => (vec![], vec![], None),
            };
            records.push((
                now,
                RecordBody::Inference(InferenceWindow {
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
                    cache_hits: hits - hits0,
                    cache_misses: misses - misses0,
                    shadow,
                    features,
                    output_classes,
                    class_psi,
                }),
            ));
        }
        (hits0, misses0) = (hits, misses);
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
