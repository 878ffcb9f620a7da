//! Output tiers: the room's composite encoded at up to three sizes, and the choice of a tier for
//! one receiver from its bandwidth estimate (GCC over TWCC, measured by the transport).
//!
//! A tier's encoder runs only while someone receives it; every receiver starts on [`Tier::Full`]
//! and moves down when its estimate cannot carry its tier, up again when it has carried the next
//! one comfortably for a while. Moves happen at a keyframe of the new tier (the sender keeps
//! forwarding the old tier until then), so the picture never breaks.

use serde::Serialize;

/// Output format of a room's composite (its full tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutputFormat {
    /// Width, pixels (even).
    pub width: u32,
    /// Height, pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate of the full tier's encode, kbit/s.
    pub kbps: u32,
}

/// One size of the room's composite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The room's output size (default 1280x720) at the room's bitrate (default 1500 kbit/s).
    Full,
    /// Half width and height (640x360) at 2/5 of the bitrate (600 kbit/s).
    Half,
    /// Quarter width and height (320x180) at 3/20 of the bitrate (225 kbit/s).
    Quarter,
}

impl Tier {
    /// Every tier, largest first.
    pub const ALL: [Tier; 3] = [Tier::Full, Tier::Half, Tier::Quarter];

    /// Width and height in pixels for the room's output `format` (even numbers, as I420 needs).
    pub fn size(self, format: OutputFormat) -> (u32, u32) {
        let div = match self {
            Tier::Full => 1,
            Tier::Half => 2,
            Tier::Quarter => 4,
        };
        ((format.width / div).max(2) & !1, (format.height / div).max(2) & !1)
    }

    /// Target bitrate of the tier's encoder, kbit/s.
    pub fn kbps(self, format: OutputFormat) -> u32 {
        match self {
            Tier::Full => format.kbps,
            Tier::Half => format.kbps * 2 / 5,
            Tier::Quarter => format.kbps * 3 / 20,
        }
        .max(50)
    }

    /// The next smaller tier.
    pub fn smaller(self) -> Option<Tier> {
        match self {
            Tier::Full => Some(Tier::Half),
            Tier::Half => Some(Tier::Quarter),
            Tier::Quarter => None,
        }
    }

    /// The next larger tier.
    pub fn larger(self) -> Option<Tier> {
        match self {
            Tier::Full => None,
            Tier::Half => Some(Tier::Full),
            Tier::Quarter => Some(Tier::Half),
        }
    }
}

/// Headroom a tier needs over its video bitrate (audio, RTP/SRTP overhead, retransmissions).
const HEADROOM: f64 = 1.25;
/// Estimates in a row below the current tier's need before moving down (one per [`TierSelector::update`]
/// call, every 500 ms: 1 s).
const DOWN_AFTER: u32 = 2;
/// Updates after a move during which no other move happens (every 500 ms: 3 s): GCC undershoots
/// right after congestion and needs a moment to climb back to what the new tier leaves free.
const COOLDOWN: u32 = 6;
/// Smoothed loss (as the receiver reports it, RFC 3550 §6.4.1) above which the current tier is
/// hurting the receiver: GCC's own loss-based controller starts to back off above 10% too
/// (draft-ietf-rmcat-gcc-02 §6); a few per cent of random loss is what NACK and FEC are for, and a
/// smaller tier would not lower it.
const HURTING_LOSS: f64 = 0.10;
/// Estimates in a row that would carry the next tier up (with twice the headroom) before moving up
/// (every 500 ms: 5 s).
const UP_AFTER: u32 = 10;

/// One reading of a receiver's bandwidth estimate (GCC, see `transport::bwe`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BandwidthSample {
    /// The estimate, bits/s (0 = none yet).
    pub bps: f64,
    /// Its delay-based half, bits/s.
    pub delay_bps: f64,
    /// Smoothed fraction of packets lost, 0..=1.
    pub loss: f64,
}

/// Picks one receiver's tier from its bandwidth estimates, with hysteresis: down after
/// [`DOWN_AFTER`] estimates below what the current tier needs while the receiver is actually
/// hurting (loss above [`HURTING_LOSS`] or the delay-based estimate below the need), one tier at a
/// time; up one tier after [`UP_AFTER`] estimates that carry the next tier
/// with double headroom; nothing for [`COOLDOWN`] updates after a move.
#[derive(Debug, Clone)]
pub struct TierSelector {
    format: OutputFormat,
    current: Tier,
    below: u32,
    above: u32,
    cooldown: u32,
}

impl TierSelector {
    /// A selector for a receiver starting on [`Tier::Full`] of a room with output `format`.
    pub fn new(format: OutputFormat) -> Self {
        Self { format, current: Tier::Full, below: 0, above: 0, cooldown: 0 }
    }

    /// The tier chosen now.
    pub fn current(&self) -> Tier {
        self.current
    }

    fn need_bps(&self, t: Tier) -> f64 {
        t.kbps(self.format) as f64 * 1000.0 * HEADROOM
    }

