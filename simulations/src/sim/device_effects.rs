//! What a simulated device does with its update machine's effects, as the agent's driver does: staging,
//! verification into the candidate slot, self-test, slot switches, commit, and serving on the active model.

use super::*;

impl World {
    pub(super) fn perform_effect(&mut self, dev: u32, effect: Effect) -> Option<Input> {
        let boot = self.devices[dev as usize].boot;
        match effect {
            Effect::Event { .. } => None,
            Effect::PrepareStaging { bundle, .. } => {
                let n = self.catalog.by_bundle(&bundle).map_or(0, |r| self.catalog.get(r).bundle.chunks.len());
                let d = self.dev(dev);
                d.staging = Some((bundle, vec![false; n]));
                d.last_chunk = None;
                None
            }
            Effect::RequestChunks { first, count } => {
                let bundle = self.devices[dev as usize].machine.state.job.as_ref()?.bundle();
                self.dev_send(dev, Message::ChunkRequest(ChunkRequest { bundle, first, count }));
                None
            }
            Effect::Verify { .. } => {
                self.q.after(VERIFY_MS, Ev::Work { dev, boot, work: Work::Verify });
                None
            }
            Effect::SelfTest { .. } => {
                self.q.after(SELFTEST_MS, Ev::Work { dev, boot, work: Work::SelfTest });
                None
            }
            Effect::StartShadow { sample_percent } => {
                self.serve(dev);
                self.dev(dev).slots.shadow_percent = Some(sample_percent);
                None
            }
            Effect::StopShadow => {
                self.serve(dev);
                self.dev(dev).slots.shadow_percent = None;
                None
            }
            Effect::Stage { model } => {
                let r = self.catalog.by_model(&model)?;
                let d = self.dev(dev);
                d.slots.candidate = Some(r);
                d.slots.shadow_percent = None;
                None
            }
            Effect::Remove => {
                self.serve(dev);
                let s = Slots::default();
                self.set_slots(dev, s);
                self.announce(dev);
                None
            }
            Effect::Activate { model, .. } => {
                self.serve(dev);
                let s = self.devices[dev as usize].slots;
                let target = self.catalog.by_model(&model)?;
                let mut s2 = s;
                if s2.active != Some(target) {
                    s2.retired = s2.previous.take();
                    s2.previous = s2.active.take();
                    s2.active = Some(target);
                }
                s2.candidate = None;
                s2.shadow_percent = None;
                self.set_slots(dev, s2);
                self.q.after(ACTIVATE_MS, Ev::Work { dev, boot, work: Work::Activate });
                None
            }
            Effect::RollBack => {
                self.serve(dev);
                let mut s = self.devices[dev as usize].slots;
                if let Some(prev) = s.previous.take() {
                    s.active = Some(prev);
                    s.previous = s.retired.take();
                }
                s.candidate = None;
                s.shadow_percent = None;
                self.set_slots(dev, s);
                self.announce(dev);
                None
            }
            Effect::Revert => {
                // As the agent's `ModelSlots::revert`: one step back; the model left is not kept.
                self.serve(dev);
                let mut s = self.devices[dev as usize].slots;
                if let Some(prev) = s.previous.take() {
                    s.active = Some(prev);
                    s.retired = None;
                    s.candidate = None;
                    s.shadow_percent = None;
                }
                self.set_slots(dev, s);
                self.announce(dev);
                None
            }
            Effect::Commit { sequence: seq } => {
                let d = self.dev(dev);
                d.floor = d.floor.max(seq);
                d.slots.retired = None;
                d.staging = None;
                self.announce(dev);
                None
            }
            Effect::DiscardStaging { bundle } => {
                let d = self.dev(dev);
                if d.staging.as_ref().is_some_and(|(b, _)| *b == bundle) {
                    d.staging = None;
                }
                if d.slots.candidate != d.slots.active {
                    d.slots.candidate = None;
                    d.slots.shadow_percent = None;
                }
                None
            }
        }
    }

