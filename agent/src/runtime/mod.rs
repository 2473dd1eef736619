//! The serving runtime: the active model behind a bounded, batching queue and worker threads; the
//! result cache; shadow evaluation of a candidate on sampled live requests, off the response path; and
//! drift statistics. HTTP lives in `api`; this module knows nothing of JSON.

pub mod metrics;
pub mod model;
pub mod queue;
mod request;
pub mod selftest;

use crate::config::{CacheConfig, DriftConfig, InferenceConfig, ShadowConfig};
use crate::stats::cache::{CacheKey, ResultCache};
use crate::stats::drift::{DriftAccumulator, DriftSnapshot};
use crate::stats::shadow::ShadowAccumulator;
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

/// Input values per tensor and batch that feed the drift histogram.
const DRIFT_SAMPLE: usize = 4096;

/// Models whose single run takes at most this long may run on the caller's thread when a worker slot is
/// free and nothing is queued. Below it, the hand-off to a worker thread and back (21–45 µs on the
/// benchmark machine) is a large share of the request; above it the hand-off is noise, and a long run
/// belongs off the HTTP server's threads.
const INLINE_MAX_RUN: Duration = Duration::from_millis(1);

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

/// Counts one model run (or one request) in progress for as long as it lives.
struct RunSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> RunSlot<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> RunSlot<'a> {
        counter.fetch_add(1, Ordering::AcqRel);
        RunSlot(counter)
    }
}

