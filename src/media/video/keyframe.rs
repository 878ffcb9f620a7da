//! Keyframe requests to one encoder, coalesced: a pure type that takes `now`.
//!
//! Receivers ask for keyframes (PLI, RFC 4585 §6.3.1; FIR, RFC 5104 §4.3.1) when they start,
//! fall behind or lose packets, and recordings and egress need one every few seconds. Each
//! keyframe goes to every receiver of the encoder (~30 packets each at 1280x720: 100 joins once
//! made a storm that held the transport up for 50-100 ms at a time), so requests are coalesced:
//! - a request while one is outstanding (forced, not yet seen) is served by it, unless that one
//!   is older than [`KEYFRAME_RETRY`] (then it is forced again: a request can be lost, e.g. made
//!   while the encoder was still starting);
//! - a request within [`KEYFRAME_MIN_INTERVAL`] of the last forced keyframe is deferred: the room
//!   clock forces it once the interval has passed ([`KeyframeGate::poll`]);
//! - branches attached to the encoded stream get one at least every `every` (their shortest
//!   interval, also through [`KeyframeGate::poll`]).

use std::time::{Duration, Instant};

/// A forced keyframe not seen within this long is forced again on the next request.
pub const KEYFRAME_RETRY: Duration = Duration::from_millis(500);
/// Least time between two forced keyframes of one encoder.
pub const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(200);

/// What to do about a keyframe request or a clock tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Force a keyframe now (the gate has recorded it).
    Force,
    /// A request waits for [`KEYFRAME_MIN_INTERVAL`]; the clock should poll again.
    Defer,
    /// The outstanding keyframe serves this request.
    Coalesce,
    /// Nothing to do.
    Idle,
}

/// The keyframe state of one encoder branch.
#[derive(Debug, Default)]
pub struct KeyframeGate {
    /// A keyframe was forced and has not come out yet.
    outstanding: bool,
    /// When the last one was forced.
    last_forced: Option<Instant>,
    /// A request is waiting for the minimum interval.
    deferred: bool,
}

impl KeyframeGate {
    /// A receiver asks for a keyframe at `now`.
    pub fn request(&mut self, now: Instant) -> Decision {
        let age = self.age(now);
        if self.outstanding && age < KEYFRAME_RETRY {
            return Decision::Coalesce;
        }
        if !self.outstanding && age < KEYFRAME_MIN_INTERVAL {
            self.deferred = true;
            return Decision::Defer;
        }
        self.force(now);
        Decision::Force
    }

    /// The room clock's tick at `now`: forces a deferred request whose interval has passed, or a
    /// keyframe for attached branches when the last is older than `every` (their shortest
    /// interval, `None` without such branches).
    pub fn poll(&mut self, now: Instant, every: Option<Duration>) -> Decision {
        let age = self.age(now);
        if self.deferred && age < KEYFRAME_MIN_INTERVAL {
            return Decision::Defer;
        }
        if self.deferred || every.is_some_and(|e| age >= e) {
            self.force(now);
            return Decision::Force;
        }
        Decision::Idle
    }

    /// The encoder's output started a keyframe.
    pub fn keyframe_seen(&mut self) {
        self.outstanding = false;
    }

    fn force(&mut self, now: Instant) {
        self.deferred = false;
        self.outstanding = true;
        self.last_forced = Some(now);
    }

    fn age(&self, now: Instant) -> Duration {
        self.last_forced.map_or(Duration::MAX, |t| now.saturating_duration_since(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn requests_while_one_is_outstanding_share_it_until_the_retry_time() {
        let t0 = Instant::now();
        let mut g = KeyframeGate::default();
        assert_eq!(g.request(t0), Decision::Force);
        assert_eq!(g.request(t0 + 10 * MS), Decision::Coalesce);
        assert_eq!(g.request(t0 + 499 * MS), Decision::Coalesce);
        // Never seen: asked again after KEYFRAME_RETRY.
        assert_eq!(g.request(t0 + 500 * MS), Decision::Force);
    }

    #[test]
    fn a_request_soon_after_a_keyframe_is_deferred_then_forced_by_the_clock() {
        let t0 = Instant::now();
        let mut g = KeyframeGate::default();
        assert_eq!(g.request(t0), Decision::Force);
        g.keyframe_seen();
        assert_eq!(g.request(t0 + 50 * MS), Decision::Defer);
        assert_eq!(g.request(t0 + 60 * MS), Decision::Defer, "still within the interval");
        assert_eq!(g.poll(t0 + 150 * MS, None), Decision::Defer);
        assert_eq!(g.poll(t0 + 200 * MS, None), Decision::Force, "served once the interval passed");
        assert_eq!(g.poll(t0 + 201 * MS, None), Decision::Idle, "and only once");
        g.keyframe_seen();
        assert_eq!(g.request(t0 + 500 * MS), Decision::Force, "a request after the interval goes at once");
    }

    #[test]
    fn attached_branches_get_a_keyframe_at_their_interval() {
        let t0 = Instant::now();
        let mut g = KeyframeGate::default();
        let every = Some(Duration::from_secs(2));
        assert_eq!(g.poll(t0, every), Decision::Force, "never forced: due at once");
        g.keyframe_seen();
        assert_eq!(g.poll(t0 + 1999 * MS, every), Decision::Idle);
        assert_eq!(g.poll(t0 + 2000 * MS, every), Decision::Force);
        assert_eq!(g.poll(t0 + 3000 * MS, None), Decision::Idle, "detached: nothing more");
    }
}
