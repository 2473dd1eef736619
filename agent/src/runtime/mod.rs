//! The serving runtime: the active model behind a bounded, batching queue and worker threads; the
//! result cache; shadow evaluation of a candidate on sampled live requests, off the response path; and
//! drift statistics. HTTP lives in `api`; this module knows nothing of JSON.

mod execute;
pub mod metrics;
pub mod model;
pub mod queue;
mod request;
pub mod selftest;

use crate::config::{CacheConfig, DriftConfig, InferenceConfig, ShadowConfig};
use crate::stats::cache::{CacheKey, ResultCache};
use crate::stats::drift::{DriftAccumulator, DriftSnapshot};
use crate::stats::shadow::ShadowAccumulator;
use execute::RunSlot;
use metrics::{Gauges, Metrics};
use model::LoadedModel;
use outpost_protocol::Digest;
use outpost_protocol::telemetry::ShadowStats;
use queue::{BatchQueue, Queued};
use request::{input_hash, validate};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct InferRequest {
    pub model: String,
    pub inputs: Vec<InputTensor>,
    /// Output names to return; `None` returns all.
    pub outputs: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub outputs: Arc<Vec<OutputTensor>>,
    pub cached: bool,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InferError {
    #[error("model {0:?} is not served here")]
    UnknownModel(String),
    #[error("no model is active yet")]
    NotReady,
    #[error("{0}")]
    BadRequest(String),
    #[error("overloaded: {0} requests already waiting")]
    Overloaded(usize),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    pub inference: InferenceConfig,
    pub cache: CacheConfig,
    pub shadow: ShadowConfig,
    pub drift: DriftConfig,
}

use model::Outputs;

struct Job {
    rows: usize,
    inputs: Vec<Vec<f32>>,
    enqueued: Instant,
    deadline: Instant,
    shadow: bool,
    reply: oneshot::Sender<Result<(Arc<LoadedModel>, Outputs), InferError>>,
}

impl Queued for Job {
    fn rows(&self) -> usize {
        self.rows
    }
    fn enqueued(&self) -> Instant {
        self.enqueued
    }
}

struct ShadowJob {
    rows: usize,
    inputs: Vec<Vec<f32>>,
    primary: Outputs,
    enqueued: Instant,
}

impl Queued for ShadowJob {
    fn rows(&self) -> usize {
        self.rows
    }
    fn enqueued(&self) -> Instant {
        self.enqueued
    }
}

/// The class count of a classifier's output row: `[C]` for a batch-dimension model, `[1, C]` for a
/// fixed-batch one (mobilenet-style exports). `None` for anything else (regressors, maps).
fn classes(row_shape: &[usize]) -> Option<usize> {
    match *row_shape {
        [c] | [1, c] if c >= 2 => Some(c),
        _ => None,
    }
}

pub struct Runtime {
    cfg: RuntimeConfig,
    active: RwLock<Option<Arc<LoadedModel>>>,
    candidate: RwLock<Option<Arc<LoadedModel>>>,
    queue: BatchQueue<Job>,
    shadow_queue: BatchQueue<ShadowJob>,
    cache: Mutex<ResultCache<Arc<Vec<OutputTensor>>>>,
    drift: Mutex<Option<(Digest, DriftAccumulator)>>,
    shadow: Mutex<ShadowAccumulator>,
    finished_shadow: Mutex<Option<ShadowStats>>,
    pub metrics: Metrics,
    requests_seen: AtomicU64,
    shadow_percent: std::sync::atomic::AtomicU8,
    /// Rows observed by the drift window so far (drift is recorded after the answers are sent).
    drift_rows: AtomicU64,
    /// Model runs in progress, on worker threads or inline on callers' threads. A caller runs inline only
    /// while fewer than `workers` runs are in progress, so inline runs never add CPU demand beyond what
    /// the configured workers would use.
    running: std::sync::atomic::AtomicUsize,
    /// `infer` calls in progress (cache hits included): a request runs inline only when it is alone.
    in_flight: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts the worker threads and the shadow thread. Call `shutdown` to stop them.
    pub fn start(cfg: RuntimeConfig) -> Arc<Runtime> {
        let rt = Arc::new(Runtime {
            queue: BatchQueue::new(cfg.inference.queue_capacity),
            shadow_queue: BatchQueue::new(cfg.shadow.queue_capacity),
            cache: Mutex::new(ResultCache::new(cfg.cache.max_entries, cfg.cache.max_bytes, cfg.cache.ttl)),
            cfg,
            active: RwLock::new(None),
            candidate: RwLock::new(None),
            drift: Mutex::new(None),
            shadow: Mutex::new(ShadowAccumulator::new()),
            finished_shadow: Mutex::new(None),
            metrics: Metrics::default(),
            requests_seen: AtomicU64::new(0),
            shadow_percent: std::sync::atomic::AtomicU8::new(0),
            drift_rows: AtomicU64::new(0),
            running: std::sync::atomic::AtomicUsize::new(0),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        });
        for i in 0..rt.cfg.inference.workers {
            let rt = rt.clone();
            std::thread::Builder::new()
                .name(format!("outpost-infer-{i}"))
                .spawn(move || rt.worker())
                .expect("spawn inference worker");
        }
        let shadow_rt = rt.clone();
        std::thread::Builder::new()
            .name("outpost-shadow".into())
            .spawn(move || shadow_rt.shadow_worker())
            .expect("spawn");
        rt
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// Stops the workers once the queues drain.
    pub fn shutdown(&self) {
        self.queue.close();
        self.shadow_queue.close();
    }

    /// Makes `model` the one that answers. Requests already running finish on the old one; the cache
    /// needs no flush because its keys carry the model digest.
    pub fn activate(&self, model: LoadedModel) -> Arc<LoadedModel> {
        let model = Arc::new(model);
        self.metrics.model_load_us.store(model.load_time.as_micros() as u64, Ordering::Relaxed);
        *self.active.write().expect("active lock") = Some(model.clone());
        self.metrics.reset_watch_window();
        model
    }

    pub fn active(&self) -> Option<Arc<LoadedModel>> {
        self.active.read().expect("active lock").clone()
    }

    /// Loads (`Some`) or drops (`None`) the shadow candidate; resets the shadow statistics.
    pub fn set_candidate(&self, model: Option<LoadedModel>) {
        self.set_candidate_sampled(model, self.cfg.shadow.sample_percent);
    }

    /// As `set_candidate`, shadowing `sample_percent` % of requests (the desired state may ask for a share
    /// other than the configured one).
    pub fn set_candidate_sampled(&self, model: Option<LoadedModel>, sample_percent: u8) {
        self.shadow_percent.store(sample_percent.min(100), Ordering::Relaxed);
        // The outgoing candidate's figures belong to the current window: keep them for the next report.
        if let Some(old) = self.take_shadow_stats() {
            *self.finished_shadow.lock().expect("shadow lock") = Some(old);
        }
        *self.candidate.write().expect("candidate lock") = model.map(Arc::new);
        *self.shadow.lock().expect("shadow lock") = ShadowAccumulator::new();
    }

    pub fn candidate(&self) -> Option<Arc<LoadedModel>> {
        self.candidate.read().expect("candidate lock").clone()
    }

    pub fn shadow_agreement(&self) -> Option<f64> {
        self.shadow.lock().expect("shadow lock").agreement()
    }

    /// Takes the shadow window's statistics (and starts a new window). A candidate that was replaced
    /// or dropped during the window still reports what it saw.
    pub fn take_shadow_stats(&self) -> Option<ShadowStats> {
        let finished = self.finished_shadow.lock().expect("shadow lock").take();
        let current = self.candidate().and_then(|cand| {
            self.shadow.lock().expect("shadow lock").snapshot(cand.manifest.version, cand.digest, cand.mem_bytes)
        });
        current.or(finished)
    }

    /// Takes the drift window's statistics for the active model (and starts a new window).
    pub fn take_drift(&self) -> Option<(Digest, DriftSnapshot)> {
        let mut d = self.drift.lock().expect("drift lock");
        self.drift_rows.store(0, Ordering::Relaxed);
        d.as_mut().map(|(digest, acc)| (*digest, acc.snapshot()))
    }

    /// Rows the current drift window has observed.
    pub fn drift_rows(&self) -> u64 {
        self.drift_rows.load(Ordering::Relaxed)
    }

    pub fn gauges(&self) -> Gauges {
        let shadow = self.shadow.lock().expect("shadow lock");
        Gauges {
            queue_depth: self.queue.len(),
            shadow_agreement: shadow.agreement(),
            shadow_compared: shadow.compared(),
            rss_bytes: crate::sys::rss_bytes(),
            active: self.active().map(|m| (m.name().to_owned(), m.manifest.version.to_string())),
            cache_entries: self.cache.lock().expect("cache lock").stats().entries,
        }
    }

    /// Answers one request: validate, cache, queue (429 when full), wait (504 after the timeout).
    /// For callers on their own threads (an application embedding the runtime): a quick model may run
    /// right here when the request is alone (`run_inline`).
    pub async fn infer(&self, req: InferRequest) -> Result<InferResponse, InferError> {
        self.answer(req, true).await
    }

    /// For the HTTP server: the model always runs on a worker thread. The server's threads carry every
    /// connection; a model run there stalls them, and measured no faster for a lone client over HTTP
    /// (85–89 µs either way) while costing 20–27 % of throughput under 32 clients (BENCHMARKS.md).
    pub async fn infer_on_workers(&self, req: InferRequest) -> Result<InferResponse, InferError> {
        self.answer(req, false).await
    }

    async fn answer(&self, mut req: InferRequest, may_inline: bool) -> Result<InferResponse, InferError> {
        let _in_flight = RunSlot::enter(&self.in_flight);
        let model = self.active().ok_or(InferError::NotReady)?;
        if req.model != model.name() {
            return Err(InferError::UnknownModel(req.model));
        }
        let (rows, order) = validate(&model, &req)?;
        let key = self.cache_enabled().then(|| CacheKey { model: model.digest, input: input_hash(&req.inputs) });
        // The request's buffers move on to the model (an image is 600 KB: no copy).
        let inputs: Vec<Vec<f32>> = order.into_iter().map(|i| std::mem::take(&mut req.inputs[i].data)).collect();
        if let Some(key) = &key {
            let hit = self.cache.lock().expect("cache lock").get(key, Instant::now());
            if let Some(hit) = hit {
                self.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                // Cached answers are live traffic too: without this, repeated inputs would starve shadow
                // evaluation of comparisons.
                if self.sample_for_shadow() {
                    let primary: Outputs = hit
                        .iter()
                        .map(|t| {
                            let row_shape = if model.batchable { t.shape[1..].to_vec() } else { t.shape.clone() };
                            (t.data.clone(), row_shape)
                        })
                        .collect();
                    let job = ShadowJob { rows, inputs, primary, enqueued: Instant::now() };
                    if self.shadow_queue.try_push(job).is_err() {
                        self.metrics.shadow_skipped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return Ok(self.response(&model, hit, true, &req.outputs));
            }
            self.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        let timeout = self.cfg.inference.request_timeout;
        let (tx, mut rx) = oneshot::channel();
        let job =
            Job { rows, inputs, enqueued: now, deadline: now + timeout, shadow: self.sample_for_shadow(), reply: tx };
        let inline = if may_inline { self.run_inline(&model, job) } else { Err(job) };
        let (ran, outs) = match inline {
            // Ran here: the answer is already in the channel.
            Ok(()) => match rx.try_recv() {
                Ok(result) => result?,
                Err(_) => return Err(InferError::Failed("the inline run gave no answer".into())),
            },
            Err(job) => {
                if self.queue.try_push(job).is_err() {
                    return Err(InferError::Overloaded(self.queue.len()));
                }
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(result)) => result?,
                    Ok(Err(_)) => return Err(InferError::Failed("the inference worker stopped".into())),
                    Err(_) => return Err(InferError::Timeout(timeout)),
                }
            }
        };
        let tensors: Vec<OutputTensor> = outs
            .into_iter()
            .zip(&ran.interface().outputs)
            .map(|((data, row_shape), spec)| {
                let shape = if ran.batchable { [&[rows][..], &row_shape].concat() } else { row_shape };
                OutputTensor { name: spec.name.clone(), shape, data }
            })
            .collect();
        let tensors = Arc::new(tensors);
        if let Some(key) = key {
            // Keyed by the model that actually ran, so a swap mid-request never caches a stale answer.
            let weight = tensors.iter().map(|t| t.data.len() * 4 + 64).sum();
            let key = CacheKey { model: ran.digest, input: key.input };
            self.cache.lock().expect("cache lock").insert(key, tensors.clone(), weight, Instant::now());
        }
        Ok(self.response(&ran, tensors, false, &req.outputs))
    }

    fn cache_enabled(&self) -> bool {
        self.cfg.cache.max_entries > 0
    }

    fn response(
        &self,
        model: &LoadedModel,
        outputs: Arc<Vec<OutputTensor>>,
        cached: bool,
        wanted: &Option<Vec<String>>,
    ) -> InferResponse {
        let outputs = match wanted {
            Some(names) => Arc::new(outputs.iter().filter(|t| names.contains(&t.name)).cloned().collect()),
            None => outputs,
        };
        InferResponse {
            model_name: model.name().to_owned(),
            model_version: model.manifest.version.to_string(),
            outputs,
            cached,
        }
    }

    /// Spreads the configured share of requests evenly: request n is sampled when ⌊(n+1)·p/100⌋ grows.
    fn sample_for_shadow(&self) -> bool {
        if self.candidate.read().expect("candidate lock").is_none() {
            return false;
        }
        let p = u64::from(self.shadow_percent.load(Ordering::Relaxed));
        let n = self.requests_seen.fetch_add(1, Ordering::Relaxed);
        (n + 1) * p / 100 > n * p / 100
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn classifier_rows_are_recognised_with_or_without_a_fixed_batch_of_one() {
        assert_eq!(super::classes(&[10]), Some(10));
        assert_eq!(super::classes(&[1, 1000]), Some(1000));
        assert_eq!(super::classes(&[1]), None);
        assert_eq!(super::classes(&[3, 10]), None);
        assert_eq!(super::classes(&[8, 8, 3]), None);
    }
}
