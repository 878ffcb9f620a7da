//! The latency of a publisher's video jitter buffer, adapting to the path: on a clean path it
//! stays at `--jitter-ms` (50 ms by default: little delay); when packets are given up as lost (the
//! jitter buffer's `num-lost` grows: a NACKed packet did not come back in time, RFC 4585 §6.2.1)
//! it doubles, up to [`MAX_MS`], so retransmissions have a round trip to arrive; after
//! [`CALM`] without a loss it steps back down by [`STEP_DOWN_MS`]. Browsers' jitter buffers behave
//! alike (their target follows loss and the retransmission round trip). Pure: it takes `now` and
//! the jitter buffer's counter, and says the latency to set.

use std::time::{Duration, Instant};

/// The longest latency it goes to, ms: enough for a NACK and its retransmission over a path with
/// 100 ms round trip and jitter.
pub const MAX_MS: u32 = 250;
/// How often it reads the counter.
pub const PERIOD: Duration = Duration::from_secs(1);
/// Time without a loss before it steps down.
pub const CALM: Duration = Duration::from_secs(30);
/// One step down, ms.
pub const STEP_DOWN_MS: u32 = 25;

/// One publisher's jitter buffer target.
#[derive(Debug, Clone)]
pub struct JitterTarget {
    base_ms: u32,
    current_ms: u32,
    lost: u64,
    last_check: Option<Instant>,
    calm_since: Option<Instant>,
}

impl JitterTarget {
    /// Starts at `base_ms` (`--jitter-ms`), which it never goes below.
    pub fn new(base_ms: u32) -> Self {
        Self { base_ms, current_ms: base_ms, lost: 0, last_check: None, calm_since: None }
    }

    /// The latency now, ms.
    pub fn current_ms(&self) -> u32 {
        self.current_ms
    }

    /// Whether it is time to read the counter again at `now` (every [`PERIOD`]).
    pub fn due(&self, now: Instant) -> bool {
        self.last_check.is_none_or(|t| now.saturating_duration_since(t) >= PERIOD)
    }

    /// Takes the jitter buffer's packets-lost count (cumulative) at `now`; returns the new latency
    /// when it changes.
    pub fn update(&mut self, now: Instant, lost_total: u64) -> Option<u32> {
        self.last_check = Some(now);
        let calm_since = *self.calm_since.get_or_insert(now);
        let before = self.current_ms;
        if lost_total > self.lost {
            self.current_ms = (self.current_ms * 2).clamp(self.base_ms, MAX_MS.max(self.base_ms));
            self.calm_since = Some(now);
        } else if now.saturating_duration_since(calm_since) >= CALM && self.current_ms > self.base_ms {
            self.current_ms = self.current_ms.saturating_sub(STEP_DOWN_MS).max(self.base_ms);
            self.calm_since = Some(now);
        }
        self.lost = lost_total;
        (self.current_ms != before).then_some(self.current_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_path_keeps_the_configured_latency() {
        let t0 = Instant::now();
        let mut t = JitterTarget::new(50);
        for s in 0..120 {
            assert_eq!(t.update(t0 + Duration::from_secs(s), 0), None);
        }
        assert_eq!(t.current_ms(), 50);
    }

    #[test]
    fn losses_double_it_up_to_the_cap_and_calm_brings_it_back_down() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = JitterTarget::new(50);
        assert_eq!(t.update(at(0), 0), None);
        assert_eq!(t.update(at(1), 3), Some(100));
        assert_eq!(t.update(at(2), 3), None, "no new loss, not calm long enough");
        assert_eq!(t.update(at(3), 9), Some(200));
        assert_eq!(t.update(at(4), 12), Some(MAX_MS));
        assert_eq!(t.update(at(5), 20), None, "at the cap");
        // 30 s without a loss: one step down, then another 30 s later.
        assert_eq!(t.update(at(34), 20), None);
        assert_eq!(t.update(at(35), 20), Some(MAX_MS - STEP_DOWN_MS));
        assert_eq!(t.update(at(64), 20), None);
        assert_eq!(t.update(at(65), 20), Some(MAX_MS - 2 * STEP_DOWN_MS));
    }

    #[test]
    fn a_base_above_the_cap_is_kept() {
        let t0 = Instant::now();
        let mut t = JitterTarget::new(400);
        assert_eq!(t.update(t0, 0), None);
        assert_eq!(t.update(t0 + Duration::from_secs(1), 5), None);
        assert_eq!(t.current_ms(), 400);
    }

    #[test]
    fn it_reads_once_a_period() {
        let t0 = Instant::now();
        let mut t = JitterTarget::new(50);
        assert!(t.due(t0));
        t.update(t0, 0);
        assert!(!t.due(t0 + Duration::from_millis(999)));
        assert!(t.due(t0 + PERIOD));
    }
}
