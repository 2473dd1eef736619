//! zstd payloads: full, or delta against a base model (`with_ref_prefix`, not a dictionary: DESIGN.md
//! measured 5.8 % of full size for a 5 % weight change with it). Decompression only goes through a
//! capped reader, so a payload can never expand beyond what the signed manifest declares.

use std::io::{Read, Write};

/// zstd level for bundles: bundles are made once and fetched by many devices over costly links.
pub const LEVEL: i32 = 19;

/// Decoders refuse windows above this (2^31 = 2 GiB) even if a frame asks for more. On 32-bit targets
/// zstd's own ceiling is 2^30 (`ZSTD_WINDOWLOG_MAX_32`) and it refuses a larger setting outright, which
/// failed every install on armv7 (found under qemu by cross/qemu-smoke.sh).
const WINDOW_LOG_MAX: u32 = if cfg!(target_pointer_width = "32") { 30 } else { 31 };

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("decompressed output exceeds the declared {declared} bytes")]
    TooLarge { declared: u64 },
    #[error("decompressed output is {actual} bytes; the manifest declares {declared}")]
    TooSmall { actual: u64, declared: u64 },
    #[error("corrupt zstd data: {0}")]
    Corrupt(String),
}

pub fn compress_full(model: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(model, LEVEL).expect("in-memory zstd compression")
}

/// Compresses `model` with `base` as reference prefix. The window must cover base + model so matches
/// can reach back into the whole base; long-distance matching finds the unchanged weight blocks.
pub fn compress_delta(base: &[u8], model: &[u8]) -> Vec<u8> {
    let window = window_log_for(base.len() + model.len());
    let mut out = Vec::new();
    let mut enc = zstd::stream::Encoder::with_ref_prefix(&mut out, LEVEL, base).expect("zstd encoder");
    enc.window_log(window).expect("window log");
    enc.long_distance_matching(true).expect("ldm");
    enc.include_contentsize(true).expect("content size");
    enc.set_pledged_src_size(Some(model.len() as u64)).expect("pledged size");
    enc.write_all(model).expect("in-memory zstd compression");
    enc.finish().expect("zstd finish");
    out
}

fn window_log_for(len: usize) -> u32 {
    let bits = usize::BITS - len.max(1).leading_zeros();
    bits.clamp(10, WINDOW_LOG_MAX)
}

/// Decompresses at most `declared` bytes; anything more is refused (bomb), anything less too
/// (truncation). `base` must be given for a delta payload.
pub fn decompress_capped(payload: &[u8], base: Option<&[u8]>, declared: u64) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |e: std::io::Error| DecompressError::Corrupt(e.to_string());
    let mut dec = match base {
        Some(base) => zstd::stream::Decoder::with_ref_prefix(payload, base).map_err(corrupt)?,
        None => zstd::stream::Decoder::with_buffer(payload).map_err(corrupt)?,
    };
    // Deltas of large models need windows beyond zstd's default 2^27 decoder limit.
    dec.window_log_max(WINDOW_LOG_MAX).map_err(corrupt)?;
    // Read one byte past the declared size: getting it proves the stream is larger than declared.
    let mut out = Vec::with_capacity(declared.min(64 << 20) as usize);
    dec.take(declared.saturating_add(1)).read_to_end(&mut out).map_err(corrupt)?;
    if out.len() as u64 > declared {
        return Err(DecompressError::TooLarge { declared });
    }
    if (out.len() as u64) < declared {
        return Err(DecompressError::TooSmall { actual: out.len() as u64, declared });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn a_delta_of_a_small_change_is_small_and_restores_the_model() {
        let base = pseudo_random(200_000, 1);
        let mut model = base.clone();
        model[1000..3000].copy_from_slice(&pseudo_random(2000, 2));
        let delta = compress_delta(&base, &model);
        let full = compress_full(&model);
        assert!(delta.len() * 10 < full.len(), "delta {} vs full {}", delta.len(), full.len());
        assert_eq!(decompress_capped(&delta, Some(&base), model.len() as u64).unwrap(), model);
    }

    #[test]
    fn output_beyond_the_declared_size_is_a_bomb() {
        let payload = compress_full(&vec![0u8; 1 << 20]);
        assert_eq!(decompress_capped(&payload, None, 1000), Err(DecompressError::TooLarge { declared: 1000 }));
    }

    #[test]
    fn a_delta_with_the_wrong_base_does_not_restore_the_model() {
        let base = pseudo_random(50_000, 3);
        let model = [&base[..40_000], &pseudo_random(100, 4)[..]].concat();
        let delta = compress_delta(&base, &model);
        let wrong = pseudo_random(50_000, 5);
        let got = decompress_capped(&delta, Some(&wrong), model.len() as u64);
        assert!(got.map(|m| m != model).unwrap_or(true));
    }
}
