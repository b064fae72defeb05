//! The traffic split as a value that cannot be wrong: the canary's share in basis points, clamped to
//! 0..=10000, and stable always the rest, so every split sums to exactly 100 %. A shadow split
//! ([`Weights::shadow`]) keeps every live request on stable and mirrors a share of them to the
//! canary, whose answers nobody receives.

use mlcanary_filter::hash::BUCKETS;

/// A stable/canary split. Basis points (1 bp = 0.01 %) are the controller's and the filter's unit;
/// the VirtualService gets whole percents from [`Weights::percents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Weights {
    canary_bp: u32,
    /// Share of stable's requests also mirrored to the canary (only while the canary gets none).
    mirror_bp: u32,
}

impl Weights {
    /// 100 % in basis points.
    pub const TOTAL_BP: u32 = BUCKETS;
    /// Everything on stable.
    pub const ALL_STABLE: Weights = Weights {
        canary_bp: 0,
        mirror_bp: 0,
    };
    /// Everything on the canary (promoted).
    pub const ALL_CANARY: Weights = Weights {
        canary_bp: BUCKETS,
        mirror_bp: 0,
    };

    /// The split with `canary_bp` on the canary; values above 100 % are clamped to 100 %.
    pub fn with_canary_bp(canary_bp: u32) -> Self {
        Weights {
            canary_bp: canary_bp.min(Self::TOTAL_BP),
            mirror_bp: 0,
        }
    }

    /// The shadow split: every live request on stable, `mirror_bp` of them (clamped to 100 %)
    /// also sent to the canary.
    pub fn shadow(mirror_bp: u32) -> Self {
        Weights {
            canary_bp: 0,
            mirror_bp: mirror_bp.min(Self::TOTAL_BP),
        }
    }

    pub fn canary_bp(self) -> u32 {
        self.canary_bp
    }

    /// The mirrored share in basis points; 0 outside the shadow phase.
    pub fn mirror_bp(self) -> u32 {
        self.mirror_bp
    }

    pub fn stable_bp(self) -> u32 {
        Self::TOTAL_BP - self.canary_bp
    }

    /// Whole percents `(stable, canary)` summing to 100, for route weights. The canary's share is
    /// rounded half up; stable takes the rest.
    pub fn percents(self) -> (u32, u32) {
        let canary = (self.canary_bp + 50) / 100;
        (100 - canary, canary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_sums_to_total() {
        for bp in [0, 1, 49, 50, 500, 9_950, 9_999, 10_000, 20_000] {
            let w = Weights::with_canary_bp(bp);
            assert_eq!(w.canary_bp() + w.stable_bp(), 10_000);
            let (s, c) = w.percents();
            assert_eq!(s + c, 100, "{bp}");
        }
        assert_eq!(Weights::with_canary_bp(20_000).canary_bp(), 10_000);
        assert_eq!(Weights::with_canary_bp(500).percents(), (95, 5));
        assert_eq!(Weights::with_canary_bp(49).percents(), (100, 0));
        assert_eq!(Weights::with_canary_bp(50).percents(), (99, 1));
    }

    #[test]
    fn shadow_keeps_every_live_request_on_stable() {
        let w = Weights::shadow(2_500);
        assert_eq!(
            (w.canary_bp(), w.stable_bp(), w.mirror_bp()),
            (0, 10_000, 2_500)
        );
        assert_eq!(w.percents(), (100, 0));
        assert_eq!(Weights::shadow(20_000).mirror_bp(), 10_000);
        assert_ne!(w, Weights::ALL_STABLE);
        assert_eq!(Weights::with_canary_bp(500).mirror_bp(), 0);
    }
}
