//! The composite to one receiver: the room's encoded frames under the receiver's own SSRC,
//! payload type and sequence numbers ([`RtpRewriter`]), starting at a keyframe; PLI/FIR from the
//! receiver ask the encoder for a keyframe; every [`BANDWIDTH_PERIOD`] the receiver's bandwidth
//! estimate picks its output tier ([`TierSwitch`]). A move subscribes to the new tier, keeps
//! sending the old one until the new one's keyframe, then switches there with no gap in sequence
//! numbers or timestamps (every tier shares the room's RTP timeline).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{BandwidthSource, ReceiverTrack, VideoStatus};
use crate::codec::VideoCodec;
use crate::media::fanout::{OutFrame, RtpRewriter, starts_keyframe};
use crate::media::retransmit::History;
use crate::media::tiers::{BandwidthSample, OutputFormat, Tier, TierSelector};
use crate::media::video::RoomVideo;

/// How often the bandwidth estimate is read.
pub const BANDWIDTH_PERIOD: Duration = Duration::from_millis(500);
/// Until a receiver has its keyframe (at start, after falling behind, while moving tiers), the
/// keyframe is asked for again this often: a request can be lost, e.g. made while the encoder
/// was still starting (the encoder's gate coalesces the repeats).
pub const KEYFRAME_WAIT_RETRY: Duration = Duration::from_millis(500);
/// Packets of one frame a receiver's task sends before it lets others run: a keyframe (~30
/// packets at 1280x720) to 100 receivers is 3000 packets, which must not hold up their audio.
const PACKETS_PER_YIELD: usize = 8;

/// What a bandwidth estimate asks of the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierMove {
    /// Stay as is.
    Stay,
    /// Subscribe to this tier and switch at its next keyframe.
    Start(Tier),
    /// Drop the move under way: the current tier is right again.
    Cancel,
}

/// One receiver's output tier: the tier it is on, the one it is moving to, and the
/// [`TierSelector`] that reads its estimates. Pure.
#[derive(Debug, Clone)]
pub struct TierSwitch {
    current: Tier,
    moving_to: Option<Tier>,
    selector: TierSelector,
}

impl TierSwitch {
    /// A receiver starting on [`Tier::Full`] of a room with output `format`.
    pub fn new(format: OutputFormat) -> Self {
        Self { current: Tier::Full, moving_to: None, selector: TierSelector::new(format) }
    }

    /// The tier being sent now.
    pub fn current(&self) -> Tier {
        self.current
    }

    /// The tier a keyframe is wanted on: the one being moved to, else the current one.
    pub fn wanted(&self) -> Tier {
        self.moving_to.unwrap_or(self.current)
    }

    /// Takes one estimate; says whether to start or cancel a move.
    pub fn on_estimate(&mut self, sample: BandwidthSample) -> TierMove {
        let want = self.selector.update(sample);
        if want == self.current && self.moving_to.is_some() {
            self.moving_to = None;
            TierMove::Cancel
        } else if want != self.current && self.moving_to != Some(want) {
            TierMove::Start(want)
        } else {
            TierMove::Stay
        }
    }

    /// The sender subscribed to `tier` (after [`TierMove::Start`]).
    pub fn moving(&mut self, tier: Tier) {
        self.moving_to = Some(tier);
    }

    /// A frame of the tier being moved to arrived; `true` when the sender switches to it now (it
    /// starts a keyframe).
    pub fn arrived(&mut self, keyframe: bool) -> bool {
        match self.moving_to {
            Some(t) if keyframe => {
                self.current = t;
                self.moving_to = None;
                true
            }
            _ => false,
        }
    }
}

