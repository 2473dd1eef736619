//! Chunk serving. A chunk request is unsigned input (DESIGN.md, "Trust boundaries"): it may ask for
//! chunks of the bundle the device's current desired state names and nothing else (any other bundle,
//! pushed or not, is refused and audited), at a bounded rate per device and in all, from a bounded cache
//! of bundle bytes. Before, any device could pull any pushed bundle, 16 MiB per 45-byte request, and every
//! bundle read stayed in memory for good.

use super::fleet::{Fleet, now};
use super::ratelimit::Buckets;
use outpost_protocol::messages::{BundleRef, Chunk, Message};
use outpost_protocol::topics::{self, Down};
use outpost_protocol::{DeviceId, Digest, codec};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Chunk size for bundles: under the agents' 1 MiB packet limit with room for the envelope.
pub const CHUNK_SIZE: u32 = 256 << 10;
/// Bundle bytes kept in memory at most. A bundle over a quarter of it is never cached: its chunks are read
/// from the file as they are asked for.
pub const CACHE_BYTES: usize = 256 << 20;
/// Chunks one request may ask for.
pub const MAX_CHUNKS_PER_REQUEST: u32 = 64;
/// Per device: a burst of 256 chunks (64 MiB), then 32 chunks (8 MiB) a second. A device re-asks for what
/// it did not get, so the limit slows a greedy device down without breaking an honest one.
const DEVICE_BURST: u32 = 256;
const DEVICE_PER_SEC: f64 = 32.0;
/// For all devices together: 1,024 chunks (256 MiB) a second.
const ALL_BURST: u32 = 4_096;
const ALL_PER_SEC: f64 = 1_024.0;

#[derive(Debug)]
pub struct Chunks {
    cache: Mutex<Cache>,
    per_device: Mutex<Buckets<DeviceId>>,
    all: Mutex<Buckets<()>>,
}

impl Default for Chunks {
    fn default() -> Self {
        Chunks {
            cache: Mutex::new(Cache::new(CACHE_BYTES)),
            per_device: Mutex::new(Buckets::new(DEVICE_PER_SEC, DEVICE_BURST, 100_000)),
            all: Mutex::new(Buckets::new(ALL_PER_SEC, ALL_BURST, 1)),
        }
    }
}

/// Whole bundles by digest, least recently used out first, at most `max_bytes` in all.
#[derive(Debug)]
pub struct Cache {
    max_bytes: usize,
    used: usize,
    clock: u64,
    entries: HashMap<Digest, (Arc<Vec<u8>>, u64)>,
}

impl Cache {
    pub fn new(max_bytes: usize) -> Cache {
        Cache { max_bytes, used: 0, clock: 0, entries: HashMap::new() }
    }

    pub fn get(&mut self, digest: &Digest) -> Option<Arc<Vec<u8>>> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(digest).map(|(bytes, used)| {
            *used = clock;
            bytes.clone()
        })
    }

    /// Keeps `bytes` if it is at most a quarter of the cache, evicting the least recently used first.
    pub fn insert(&mut self, digest: Digest, bytes: Arc<Vec<u8>>) {
        if bytes.len() > self.max_bytes / 4 || self.entries.contains_key(&digest) {
            return;
        }
        while self.used + bytes.len() > self.max_bytes {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(d, _)| *d) else { break };
            if let Some((b, _)) = self.entries.remove(&oldest) {
                self.used -= b.len();
            }
        }
        self.clock += 1;
        self.used += bytes.len();
        self.entries.insert(digest, (bytes, self.clock));
    }

    pub fn bytes(&self) -> usize {
        self.used
    }
}

