//! The update machine: pure. It takes inputs (a desired state, a chunk, a tick, the result of a step the
//! shell performed) with `now`, changes its state, and returns effects for the shell to perform. The shell
//! persists the state after every step and before performing the effects, so a `kill -9` anywhere
//! resumes from the last persisted state with `Input::Restarted`.
//!
//! `Idle → Fetching → Verifying → Staged → SelfTest → [Shadow] → Activating → Watching → Committed`,
//! or `RolledBack{reason}` / `Rejected{reason}`.

pub use super::job::{Authority, Effect, Health, Input, Job, Release, UpdateState};
use outpost_protocol::messages::{DesiredState, Mode};
use outpost_protocol::telemetry::UpdateStage;
use outpost_protocol::{Digest, Limits, ModelName, RejectReason};

/// Chunks requested at once: enough to keep the link busy, few enough to bound broker memory.
pub const FETCH_WINDOW: u32 = 8;
/// A chunk request unanswered this long is sent again (from the first missing chunk).
pub const FETCH_RETRY_MS: u64 = 5_000;
/// After this many unanswered requests in a row the update fails with `fetch_failed`.
pub const FETCH_MAX_RETRIES: u32 = 60;
/// An activation whose model has not loaded this long after the switch is rolled back
/// (`model_unloadable`): every stage has a deadline, none waits for ever.
pub const ACTIVATE_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    pub state: UpdateState,
    /// The model names this device accepts (config `models.accept`); `None`: every name.
    pub accept: Option<Vec<ModelName>>,
}

impl Machine {
    pub fn new(state: UpdateState) -> Self {
        Machine { state, accept: None }
    }

    pub fn with_accept(mut self, accept: Option<Vec<ModelName>>) -> Self {
        self.accept = accept;
        self
    }

    pub fn stage(&self) -> UpdateStage {
        self.state.job.as_ref().map(|j| j.stage).unwrap_or(UpdateStage::Idle)
    }