    /// Changes the slots; keeps the per-model counts and the exposure record. The watch figures restart
    /// with a new active model.
    fn set_slots(&mut self, dev: u32, s: Slots) {
        let before = self.devices[dev as usize].slots.active;
        if before != s.active {
            if let Some(b) = before {
                self.on_model[b as usize] -= 1;
            }
            if let Some(a) = s.active {
                self.on_model[a as usize] += 1;
            }
            let d = self.dev(dev);
            d.watch = Traffic::default();
            if s.active == Some(TARGET) && !d.ever_on_target {
                d.ever_on_target = true;
                self.ever_on_target += 1;
            }
        }
        self.dev(dev).slots = s;
    }

    pub(in crate::sim) fn device_work_done(&mut self, dev: u32, boot: u32, work: Work) {
        let d = &self.devices[dev as usize];
        if d.boot != boot || !d.powered {
            return; // The power went while this was under way; the restart redoes it.
        }
        let input = match work {
            Work::Verify => Input::Verified(self.verify(dev)),
            Work::SelfTest => {
                let d = &self.devices[dev as usize];
                match d.slots.candidate {
                    None => Input::SelfTested(Err((RejectReason::Malformed, "no staged candidate".into()))),
                    Some(TARGET) if d.selftest_fails => Input::SelfTested(Err((
                        RejectReason::SelfTestFailed,
                        "self-test vector 1: output differs beyond the tolerance".into(),
                    ))),
                    Some(_) => Input::SelfTested(Ok(())),
                }
            }
            Work::Activate => {
                self.announce(dev);
                Input::Activated(Ok(()))
            }
        };
        self.step(dev, input);
    }

    /// The checks of `protocol::verify` that the simulated bundles can fail: completeness and digest,
    /// the release-key signature, and anti-rollback against the floor. Success stores the candidate and
    /// records the release as verified on this device.
    fn verify(&mut self, dev: u32) -> Result<Release, (RejectReason, String)> {
        let skip_signature = self.scenario.faults.skip_signature_check;
        let d = &self.devices[dev as usize];
        let job = d.machine.state.job.as_ref().ok_or((RejectReason::Malformed, "no update in progress".into()))?;
        let bundle = job.bundle();
        let complete = d.staging.as_ref().is_some_and(|(b, have)| *b == bundle && have.iter().all(|h| *h));
        if !complete {
            return Err((RejectReason::PayloadDigestMismatch, "the fetched bundle does not match its digest".into()));
        }
        let r = self.catalog.by_bundle(&bundle).ok_or((RejectReason::Malformed, "unknown bundle".into()))?;
        let info = self.catalog.get(r);
        let signed = info.signed;
        if !signed && !skip_signature {
            return Err((
                RejectReason::UnknownKey,
                "the manifest is signed by no release key of the trust policy".into(),
            ));
        }
        if info.running.sequence <= d.floor {
            return Err((
                RejectReason::Rollback,
                format!("sequence {} is at or below the floor {}", info.running.sequence, d.floor),
            ));
        }
        let running = info.running.clone();
        let d = self.dev(dev);
        if signed {
            d.verified |= 1 << r;
        }
        Ok(Release {
            name: running.name,
            version: running.version,
            sequence: running.sequence,
            model: running.digest,
            mem_bytes: 0,
        })
    }