/// `len` bytes of the file from `start`.
fn read_range(path: &Path, start: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(len);
    f.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

impl Fleet {
    /// The bytes of a pushed bundle (cached when small enough).
    pub fn bundle_bytes(&self, digest: &Digest) -> Option<Arc<Vec<u8>>> {
        if let Some(b) = self.chunks.cache.lock().expect("chunk cache").get(digest) {
            return Some(b);
        }
        let bytes = Arc::new(std::fs::read(self.store.bundle_path(digest)).ok()?);
        self.chunks.cache.lock().expect("chunk cache").insert(*digest, bytes.clone());
        Some(bytes)
    }

    pub fn bundle_ref(&self, digest: &Digest) -> Option<BundleRef> {
        let bytes = self.bundle_bytes(digest)?;
        Some(BundleRef {
            digest: *digest,
            size: bytes.len() as u64,
            chunk_size: CHUNK_SIZE,
            chunks: bytes.chunks(CHUNK_SIZE as usize).map(Digest::of).collect(),
        })
    }

    /// Answers `up/fetch`: chunks `first..first + count` of `digest`, if the device's desired state names
    /// that bundle, as many as its rate allows (it asks again for the rest).
    pub(super) fn serve_chunks(&self, device: &DeviceId, digest: Digest, first: u32, count: u32) {
        let Some(bundle) = self.device(device).and_then(|d| d.assigned(&digest).cloned()) else {
            // Stops a device pulling bundles it was never given (a model it has no right to, or bytes
            // just to load the controller): only its desired state's bundle is served.
            tracing::warn!(%device, bundle = %digest.short(), "refusing chunks of a bundle the device was not assigned");
            let t = now();
            if self.identity.audit_due(device, "fetch", t) {
                self.audit(serde_json::json!({
                    "at": t, "what": "chunk request refused: bundle not assigned", "device": device,
                    "bundle": digest.to_hex(),
                }));
            }
            return;
        };
        let total = bundle.chunks.len() as u32;
        let want = count.min(MAX_CHUNKS_PER_REQUEST).min(total.saturating_sub(first));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let granted = self.chunks.per_device.lock().expect("rate").take(device, want, now_ms);
        let granted = self.chunks.all.lock().expect("rate").take(&(), granted, now_ms);
        if granted < want {
            tracing::debug!(%device, want, granted, "chunk requests over the rate limit");
        }
        let cached = self.chunks.cache.lock().expect("chunk cache").get(&digest);
        let cached = cached.or_else(|| {
            // Small bundles come into the cache on first use; larger ones are read chunk by chunk.
            (bundle.size as usize <= CACHE_BYTES / 4).then(|| self.bundle_bytes(&digest)).flatten()
        });
        let path = self.store.bundle_path(&digest);
        let chunk = u64::from(bundle.chunk_size);
        for index in first..first + granted {
            let start = u64::from(index) * chunk;
            let len = chunk.min(bundle.size.saturating_sub(start)) as usize;
            let data = match &cached {
                Some(bytes) => bytes.get(start as usize..start as usize + len).map(<[u8]>::to_vec),
                None => read_range(&path, start, len).ok().filter(|d| d.len() == len),
            };
            let Some(data) = data else {
                tracing::error!(%device, bundle = %digest.short(), index, "cannot read a chunk of a stored bundle");
                return;
            };
            let msg = codec::encode(&Message::Chunk(Chunk { bundle: digest, index, total, data }));
            self.send(topics::down(device, &Down::Chunk), msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_under_its_size_and_keeps_what_was_used_last() {
        let mut c = Cache::new(1_000);
        let b = |n| Arc::new(vec![0u8; n]);
        let d = |i: u8| Digest([i; 32]);
        c.insert(d(1), b(200));
        c.insert(d(2), b(200));
        c.insert(d(3), b(200));
        assert!(c.get(&d(1)).is_some()); // 1 used last: 2 goes first
        c.insert(d(4), b(250));
        c.insert(d(5), b(250));
        assert!(c.bytes() <= 1_000, "{}", c.bytes());
        assert!(c.get(&d(2)).is_none(), "the least recently used went");
        assert!(c.get(&d(1)).is_some() && c.get(&d(5)).is_some());
        c.insert(d(6), b(251));
        assert!(c.get(&d(6)).is_none(), "over a quarter of the cache is never kept");
        for i in 10..200 {
            c.insert(d(i), b(100));
        }
        assert!(c.bytes() <= 1_000);
    }
}
