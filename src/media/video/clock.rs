//! The room clock: one thread per room that paces the composite. Every 1/fps s it forces the
//! keyframes that are due (the encoders' keyframe gates), and when something in the picture changed (or a
//! keyframe must come out, or a second passed) it takes the composite from the compositor and
//! pushes it into the encoders' `appsrc`, stamped with the pipeline's running time. An unchanged
//! composite is not encoded: an idle room costs nothing to encode, and a join, a leave or a
//! broken publisher never stalls the picture (no frame waits for another input).

use std::sync::Weak;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;

/// Outputs sent after a change (or a keyframe request) even if nothing more changes: inputs arrive
/// unaligned with the room clock, so a tick may see no new frame while video still flows, and an
/// encoder fed an irregular rate makes bursty output (GCC reads the bursts as congestion).
pub const CHANGE_OUTPUTS: u32 = 3;
/// An unchanged composite is still sent this often (a receiver's decoder and statistics stay
/// alive; a lost frame gets replaced).
pub const UNCHANGED_REFRESH: Duration = Duration::from_millis(1000);

/// Whether a tick sends a composite: after a change for [`CHANGE_OUTPUTS`] ticks, when asked
/// (a forced keyframe is made from the encoder's next input), and at least every
/// [`UNCHANGED_REFRESH`]. Pure: the clock passes `now`.
#[derive(Debug, Default)]
pub struct OutputPacer {
    hold: u32,
    last_sent: Option<Instant>,
}

impl OutputPacer {
    /// One tick at `now`: `drawn` — something was drawn since the last tick; `asked` — an output
    /// was asked for. Returns whether to send the composite.
    pub fn tick(&mut self, now: Instant, drawn: bool, asked: bool) -> bool {
        if drawn {
            self.hold = CHANGE_OUTPUTS;
        }
        let changed = self.hold > 0;
        self.hold = self.hold.saturating_sub(1);
        let due =
            changed || asked || self.last_sent.is_none_or(|t| now.saturating_duration_since(t) >= UNCHANGED_REFRESH);
        if due {
            self.last_sent = Some(now);
        }
        due
    }
}

/// Outputs other parts of the room ask the clock for (shared with the encoders): a forced
/// keyframe is made from the encoder's next input, so one must go through.
#[derive(Debug, Default)]
pub struct OutputRequests(AtomicU32);

impl OutputRequests {
    /// Asks for the next [`CHANGE_OUTPUTS`] outputs whatever changed.
    pub fn ask(&self) {
        self.0.store(CHANGE_OUTPUTS, Ordering::Release);
    }

    /// Takes one asked-for output, if any.
    fn take(&self) -> bool {
        self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }
}

/// Starts the clock thread of the room video `video`, pushing into `src` every `period`. It ends
/// when the room video is dropped, stopped or parked (its clock generation is no longer
/// `generation`), or `src` refuses a buffer.
pub(super) fn spawn(video: Weak<super::Inner>, src: gst_app::AppSrc, period: Duration, generation: u64) {
    let _ = std::thread::Builder::new().name("room-clock".into()).spawn(move || {
        let mut next = Instant::now();
        let mut pacer = OutputPacer::default();
        loop {
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > period * 5 {
                next = now; // starved: do not burst to catch up
            }
            let Some(inner) = video.upgrade() else { break };
            if inner.stopped.load(Ordering::Relaxed) || inner.generation.load(Ordering::SeqCst) != generation {
                break;
            }
            let now = Instant::now();
            inner.encoders.force_due_keyframes(now);
            inner.encoders.check_fragments();
            let asked = inner.requests.take();
            let drawn = inner.compositor.take_dirty();
            if !pacer.tick(now, drawn, asked) {
                inner.stats.frames_unchanged.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let Some(mut buf) = inner.compositor.composite() else { break };
            {
                // A shared buffer (an element compositor's appsink may hold one) is copied
                // shallowly: its pixels are not.
                let b = buf.make_mut();
                b.set_pts(inner.pipeline.current_running_time());
                b.set_duration(gst::ClockTime::from_nseconds(period.as_nanos() as u64));
            }
            inner.stats.frames_out.fetch_add(1, Ordering::Relaxed);
            drop(inner);
            if src.push_buffer(buf).is_err() {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(33);

    #[test]
    fn a_change_is_sent_for_a_few_ticks_then_only_once_a_second() {
        let t0 = Instant::now();
        let mut p = OutputPacer::default();
        assert!(p.tick(t0, false, false), "the first tick sends");
        let sent: Vec<bool> = (1..=5).map(|i| p.tick(t0 + TICK * i, i == 1, false)).collect();
        assert_eq!(sent, [true, true, true, false, false], "a change holds for CHANGE_OUTPUTS ticks");
        let refreshed = (6..=40).find(|&i| p.tick(t0 + TICK * i, false, false)).unwrap();
        let gap = TICK * refreshed - TICK * 3;
        assert!(gap >= UNCHANGED_REFRESH && gap < UNCHANGED_REFRESH + TICK, "refresh after {gap:?}");
    }

    #[test]
    fn an_asked_output_goes_out_unchanged() {
        let t0 = Instant::now();
        let mut p = OutputPacer::default();
        p.tick(t0, false, false);
        assert!(!p.tick(t0 + TICK, false, false));
        assert!(p.tick(t0 + TICK * 2, false, true));
        let r = OutputRequests::default();
        assert!(!r.take());
        r.ask();
        assert_eq!((0..5).filter(|_| r.take()).count(), CHANGE_OUTPUTS as usize);
    }
}
