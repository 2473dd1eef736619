//! The serving runtime: several models at once, keyed by name, each with its active model and shadow
//! candidate (`served.rs`), behind one bounded, batching queue and one set of worker threads; the result
//! cache (keyed by model digest); shadow evaluation of a candidate on sampled live requests, off the
//! response path; and drift statistics per model. HTTP lives in `api`; this module knows nothing of JSON.

mod execute;
pub mod kernels;
pub mod metrics;
pub mod model;
pub mod queue;
mod request;
pub mod selftest;
mod served;
mod threads;

use crate::config::{CacheConfig, DriftConfig, InferenceConfig, ShadowConfig};
use crate::stats::cache::{CacheKey, ResultCache};
use execute::RunSlot;
use metrics::{Gauges, Metrics, ModelView};
use model::LoadedModel;
pub use outpost_models::TensorData;
use queue::{BatchQueue, Queued};
use request::{input_hash, validate};
pub use served::Served;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A request's tensor: values row-major in their own type (the request's `datatype`), checked against the
/// model's type before anything runs.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// An answer's tensor, in the model output's own type.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
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
    #[error("model {0:?} is installed but not loaded yet")]
    Loading(String),
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
    served: Arc<Served>,
    /// The model the request was checked against: it runs on this one even if another was activated
    /// meanwhile.
    model: Arc<LoadedModel>,
    rows: usize,
    inputs: Vec<TensorData>,
    enqueued: Instant,
    deadline: Instant,
    shadow: bool,
    reply: oneshot::Sender<Result<Outputs, InferError>>,
}

impl Queued for Job {
    fn rows(&self) -> usize {
        self.rows
    }
    fn enqueued(&self) -> Instant {
        self.enqueued
    }
    /// Requests batch with requests for the same loaded model only.
    fn group(&self) -> usize {
        Arc::as_ptr(&self.model) as usize
    }
}

struct ShadowJob {
    served: Arc<Served>,
    rows: usize,
    inputs: Vec<TensorData>,
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

pub struct Runtime {
    cfg: RuntimeConfig,
    /// Served models by name.
    models: RwLock<BTreeMap<String, Arc<Served>>>,
    /// Models taken off since the last telemetry window: their last figures are still reported once.
    departed: Mutex<Vec<Arc<Served>>>,
    /// The model names installed on the device, set by the slot follower: ready means every one of them
    /// is loaded. `None` (a runtime used without a store): ready once any model is active.
    installed: RwLock<Option<BTreeSet<String>>>,
    queue: BatchQueue<Job>,
    shadow_queue: BatchQueue<ShadowJob>,
    cache: Mutex<ResultCache<Arc<Vec<OutputTensor>>>>,
    pub metrics: Metrics,
    /// Model runs in progress, on worker threads or inline on callers' threads. A caller runs inline only
    /// while fewer than `workers` runs are in progress, so inline runs never add CPU demand beyond what
    /// the configured workers would use.
    running: AtomicUsize,
    /// `infer` calls in progress (cache hits included): a request runs inline only when it is alone.
    in_flight: AtomicUsize,
    /// Inference worker threads running. One whose thread ends by a panic is replaced (`WorkerGuard`);
    /// readiness says so while fewer than configured run.
    live_workers: AtomicUsize,
    /// Workers replaced after a panic since start.
    pub worker_restarts: AtomicUsize,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// Why the runtime is not ready: installed models that are not loaded, or inference workers missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    NothingInstalled,
    Loading(Vec<String>),
    Workers { running: usize, configured: usize },
}

/// Held by each inference worker thread for its life. A worker that ends by a panic (one outside a model
/// run, which `LoadedModel::run` already turns into an error where panics unwind) is replaced at once, so
/// queued requests keep being answered; its own callers get a 500 (their reply channels drop). Device
/// builds abort on panic, and systemd restarts the whole agent instead.
pub(crate) struct WorkerGuard {
    rt: Arc<Runtime>,
    index: usize,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.rt.live_workers.fetch_sub(1, Ordering::AcqRel);
        if std::thread::panicking() && !self.rt.queue.is_closed() {
            tracing::error!(worker = self.index, "an inference worker panicked; starting a new one");
            self.rt.worker_restarts.fetch_add(1, Ordering::Relaxed);
            self.rt.spawn_worker(self.index);
        }
    }
}

