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

/// Pieces [`estimate_full`] compresses at [`LEVEL`]: 16 of 1 MiB, spread evenly over the model.
const ESTIMATE_PIECES: usize = 16;
const ESTIMATE_PIECE: usize = 1 << 20;

/// About how many bytes [`compress_full`] makes of `model`, in seconds where the real compression of a
/// model of hundreds of MB takes many minutes: the smaller of two estimates that each tend to come out a
/// little above the real size. (1) Evenly spread 1 MiB pieces compressed at [`LEVEL`], scaled to the
/// model: weights look alike along the file, and the pieces miss only matches between them. (2) The whole
/// model at a fast level with long-distance matching, which finds repeated blocks (shared weights) that
/// the pieces miss, and loses to [`LEVEL`] only its finer parsing. A model no larger than the pieces is
/// compressed whole: exact.
pub fn estimate_full(model: &[u8]) -> u64 {
    estimate_with(model, ESTIMATE_PIECES, ESTIMATE_PIECE)
}

/// [`estimate_full`] with `pieces` pieces of `piece` bytes (at least 2).
fn estimate_with(model: &[u8], pieces: usize, piece: usize) -> u64 {
    if model.len() <= pieces * piece {
        return compress_full(model).len() as u64;
    }
    let stride = (model.len() - piece) / (pieces - 1);
    let sampled: usize = (0..pieces).map(|i| compress_full(&model[i * stride..i * stride + piece]).len()).sum();
    let pieces = (sampled as f64 / (pieces * piece) as f64 * model.len() as f64) as u64;
    let mut fast = CountingWriter(0);
    let mut enc = zstd::stream::Encoder::new(&mut fast, 3).expect("zstd encoder");
    enc.window_log(window_log_for(model.len())).expect("window log");
    enc.long_distance_matching(true).expect("ldm");
    // Known size: zstd sizes its window to the model, not to the largest window the log allows.
    enc.set_pledged_src_size(Some(model.len() as u64)).expect("pledged size");
    enc.write_all(model).expect("zstd into a counter");
    enc.finish().expect("zstd finish");
    pieces.min(fast.0)
}

/// Counts what is written to it, keeping nothing.
struct CountingWriter(u64);

impl Write for CountingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

    /// Bytes laid out like FP32 weights of magnitude 0.03-0.06: random mantissas and signs, one exponent.
    fn weights(n: usize, seed: u32) -> Vec<u8> {
        let bits = pseudo_random(n, seed);
        bits.chunks(4).flat_map(|b| [b[0], b[1], b[2] & 0x7f, 0x3d | (b[3] & 0x80)]).collect()
    }

    // The estimate's tests sample 8 pieces of 64 KiB (1 MiB pieces of hundreds of MB in use): same code,
    // seconds of level 19 fewer.
    #[test]
    fn the_estimate_of_a_large_full_payload_is_close_to_the_real_size() {
        let model = weights(2 << 20, 6);
        let (estimate, real) = (estimate_with(&model, 8, 64 << 10), compress_full(&model).len() as u64);
        assert!(real < model.len() as u64 * 96 / 100, "{real} of {}: the data should compress", model.len());
        assert!(estimate.abs_diff(real) < real / 50, "estimate {estimate}, real {real}");
    }

    #[test]
    fn the_estimate_finds_repeated_weights_that_sampled_pieces_miss() {
        // Four copies of one 512 KiB block (tied weights): the full compression finds the copies.
        let model = weights(512 << 10, 7).repeat(4);
        let estimate = estimate_with(&model, 8, 64 << 10);
        assert!(estimate < model.len() as u64 / 3, "estimate {estimate} of {} bytes", model.len());
    }

    #[test]
    fn a_small_model_is_estimated_by_compressing_it() {
        let model = weights(256 << 10, 8);
        assert_eq!(estimate_with(&model, 8, 64 << 10), compress_full(&model).len() as u64);
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
