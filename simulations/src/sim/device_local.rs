//! A simulated device's life outside its update shell: serving local traffic on the active model (and
//! the candidate when shadowing), telemetry windows, power loss and power on.

use super::*;
use crate::sim::catalog::target;
use crate::sim::telemetry::Window;

impl World {
    /// Changes model `m`'s slots; keeps the per-release counts and the exposure record. The watch figures
    /// restart with a new active model.
    pub(in crate::sim) fn set_slots(&mut self, dev: u32, m: u8, s: Slots) {
        let before = self.devices[dev as usize].models[m as usize].slots.active;
        if before != s.active {
            if let Some(b) = before {
                self.on_release[b as usize] -= 1;
            }
            if let Some(a) = s.active {
                self.on_release[a as usize] += 1;
            }
            let dm = &mut self.devices[dev as usize].models[m as usize];
            dm.watch = Traffic::default();
            // What was served so far this window was the old release's (`serve` ran just before).
            let served = std::mem::take(&mut dm.window);
            if before.is_some() && (served.requests > 0 || served.compared > 0) {
                dm.departed.push((dm.slots, served));
            }
            if s.active == Some(target(m)) {
                dm.just_activated = true;
                if !dm.ever_on_target {
                    dm.ever_on_target = true;
                    self.ever_on_target[m as usize] += 1;
                }
            }
        }
        self.dev(dev).models[m as usize].slots = s;
    }

    /// Local traffic since the last accounting, on every active model (and its candidate when shadowing).
    pub(super) fn serve(&mut self, dev: u32) {
        let now = self.now_ms();
        let rate = self.scenario.fleet.requests_per_sec;
        let d = &self.devices[dev as usize];
        let elapsed = now.saturating_sub(d.served_until_ms);
        if !d.powered || elapsed == 0 {
            self.dev(dev).served_until_ms = now;
            return;
        }
        for m in 0..d.models.len() {
            let release = &self.models[m].release;
            let (failing_rate, agreement) = (release.failing_error_rate, release.shadow_agreement);
            let dm = &self.devices[dev as usize].models[m];
            let Some(active) = dm.slots.active else { continue };
            let err = if active == target(m as u8) && dm.failing {
                failing_rate
            } else {
                self.catalog.get(active).error_rate
            };
            let shadow = dm.slots.shadow_percent.filter(|_| dm.slots.candidate.is_some());
            let requests = self.rng.round(rate * elapsed as f64 / 1000.0);
            let errors = self.rng.round(requests as f64 * err);
            let (compared, agreed) = match shadow {
                Some(p) => {
                    let c = self.rng.round(requests as f64 * f64::from(p) / 100.0);
                    (c, self.rng.round(c as f64 * agreement))
                }
                None => (0, 0),
            };
            let dm = &mut self.devices[dev as usize].models[m];
            for t in [&mut dm.window, &mut dm.watch] {
                t.requests += requests;
                t.errors += errors;
            }
            dm.window.compared += compared;
            dm.window.agreed += agreed.min(compared);
        }
        self.dev(dev).served_until_ms = now;
    }

    /// The telemetry window: one inference record per active model, and one per release that stopped
    /// serving during the window (its own traffic, as the agent reports a departed model), then ship.
    pub(in crate::sim) fn device_window(&mut self, dev: u32) {
        let window = self.scenario.fleet.telemetry_window_secs;
        self.q.after(window * 1000, Ev::Window { dev });
        if !self.devices[dev as usize].powered {
            return;
        }
        self.serve(dev);
        for m in 0..self.devices[dev as usize].models.len() {
            // One draw per model and window, whatever it served: the run's random stream does not depend on
            // how many releases served in a window.
            let jitter = self.rng.unit();
            let dm = &mut self.devices[dev as usize].models[m];
            let mut served = std::mem::take(&mut dm.departed);
            served.push((dm.slots, std::mem::take(&mut dm.window)));
            for (slots, w) in served {
                let Some(active) = slots.active else { continue };
                if w.requests > 0 || w.compared > 0 {
                    let p95 = f64::from(self.catalog.get(active).p95_us) * (0.9 + 0.2 * jitter);
                    let window = Window {
                        model: active,
                        candidate: slots.candidate,
                        window_secs: window as u32,
                        requests: w.requests as u32,
                        errors: w.errors as u32,
                        p95_us: p95 as u32,
                        compared: w.compared as u32,
                        agreed: w.agreed as u32,
                    };
                    self.append(dev, Body::Window(window));
                }
            }
        }
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
        if torn && d.shell.machines().any(|(_, m)| m.stage() == UpdateStage::Fetching) {
            d.disk.tear_last_chunk();
        }
        if self.scenario.faults.floor_lost_on_power_loss {
            let d = self.dev(dev);
            d.disk.slots.models.values_mut().for_each(|m| m.floor = 0);
        }
        let d = self.dev(dev);
        // What was not persisted is gone: the shell comes back from `update.json`.
        d.shell = Shell::new(d.disk.persisted.clone(), None);
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
        for dm in &mut d.models {
            dm.watch = Traffic::default();
            dm.window = Traffic::default();
            dm.departed.clear();
        }
        // Every persisted job resumes, its staging file re-checked against the chunk digests.
        self.with_shell(dev, |s, p| s.restarted(p));
        self.schedule_reconnect(dev, 0);
    }
}