impl Runtime {
    /// Starts the worker threads and the shadow thread. Call `shutdown` to stop them.
    pub fn start(cfg: RuntimeConfig) -> Arc<Runtime> {
        kernels::defaults();
        threads::apply(cfg.inference.threads);
        let rt = Arc::new(Runtime {
            queue: BatchQueue::new(cfg.inference.queue_capacity),
            shadow_queue: BatchQueue::new(cfg.shadow.queue_capacity),
            cache: Mutex::new(ResultCache::new(cfg.cache.max_entries, cfg.cache.max_bytes, cfg.cache.ttl)),
            cfg,
            models: RwLock::new(BTreeMap::new()),
            departed: Mutex::new(Vec::new()),
            installed: RwLock::new(None),
            metrics: Metrics::default(),
            running: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            live_workers: AtomicUsize::new(0),
            worker_restarts: AtomicUsize::new(0),
        });
        for i in 0..rt.cfg.inference.workers {
            rt.spawn_worker(i);
        }
        let shadow_rt = rt.clone();
        std::thread::Builder::new()
            .name("outpost-shadow".into())
            .spawn(move || shadow_rt.shadow_worker())
            .expect("spawn");
        rt
    }

    /// Starts inference worker `index` (counted as running from now: readiness must not flicker while
    /// the thread starts). A failed spawn leaves it missing, which readiness reports.
    fn spawn_worker(self: &Arc<Self>, index: usize) {
        self.spawn_worker_running(index, Runtime::worker);
    }

    /// `spawn_worker` with the thread's body given (tests put a panicking one in a worker's place).
    fn spawn_worker_running(self: &Arc<Self>, index: usize, body: fn(Arc<Runtime>)) {
        self.live_workers.fetch_add(1, Ordering::AcqRel);
        let guard = WorkerGuard { rt: self.clone(), index };
        let spawned = std::thread::Builder::new().name(format!("outpost-infer-{index}")).spawn(move || {
            let rt = guard.rt.clone();
            let _guard = guard;
            body(rt)
        });
        if let Err(e) = spawned {
            tracing::error!(worker = index, "cannot start an inference worker: {e}");
        }
    }