    pub fn step(&mut self, input: Input, now_ms: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Desired { desired, already_active, authority } => {
                if let Err((reason, detail)) = self.authorize(&desired, authority) {
                    fx.push(Effect::Refused { desired, reason, detail });
                } else {
                    self.desired(desired, already_active, now_ms, &mut fx)
                }
            }
            Input::Chunk { bundle, index, valid } => self.chunk(bundle, index, valid, now_ms, &mut fx),
            Input::Tick => self.tick(now_ms, &mut fx),
            Input::Verified(r) => self.verified(r, now_ms, &mut fx),
            Input::SelfTested(r) => self.after(UpdateStage::SelfTest, r, now_ms, &mut fx),
            Input::Activated(r) => {
                let r = r.map_err(|e| (RejectReason::ModelUnloadable, e));
                self.after(UpdateStage::Activating, r, now_ms, &mut fx)
            }
            Input::Health(h) => self.health(h, &mut fx),
            Input::Withdrawn => self.withdrawn(&mut fx),
            Input::Restarted { valid_chunks } => self.restarted(valid_chunks, now_ms, &mut fx),
        }
        fx
    }

    fn go(job: &mut Job, to: UpdateStage, reason: Option<RejectReason>, detail: String, fx: &mut Vec<Effect>) {
        fx.push(Effect::Event { bundle: job.bundle(), from: job.stage, to, reason, detail: detail.clone() });
        job.stage = to;
        if let Some(r) = reason {
            job.outcome = Some((r, detail));
        }
    }

    /// The desired state that waited for a watch to end, once the watch has ended: the shell starts it
    /// (as `Input::Desired`, with `already_active` as the slots stand then).
    pub fn ready_queued(&self) -> Option<&DesiredState> {
        let busy = self.state.job.as_ref().is_some_and(Job::in_progress);
        self.state.queued.as_ref().filter(|_| !busy)
    }

    /// Decides whether a desired state may be taken at all, before it changes anything. An install may be
    /// unsigned (its bundle's signed manifest decides); a revert or removal takes a verified model off, so
    /// only the director's statement may ask for it (Uptane's director role), and only one issued no
    /// earlier than the newest statement taken for this model (a captured one replayed later is stale).
    fn authorize(&mut self, d: &DesiredState, authority: Authority) -> Result<(), (RejectReason, String)> {
        let what = match d.mode {
            Mode::Revert => format!("a revert of {} {}", d.model, d.version),
            Mode::Remove => format!("the removal of {}", d.model),
            _ => format!("an install of {} {}", d.model, d.version),
        };
        let takes_off = matches!(d.mode, Mode::Revert | Mode::Remove);
        match authority {
            Authority::Director if d.issued_at < self.state.director_floor => Err((
                RejectReason::StaleRequest,
                format!(
                    "{what} refused: issued at {}, before the director's statement of {} this device already took",
                    d.issued_at, self.state.director_floor
                ),
            )),
            Authority::Director => {
                self.state.director_floor = d.issued_at;
                Ok(())
            }
            // An install asks; its bundle's signed manifest decides (a bad signature adds nothing an
            // attacker could not also get by sending it unsigned).
            _ if !takes_off => Ok(()),
            Authority::Refused(reason, detail) => {
                Err((reason, format!("{what} refused: {detail}; {} keeps serving", d.model)))
            }
            Authority::Unsigned => Err((
                RejectReason::UnsignedRequest,
                format!(
                    "{what} refused: it is not signed by a director key of the trust policy; {} keeps serving",
                    d.model
                ),
            )),
        }
    }

    fn desired(&mut self, d: DesiredState, already_active: bool, now_ms: u64, fx: &mut Vec<Effect>) {
        self.state.retained = d.mode != Mode::Remove;
        if self.state.queued.as_ref().is_some_and(|q| same(q, &d)) && self.ready_queued().is_none() {
            return; // Re-delivery of the desired state already waiting for the watch.
        }
        // Whatever waited is replaced by this newer desired state (or started, when it is the same).
        if let Some(q) = self.state.queued.take().filter(|q| !same(q, &d)) {
            let detail = format!("replaced by {} {} before it started", d.model, d.version);
            fx.push(Effect::Event {
                bundle: q.bundle.digest,
                from: UpdateStage::Idle,
                to: UpdateStage::Rejected,
                reason: Some(RejectReason::Superseded),
                detail,
            });
        }
        if let Some(job) = &self.state.job
            && same(&job.desired, &d)
        {
            return; // Re-delivery of the retained message (every reconnect): nothing new.
        }
        if already_active && matches!(d.mode, Mode::Activate | Mode::Shadow { .. }) {
            return;
        }
        // An activated update under watch is not undone by another install: it finishes its watch (commit
        // or its own rollback) and the new desired state starts after. Only a verified verdict (the watch)
        // or an explicit revert or removal takes an activated model off.
        if let Some(job) = self.state.job.as_ref().filter(|j| {
            matches!(j.stage, UpdateStage::Activating | UpdateStage::Watching)
                && matches!(d.mode, Mode::Activate | Mode::Shadow { .. })
        }) {
            let detail = format!(
                "waits for {} {} to finish its {} ({} s watch) before it starts",
                job.desired.model,
                job.desired.version,
                if job.stage == UpdateStage::Watching { "watch" } else { "activation" },
                job.desired.watch.secs
            );
            fx.push(Effect::Event {
                bundle: d.bundle.digest,
                from: UpdateStage::Idle,
                to: UpdateStage::Idle,
                reason: None,
                detail,
            });
            self.state.queued = Some(d);
            return;
        }
        // A newer desired state replaces an unfinished update (an activated one only when it asks for a
        // revert or the removal: see above).
        let interrupted = self.state.job.as_ref().filter(|j| j.in_progress()).map(|j| j.stage);
        if let Some(job) = self.state.job.as_mut().filter(|j| j.in_progress()) {
            match job.stage {
                UpdateStage::Shadow => fx.push(Effect::StopShadow),
                UpdateStage::Activating | UpdateStage::Watching => fx.push(Effect::RollBack),
                _ => {}
            }
            fx.push(Effect::DiscardStaging { bundle: job.bundle() });
            let detail = format!("replaced by {} {}", d.model, d.version);
            let reason = if job.stage == UpdateStage::Watching || job.stage == UpdateStage::Activating {
                UpdateStage::RolledBack
            } else {
                UpdateStage::Rejected
            };
            Self::go(job, reason, Some(RejectReason::Superseded), detail, fx);
        }
        if d.mode == Mode::Revert {
            let mut job = new_job(d, now_ms);
            let detail = match interrupted {
                // The interrupted update already rolled its own activation back: that is the revert.
                Some(UpdateStage::Activating | UpdateStage::Watching) => "reverted: the unfinished update rolled back",
                // The new model never replaced the active one: cancelling it is the whole revert.
                Some(_) => "reverted: the unfinished update was cancelled before activation",
                None => {
                    fx.push(Effect::Revert);
                    "reverted to the previous model on request"
                }
            };
            Self::go(&mut job, UpdateStage::RolledBack, None, detail.into(), fx);
            self.state.job = Some(job);
            return;
        }
        if let Some(accept) = self.accept.as_ref().filter(|a| !a.contains(&d.model)) {
            let mut job = new_job(d, now_ms);
            let names: Vec<&str> = accept.iter().map(ModelName::as_str).collect();
            let detail = format!("this device accepts only the models {}", names.join(", "));
            Self::go(&mut job, UpdateStage::Rejected, Some(RejectReason::DesiredMismatch), detail, fx);
            self.state.job = Some(job);
            return;
        }
        if d.mode == Mode::Remove {
            let mut job = new_job(d, now_ms);
            fx.push(Effect::Remove);
            Self::go(&mut job, UpdateStage::Committed, None, "removed on request".into(), fx);
            self.state.job = Some(job);
            return;
        }
        let mut job = new_job(d, now_ms);
        // The desired state is unsigned: every size it names is checked before anything is allocated by it
        // (a ~100-byte message must not reserve gigabytes, nor make every restart abort on allocation).
        if let Err(r) = job.desired.bundle.check(&Limits::default()) {
            Self::go(
                &mut job,
                UpdateStage::Rejected,
                Some(r.reason),
                format!("refused before fetching: {}", r.detail),
                fx,
            );
            self.state.job = Some(job);
            return;
        }
        fx.push(Effect::PrepareStaging { bundle: job.bundle(), size: job.desired.bundle.size });
        let detail = format!("{} chunk(s), {} bytes", job.have.len(), job.desired.bundle.size);
        Self::go(&mut job, UpdateStage::Fetching, None, detail, fx);
        request_missing(&mut job, now_ms, fx);
        self.state.job = Some(job);
    }

    /// A withdrawal cancels an update that has not replaced the active model yet, shadowing included: the
    /// candidate never serves. An activated one finishes its watch; the controller reverts it after (it
    /// tells `Mode::Revert` once the device reports the release). The job is forgotten, so the same
    /// desired state issued again later (a resumed rollout) starts afresh instead of looking re-delivered.
    fn withdrawn(&mut self, fx: &mut Vec<Effect>) {
        self.state.retained = false;
        if let Some(q) = self.state.queued.take() {
            fx.push(Effect::Event {
                bundle: q.bundle.digest,
                from: UpdateStage::Idle,
                to: UpdateStage::Rejected,
                reason: Some(RejectReason::Superseded),
                detail: "withdrawn by the controller before it started".into(),
            });
        }
        let Some(job) = self.state.job.as_mut() else { return };
        match job.stage {
            UpdateStage::Fetching
            | UpdateStage::Verifying
            | UpdateStage::Staged
            | UpdateStage::SelfTest
            | UpdateStage::Shadow => {
                if job.stage == UpdateStage::Shadow {
                    fx.push(Effect::StopShadow);
                }
                fx.push(Effect::DiscardStaging { bundle: job.bundle() });
                let detail = "withdrawn by the controller before activation".to_string();
                Self::go(job, UpdateStage::Rejected, Some(RejectReason::Superseded), detail, fx);
                self.state.job = None;
            }
            _ => {}
        }
    }

    fn chunk(&mut self, bundle: Digest, index: u32, valid: bool, now_ms: u64, fx: &mut Vec<Effect>) {
        let Some(job) = self.state.job.as_mut() else { return };
        if job.stage != UpdateStage::Fetching || job.bundle() != bundle || index as usize >= job.have.len() {
            return; // Late, duplicate or foreign chunk.
        }
        if valid {
            job.have[index as usize] = true;
            job.retries = 0;
        }
        match job.next_missing() {
            None => {
                Self::go(job, UpdateStage::Verifying, None, "all chunks fetched".into(), fx);
                fx.push(Effect::Verify { bundle: job.bundle() });
            }
            // A bad chunk is asked for again at once; otherwise the next window once this one is done.
            Some(first) if !valid || first >= job.requested_until => request_missing(job, now_ms, fx),
            Some(_) => {}
        }
    }

    fn tick(&mut self, now_ms: u64, fx: &mut Vec<Effect>) {
        let Some(job) = self.state.job.as_mut() else { return };
        match job.stage {
            UpdateStage::Fetching if now_ms >= job.requested_at_ms + FETCH_RETRY_MS => {
                job.retries += 1;
                if job.retries > FETCH_MAX_RETRIES {
                    let missing = job.have.iter().filter(|h| !**h).count();
                    let detail = format!("{missing} chunk(s) still missing after {FETCH_MAX_RETRIES} requests");
                    fx.push(Effect::DiscardStaging { bundle: job.bundle() });
                    Self::go(job, UpdateStage::Rejected, Some(RejectReason::FetchFailed), detail, fx);
                } else {
                    request_missing(job, now_ms, fx);
                }
            }
            UpdateStage::Shadow if now_ms >= job.deadline_ms => {
                fx.push(Effect::StopShadow);
                Self::go(job, UpdateStage::Activating, None, "shadow period over".into(), fx);
                fx.push(activate(job, now_ms));
            }
            UpdateStage::Activating if now_ms >= job.deadline_ms => {
                let secs = ACTIVATE_TIMEOUT_MS / 1000;
                let detail = format!("the model did not load within {secs} s of its activation");
                fx.push(Effect::DiscardStaging { bundle: job.bundle() });
                fx.push(Effect::RollBack);
                Self::go(job, UpdateStage::RolledBack, Some(RejectReason::ModelUnloadable), detail, fx);
            }
            UpdateStage::Watching if now_ms >= job.deadline_ms => {
                // Only a verified release reaches Watching; its sequence is the floor's.
                let sequence = job.verified.as_ref().map(|r| r.sequence).unwrap_or(0);
                fx.push(Effect::Commit { sequence });
                let detail = format!("healthy for the {} s watch window", job.desired.watch.secs);
                Self::go(job, UpdateStage::Committed, None, detail, fx);
            }
            _ => {}
        }
    }

    /// Verification finished: the verified release must be exactly what the desired state asked for, or a
    /// forged desired state could smuggle a genuine bundle of another model, version or sequence in.
    fn verified(&mut self, r: Result<Release, (RejectReason, String)>, now_ms: u64, fx: &mut Vec<Effect>) {
        let Some(job) = self.state.job.as_mut().filter(|j| j.stage == UpdateStage::Verifying) else { return };
        let r = r.and_then(|release| {
            let d = &job.desired;
            if release.name != d.model || release.version != d.version || release.sequence != d.sequence {
                return Err((
                    RejectReason::DesiredMismatch,
                    format!(
                        "the verified bundle is {} {} (sequence {}); the desired state asked for {} {} (sequence {})",
                        release.name, release.version, release.sequence, d.model, d.version, d.sequence
                    ),
                ));
            }
            Ok(release)
        });
        let r = match r {
            Ok(release) => {
                fx.push(Effect::Stage { model: release.model });
                job.verified = Some(release);
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.after(UpdateStage::Verifying, r, now_ms, fx);
    }

    /// The shell finished the step that `stage` asked for.
    fn after(&mut self, stage: UpdateStage, r: Result<(), (RejectReason, String)>, now_ms: u64, fx: &mut Vec<Effect>) {
        let Some(job) = self.state.job.as_mut().filter(|j| j.stage == stage) else { return };
        if let Err((reason, detail)) = r {
            fx.push(Effect::DiscardStaging { bundle: job.bundle() });
            if stage == UpdateStage::Activating {
                fx.push(Effect::RollBack);
                Self::go(job, UpdateStage::RolledBack, Some(reason), detail, fx);
            } else {
                Self::go(job, UpdateStage::Rejected, Some(reason), detail, fx);
            }
            return;
        }
        match stage {
            UpdateStage::Verifying => {
                Self::go(job, UpdateStage::Staged, None, "verified and stored as the candidate".into(), fx);
                Self::go(job, UpdateStage::SelfTest, None, String::new(), fx);
                fx.push(Effect::SelfTest { model: job.verified.as_ref().map(|r| r.model).unwrap_or(Digest([0; 32])) });
            }
            UpdateStage::SelfTest => match job.desired.mode {
                Mode::Shadow { secs, sample_percent } => {
                    job.deadline_ms = now_ms + u64::from(secs) * 1000;
                    Self::go(job, UpdateStage::Shadow, None, format!("shadowing for {secs} s"), fx);
                    fx.push(Effect::StartShadow { sample_percent });
                }
                _ => {
                    Self::go(job, UpdateStage::Activating, None, "self-tests passed".into(), fx);
                    fx.push(activate(job, now_ms));
                }
            },
            UpdateStage::Activating => {
                job.deadline_ms = now_ms + u64::from(job.desired.watch.secs) * 1000;
                job.restarts = 0;
                let detail = format!("watching for {} s", job.desired.watch.secs);
                Self::go(job, UpdateStage::Watching, None, detail, fx);
            }
            _ => {}
        }
    }

    fn health(&mut self, h: Health, fx: &mut Vec<Effect>) {
        let Some(job) = self.state.job.as_mut().filter(|j| j.stage == UpdateStage::Watching) else { return };
        let w = job.desired.watch;
        let verdict = if !h.selftest_ok {
            Some((RejectReason::SelfTestFailed, "the self-test failed after activation".to_string()))
        } else if h.requests < u64::from(w.min_requests) {
            None
        } else if w.max_error_ppm > 0 && h.errors * 1_000_000 > u64::from(w.max_error_ppm) * h.requests {
            Some((
                RejectReason::UnhealthyErrors,
                format!(
                    "{} error(s) in {} request(s), over the budget of {} ppm",
                    h.errors, h.requests, w.max_error_ppm
                ),
            ))
        } else if w.max_p95_us > 0 && h.p95_us > w.max_p95_us {
            Some((
                RejectReason::UnhealthyLatency,
                format!(
                    "p95 latency {} µs over {} request(s), over the budget of {} µs",
                    h.p95_us, h.requests, w.max_p95_us
                ),
            ))
        } else {
            None
        };
        if let Some((reason, detail)) = verdict {
            fx.push(Effect::RollBack);
            Self::go(job, UpdateStage::RolledBack, Some(reason), detail, fx);
        }
    }

    fn restarted(&mut self, valid_chunks: Vec<bool>, now_ms: u64, fx: &mut Vec<Effect>) {
        let Some(job) = self.state.job.as_mut() else { return };
        let stage = job.stage;
        // A job persisted by an agent that did not check its sizes is checked now, before the shell
        // allocates anything by them again.
        if job.in_progress()
            && let Err(r) = job.desired.bundle.check(&Limits::default())
        {
            fx.push(Effect::DiscardStaging { bundle: job.bundle() });
            Self::go(job, UpdateStage::Rejected, Some(r.reason), r.detail, fx);
            return;
        }
        match stage {
            // Every stage that handles the bundle counts towards the crash-loop limit, verification
            // included: a bundle whose verification kills the agent must not keep it restarting forever.
            // Fetching does not count: it only writes checked chunks within checked sizes, and a device
            // that loses power during a long download resumes rather than giving up.
            UpdateStage::Verifying | UpdateStage::Staged if crash_loop(job) => {
                fx.push(Effect::DiscardStaging { bundle: job.bundle() });
                let detail = format!("the agent restarted {} time(s) while verifying the bundle", job.restarts);
                Self::go(job, UpdateStage::Rejected, Some(RejectReason::CrashLoop), detail, fx);
            }
            UpdateStage::Fetching => {
                if valid_chunks.len() == job.have.len() {
                    job.have = valid_chunks;
                } else {
                    job.have.iter_mut().for_each(|h| *h = false);
                    fx.push(Effect::PrepareStaging { bundle: job.bundle(), size: job.desired.bundle.size });
                }
                match job.next_missing() {
                    None => {
                        Self::go(job, UpdateStage::Verifying, None, "all chunks fetched".into(), fx);
                        fx.push(Effect::Verify { bundle: job.bundle() });
                    }
                    Some(_) => request_missing(job, now_ms, fx),
                }
            }
            UpdateStage::Verifying | UpdateStage::Staged => {
                job.stage = UpdateStage::Verifying;
                job.verified = None;
                fx.push(Effect::Verify { bundle: job.bundle() });
            }
            // The candidate runs in these stages. Device builds abort on panic (Cargo.toml `edge`), so a
            // candidate whose self-test, shadow run or activation panics kills the agent: counted here,
            // such a model is refused (or rolled back) after `max_restarts` instead of crash-looping the
            // device forever.
            UpdateStage::SelfTest | UpdateStage::Shadow if crash_loop(job) => {
                fx.push(Effect::DiscardStaging { bundle: job.bundle() });
                let detail = format!("the agent restarted {} time(s) while testing the candidate", job.restarts);
                Self::go(job, UpdateStage::Rejected, Some(RejectReason::CrashLoop), detail, fx);
            }
            UpdateStage::SelfTest => {
                fx.push(Effect::SelfTest { model: job.verified.as_ref().map(|r| r.model).unwrap_or(Digest([0; 32])) })
            }
            UpdateStage::Shadow => {
                if let Mode::Shadow { sample_percent, .. } = job.desired.mode {
                    fx.push(Effect::StartShadow { sample_percent });
                }
            }
            UpdateStage::Activating | UpdateStage::Watching if crash_loop(job) => {
                fx.push(Effect::RollBack);
                let detail = format!("the agent restarted {} time(s) while activating or watching", job.restarts);
                Self::go(job, UpdateStage::RolledBack, Some(RejectReason::CrashLoop), detail, fx);
            }
            UpdateStage::Activating => fx.push(activate(job, now_ms)),
            _ => {}
        }
    }
}

/// The activation of the job's verified model (only verified jobs reach `Activating`), which must have
/// loaded by the deadline this sets.
fn activate(job: &mut Job, now_ms: u64) -> Effect {
    job.deadline_ms = now_ms.saturating_add(ACTIVATE_TIMEOUT_MS);
    let r = job.verified.as_ref();
    Effect::Activate {
        model: r.map(|r| r.model).unwrap_or(Digest([0; 32])),
        mem_bytes: r.map(|r| r.mem_bytes).unwrap_or(0),
    }
}

/// Counts one more restart of the agent during this job; true once they reach the watch's `max_restarts`.
fn crash_loop(job: &mut Job) -> bool {
    job.restarts = job.restarts.saturating_add(1);
    job.restarts >= job.desired.watch.max_restarts.max(1)
}

/// The same desired state: the same bundle in the same mode (a re-delivery of the retained message).
fn same(a: &DesiredState, b: &DesiredState) -> bool {
    a.bundle.digest == b.bundle.digest && a.mode == b.mode
}

fn new_job(desired: DesiredState, now_ms: u64) -> Job {
    Job {
        have: vec![false; desired.bundle.chunks.len()],
        desired,
        stage: UpdateStage::Idle,
        requested_at_ms: now_ms,
        requested_until: 0,
        retries: 0,
        deadline_ms: 0,
        restarts: 0,
        outcome: None,
        verified: None,
    }
}

fn request_missing(job: &mut Job, now_ms: u64, fx: &mut Vec<Effect>) {
    if let Some(first) = job.next_missing() {
        let count = (job.have.len() as u32 - first).min(FETCH_WINDOW);
        fx.push(Effect::RequestChunks { bundle: job.bundle(), first, count });
        job.requested_at_ms = now_ms;
        job.requested_until = first + count;
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