    /// Takes one estimate (an estimate of 0 or less means none yet, which changes nothing) and
    /// returns the tier to be on now.
    pub fn update(&mut self, sample: BandwidthSample) -> Tier {
        let estimate_bps = sample.bps;
        if estimate_bps <= 0.0 {
            return self.current;
        }
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return self.current;
        }
        let need = self.need_bps(self.current);
        let hurting = sample.loss > HURTING_LOSS || sample.delay_bps < need;
        if estimate_bps < need && hurting && self.current.smaller().is_some() {
            self.above = 0;
            self.below += 1;
            if self.below >= DOWN_AFTER {
                // One step at a time: right after congestion GCC undershoots, and the step down
                // usually ends the congestion; a link that is smaller still shows it again after
                // the cooldown.
                self.below = 0;
                self.current = self.current.smaller().unwrap_or(self.current);
                self.cooldown = COOLDOWN;
            }
            return self.current;
        }
        self.below = 0;
        match self.current.larger() {
            Some(up) if estimate_bps >= 2.0 * self.need_bps(up) => {
                self.above += 1;
                if self.above >= UP_AFTER {
                    self.above = 0;
                    self.current = up;
                    self.cooldown = COOLDOWN;
                }
            }
            _ => self.above = 0,
        }
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: OutputFormat = OutputFormat { width: 1280, height: 720, fps: 30, kbps: 1500 };

    /// A congested reading: loss and delay agree with the estimate.
    fn bad(bps: f64) -> BandwidthSample {
        BandwidthSample { bps, delay_bps: bps, loss: 0.2 }
    }

    /// A clean reading.
    fn good(bps: f64) -> BandwidthSample {
        BandwidthSample { bps, delay_bps: bps.max(10e6), loss: 0.0 }
    }

    fn cool(s: &mut TierSelector) {
        for _ in 0..COOLDOWN {
            s.update(good(1e3));
        }
    }

    #[test]
    fn sizes_and_bitrates() {
        assert_eq!(Tier::Full.size(F), (1280, 720));
        assert_eq!(Tier::Half.size(F), (640, 360));
        assert_eq!(Tier::Quarter.size(F), (320, 180));
        assert_eq!((Tier::Full.kbps(F), Tier::Half.kbps(F), Tier::Quarter.kbps(F)), (1500, 600, 225));
        let odd = OutputFormat { width: 854, height: 480, fps: 30, kbps: 1000 };
        assert_eq!(Tier::Quarter.size(odd), (212, 120));
    }

    #[test]
    fn moves_down_after_a_second_of_low_estimates_to_the_tier_that_fits() {
        let mut s = TierSelector::new(F);
        assert_eq!(s.update(bad(0.0)), Tier::Full, "no estimate yet");
        assert_eq!(s.update(good(5e6)), Tier::Full);
        assert_eq!(s.update(bad(900e3)), Tier::Full, "one low estimate is not enough");
        assert_eq!(s.update(bad(900e3)), Tier::Half);
        let mut s = TierSelector::new(F);
        s.update(bad(200e3));
        assert_eq!(s.update(bad(200e3)), Tier::Half, "one tier at a time");
        cool(&mut s);
        s.update(bad(200e3));
        assert_eq!(s.update(bad(200e3)), Tier::Quarter, "then the next, if the link is still too small");
        cool(&mut s);
        s.update(bad(100e3));
        assert_eq!(s.update(bad(100e3)), Tier::Quarter, "nothing smaller");
    }

    #[test]
    fn the_undershoot_after_a_move_does_not_move_again() {
        let mut s = TierSelector::new(F);
        s.update(bad(900e3));
        assert_eq!(s.update(bad(900e3)), Tier::Half);
        // GCC overshoots downward while the old tier's queue drains...
        for _ in 0..COOLDOWN {
            assert_eq!(s.update(bad(400e3)), Tier::Half, "cooling down");
        }
        // ...and once the new tier fits, a low estimate without loss or delay is no reason to move.
        for _ in 0..10 {
            assert_eq!(s.update(BandwidthSample { bps: 500e3, delay_bps: 900e3, loss: 0.01 }), Tier::Half);
        }
        // Real trouble still moves it.
        s.update(bad(300e3));
        assert_eq!(s.update(bad(300e3)), Tier::Quarter);
    }

    #[test]
    fn moves_up_one_tier_after_sustained_headroom() {
        let mut s = TierSelector::new(F);
        for _ in 0..2 {
            s.update(bad(200e3));
            s.update(bad(200e3));
            cool(&mut s);
        }
        assert_eq!(s.current(), Tier::Quarter);
        // 1.4 Mbit/s carries Half (750k) but not twice its need (1.5M): stay.
        for _ in 0..30 {
            assert_eq!(s.update(good(1.4e6)), Tier::Quarter);
        }
        for _ in 0..UP_AFTER - 1 {
            assert_eq!(s.update(good(2e6)), Tier::Quarter);
        }
        assert_eq!(s.update(good(2e6)), Tier::Half);
        cool(&mut s);
        // A dip resets the count.
        for _ in 0..UP_AFTER - 1 {
            s.update(good(5e6));
        }
        s.update(good(1.0e6));
        assert_eq!(s.update(good(5e6)), Tier::Half);
    }
}
