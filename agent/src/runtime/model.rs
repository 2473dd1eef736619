//! A model loaded for serving: tract parses and optimises it once per activation, into concrete plans
//! (one per batch size it will run), never per request. DESIGN.md measured symbolic-batch plans up to 10×
//! slower than concrete ones, so a symbolic batch dimension becomes a set of concrete plans.
//!
//! Models arrive as NNEF (tract's own format), converted from ONNX by `outpost bundle create`: the agent
//! links tract-core and tract-nnef only, without the ONNX parser and tract-hir (cross/README.md "Size").

pub use outpost_models::ModelError;
use outpost_models::TensorData;
use outpost_models::bounds::{self, IndexBound};
use outpost_models::interface::{self, Serving};
use outpost_protocol::Digest;
use outpost_protocol::manifest::{Manifest, ModelFormat, ModelInterface};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tract_nnef::prelude::*;

/// Interleaved timing rounds per batch size in `calibrate`.
const CALIBRATION_ROUNDS: usize = 5;

/// A compiled plan with the run states it keeps for reuse: spawning a state per run costs about 1 µs
/// (5 % of the digits model, BENCHMARKS.md), so states go back to the pool after each run.
#[derive(Debug)]
struct Plan {
    plan: Arc<TypedRunnableModel>,
    states: std::sync::Mutex<Vec<TypedSimpleState>>,
}

/// States a plan keeps: one per thread that may run it at once (workers and inline callers); more than
/// this are dropped after their run rather than held.
const POOLED_STATES: usize = 8;

impl Plan {
    fn new(plan: Arc<TypedRunnableModel>) -> Plan {
        Plan { plan, states: std::sync::Mutex::new(Vec::new()) }
    }

    fn run(&self, values: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let pooled = self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut state = match pooled {
            Some(state) => state,
            None => self.plan.spawn()?,
        };
        let result = state.run(values);
        // A failed run may leave a state mid-turn: only clean ones go back.
        if result.is_ok() {
            let mut pool = self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if pool.len() < POOLED_STATES {
                pool.push(state);
            }
        }
        result
    }
}

/// Each output's values (rows back to back, in the output's own type) and its shape without the batch
/// dimension.
pub type Outputs = Vec<(TensorData, Vec<usize>)>;

/// A served model: identity from its verified manifest, plans per batch size.
#[derive(Debug)]
pub struct LoadedModel {
    pub manifest: Manifest,
    pub digest: Digest,
    /// Rows (batch entries) → plan. A model with a fixed batch has one plan at its fixed size.
    plans: BTreeMap<usize, Plan>,
    /// Whether dimension 0 of every input and output is the (symbolic) batch.
    pub batchable: bool,
    /// Elements per row of each input, and each input's shape without the batch dimension.
    row_shapes: Vec<Vec<usize>>,
    row_lens: Vec<usize>,
    /// Per input: the table it indexes, whose length its values must stay within.
    bounds: Vec<Option<IndexBound>>,
    pub load_time: Duration,
    /// Measured time per row at each candidate batch size (empty until calibrated).
    pub calibration: Vec<(usize, Duration)>,
    /// Bytes of process memory the load added (plans, weights): a model's footprint for shadow reports.
    pub mem_bytes: u64,
}

impl LoadedModel {
    /// Loads `bytes` and checks it matches `manifest.interface`. `max_batch` bounds the plans compiled
    /// for a symbolic batch dimension (sizes 1, 2, 4, … up to it).
    pub fn load(bytes: &[u8], manifest: Manifest, max_batch: usize) -> Result<LoadedModel, ModelError> {
        // Before tract first probes the machine: a model loaded without a runtime (install's self-test) too.
        super::kernels::defaults();
        let start = Instant::now();
        let rss_before = crate::sys::rss_bytes();
        let load = |e: TractError| ModelError::Load(format!("{e:#}"));
        if manifest.payload.format != ModelFormat::Nnef {
            return Err(ModelError::Unsupported(format!(
                "the bundle carries a {:?} model; this agent runs NNEF: repackage it with `outpost bundle create`, \
                 which converts ONNX to NNEF",
                manifest.payload.format
            )));
        }
        let model = outpost_models::nnef::read(bytes)?;
        interface::check(&model, &manifest.interface)?;
        let iface = &manifest.interface;
        // Read from the graph as tract loaded it, before optimisation fuses the gathers away.
        let bounds = bounds::index_bounds(&model)?;
        let Serving { batchable, row_shapes, row_lens } = Serving::of(iface)?;
        let sizes: Vec<usize> = if batchable { batch_sizes(max_batch) } else { vec![1] };
        // A plan per batch size: the batch symbol (dimension 0 of the inputs) bound to that size.
        let mut batch_symbols = Vec::new();
        for outlet in model.input_outlets().map_err(load)?.iter().filter(|_| batchable) {
            if let Some(TDim::Sym(s)) = model.outlet_fact(*outlet).map_err(load)?.shape.first() {
                batch_symbols.push(s.clone());
            }
        }
        let mut plans = BTreeMap::new();
        for &rows in &sizes {
            let values: HashMap<Symbol, TDim> =
                batch_symbols.iter().map(|s| (s.clone(), TDim::Val(rows as i64))).collect();
            let m = model.set_symbols(&values).map_err(load)?;
            let plan = m.into_optimized().map_err(load)?.into_runnable().map_err(load)?;
            plans.insert(rows, Plan::new(plan));
        }
        let mem_bytes = crate::sys::rss_bytes().saturating_sub(rss_before);
        Ok(LoadedModel {
            digest: manifest.payload.model_sha256,
            manifest,
            plans,
            batchable,
            row_shapes,
            row_lens,
            bounds,
            load_time: start.elapsed(),
            calibration: Vec::new(),
            mem_bytes,
        })
    }

