//! Wave membership. Every device gets a rank from a hash of (rollout id, device id); wave `k` holds the
//! selected devices whose rank is among the lowest `size(k)`. So waves nest, the canary is the same at
//! every evaluation whatever order the registry lists devices in, a device offline during its wave still
//! belongs to it, and a device that matches the selector later falls into a wave by its rank.
//!
//! Sizes come from the current selection, so a growing fleet can move the boundary; the planner makes
//! membership sticky once a device was told to install, so nobody is ever taken out of a wave.

use super::spec::{Wave, WaveSize};
use outpost_protocol::DeviceId;
use sha2::{Digest as _, Sha256};

/// A uniform 64-bit rank. Changing this function reshuffles the waves of running rollouts: the test
/// `ranks_are_pinned` guards it.
pub fn rank(rollout: &str, device: &DeviceId) -> u64 {
    let mut h = Sha256::new();
    // Length-prefixed so ("ab", "c") and ("a", "bc") hash differently.
    h.update((rollout.len() as u32).to_be_bytes());
    h.update(rollout.as_bytes());
    h.update(device.as_str().as_bytes());
    let out = h.finalize();
    u64::from_be_bytes(out[..8].try_into().expect("SHA-256 is 32 bytes"))
}

/// The rank cut-offs of a rollout's waves for one selection of devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavePlan {
    /// Exclusive upper rank bound of each wave (cumulative, non-decreasing). `u128` so "everyone" fits.
    cutoffs: Vec<u128>,
    /// Cumulative number of selected devices each wave aims at.
    targets: Vec<usize>,
}

impl WavePlan {
    /// `ranks` are those of every selected device, in any order; they are sorted in place.
    pub fn new(waves: &[Wave], ranks: &mut [u64]) -> Self {
        ranks.sort_unstable();
        let n = ranks.len();
        let (mut cutoffs, mut targets) = (Vec::with_capacity(waves.len()), Vec::with_capacity(waves.len()));
        let mut target = 0;
        for w in waves {
            let own = match w.size {
                WaveSize::Percent(p) => p.of(n),
                WaveSize::Count(c) => (c as usize).min(n),
            };
            // A count after a percentage (or the reverse) may be smaller on this fleet: never shrink.
            target = own.max(target).min(n);
            cutoffs.push(if target == 0 { 0 } else { u128::from(ranks[target - 1]) + 1 });
            targets.push(target);
        }
        WavePlan { cutoffs, targets }
    }

    /// The first wave whose cut-off is above `rank`, if any.
    pub fn wave_of(&self, rank: u64) -> Option<usize> {
        self.cutoffs.iter().position(|&c| u128::from(rank) < c)
    }

    /// Cumulative device counts the waves aim at on this selection.
    pub fn targets(&self) -> &[usize] {
        &self.targets
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::Percent;
    use super::*;

    fn id(i: usize) -> DeviceId {
        DeviceId::new(format!("dev-{i:05}")).unwrap()
    }

    fn pct(p: u32) -> Wave {
        Wave { size: WaveSize::Percent(Percent(p * 100)), bake_secs: 60 }
    }

    fn count(n: u32) -> Wave {
        Wave { size: WaveSize::Count(n), bake_secs: 60 }
    }

    /// Members of each wave (cumulative), for `n` devices.
    fn members(waves: &[Wave], n: usize) -> Vec<Vec<DeviceId>> {
        let ids: Vec<DeviceId> = (0..n).map(id).collect();
        let mut ranks: Vec<u64> = ids.iter().map(|d| rank("r1", d)).collect();
        let plan = WavePlan::new(waves, &mut ranks);
        (0..waves.len())
            .map(|k| ids.iter().filter(|d| plan.wave_of(rank("r1", d)).is_some_and(|w| w <= k)).cloned().collect())
            .collect()
    }

    #[test]
    fn wave_sizes_round_up_and_never_shrink() {
        let cases: &[(usize, Vec<Wave>, &[usize])] = &[
            (50, vec![pct(1)], &[1]),
            (100, vec![pct(1), pct(10), pct(50), pct(100)], &[1, 10, 50, 100]),
            (3, vec![pct(1), pct(50), pct(100)], &[1, 2, 3]),
            (7, vec![pct(10), pct(20)], &[1, 2]),
            (0, vec![pct(10), pct(100)], &[0, 0]),
            (10, vec![count(1), count(3), pct(100)], &[1, 3, 10]),
            (2, vec![count(5)], &[2]),
            (1000, vec![count(50), pct(10)], &[50, 100]),
            (100, vec![count(50), pct(10), pct(60)], &[50, 50, 60]),
        ];
        for (n, waves, want) in cases {
            let got: Vec<usize> = members(waves, *n).iter().map(Vec::len).collect();
            assert_eq!(&got, want, "{n} devices, waves {waves:?}");
        }
    }

    #[test]
    fn waves_nest_and_count_waves_take_the_lowest_ranks() {
        let waves = [count(1), pct(5), pct(30), pct(100)];
        let m = members(&waves, 400);
        for k in 1..waves.len() {
            assert!(m[k - 1].iter().all(|d| m[k].contains(d)), "wave {k} does not contain wave {}", k - 1);
        }
        let lowest = (0..400).map(id).min_by_key(|d| rank("r1", d)).unwrap();
        assert_eq!(m[0], vec![lowest]);
    }

    #[test]
    fn membership_is_the_same_in_any_order() {
        let waves = [pct(10), pct(50)];
        let ids: Vec<DeviceId> = (0..300).map(id).collect();
        let wave_of = |order: &[DeviceId]| {
            let mut ranks: Vec<u64> = order.iter().map(|d| rank("r1", d)).collect();
            let plan = WavePlan::new(&waves, &mut ranks);
            let mut v: Vec<(DeviceId, Option<usize>)> =
                order.iter().map(|d| (d.clone(), plan.wave_of(rank("r1", d)))).collect();
            v.sort();
            v
        };
        let mut reversed = ids.clone();
        reversed.reverse();
        let mut interleaved: Vec<DeviceId> =
            ids.iter().step_by(2).chain(ids.iter().skip(1).step_by(2)).cloned().collect();
        assert_eq!(wave_of(&ids), wave_of(&reversed));
        interleaved.rotate_left(17);
        assert_eq!(wave_of(&ids), wave_of(&interleaved));
    }

    #[test]
    fn ranks_are_pinned_and_differ_between_rollouts() {
        // Pinned: a new hash would move devices between the waves of rollouts already running.
        assert_eq!(rank("r1", &id(1)), 0x093c_2d92_f3e6_0509);
        assert_ne!(rank("r1", &id(1)), rank("r2", &id(1)));
        assert_ne!(rank("ab", &DeviceId::new("c").unwrap()), rank("a", &DeviceId::new("bc").unwrap()));
    }
}
