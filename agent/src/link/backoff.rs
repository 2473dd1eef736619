//! Reconnect backoff: capped exponential with full jitter. rumqttc retries immediately on its own
//! (DESIGN.md measured 35,000 attempts a second); a thousand devices reconnecting in lockstep after a
//! broker restart would be a storm, so every device waits a random share of a growing delay.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, seed: u64) -> Self {
        Backoff { min, max, attempt: 0, rng: seed | 1 }
    }

    /// The wait before the next attempt: uniform in [min, min(max, min · 2^attempt)].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.min.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = ceiling.saturating_sub(self.min).as_millis() as u64;
        self.min + Duration::from_millis(if span == 0 { 0 } else { self.rng % (span + 1) })
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_stay_jittered_and_reset_after_success() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(30));
        let mut b = Backoff::new(min, max, 42);
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d >= min && *d <= max));
        assert!(delays[12..].iter().any(|d| *d > Duration::from_secs(5)), "grows toward the cap: {delays:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
        // Two devices with different seeds do not retry in lockstep.
        let mut a = Backoff::new(min, max, 1);
        let mut c = Backoff::new(min, max, 2);
        let same = (0..10).filter(|_| a.next_delay() == c.next_delay()).count();
        assert!(same < 5);
    }
}
