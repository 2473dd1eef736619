//! The shell around the pure planner: it builds specs from operator requests and the bundle store,
//! evaluates every live rollout each second against the registry, persists each rollout before
//! performing its actions (publish or withdraw desired states, append audit entries). Starts, operator
//! verbs and evaluations take turns (one at a time, each from reading the rollout to performing its
//! actions), so none overwrites another's change; an evaluation that only refreshed the evidence is kept
//! in memory and stored at most every [`EVIDENCE_STORE_SECS`].

use super::bundles::{self, BundleMeta};
use super::fleet::{Fleet, now};
use super::store::{Store, Table};
use crate::rollout::*;
use outpost_protocol::UnixTime;
use outpost_protocol::messages::Watch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// What `outpost rollout start` (and `rollout remove`) sends. Durations in seconds, rates in 0.0..=1.0.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StartRequest {
    /// NAME@VERSION or a digest prefix of a pushed bundle (an install).
    #[serde(default)]
    pub bundle: String,
    /// A model name: take it off the selected devices instead (a removal rollout; `bundle` stays empty).
    #[serde(default)]
    pub remove: Option<String>,
    #[serde(default)]
    pub selector: String,
    pub waves: String,
    pub bake_secs: u64,
    #[serde(default)]
    pub max_failure_rate: Option<f64>,
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    #[serde(default)]
    pub max_p95_regression: Option<f64>,
    #[serde(default)]
    pub min_shadow_agreement: Option<f64>,
    #[serde(default)]
    pub max_psi: Option<f64>,
    #[serde(default)]
    pub shadow_secs: Option<u32>,
    #[serde(default)]
    pub quorum: Option<f64>,
    #[serde(default)]
    pub on_failure: Option<String>,
    #[serde(default)]
    pub watch_secs: Option<u32>,
    #[serde(default)]
    pub id: Option<String>,
    /// Only the gates named above: no default install, error-rate, latency and shadow gates.
    #[serde(default)]
    pub no_default_gates: bool,
}

pub struct Rollouts {
    store: Arc<Store>,
    fleet: Arc<Fleet>,
    live: Mutex<BTreeMap<String, Rollout>>,
    /// Held for a whole read → change → store → perform of any rollout (start, operator verb, the
    /// evaluation tick), so they happen one after the other: a tick that read a rollout before a `pause`
    /// and stored its copy after it would undo the pause.
    turn: tokio::sync::Mutex<()>,
    /// When each rollout was last stored (Unix seconds).
    stored_at: Mutex<BTreeMap<String, UnixTime>>,
}

/// A rollout whose only change is fresher evidence is stored at most this often (seconds). Evidence is
/// recomputed at every evaluation, so what a restart loses is at most this old; decisions, intents and
/// wave changes are stored at once.
pub const EVIDENCE_STORE_SECS: u64 = 60;

/// What must be stored as soon as it changes: everything but the latest evidence and the baseline figures,
/// which every evaluation recomputes (and stamps with its time).
fn decided(r: &Rollout) -> Rollout {
    let mut r = r.clone();
    r.state.last_evidence = None;
    r.state.baseline = None;
    r
}

impl std::fmt::Debug for Rollouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollouts").finish_non_exhaustive()
    }
}

/// The newest rollout of each model: see [`newest_per_model`].
fn owners(list: Vec<Rollout>) -> Vec<Rollout> {
    newest_per_model(list)
}

impl Rollouts {
    pub fn load(store: Arc<Store>, fleet: Arc<Fleet>) -> anyhow::Result<Arc<Rollouts>> {
        let mut live = BTreeMap::new();
        for r in store.all::<Rollout>(Table::Rollouts)? {
            live.insert(r.spec.id.clone(), r);
        }
        Ok(Arc::new(Rollouts {
            store,
            fleet,
            live: Mutex::new(live),
            turn: tokio::sync::Mutex::new(()),
            stored_at: Mutex::default(),
        }))
    }

