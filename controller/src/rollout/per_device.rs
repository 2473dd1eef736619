//! One device weighs as one device: how a gate turns each device's own numbers into the wave's figure.
//!
//! Device reports are unsigned (DESIGN.md, "Trust boundaries"). Summing them let one device decide for
//! everyone: `compared = agreed = 10^12` passed a shadow gate that every honest device failed, and
//! `requests = 10^12, errors = 0` buried the wave's real errors. Each window is clamped on arrival to
//! what it can hold ([`super::view`]); then:
//!
//! - **Counted gates** (error rate: errors ÷ requests; shadow agreement: agreed ÷ compared) pool the
//!   devices' counts with each device's count capped at the median device's ([`ratio`]). A device claiming
//!   10^12 requests weighs as much as a typical device and no more: whatever it claims, it moves the
//!   wave's figure by at most its share of the wave (a quarter of a wave of four, a twentieth of twenty).
//!   A real failure on one device keeps that same share, so one faulty device of ten with 30 % errors
//!   still raises a wave's error rate by three points, as it did when counts were summed.
//! - **Measured gates** (p95 latency, PSI) take the median device ([`median`]); of an even count the worse
//!   of the two middle devices. One device moves it by one rank.
//! - Every one of them judges only once [`MIN_DEVICES`] devices have a figure (or every device of a
//!   smaller wave that can report), so one device never judges a wave of quiet devices on its own.
//!
//! So one device cannot flip a gate beyond its own share. What its share can do, it may: a device that
//! says every one of its requests failed counts like a device whose requests all failed. A gate's margin
//! against one device is its threshold's distance from the honest devices' figure against that share.

/// The fewest devices with a figure a gate judges from, or the whole wave if it is smaller: the median of
/// three or more is never a single device's claim, whichever way that device lies.
pub const MIN_DEVICES: u32 = 3;

/// Which side of a figure is the bad one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worse {
    /// Latencies, PSI.
    High,
    /// Agreement.
    Low,
}

/// The median of `values`; with an even count, the worse of the two middle ones. `None` when empty. NaNs
/// must be filtered out before (they have no rank).
pub fn median(values: &mut [f64], worse: Worse) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let at = match worse {
        Worse::High => n / 2,
        Worse::Low => (n - 1) / 2,
    };
    Some(values[at])
}

/// The wave's figure for a counted gate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceRatio {
    /// Σ weightᵢ · ratioᵢ ÷ Σ weightᵢ, each device's weight its count capped at `cap`.
    pub value: f64,
    /// Devices with a non-zero count.
    pub devices: u32,
    /// Σ weightᵢ: the samples the gate's minimum is checked against.
    pub counted: u64,
    /// The median device's count (the lower middle one of an even count), the most any device weighs.
    pub cap: u64,
}

/// `(part, whole)` per device (errors and requests, agreed and compared); a part above its whole counts
/// as the whole. Devices with `whole == 0` have no ratio and are left out.
pub fn ratio(counts: &[(u64, u64)]) -> Option<DeviceRatio> {
    let marked: Vec<(u64, u64, bool)> = counts.iter().map(|&(part, whole)| (part, whole, false)).collect();
    ratio_with_stopped(&marked)
}

/// [`ratio`] where a device marked `true` stopped counting early and weighs the median device's count
/// whatever its own: a device whose own watch rolled the release back (the error rate's summed counts)
/// would have gone on failing at its rate, and without this its errors would thin out the longer the
/// healthy devices bake. It still weighs one device: the most any device can weigh.
pub fn ratio_with_stopped(counts: &[(u64, u64, bool)]) -> Option<DeviceRatio> {
    let with: Vec<(u64, u64, bool)> =
        counts.iter().filter(|&&(_, whole, _)| whole > 0).map(|&(p, w, stopped)| (p.min(w), w, stopped)).collect();
    if with.is_empty() {
        return None;
    }
    let mut wholes: Vec<u64> = with.iter().map(|&(_, whole, _)| whole).collect();
    wholes.sort_unstable();
    // The lower middle: of two devices, the quieter one's count is the most either weighs.
    let cap = wholes[(wholes.len() - 1) / 2];
    let (mut weighted, mut counted) = (0.0, 0u64);
    for &(part, whole, stopped) in &with {
        let weight = if stopped { cap } else { whole.min(cap) };
        weighted += weight as f64 * (part as f64 / whole as f64);
        counted = counted.saturating_add(weight);
    }
    Some(DeviceRatio { value: weighted / counted as f64, devices: with.len() as u32, counted, cap })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_takes_the_worse_middle_device_of_an_even_count() {
        assert_eq!(median(&mut [], Worse::High), None);
        assert_eq!(median(&mut [0.3], Worse::High), Some(0.3));
        assert_eq!(median(&mut [0.3], Worse::Low), Some(0.3));
        assert_eq!(median(&mut [0.1, 0.9], Worse::High), Some(0.9));
        assert_eq!(median(&mut [0.1, 0.9], Worse::Low), Some(0.1));
        assert_eq!(median(&mut [0.5, 0.1, 0.9], Worse::High), Some(0.5));
        assert_eq!(median(&mut [0.4, 0.1, 0.9, 0.2], Worse::Low), Some(0.2));
        assert_eq!(median(&mut [0.4, 0.1, 0.9, 0.2], Worse::High), Some(0.4));
    }

    #[test]
    fn one_device_moves_a_pooled_ratio_by_its_share_at_most() {
        // Three honest devices at 1 % errors; a fourth claims anything at all.
        let honest = [(10, 1_000), (10, 1_000), (10, 1_000)];
        for forged in [(0, u64::MAX), (u64::MAX, u64::MAX), (0, 1), (1, 1), (5, 0)] {
            let mut all = honest.to_vec();
            all.push(forged);
            let r = ratio(&all).unwrap();
            assert!((r.value - 0.01).abs() <= 0.25, "{forged:?} moves 1 % by a quarter at most: {r:?}");
            assert!(r.counted <= 4_000, "{forged:?} counts at most the median device's 1,000: {r:?}");
        }
        // Summed, the first claim alone decided: 30 errors in 2^64 requests.
        let r = ratio(&[(10, 1_000), (10, 1_000), (10, 1_000), (0, u64::MAX)]).unwrap();
        assert_eq!((r.value, r.counted, r.cap), (0.0075, 4_000, 1_000));
    }

    #[test]
    fn a_faulty_device_keeps_its_share_like_a_sum_would() {
        // One device of ten fails 30 % of its requests: three points on the wave, as a sum says.
        let mut wave = vec![(0, 600); 9];
        wave.push((180, 600));
        let r = ratio(&wave).unwrap();
        assert!((r.value - 0.03).abs() < 1e-9, "{r:?}");
        // A canary of one is judged by its device alone.
        let r = ratio(&[(300, 1_000)]).unwrap();
        assert_eq!((r.value, r.devices, r.counted), (0.3, 1, 1_000));
    }

    #[test]
    fn devices_without_samples_have_no_ratio_and_parts_never_exceed_wholes() {
        assert_eq!(ratio(&[(0, 0), (5, 0)]), None);
        let r = ratio(&[(0, 0), (50, 10)]).unwrap();
        assert_eq!((r.value, r.devices, r.counted), (1.0, 1, 10));
    }

    #[test]
    fn a_forged_count_does_not_fill_the_evidence_of_quiet_devices() {
        let r = ratio(&[(0, 5), (0, 5), (0, 1_000_000_000_000)]).unwrap();
        assert_eq!((r.counted, r.cap), (15, 5));
    }
}