    pub fn name(&self) -> &str {
        self.manifest.name.as_str()
    }

    pub fn interface(&self) -> &ModelInterface {
        &self.manifest.interface
    }

    /// Elements in one row of input `i` (the product was checked at load).
    pub fn row_len(&self, i: usize) -> usize {
        self.row_lens[i]
    }

    /// The input's shape without the batch dimension (the whole shape for a fixed-batch model).
    pub fn row_shape(&self, i: usize) -> &[usize] {
        &self.row_shapes[i]
    }

    /// The largest batch this model will run in one plan.
    pub fn max_rows(&self) -> usize {
        self.plans.keys().next_back().copied().unwrap_or(1)
    }

    /// Runs `rows` rows; `inputs[i]` holds the rows of input `i` back to back, in the input's own type.
    /// Returns each output's values (rows back to back, in the output's type) and its per-row shape. Rows
    /// are cut into the compiled batch sizes; the last piece is padded up to the nearest plan and the
    /// padding's outputs dropped. Types, lengths and index inputs are checked first, whoever the caller
    /// (a request checked against another model, a self-test vector, a shadow sample): tract trusts them.
    pub fn run(&self, rows: usize, inputs: &[TensorData]) -> Result<Outputs, ModelError> {
        let specs = &self.interface().inputs;
        if inputs.len() != specs.len() {
            return Err(ModelError::BadInput(format!(
                "{} inputs given; the model takes {}",
                inputs.len(),
                specs.len()
            )));
        }
        for (i, (data, spec)) in inputs.iter().zip(specs).enumerate() {
            if data.dtype() != spec.dtype {
                return Err(ModelError::BadInput(format!(
                    "input {} is {}; the model takes {}",
                    spec.name,
                    data.dtype(),
                    spec.dtype
                )));
            }
            if rows.checked_mul(self.row_len(i)) != Some(data.len()) {
                return Err(ModelError::BadInput(format!(
                    "input {} has {} values, not {rows} rows of {}",
                    spec.name,
                    data.len(),
                    self.row_len(i)
                )));
            }
            self.check_index(i, data)?;
        }
        outpost_models::run::caught(|| self.run_checked(rows, inputs))
    }

    /// Checks input `i`'s values against the table it indexes, if any ([`outpost_models::bounds`]): tract
    /// would index out of bounds with them, a panic (the end of the agent on devices, which abort on panic).
    pub fn check_index(&self, i: usize, data: &TensorData) -> Result<(), ModelError> {
        match self.bounds.get(i).copied().flatten() {
            Some(bound) => bounds::check(&self.interface().inputs[i].name, bound, data),
            None => Ok(()),
        }
    }

