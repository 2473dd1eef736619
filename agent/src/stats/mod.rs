//! Pure accounting of what the agent serves: latency histograms, input/output drift against the
//! release's reference profile, shadow-model agreement, and the inference result cache.
//!
//! Nothing here does I/O, reads a clock or spawns tasks: callers pass `Instant`s and `Duration`s in and
//! take snapshots out, so the same code runs behind the HTTP API, in unit tests and in the fleet
//! simulator with a virtual clock. Snapshots map onto `outpost_protocol::telemetry` wire types.

pub mod cache;
pub mod drift;
pub mod histogram;
pub mod shadow;

/// The class count of a classifier's output row: `[C]` for a batch-dimension model, `[1, C]` for a
/// fixed-batch one (mobilenet-style exports). `None` for anything else (regressors, maps). Only float
/// outputs are classifiers' scores; callers check the type.
pub fn classes(row_shape: &[usize]) -> Option<usize> {
    match *row_shape {
        [c] | [1, c] if c >= 2 => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn classifier_rows_are_recognised_with_or_without_a_fixed_batch_of_one() {
        assert_eq!(super::classes(&[10]), Some(10));
        assert_eq!(super::classes(&[1, 1000]), Some(1000));
        assert_eq!(super::classes(&[1]), None);
        assert_eq!(super::classes(&[3, 10]), None);
        assert_eq!(super::classes(&[8, 8, 3]), None);
    }
}