    /// Local traffic since the last accounting, on the active model (and the candidate when shadowing).
    pub(super) fn serve(&mut self, dev: u32) {
        let now = self.now_ms();
        let rate = self.scenario.fleet.requests_per_sec;
        let (failing_rate, agreement) =
            (self.scenario.release.failing_error_rate, self.scenario.release.shadow_agreement);
        let d = &self.devices[dev as usize];
        let elapsed = now.saturating_sub(d.served_until_ms);
        if !d.powered || elapsed == 0 {
            self.dev(dev).served_until_ms = now;
            return;
        }
        let Some(active) = d.slots.active else { return };
        let err = if active == TARGET && d.failing { failing_rate } else { self.catalog.get(active).error_rate };
        let shadow = d.slots.shadow_percent.filter(|_| d.slots.candidate.is_some());
        let requests = self.rng.round(rate * elapsed as f64 / 1000.0);
        let errors = self.rng.round(requests as f64 * err);
        let (compared, agreed) = match shadow {
            Some(p) => {
                let c = self.rng.round(requests as f64 * f64::from(p) / 100.0);
                (c, self.rng.round(c as f64 * agreement))
            }
            None => (0, 0),
        };
        let d = self.dev(dev);
        d.served_until_ms = now;
        for t in [&mut d.window, &mut d.watch] {
            t.requests += requests;
            t.errors += errors;
        }
        d.window.compared += compared;
        d.window.agreed += agreed.min(compared);
    }

    /// The telemetry window: one inference record for the active model, then ship.
    pub(in crate::sim) fn device_window(&mut self, dev: u32) {
        let window = self.scenario.fleet.telemetry_window_secs;
        self.q.after(window * 1000, Ev::Window { dev });
        if !self.devices[dev as usize].powered {
            return;
        }
        self.serve(dev);
        let jitter = self.rng.unit();
        let d = &self.devices[dev as usize];
        let w = d.window;
        let Some(active) = d.slots.active else { return };
        if w.requests > 0 || w.compared > 0 {
            let p95 = f64::from(self.catalog.get(active).p95_us) * (0.9 + 0.2 * jitter);
            let window = Window {
                model: active,
                candidate: d.slots.candidate,
                window_secs: window as u32,
                requests: w.requests as u32,
                errors: w.errors as u32,
                p95_us: p95 as u32,
                compared: w.compared as u32,
                agreed: w.agreed as u32,
            };
            self.append(dev, Body::Window(window));
        }
        self.dev(dev).window = Traffic::default();
        self.ship(dev);
    }

    pub(in crate::sim) fn device_power_loss(&mut self, dev: u32) {
        if !self.devices[dev as usize].powered {
            return;
        }
        self.serve(dev);
        self.power_losses += 1;
        self.break_link(dev);
        let off = self.scenario.faults.power_off_secs.max(1) * 1000;
        let torn = self.rng.chance(0.5);
        let d = self.dev(dev);
        d.powered = false;
        d.boot += 1;
        d.ticking = false;
        // The chunk being written when the power went may be torn: its digest no longer matches.
        if torn
            && d.machine.stage() == UpdateStage::Fetching
            && let (Some((_, have)), Some(k)) = (d.staging.as_mut(), d.last_chunk)
        {
            have[k as usize] = false;
        }
        // What was not persisted is gone.
        d.machine = Machine::new(d.persisted.clone());
        self.q.after(off, Ev::PowerOn { dev });
    }

    pub(in crate::sim) fn device_power_on(&mut self, dev: u32) {
        let now = self.now_ms();
        let skew = self.scenario.fleet.clock_skew_secs as i64 * 1000;
        let boot_id = self.rng.next_u64();
        let new_skew = self.rng.range(0, 2 * skew as u64) as i64 - skew;
        let d = self.dev(dev);
        d.powered = true;
        d.boot_id = boot_id;
        // A device without a real-time clock comes back with another idea of the time.
        d.skew_ms = new_skew;
        d.served_until_ms = now;
        d.watch = Traffic::default();
        d.window = Traffic::default();
        // The driver re-checks the staging file against the chunk digests of the persisted job.
        let valid_chunks = match (d.machine.state.job.as_ref(), d.staging.as_ref()) {
            (Some(job), Some((b, have))) if *b == job.bundle() => have.clone(),
            _ => vec![],
        };
        self.step(dev, Input::Restarted { valid_chunks });
        self.schedule_reconnect(dev, 0);
    }
}