    /// Inference workers running now.
    pub fn live_workers(&self) -> usize {
        self.live_workers.load(Ordering::Acquire)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    /// Stops the workers once the queues drain.
    pub fn shutdown(&self) {
        self.queue.close();
        self.shadow_queue.close();
    }

    /// The served model `name`, if any.
    pub fn model(&self, name: &str) -> Option<Arc<Served>> {
        self.models.read().expect("models lock").get(name).cloned()
    }

    /// Every served model, by name.
    pub fn models(&self) -> Vec<Arc<Served>> {
        self.models.read().expect("models lock").values().cloned().collect()
    }

    fn entry(&self, name: &str) -> Arc<Served> {
        if let Some(s) = self.model(name) {
            return s;
        }
        self.models
            .write()
            .expect("models lock")
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Served::new(name)))
            .clone()
    }

    /// Makes `model` the one that answers for its name. Requests already queued finish on the model they
    /// were checked against; the cache needs no flush because its keys carry the model digest.
    pub fn activate(&self, model: LoadedModel) -> Arc<LoadedModel> {
        let model = Arc::new(model);
        self.entry(model.name()).set_active(model.clone());
        model
    }

    /// The active model of `name`.
    pub fn active(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.model(name)?.active()
    }

    /// The shadow candidate of `name`.
    pub fn candidate(&self, name: &str) -> Option<Arc<LoadedModel>> {
        self.model(name)?.candidate()
    }

    /// Loads (`Some`) or drops (`None`) the shadow candidate of `name` with the configured sample share;
    /// resets its shadow statistics.
    pub fn set_candidate(&self, name: &str, model: Option<LoadedModel>) {
        self.set_candidate_sampled(name, model, self.cfg.shadow.sample_percent);
    }

    /// As `set_candidate`, shadowing `sample_percent` % of `name`'s requests (the desired state may ask
    /// for a share other than the configured one). A candidate must carry the name it shadows.
    pub fn set_candidate_sampled(&self, name: &str, model: Option<LoadedModel>, sample_percent: u8) {
        if let Some(m) = &model {
            assert_eq!(m.name(), name, "a candidate shadows the model of its own name");
        }
        match (model, self.model(name)) {
            (None, None) => {}
            (None, Some(served)) => served.set_candidate(None, sample_percent),
            (Some(m), _) => self.entry(name).set_candidate(Some(m), sample_percent),
        }
    }

    /// Stops serving `name` (active and candidate). Its last window's figures are still reported.
    pub fn remove(&self, name: &str) -> bool {
        let Some(gone) = self.models.write().expect("models lock").remove(name) else { return false };
        self.departed.lock().expect("departed lock").push(gone);
        true
    }

    /// Takes the models removed since the last call (the telemetry window reports their last figures).
    pub fn take_departed(&self) -> Vec<Arc<Served>> {
        std::mem::take(&mut *self.departed.lock().expect("departed lock"))
    }

    /// The installed model names the slot follower keeps loaded.
    pub fn set_installed(&self, names: BTreeSet<String>) {
        *self.installed.write().expect("installed lock") = Some(names);
    }

    /// Ready when every installed model has an active model loaded (and at least one is installed), and
    /// every configured inference worker is running.
    pub fn readiness(&self) -> Result<(), NotReady> {
        let (running, configured) = (self.live_workers(), self.cfg.inference.workers);
        if running < configured && !self.queue.is_closed() {
            return Err(NotReady::Workers { running, configured });
        }
        let installed = self.installed.read().expect("installed lock").clone();
        let names: Vec<String> = match installed {
            Some(names) => names.into_iter().collect(),
            None => {
                return if self.models().iter().any(|s| s.active().is_some()) {
                    Ok(())
                } else {
                    Err(NotReady::NothingInstalled)
                };
            }
        };
        if names.is_empty() {
            return Err(NotReady::NothingInstalled);
        }
        let loading: Vec<String> = names.into_iter().filter(|n| self.active(n).is_none()).collect();
        if loading.is_empty() { Ok(()) } else { Err(NotReady::Loading(loading)) }
    }

    pub fn gauges(&self) -> Gauges {
        Gauges {
            queue_depth: self.queue.len(),
            rss_bytes: crate::sys::rss_bytes(),
            cache_entries: self.cache.lock().expect("cache lock").stats().entries,
        }
    }

    /// `GET /metrics`: the agent's series and every served model's.
    pub fn prometheus(&self) -> String {
        let models = self.models();
        let views: Vec<ModelView<'_>> = models
            .iter()
            .map(|s| ModelView {
                name: s.name(),
                version: s.active().map(|m| m.manifest.version.to_string()),
                shadow_agreement: s.shadow_agreement(),
                shadow_compared: s.shadow_compared(),
                metrics: &s.metrics,
            })
            .collect();
        self.metrics.prometheus(&self.gauges(), &views)
    }

    /// Counts one finished HTTP request for `model` (as named in the URL).
    pub fn record_request(&self, model: &str, status: u16, latency: Duration, cached: bool, version: Option<&str>) {
        match self.model(model) {
            Some(served) => {
                let active = served.active().map(|m| m.manifest.version.to_string());
                let version = version.map(str::to_owned).or(active).unwrap_or_default();
                self.metrics.request(model, &version, status);
                served.metrics.request(status, latency, cached);
            }
            None => {
                self.metrics.unknown_model_requests.fetch_add(1, Ordering::Relaxed);
            }
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
        let Some(served) = self.model(&req.model) else {
            // Nothing served at all is "not ready" (a device before its first install), not "wrong name".
            let none = self.models.read().expect("models lock").is_empty();
            return Err(if none { InferError::NotReady } else { InferError::UnknownModel(req.model) });
        };
        let model = served.active().ok_or_else(|| InferError::Loading(req.model.clone()))?;
        let (rows, order) = validate(&model, &req, self.cfg.inference.max_rows)?;
        let key = self.cache_enabled().then(|| CacheKey { model: model.digest, input: input_hash(&req.inputs) });
        // The request's buffers move on to the model (an image is 600 KB: no copy).
        let inputs: Vec<TensorData> = order.into_iter().map(|i| std::mem::take(&mut req.inputs[i].data)).collect();
        if let Some(key) = &key {
            let hit = self.cache.lock().expect("cache lock").get(key, Instant::now());
            if let Some(hit) = hit {
                served.metrics.cache_hits.fetch_add(1, Ordering::Relaxed);
                // Cached answers are live traffic too: without this, repeated inputs would starve shadow
                // evaluation of comparisons.
                if served.sample_for_shadow() {
                    let primary: Outputs = hit
                        .iter()
                        .map(|t| {
                            let row_shape = if model.batchable { t.shape[1..].to_vec() } else { t.shape.clone() };
                            (t.data.clone(), row_shape)
                        })
                        .collect();
                    let job = ShadowJob { served: served.clone(), rows, inputs, primary, enqueued: Instant::now() };
                    if self.shadow_queue.try_push(job).is_err() {
                        served.metrics.shadow_skipped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return Ok(self.response(&model, hit, true, &req.outputs));
            }
            served.metrics.cache_misses.fetch_add(1, Ordering::Relaxed);
        }
        let now = Instant::now();
        let timeout = self.cfg.inference.request_timeout;
        let (tx, mut rx) = oneshot::channel();
        let shadow = served.sample_for_shadow();
        let job = Job {
            served,
            model: model.clone(),
            rows,
            inputs,
            enqueued: now,
            deadline: now + timeout,
            shadow,
            reply: tx,
        };
        let inline = if may_inline { self.run_inline(job) } else { Err(job) };
        let outs = match inline {
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
            .zip(&model.interface().outputs)
            .map(|((data, row_shape), spec)| {
                let shape = if model.batchable { [&[rows][..], &row_shape].concat() } else { row_shape };
                OutputTensor { name: spec.name.clone(), shape, data }
            })
            .collect();
        let tensors = Arc::new(tensors);
        if let Some(key) = key {
            let weight = tensors.iter().map(|t| t.data.byte_len() + 64).sum();
            self.cache.lock().expect("cache lock").insert(key, tensors.clone(), weight, Instant::now());
        }
        Ok(self.response(&model, tensors, false, &req.outputs))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides, parse};

    fn runtime(workers: usize) -> Arc<Runtime> {
        let raw = parse(&format!("[inference]\nworkers = {workers}\n"), "test").unwrap();
        let cfg = Config::validate(raw, &Overrides::default(), "test").unwrap();
        Runtime::start(crate::serve::runtime_config(&cfg))
    }

    fn wait_until(what: &str, ok: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_worker_thread_that_panics_is_replaced_by_a_running_one() {
        let rt = runtime(2);
        wait_until("two workers", || rt.live_workers() == 2);
        // Worker 1's place taken by a thread that panics at once: its guard must start a real worker.
        rt.spawn_worker_running(1, |_| panic!("injected worker panic"));
        wait_until("the panic replaced", || rt.worker_restarts.load(Ordering::Relaxed) == 1);
        wait_until("three threads again", || rt.live_workers() == 3);
        assert_eq!(rt.readiness(), Err(NotReady::NothingInstalled), "worker count is not what is missing");
        rt.shutdown();
    }

    #[test]
    fn readiness_names_missing_workers_before_anything_else() {
        let rt = runtime(2);
        wait_until("two workers", || rt.live_workers() == 2);
        // As if a worker had died without a replacement (a failed spawn).
        rt.live_workers.fetch_sub(1, Ordering::AcqRel);
        assert_eq!(rt.readiness(), Err(NotReady::Workers { running: 1, configured: 2 }));
        rt.live_workers.fetch_add(1, Ordering::AcqRel);
        assert_eq!(rt.readiness(), Err(NotReady::NothingInstalled));
        rt.shutdown();
    }
}