impl Drop for RunSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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

    /// Runs `job` on the calling thread when that is cheaper than handing it to a worker: the model is
    /// quick (its calibrated run for these rows fits `INLINE_MAX_RUN` and half the timeout), the caller is
    /// on a multi-thread runtime, it is the only request in progress, no worker is polling for work, nothing is queued (queued requests came first and
    /// batching needs them together) and fewer than `workers` runs are in progress. Hands the job back
    /// otherwise. The answer goes through the job's channel exactly as from a worker, with the same
    /// metrics, drift and shadow sampling.
    fn run_inline(&self, model: &Arc<LoadedModel>, job: Job) -> Result<(), Job> {
        // The estimate is per row at the smallest batch; a request of many rows goes to the workers, where
        // the request timeout still applies (an inline run cannot be abandoned).
        let limit = INLINE_MAX_RUN.min(self.cfg.inference.request_timeout / 2);
        let quick = model.run_cost().is_some_and(|cost| cost.saturating_mul(job.rows as u32) <= limit);
        // Inline is for a lone request on an idle agent. Under concurrent requests it cost throughput even
        // with the workers asleep (HTTP, 32 clients, one worker: 27k instead of 37k requests/s): the
        // server's threads then run models instead of connections. A polling worker means load too: it
        // takes the job at once, without a wake-up.
        let alone = self.in_flight.load(Ordering::Acquire) == 1;
        if !quick || !alone || !self.queue.is_empty() || self.queue.has_polling_worker() || !on_multi_thread_runtime() {
            return Err(job);
        }
        let workers = self.cfg.inference.workers;
        let claimed =
            self.running.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < workers).then_some(n + 1));
        if claimed.is_err() {
            return Err(job);
        }
        let _slot = RunSlot(&self.running);
        self.metrics.inline_runs.fetch_add(1, Ordering::Relaxed);
        self.run_batch(model, vec![job]);
        Ok(())
    }

    fn worker(self: Arc<Self>) {
        loop {
            let max_rows = self.active().map(|m| m.max_rows()).unwrap_or(1);
            let Some(batch) = self.queue.next_batch(max_rows, self.cfg.inference.max_delay) else { return };
            let Some(model) = self.active() else {
                for job in batch {
                    let _ = job.reply.send(Err(InferError::NotReady));
                }
                continue;
            };
            let now = Instant::now();
            let (live, expired): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|j| j.deadline > now);
            for job in expired {
                let _ = job.reply.send(Err(InferError::Timeout(self.cfg.inference.request_timeout)));
            }
            if live.is_empty() {
                continue;
            }
            self.running.fetch_add(1, Ordering::AcqRel);
            let _slot = RunSlot(&self.running);
            self.run_batch(&model, live);
        }
    }

    fn run_batch(&self, model: &Arc<LoadedModel>, jobs: Vec<Job>) {
        let rows: usize = jobs.iter().map(|j| j.rows).sum();
        let n_inputs = model.interface().inputs.len();
        // One job runs on its own buffers; a batch needs its rows back to back.
        let joined: Option<Vec<Vec<f32>>> = (jobs.len() > 1)
            .then(|| (0..n_inputs).map(|i| jobs.iter().flat_map(|j| j.inputs[i].iter().copied()).collect()).collect());
        self.metrics.batch(rows);
        let result = model.run(rows, joined.as_deref().unwrap_or(&jobs[0].inputs));
        // A model that answers NaN or infinity is broken, not merely wrong: count it as a failure.
        let result = result.and_then(|outs| {
            if outs.iter().all(|(data, _)| data.iter().all(|v| v.is_finite())) {
                Ok(outs)
            } else {
                Err(model::ModelError::Run("the model produced non-finite outputs (NaN or infinity)".into()))
            }
        });
        let outs = match result {
            Ok(outs) => outs,
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(InferError::Failed(e.to_string())));
                }
                return;
            }
        };
        // Answer first; drift and shadow work happen after every caller has its result.
        let mut offset = 0;
        let mut answered = Vec::with_capacity(jobs.len());
        for Job { rows: n, inputs, shadow, reply, .. } in jobs {
            let mine: Outputs = outs
                .iter()
                .map(|(data, row_shape)| {
                    let per: usize = row_shape.iter().product();
                    (data[offset * per..(offset + n) * per].to_vec(), row_shape.clone())
                })
                .collect();
            offset += n;
            let primary = shadow.then(|| mine.clone());
            let _ = reply.send(Ok((model.clone(), mine)));
            answered.push((n, inputs, primary));
        }
        self.observe_drift(model, joined.as_deref().unwrap_or(&answered[0].1), &outs);
        for (rows, inputs, primary) in answered {
            let Some(primary) = primary else { continue };
            let work = ShadowJob { rows, inputs, primary, enqueued: Instant::now() };
            if self.shadow_queue.try_push(work).is_err() {
                self.metrics.shadow_skipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn observe_drift(&self, model: &LoadedModel, inputs: &[Vec<f32>], outs: &Outputs) {
        let mut d = self.drift.lock().expect("drift lock");
        if d.as_ref().map(|(digest, _)| *digest) != Some(model.digest) {
            let names: Vec<String> = model.interface().inputs.iter().map(|t| t.name.clone()).collect();
            let dc = &self.cfg.drift;
            let acc = DriftAccumulator::new(model.manifest.reference.as_ref(), &names, dc.lo, dc.hi, dc.bins);
            *d = Some((model.digest, acc));
        }
        let (_, acc) = d.as_mut().expect("just set");
        for (i, values) in inputs.iter().enumerate() {
            // A strided sample of at most DRIFT_SAMPLE values per batch: an image's 150k pixels cost 2 ms
            // to bin, a sample of 4096 30 µs (BENCHMARKS.md), and a histogram's shares barely move.
            if values.len() > DRIFT_SAMPLE {
                let stride = values.len().div_ceil(DRIFT_SAMPLE);
                let sample: Vec<f32> = values.iter().step_by(stride).copied().collect();
                acc.observe_input(i, &sample);
            } else {
                acc.observe_input(i, values);
            }
        }
        if let Some((logits, row_shape)) = outs.first()
            && let Some(classes) = classes(row_shape)
        {
            acc.observe_output(logits, classes);
        }
        let rows = outs.first().map(|(data, shape)| data.len() / shape.iter().product::<usize>().max(1)).unwrap_or(0);
        self.drift_rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    fn shadow_worker(self: Arc<Self>) {
        while let Some(batch) = self.shadow_queue.next_batch(1, Duration::ZERO) {
            let Some(candidate) = self.candidate() else { continue };
            for job in batch {
                // Lower priority than live traffic: while requests wait for a worker, the shadow sample
                // waits too; if they keep waiting, the sample is dropped rather than competing for CPU.
                if !self.yield_to_live_traffic() {
                    self.metrics.shadow_skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let start = Instant::now();
                let Ok(outs) = candidate.run(job.rows, &job.inputs) else { continue };
                let latency = start.elapsed();
                let (Some((cand, _)), Some((prim, row_shape))) = (outs.first(), job.primary.first()) else { continue };
                let classes = classes(row_shape);
                self.shadow.lock().expect("shadow lock").record(prim, cand, classes, latency);
            }
        }
    }
}

/// Whether the calling task runs on a multi-thread tokio runtime (the agent's server does). On a
/// current-thread runtime one thread serves every task: running models there would serialise concurrent
/// callers (an inline run never yields) and leave the workers and the batcher idle.
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

impl Runtime {
    /// Waits up to 50 ms for the live queue to empty; `false` when it never did.
    fn yield_to_live_traffic(&self) -> bool {
        let deadline = Instant::now() + Duration::from_millis(50);
        while !self.queue.is_empty() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
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
