//! Token buckets, pure: a key (a device id, or one key for everyone) may spend `burst` tokens at once
//! and earns `per_sec` back. Time comes in as milliseconds, so tests walk it by hand. The map of keys is
//! bounded: a spray of fresh ids cannot grow it without end (idle keys, whose buckets are full again, are
//! forgotten first; when every key is busy, new keys get nothing until some go idle).

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug)]
pub struct Buckets<K> {
    per_sec: f64,
    burst: f64,
    max_keys: usize,
    map: HashMap<K, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl<K: Eq + Hash + Clone> Buckets<K> {
    pub fn new(per_sec: f64, burst: u32, max_keys: usize) -> Self {
        Buckets { per_sec, burst: f64::from(burst), max_keys, map: HashMap::new() }
    }

    fn refill(&self, b: Bucket, now_ms: u64) -> f64 {
        let secs = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
        (b.tokens + secs * self.per_sec).min(self.burst)
    }

    /// Takes up to `want` tokens for `key`; returns how many it got (0 when the bucket is empty).
    pub fn take(&mut self, key: &K, want: u32, now_ms: u64) -> u32 {
        if !self.map.contains_key(key) && self.map.len() >= self.max_keys {
            let (per_sec, burst) = (self.per_sec, self.burst);
            self.map.retain(|_, b| {
                let secs = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
                b.tokens + secs * per_sec < burst
            });
            if self.map.len() >= self.max_keys {
                return 0;
            }
        }
        let current = self.map.get(key).copied().unwrap_or(Bucket { tokens: self.burst, at_ms: now_ms });
        let tokens = self.refill(current, now_ms);
        let got = tokens.floor().min(f64::from(want)).max(0.0);
        self.map.insert(key.clone(), Bucket { tokens: tokens - got, at_ms: now_ms });
        got as u32
    }

    pub fn keys(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_spends_its_burst_then_earns_at_its_rate() {
        let mut b = Buckets::new(2.0, 5, 10);
        assert_eq!(b.take(&"a", 3, 0), 3);
        assert_eq!(b.take(&"a", 3, 0), 2, "only what is left");
        assert_eq!(b.take(&"a", 1, 0), 0);
        assert_eq!(b.take(&"a", 10, 1_000), 2, "two a second");
        assert_eq!(b.take(&"b", 10, 1_000), 5, "keys count apart");
        assert_eq!(b.take(&"a", 10, 60_000), 5, "never more than the burst");
    }

    #[test]
    fn a_spray_of_keys_does_not_grow_the_map_and_idle_keys_make_room() {
        let mut b = Buckets::new(1.0, 2, 100);
        for i in 0..1_000 {
            b.take(&i, 1, 0);
        }
        assert_eq!(b.keys(), 100, "bounded");
        assert_eq!(b.take(&5_000, 1, 0), 0, "every key busy: a new one gets nothing");
        assert_eq!(b.take(&5_000, 1, 2_000), 1, "once the old keys are idle again, they are forgotten");
        assert!(b.keys() <= 100);
    }
}
