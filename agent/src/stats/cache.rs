//! The inference result cache: identical requests to the same model version get the stored answer.
//! Least recently used entries go first when the cache is over its entry count or byte budget, and an
//! entry older than the TTL is never served.

use lru::LruCache;
use outpost_protocol::Digest;
use outpost_protocol::digest::Hasher;
use std::fmt;
use std::time::{Duration, Instant};

/// The model version (its digest, so a re-release under the same name never shares entries) and the
/// SHA-256 of the exact input bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub model: Digest,
    pub input: [u8; 32],
}

impl CacheKey {
    /// Hashes the pieces in order, each prefixed with its length as a little-endian u64, so that moving
    /// bytes from one tensor to the next changes the key. Callers pass everything the answer depends on:
    /// each input tensor's data and, when it can vary, its shape and dtype as a piece of its own.
    pub fn new(model: Digest, input_bytes: &[&[u8]]) -> Self {
        let mut hasher = Hasher::default();
        for piece in input_bytes {
            hasher.update(&(piece.len() as u64).to_le_bytes());
            hasher.update(piece);
        }
        CacheKey { model, input: hasher.finish().0 }
    }
}

/// Counters since creation (or the last `clear`), plus the current size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    /// Every `get` that returned nothing, including expired entries and gets on a disabled cache.
    pub misses: u64,
    /// Entries pushed out to stay within the entry or byte budget.
    pub evictions: u64,
    /// Entries found past their TTL (by `get` or `purge_expired`).
    pub expired: u64,
    pub entries: u64,
    pub bytes: u64,
}

struct Entry<V> {
    value: V,
    weight: usize,
    inserted: Instant,
}

/// An LRU cache with a TTL, bounded by entry count and by total weight in bytes. `max_entries = 0`
/// disables it.
pub struct ResultCache<V: Clone> {
    // Unbounded: the count and byte budgets are enforced together in `insert`, with eviction counted.
    entries: LruCache<CacheKey, Entry<V>>,
    max_entries: usize,
    max_bytes: usize,
    ttl: Duration,
    bytes: usize,
    stats: CacheStats,
}

// By hand, so that cached values need not be `Debug` and a debug print never dumps tensors.
impl<V: Clone> fmt::Debug for ResultCache<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResultCache")
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("ttl", &self.ttl)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<V: Clone> ResultCache<V> {
    pub fn new(max_entries: usize, max_bytes: usize, ttl: Duration) -> Self {
        ResultCache {
            entries: LruCache::unbounded(),
            max_entries,
            max_bytes,
            ttl,
            bytes: 0,
            stats: CacheStats::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.max_entries > 0
    }

    /// The stored value when it is younger than the TTL (and marks it most recently used). An expired
    /// entry is removed and counts as a miss.
    pub fn get(&mut self, key: &CacheKey, now: Instant) -> Option<V> {
        let ttl = self.ttl;
        let fresh = match self.entries.get(key) {
            None => None,
            Some(entry) if is_fresh(entry, ttl, now) => Some(entry.value.clone()),
            Some(_) => {
                self.remove(key);
                self.stats.expired += 1;
                None
            }
        };
        match fresh {
            Some(_) => self.stats.hits += 1,
            None => self.stats.misses += 1,
        }
        fresh
    }

    /// Stores `value`, replacing any entry under `key`, then evicts least recently used entries until
    /// both budgets hold. A value heavier than the whole byte budget is not stored: it would evict
    /// everything else and still not fit.
    pub fn insert(&mut self, key: CacheKey, value: V, weight: usize, now: Instant) {
        if !self.is_enabled() || weight > self.max_bytes {
            return;
        }
        self.remove(&key);
        self.entries.push(key, Entry { value, weight, inserted: now });
        self.bytes += weight;
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some((_, evicted)) = self.entries.pop_lru() else { break };
            self.bytes -= evicted.weight;
            self.stats.evictions += 1;
        }
    }

    /// Drops every expired entry, so memory is not held by answers that can no longer be served.
    /// Returns how many went.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let stale: Vec<CacheKey> =
            self.entries.iter().filter(|(_, entry)| !is_fresh(entry, self.ttl, now)).map(|(key, _)| *key).collect();
        for key in &stale {
            self.remove(key);
        }
        self.stats.expired += stale.len() as u64;
        stale.len()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats { entries: self.entries.len() as u64, bytes: self.bytes as u64, ..self.stats }
    }

    /// Empties the cache and zeroes the counters (for example when the active model changes).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.stats = CacheStats::default();
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(old) = self.entries.pop(key) {
            self.bytes -= old.weight;
        }
    }
}