/// Sends `video`'s composite in `codec` to one receiver on `track`, from `rx` (a subscription to
/// the full tier) once `connected` says the connection is up. `bandwidth` (when the transport
/// estimates it) moves the receiver between tiers; `status` shows its tier. Ends when the
/// encoder branch closes or the task is aborted.
pub async fn send_video<T: ReceiverTrack>(
    video: RoomVideo,
    track: Arc<T>,
    mut rx: broadcast::Receiver<Arc<OutFrame>>,
    codec: VideoCodec,
    bandwidth: Option<Arc<dyn BandwidthSource>>,
    status: Arc<VideoStatus>,
    connected: impl std::future::Future<Output = bool> + Send,
) {
    if !connected.await {
        return;
    }
    let mut rw = RtpRewriter::new(track.ssrc(), track.payload_type(), crate::ids::random_u32() as u16);
    let mut switch = TierSwitch::new(video.format());
    status.set(switch.current());
    // The retransmission history of the branch being sent.
    let mut history = video.history(codec, switch.current());
    // The tier being moved to (and its history), until its first keyframe arrives.
    let mut next: Option<broadcast::Receiver<Arc<OutFrame>>> = None;
    let mut next_history: Option<Arc<History>> = None;
    video.request_keyframe_tier(codec, switch.current());
    let mut keyframe_requests = true;
    let mut retry = tokio::time::interval(KEYFRAME_WAIT_RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut bwe_tick = tokio::time::interval(BANDWIDTH_PERIOD);
    bwe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = retry.tick(), if !rw.is_started() || next.is_some() => {
                video.request_keyframe_tier(codec, switch.wanted());
            }
            r = rx.recv() => match r {
                Ok(frame) => send_frame(&mut rw, track.as_ref(), &frame, history.as_ref()).await,
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "receiver fell behind; waiting for a keyframe");
                    rw.resync();
                    video.request_keyframe_tier(codec, switch.current());
                }
                Err(RecvError::Closed) => break,
            },
            r = async { next.as_mut().expect("guarded").recv().await }, if next.is_some() => match r {
                Ok(frame) if switch.arrived(starts_keyframe(&frame)) => {
                    tracing::info!(to = ?switch.current(), "moved to another output tier at its keyframe");
                    rx = next.take().expect("guarded");
                    history = next_history.take();
                    status.set(switch.current());
                    rw.resync();
                    send_frame(&mut rw, track.as_ref(), &frame, history.as_ref()).await;
                    video.release_idle_tiers();
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => next = None,
            },
            _ = bwe_tick.tick(), if bandwidth.is_some() => {
                let Some(sample) = bandwidth.as_ref().and_then(|b| b.sample()) else { continue };
                match switch.on_estimate(sample) {
                    TierMove::Stay => {}
                    TierMove::Cancel => {
                        next = None;
                        next_history = None;
                        video.release_idle_tiers();
                    }
                    TierMove::Start(want) => {
                        tracing::info!(estimate_kbps = (sample.bps / 1000.0) as u64, delay_kbps = (sample.delay_bps / 1000.0) as u64, loss = format!("{:.3}", sample.loss), from = ?switch.current(), to = ?want, "bandwidth estimate asks for another output tier");
                        match video.subscribe_tier(codec, want) {
                            Ok(new_rx) => {
                                next = Some(new_rx);
                                next_history = video.history(codec, want);
                                switch.moving(want);
                                video.request_keyframe_tier(codec, want);
                            }
                            Err(e) => tracing::warn!("output tier {want:?} unavailable: {e}"),
                        }
                    }
                }
            },
            k = track.keyframe_request(), if keyframe_requests => match k {
                Some(()) => video.request_keyframe_tier(codec, switch.current()),
                None => keyframe_requests = false,
            },
        }
    }
    drop(rx);
    drop(next);
    video.release_idle_tiers();
}

/// Sends one encoded frame to a receiver, rewritten for its track, yielding every
/// [`PACKETS_PER_YIELD`] packets. When the rewriter (re)starts here, the track is told where its
/// numbering now maps to on the branch of `history` (for retransmissions).
async fn send_frame<T: ReceiverTrack>(
    rw: &mut RtpRewriter,
    track: &T,
    frame: &OutFrame,
    history: Option<&Arc<History>>,
) {
    let mut starting = !rw.is_started();
    for (i, pkt) in frame.iter().enumerate() {
        if i > 0 && i % PACKETS_PER_YIELD == 0 {
            tokio::task::yield_now().await;
        }
        if let Some(out) = rw.rewrite(pkt) {
            if std::mem::take(&mut starting)
                && let Some(h) = history
            {
                track.sent_from(out.header.sequence_number, rw.seq_offset(), h.clone());
            }
            track.write(out).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: OutputFormat = OutputFormat { width: 1280, height: 720, fps: 30, kbps: 1500 };

    fn congested(bps: f64) -> BandwidthSample {
        BandwidthSample { bps, delay_bps: bps, loss: 0.2 }
    }

    #[test]
    fn a_move_starts_on_low_estimates_and_completes_at_the_new_tiers_keyframe() {
        let mut s = TierSwitch::new(F);
        assert_eq!(s.on_estimate(congested(900e3)), TierMove::Stay, "one low estimate is not enough");
        assert_eq!(s.on_estimate(congested(900e3)), TierMove::Start(Tier::Half));
        s.moving(Tier::Half);
        assert_eq!((s.current(), s.wanted()), (Tier::Full, Tier::Half), "the old tier goes on until the switch");
        assert!(!s.arrived(false), "a delta frame of the new tier is no place to switch");
        assert!(s.arrived(true));
        assert_eq!((s.current(), s.wanted()), (Tier::Half, Tier::Half));
        assert!(!s.arrived(true), "nothing is being moved to any more");
    }

    #[test]
    fn a_move_that_is_no_longer_wanted_is_cancelled() {
        let mut s = TierSwitch::new(F);
        s.on_estimate(congested(900e3));
        let TierMove::Start(t) = s.on_estimate(congested(900e3)) else { panic!("a move") };
        s.moving(t);
        // The link recovers before the new tier's keyframe came: once the selector wants Full
        // again (after its cooldown and sustained headroom), the move is dropped.
        let clean = BandwidthSample { bps: 10e6, delay_bps: 10e6, loss: 0.0 };
        let cancelled = (0..40).any(|_| s.on_estimate(clean) == TierMove::Cancel);
        assert!(cancelled, "the move was cancelled");
        assert_eq!((s.current(), s.wanted()), (Tier::Full, Tier::Full));
        // A failed subscription leaves nothing half done: the next estimate asks again.
        let mut s = TierSwitch::new(F);
        s.on_estimate(congested(900e3));
        assert_eq!(s.on_estimate(congested(900e3)), TierMove::Start(Tier::Half));
        assert_eq!(s.wanted(), Tier::Full);
    }
}
