//! Whether a model fits the payload devices take, said before `bundle create` spends minutes compressing
//! it. zstd at level 19 takes about 2.5 s per MiB, so a 550 MiB model costs over 20 minutes only to be
//! refused by every device (`Limits::max_payload`, checked in `verify`); its size is known at once, and
//! its compressed size is estimated in seconds (`compress::estimate_full`).

use outpost_protocol::{Limits, RejectReason, Rejection};

/// How far above `max_payload` the estimate must be to refuse without compressing. On AlexNet's 233 MiB of
/// seeded weights both of its parts came within 0.1 % of what level 19 makes (float weights compress
/// through their exponent bytes, which every level codes alike); a model within this margin of the limit
/// is compressed and checked exactly ([`after_compressing`]).
pub const ESTIMATE_MARGIN: f64 = 0.05;

const WHAT_TO_DO: &str = "make the model smaller (weights quantized to 8 bits or FP16, or pruned), or release \
                          it as a delta (--base) against a model devices already run";

/// Refuses a model devices could not take, before compressing it: one over `max_model`, and (full
/// payloads only: a delta's size depends on its base) one whose estimated compressed size is over
/// `max_payload` by more than [`ESTIMATE_MARGIN`]. `estimate` is only called for models larger than
/// `max_payload`, which compression rarely brings under it.
pub fn before_compressing(
    model_len: u64,
    delta: bool,
    estimate: impl FnOnce() -> u64,
    limits: &Limits,
) -> Result<(), Rejection> {
    if model_len > limits.max_model {
        return Err(Rejection::new(
            RejectReason::OverLimits,
            format!(
                "the model is {} as NNEF; devices load models of at most {}: {WHAT_TO_DO}",
                size(model_len),
                size(limits.max_model)
            ),
        ));
    }
    if delta || model_len <= limits.max_payload {
        return Ok(());
    }
    let estimated = estimate();
    if estimated as f64 > limits.max_payload as f64 * (1.0 + ESTIMATE_MARGIN) {
        return Err(Rejection::new(
            RejectReason::OverLimits,
            format!(
                "the model is {} as NNEF and compresses to about {} (estimated from samples at zstd level 19, \
                 without spending the minutes compressing it all); devices fetch payloads of at most {}: \
                 {WHAT_TO_DO}",
                size(model_len),
                size(estimated),
                size(limits.max_payload)
            ),
        ));
    }
    Ok(())
}

/// The exact check, once compressed: nothing devices would refuse is signed.
pub fn after_compressing(payload_len: u64, delta: bool, limits: &Limits) -> Result<(), Rejection> {
    if payload_len <= limits.max_payload {
        return Ok(());
    }
    let what = if delta { "delta payload" } else { "payload" };
    Err(Rejection::new(
        RejectReason::OverLimits,
        format!(
            "the compressed {what} is {}; devices fetch payloads of at most {}: {WHAT_TO_DO}",
            size(payload_len),
            size(limits.max_payload)
        ),
    ))
}

/// "575012345 bytes (548.4 MiB)": exact for scripts and comparisons, readable for people.
fn size(bytes: u64) -> String {
    match bytes {
        0..0x10_0000 => format!("{bytes} bytes ({:.1} KiB)", bytes as f64 / 1024.0),
        _ => format!("{bytes} bytes ({:.1} MiB)", bytes as f64 / f64::from(1 << 20)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn limits() -> Limits {
        Limits::default()
    }

    #[test]
    fn a_model_far_over_the_payload_limit_is_refused_naming_its_size_the_estimate_and_the_limit() {
        let e = before_compressing(575 * MIB, false, || 560 * MIB, &limits()).unwrap_err();
        assert_eq!(e.reason, RejectReason::OverLimits);
        assert!(e.detail.contains("the model is 602931200 bytes (575.0 MiB) as NNEF"), "{e}");
        assert!(e.detail.contains("about 587202560 bytes (560.0 MiB)"), "{e}");
        assert!(e.detail.contains("at most 536870912 bytes (512.0 MiB)"), "{e}");
        assert!(e.detail.contains("quantized") && e.detail.contains("--base"), "{e}");
    }

    #[test]
    fn a_model_within_the_estimates_margin_is_left_to_the_exact_check() {
        // 520 MiB estimated against 512 MiB: level 19 may still bring it under; compress and see.
        assert!(before_compressing(548 * MIB, false, || 520 * MIB, &limits()).is_ok());
        assert!(after_compressing(512 * MIB, false, &limits()).is_ok());
        let e = after_compressing(512 * MIB + 1, false, &limits()).unwrap_err();
        assert!(e.detail.contains("the compressed payload is 536870913 bytes"), "{e}");
    }

    #[test]
    fn models_under_the_payload_limit_and_deltas_are_not_estimated() {
        let never = || -> u64 { panic!("no estimate needed") };
        assert!(before_compressing(512 * MIB, false, never, &limits()).is_ok());
        assert!(before_compressing(900 * MIB, true, never, &limits()).is_ok());
        let e = after_compressing(600 * MIB, true, &limits()).unwrap_err();
        assert!(e.detail.contains("the compressed delta payload is"), "{e}");
    }

    #[test]
    fn a_model_over_the_model_limit_is_refused_whatever_it_compresses_to() {
        let never = || -> u64 { panic!("no estimate needed") };
        let e = before_compressing(1025 * MIB, true, never, &limits()).unwrap_err();
        assert!(e.detail.contains("devices load models of at most 1073741824 bytes (1024.0 MiB)"), "{e}");
    }
}