    fn run_checked(&self, rows: usize, inputs: &[TensorData]) -> Result<Outputs, ModelError> {
        let run_err = |e: &dyn std::fmt::Display| ModelError::Run(e.to_string());
        let mut outputs: Outputs = Vec::new();
        let mut done = 0;
        while done < rows {
            let left = rows - done;
            let Some((&size, plan)) = self.plans.range(left..).next().or_else(|| self.plans.iter().next_back()) else {
                return Err(ModelError::Run("the model has no compiled plan".into()));
            };
            let take = left.min(size);
            let mut values = TVec::new();
            for (i, shape) in self.row_shapes.iter().enumerate() {
                let per = self.row_len(i);
                let mut data = inputs[i]
                    .slice(done * per..(done + take) * per)
                    .ok_or_else(|| ModelError::Run(format!("input {i} is shorter than {rows} rows")))?;
                data.resize(size * per);
                let full: Vec<usize> = if self.batchable { [&[size][..], shape].concat() } else { shape.clone() };
                // Moves the buffer into the tensor (`Tensor::from_shape` would copy it once more).
                values.push(data.into_tract(&full).map_err(|e| run_err(&e))?.into_tvalue());
            }
            let result = plan.run(values).map_err(|e| ModelError::Run(format!("{e:#}")))?;
            for (o, value) in result.iter().enumerate() {
                let shape = value.shape();
                let row_shape: Vec<usize> =
                    if self.batchable { shape.get(1..).unwrap_or_default().to_vec() } else { shape.to_vec() };
                let per: usize = row_shape.iter().product();
                let part = TensorData::from_tract_prefix(value, take * per).map_err(|e| run_err(&e))?;
                match outputs.get_mut(o) {
                    Some((data, _)) => data.extend_from(&part).map_err(|e| run_err(&e))?,
                    None => outputs.push((part, row_shape)),
                }
            }
            done += take;
        }
        Ok(outputs)
    }

    /// Measures time per row at each compiled batch size (a few runs of zeros), then keeps only the
    /// sizes up to the one with the best time per row: larger batches that do not pay on this CPU are
    /// dropped, so batching is never slower than running requests one by one. A model with one plan is
    /// timed too (3 runs): the runtime uses the cost of one row to decide whether a request may run on
    /// the caller's thread.
    pub fn calibrate(&mut self, budget: Duration) {
        let sizes: Vec<usize> = self.plans.keys().copied().collect();
        // Zeros of each input's type: index 0 is within every table.
        let inputs: Vec<Vec<TensorData>> = sizes
            .iter()
            .map(|&rows| {
                let specs = &self.interface().inputs;
                specs.iter().enumerate().map(|(i, t)| TensorData::zeros(t.dtype, rows * self.row_len(i))).collect()
            })
            .collect();
        for (&rows, inputs) in sizes.iter().zip(&inputs) {
            let _ = self.run(rows, inputs); // warm-up: first runs allocate
        }
        // Sizes are timed in interleaved rounds and each size keeps its median round, so a burst of other
        // work on the machine skews one round of every size rather than all of one size (per-row costs of
        // a small model differ by a few per cent between sizes: noise decided the kept size before).
        let rounds = if sizes.len() < 2 { 1 } else { CALIBRATION_ROUNDS };
        let per_slot = if sizes.len() < 2 { Duration::ZERO } else { budget / (rounds * sizes.len()) as u32 };
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); sizes.len()];
        for _ in 0..rounds {
            for (i, (&rows, inputs)) in sizes.iter().zip(&inputs).enumerate() {
                let start = Instant::now();
                let mut runs = 0u32;
                while runs < 3 || (start.elapsed() < per_slot && runs < 1000) {
                    let _ = self.run(rows, inputs);
                    runs += 1;
                }
                samples[i].push(start.elapsed() / (runs * rows as u32));
            }
        }
        let results: Vec<(usize, Duration)> = sizes
            .iter()
            .zip(&mut samples)
            .map(|(&rows, times)| {
                times.sort();
                (rows, times[times.len() / 2])
            })
            .collect();
        // Prefer the smallest size within 5 % of the best: a larger batch must clearly pay for the wait.
        let best = results.iter().map(|(_, t)| *t).min().unwrap_or_default();
        let keep =
            results.iter().find(|(_, t)| t.as_secs_f64() <= best.as_secs_f64() * 1.05).map(|(r, _)| *r).unwrap_or(1);
        self.plans.retain(|&rows, _| rows <= keep);
        self.calibration = results;
    }

    /// Measured time of one run at the smallest compiled batch (`None` before `calibrate`).
    pub fn run_cost(&self) -> Option<Duration> {
        self.calibration.first().map(|(rows, per_row)| *per_row * *rows as u32)
    }
}

/// 1, 2, 4, … up to and including `max` (`max` itself when it is not a power of two).
fn batch_sizes(max: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> =
        std::iter::successors(Some(1usize), |s| Some(s * 2)).take_while(|s| *s <= max).collect();
    if sizes.last() != Some(&max) {
        sizes.push(max);
    }
    sizes
}

#[cfg(test)]
mod tests {
    #[test]
    fn batch_sizes_double_up_to_the_maximum() {
        assert_eq!(super::batch_sizes(1), vec![1]);
        assert_eq!(super::batch_sizes(8), vec![1, 2, 4, 8]);
        assert_eq!(super::batch_sizes(6), vec![1, 2, 4, 6]);
    }
}