    pub fn list(&self) -> Vec<Rollout> {
        self.live.lock().expect("rollouts").values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Rollout> {
        self.live.lock().expect("rollouts").get(id).cloned()
    }

    /// What each model's devices should run, for the skew view: the release of its newest rollout that was
    /// not rolled back or aborted (a rolled-back release is not a target; the one before it still is).
    /// Removals are no target: skew counts the versions that run.
    pub fn targets(&self) -> Vec<Rollout> {
        let kept: Vec<Rollout> =
            self.list().into_iter().filter(|r| !terminal(&r.state.phase) && r.spec.kind == Kind::Install).collect();
        newest_per_model(kept)
    }

    /// Every desired state the owning rollouts ask for, terminal ones included (a retained revert must
    /// reach a device that is offline now), for a broker that lost its retained messages.
    pub async fn republish(&self) {
        let _turn = self.turn.lock().await;
        let actions: Vec<Action> = owners(self.list()).iter().flat_map(|r| r.desired_states()).collect();
        self.perform(actions).await;
    }

    pub fn spec(&self, req: &StartRequest) -> Result<RolloutSpec, String> {
        let (meta, kind): (BundleMeta, Kind) = match &req.remove {
            Some(_) if !req.bundle.is_empty() => {
                return Err("a rollout either installs a bundle or removes a model".into());
            }
            Some(model) => (bundles::newest(&self.store, model)?, Kind::Remove),
            None => (bundles::find(&self.store, &req.bundle)?, Kind::Install),
        };
        let digest = meta.digest.parse().map_err(|e: String| e)?;
        let bundle = self
            .fleet
            .bundle_ref(&digest)
            .ok_or_else(|| format!("bundle {} is missing from the store", meta.digest))?;
        let manifest = outpost_protocol::bundle::inspect(
            &self.fleet.bundle_bytes(&digest).expect("just read"),
            &Default::default(),
        )
        .map_err(|r| r.to_string())?
        .manifest;
        let waves = req
            .waves
            .split(',')
            .map(|w| w.trim().parse::<WaveSize>().map(|size| Wave { size, bake_secs: req.bake_secs }))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let gates = Gates {
            install: req.max_failure_rate.map(|r| InstallGate { max_failure_rate: r, min_finished: 1 }),
            error_rate: req.max_error_rate.map(|r| ErrorRateGate { max_increase: r, min_requests: 20 }),
            latency: req.max_p95_regression.map(|r| LatencyGate { max_p95_regression: r }),
            shadow: req.min_shadow_agreement.map(|a| ShadowGate { min_agreement: a, min_compared: 20 }),
            drift: req.max_psi.map(|p| DriftGate { max_psi: p }),
            quorum: Quorum { min_fraction: req.quorum.unwrap_or(0.8), ..Quorum::default() },
            defaulted: vec![],
        };
        let classifier = manifest.reference.as_ref().is_some_and(|p| !p.output_classes.is_empty());
        let gates =
            if req.no_default_gates { gates } else { gates.with_defaults(kind, req.shadow_secs.is_some(), classifier) };
        let id = req.id.clone().unwrap_or_else(|| match kind {
            Kind::Install => format!("{}-{}-{}", meta.name, meta.version, now()),
            Kind::Remove => format!("{}-remove-{}", meta.name, now()),
        });
        let spec = RolloutSpec {
            id,
            release: Release {
                model: manifest.name.clone(),
                version: manifest.version,
                sequence: manifest.sequence,
                bundle,
                model_digest: manifest.payload.model_sha256,
                targets: manifest.targets.clone(),
            },
            selector: Selector::parse(&req.selector).map_err(|e| e.to_string())?,
            waves,
            gates,
            on_failure: req.on_failure.as_deref().unwrap_or("pause").parse().map_err(|e: SpecError| e.to_string())?,
            shadow: req.shadow_secs.map(|secs| ShadowPeriod { secs, sample_percent: 100 }),
            watch: Watch { secs: req.watch_secs.unwrap_or(300), ..Watch::default() },
            hold_secs: None,
            kind,
        };
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// Creates a rollout and runs its first evaluation. One live rollout per model: a device must never
    /// be told two things at once.
    /// `by`: the operator who started it (the `Started` decision names them).
    pub async fn start(&self, req: &StartRequest, by: &str) -> Result<Rollout, String> {
        let spec = self.spec(req)?;
        let _turn = self.turn.lock().await;
        let views = self.views();
        may_start(&self.list(), &spec, &views)?;
        let mut rollout = Rollout::new(spec).map_err(|e| e.to_string())?;
        rollout.state.order = next_order(&self.list());
        rollout.state.started_by = Some(by.to_owned());
        if rollout.spec.kind == Kind::Install && rollout.survey_count(&views) == 0 {
            return Err(rollout.why_none_selected(&views));
        }
        if rollout.spec.kind == Kind::Remove && rollout.survey_count(&views) == 0 {
            return Err(format!(
                "no device matching the selector {:?} runs {}: nothing to remove",
                rollout.spec.selector.to_string(),
                rollout.spec.release.model
            ));
        }
        let t = now();
        let actions = rollout.evaluate(&views, t);
        self.save_and_perform(rollout.clone(), actions, t).await?;
        Ok(rollout)
    }

    pub async fn command(&self, id: &str, verb: Verb, by: &str) -> Result<Rollout, String> {
        let _turn = self.turn.lock().await;
        let mut rollout = self.get(id).ok_or_else(|| format!("no rollout {id}"))?;
        may_command(&self.list(), &rollout, verb)?;
        let t = now();
        let actions = rollout.command(verb, by, &self.views(), t).map_err(|e| e.to_string())?;
        self.save_and_perform(rollout.clone(), actions, t).await?;
        Ok(rollout)
    }

    /// One evaluation of the rollout that owns each model's devices.
    pub async fn tick(&self) {
        self.tick_at(now()).await
    }

    /// One evaluation at `t` (Unix seconds). A rollout whose decisions did not change is stored only when
    /// its stored evidence is older than [`EVIDENCE_STORE_SECS`]; the copy in memory (what status shows)
    /// always has the latest.
    pub async fn tick_at(&self, t: UnixTime) {
        let _turn = self.turn.lock().await;
        let views = self.views();
        for mut rollout in owners(self.list()) {
            let before = rollout.clone();
            let actions = rollout.evaluate(&views, t);
            if rollout == before {
                continue;
            }
            let stored = self.stored_at.lock().expect("stored_at").get(&rollout.spec.id).copied();
            let due = stored.is_none_or(|at| t >= at.saturating_add(EVIDENCE_STORE_SECS));
            if !actions.is_empty() || due || decided(&rollout) != decided(&before) {
                if let Err(e) = self.save_and_perform(rollout, actions, t).await {
                    tracing::error!(error = %e, "cannot store a rollout");
                }
            } else {
                self.live.lock().expect("rollouts").insert(rollout.spec.id.clone(), rollout);
            }
        }
    }

    fn views(&self) -> Vec<DeviceView> {
        self.fleet.devices().iter().map(|d| d.view()).collect()
    }

    /// Called with the turn held.
    async fn save_and_perform(&self, rollout: Rollout, actions: Vec<Action>, t: UnixTime) -> Result<(), String> {
        // Persist first: a crash may lose actions (republished at start) but never repeats a decision.
        self.store.put(Table::Rollouts, &rollout.spec.id, &rollout).map_err(|e| e.to_string())?;
        self.stored_at.lock().expect("stored_at").insert(rollout.spec.id.clone(), t);
        self.live.lock().expect("rollouts").insert(rollout.spec.id.clone(), rollout);
        self.perform(actions).await;
        Ok(())
    }

    async fn perform(&self, actions: Vec<Action>) {
        for a in actions {
            let result = match a {
                Action::Desire { device, desired } => self.fleet.desire(&device, desired).await,
                Action::Withdraw { device, model } => self.fleet.withdraw(&device, &model).await,
                Action::Audit(entry) => self.store.audit(&entry).map(|_| ()).map_err(Into::into),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot perform a rollout action");
            }
        }
    }
}
