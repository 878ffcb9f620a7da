//! The room's media going out to one receiver: the composite (frame fan-out, output tier,
//! keyframe waits; [`video`]) and the mix (Opus packetization; [`audio`]), each a send loop on
//! the receiver's own task, with its decisions as pure types that take `now`.
//!
//! The loops reach the network through [`ReceiverTrack`], which the transport's local tracks
//! implement: this module sits below the transport and names only what it needs of it.

pub mod audio;
pub mod video;

use std::future::Future;
use std::sync::{Arc, Mutex};

use super::retransmit::History;
use super::tiers::{BandwidthSample, Tier};

/// One outbound RTP track of a receiver (the composite's or the mix's), as the send loops use it.
pub trait ReceiverTrack: Send + Sync + 'static {
    /// The SSRC Tessera chose for this receiver's track.
    fn ssrc(&self) -> u32;
    /// The payload type negotiated with this receiver.
    fn payload_type(&self) -> u8;
    /// Sends one RTP packet (SSRC and payload type already this track's); `false` when the track
    /// is not bound (before DTLS completes, after the connection closed).
    fn write(&self, packet: rtc::rtp::Packet) -> impl Future<Output = bool> + Send;
    /// The next keyframe request (PLI or FIR) from this receiver; `None` once the track is unbound.
    fn keyframe_request(&self) -> impl Future<Output = Option<()>> + Send;
    /// The receiver's numbering (re)started: its packet `first_seq` is the encoder branch's
    /// packet `first_seq - seq_offset` (wrapping), and so on, on the branch whose retransmission
    /// history is `history` ([`crate::media::retransmit`]). NACKs are answered from there.
    fn sent_from(&self, first_seq: u16, seq_offset: u16, history: Arc<History>);
}

/// The send-side bandwidth estimate toward one receiver (GCC over TWCC), as the tier choice
/// reads it.
pub trait BandwidthSource: Send + Sync {
    /// The latest estimate; `None` before any feedback.
    fn sample(&self) -> Option<BandwidthSample>;
}

/// What one receiver's video sender shows the room JSON: the output tier it is on.
#[derive(Debug, Default)]
pub struct VideoStatus(Mutex<Option<Tier>>);

impl VideoStatus {
    /// The tier the receiver is on now; `None` before its sender started.
    pub fn tier(&self) -> Option<Tier> {
        *self.0.lock().unwrap()
    }

    fn set(&self, t: Tier) {
        *self.0.lock().unwrap() = Some(t);
    }
}
