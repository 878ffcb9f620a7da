//! The mix to one receiver: its mix-minus payload when it talks, else the room's shared one, as
//! Opus RTP (RFC 7587) under the receiver's own SSRC, sequence numbers and timestamps.

use std::sync::Arc;

use bytes::Bytes;
use rtc::rtp;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::ReceiverTrack;
use crate::media::audio::MixFrame;

/// RTP timestamp units per 20 ms mixer tick: Opus RTP runs at 48 kHz whatever the audio
/// bandwidth (RFC 7587 §4.1), 48 000 × 0.020 = 960.
pub const SAMPLES_PER_TICK: u32 = 960;

/// Turns mixer ticks into one receiver's RTP packets. Sequence numbers and timestamps start at
/// random values (RFC 3550 §5.1); the timestamp follows the mixer's tick, so a tick the receiver
/// missed leaves a timestamp gap its jitter buffer conceals, while sequence numbers stay gapless.
#[derive(Debug, Clone)]
pub struct OpusPacketizer {
    ssrc: u32,
    payload_type: u8,
    next_seq: u16,
    ts_base: u32,
}

impl OpusPacketizer {
    /// A packetizer for track `ssrc` with negotiated `payload_type`, whose first packet has
    /// sequence number `first_seq` and whose tick 0 has timestamp `ts_base`.
    pub fn new(ssrc: u32, payload_type: u8, first_seq: u16, ts_base: u32) -> Self {
        Self { ssrc, payload_type, next_seq: first_seq, ts_base }
    }

    /// The packet carrying `payload` (one 20 ms Opus frame) of mixer tick `tick`.
    pub fn packet(&mut self, tick: u64, payload: Bytes) -> rtp::Packet {
        let mut p = rtp::Packet::default();
        p.header.version = 2;
        p.header.payload_type = self.payload_type;
        p.header.sequence_number = self.next_seq;
        p.header.timestamp = self.ts_base.wrapping_add((tick as u32).wrapping_mul(SAMPLES_PER_TICK));
        p.header.ssrc = self.ssrc;
        p.payload = payload;
        self.next_seq = self.next_seq.wrapping_add(1);
        p
    }
}

/// Sends the room's mix to participant `id` on `track` once `connected` says the connection is
/// up: its mix-minus payload while it talks, else the shared one. Ends when the mixer stops.
pub async fn send_audio<T: ReceiverTrack>(
    mut rx: broadcast::Receiver<Arc<MixFrame>>,
    id: String,
    track: Arc<T>,
    connected: impl std::future::Future<Output = bool> + Send,
) {
    if !connected.await {
        return;
    }
    let mut pack = OpusPacketizer::new(
        track.ssrc(),
        track.payload_type(),
        crate::ids::random_u32() as u16,
        crate::ids::random_u32(),
    );
    loop {
        match rx.recv().await {
            Ok(f) => {
                let payload = f.for_participant(&id);
                if payload.is_empty() {
                    continue;
                }
                track.write(pack.packet(f.tick, payload.clone())).await;
            }
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_follow_the_tick_and_wrap() {
        let mut p = OpusPacketizer::new(7, 111, 65535, u32::MAX - 959);
        let a = p.packet(0, Bytes::from_static(b"x"));
        assert_eq!(
            (a.header.ssrc, a.header.payload_type, a.header.sequence_number, a.header.timestamp),
            (7, 111, 65535, u32::MAX - 959)
        );
        let b = p.packet(1, Bytes::from_static(b"y"));
        assert_eq!((b.header.sequence_number, b.header.timestamp), (0, 0), "both wrap");
        // A skipped tick: the timestamp jumps, the sequence number does not.
        let c = p.packet(3, Bytes::from_static(b"z"));
        assert_eq!((c.header.sequence_number, c.header.timestamp), (1, 2 * SAMPLES_PER_TICK));
        assert_eq!(c.header.version, 2);
    }
}