fn is_fresh<V>(entry: &Entry<V>, ttl: Duration, now: Instant) -> bool {
    now.saturating_duration_since(entry.inserted) < ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn key(model: u8, input: &[u8]) -> CacheKey {
        CacheKey::new(Digest([model; 32]), &[input])
    }

    #[test]
    fn a_hit_returns_the_same_value() {
        let now = Instant::now();
        let mut cache = ResultCache::new(10, 1_000, TTL);
        cache.insert(key(1, b"a"), vec![0.5f32, 0.5], 8, now);
        assert_eq!(cache.get(&key(1, b"a"), now), Some(vec![0.5, 0.5]));
        assert_eq!(cache.get(&key(1, b"b"), now), None);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries, stats.bytes), (1, 1, 1, 8));
    }

    #[test]
    fn expired_entries_are_misses() {
        let now = Instant::now();
        let mut cache = ResultCache::new(10, 1_000, TTL);
        cache.insert(key(1, b"a"), 1, 8, now);
        assert_eq!(cache.get(&key(1, b"a"), now + TTL - Duration::from_millis(1)), Some(1));
        assert_eq!(cache.get(&key(1, b"a"), now + TTL), None);
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.expired, stats.entries, stats.bytes), (1, 1, 1, 0, 0));
    }

    #[test]
    fn the_least_recently_used_entry_is_evicted_by_count() {
        let now = Instant::now();
        let mut cache = ResultCache::new(2, 1_000, TTL);
        cache.insert(key(1, b"a"), 'a', 1, now);
        cache.insert(key(1, b"b"), 'b', 1, now);
        assert_eq!(cache.get(&key(1, b"a"), now), Some('a'));
        cache.insert(key(1, b"c"), 'c', 1, now);
        assert_eq!(cache.get(&key(1, b"b"), now), None);
        assert_eq!(cache.get(&key(1, b"a"), now), Some('a'));
        assert_eq!(cache.get(&key(1, b"c"), now), Some('c'));
        assert_eq!(cache.stats().evictions, 1);
    }

    #[test]
    fn entries_are_evicted_until_the_byte_budget_holds() {
        let now = Instant::now();
        let mut cache = ResultCache::new(100, 100, TTL);
        cache.insert(key(1, b"a"), 'a', 40, now);
        cache.insert(key(1, b"b"), 'b', 40, now);
        cache.insert(key(1, b"c"), 'c', 70, now);
        let stats = cache.stats();
        assert_eq!((stats.evictions, stats.entries, stats.bytes), (2, 1, 70));
        assert_eq!(cache.get(&key(1, b"c"), now), Some('c'));
        // Heavier than the whole budget: not stored, and nothing else is pushed out for it.
        cache.insert(key(1, b"d"), 'd', 101, now);
        assert_eq!(cache.get(&key(1, b"d"), now), None);
        assert_eq!(cache.stats().entries, 1);
    }

    #[test]
    fn replacing_an_entry_updates_its_weight_without_an_eviction() {
        let now = Instant::now();
        let mut cache = ResultCache::new(10, 100, TTL);
        cache.insert(key(1, b"a"), 1, 60, now);
        cache.insert(key(1, b"a"), 2, 30, now);
        assert_eq!(cache.get(&key(1, b"a"), now), Some(2));
        let stats = cache.stats();
        assert_eq!((stats.evictions, stats.entries, stats.bytes), (0, 1, 30));
    }

    #[test]
    fn a_cache_with_zero_entries_is_disabled() {
        let now = Instant::now();
        let mut cache = ResultCache::new(0, 1_000, TTL);
        assert!(!cache.is_enabled());
        cache.insert(key(1, b"a"), 1, 8, now);
        assert_eq!(cache.get(&key(1, b"a"), now), None);
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.entries, stats.bytes), (1, 0, 0));
    }

    #[test]
    fn a_different_model_digest_is_a_miss() {
        let now = Instant::now();
        let mut cache = ResultCache::new(10, 1_000, TTL);
        cache.insert(key(1, b"a"), 1, 8, now);
        assert_eq!(cache.get(&key(2, b"a"), now), None);
    }

    #[test]
    fn keys_depend_on_how_bytes_split_into_tensors() {
        let model = Digest([1; 32]);
        let key = |pieces: &[&str]| CacheKey::new(model, &pieces.iter().map(|p| p.as_bytes()).collect::<Vec<_>>());
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_ne!(key(&["a"]), key(&["a", ""]));
        assert_eq!(key(&["a", "bc"]), key(&["a", "bc"]));
    }

    #[test]
    fn purging_drops_only_expired_entries() {
        let now = Instant::now();
        let mut cache = ResultCache::new(10, 1_000, TTL);
        cache.insert(key(1, b"old"), 1, 10, now);
        cache.insert(key(1, b"new"), 2, 20, now + TTL / 2);
        assert_eq!(cache.purge_expired(now + TTL), 1);
        let stats = cache.stats();
        assert_eq!((stats.expired, stats.entries, stats.bytes), (1, 1, 20));
        cache.clear();
        assert_eq!(cache.stats(), CacheStats::default());
    }
}
