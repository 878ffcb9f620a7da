//! Fan-out of one encoded stream to many receivers: the room packetizes each encoded frame once;
//! every receiver gets the same payload under its own SSRC, payload type and sequence numbers.

use rtc::rtp;

/// One RTP packet of a room's encoded output, shared by every receiver (`Arc`ed by the sender).
#[derive(Debug, Clone)]
pub struct OutPacket {
    /// The packet as the payloader made it (room SSRC, room sequence numbers).
    pub packet: rtp::Packet,
    /// True on the first packet of a keyframe: a receiver may start here.
    pub keyframe_start: bool,
}

/// The RTP packets of one encoded frame (in sequence order), as one fan-out item: a receiver's
/// task is woken once per frame, not once per packet.
pub type OutFrame = Vec<OutPacket>;

/// Whether `frame` is a keyframe: its first packet starts one (a receiver may start there).
pub fn starts_keyframe(frame: &OutFrame) -> bool {
    frame.first().is_some_and(|p| p.keyframe_start)
}

/// Rewrites the room's packets for one receiver: its SSRC and payload type, and sequence numbers
/// that run on without gaps from where this receiver started. Until the first keyframe start it
/// drops everything (a decoder cannot start on a delta frame); [`RtpRewriter::resync`] makes it
/// wait for the next keyframe again (after the receiver fell behind and packets were skipped).
#[derive(Debug)]
pub struct RtpRewriter {
    ssrc: u32,
    payload_type: u8,
    /// Added (wrapping) to the room's sequence number; set at each (re)start.
    seq_offset: u16,
    next_seq: u16,
    started: bool,
}

impl RtpRewriter {
    /// A rewriter for a receiver whose track has `ssrc` and negotiated `payload_type`; the first
    /// packet it emits has sequence number `first_seq`.
    pub fn new(ssrc: u32, payload_type: u8, first_seq: u16) -> Self {
        Self { ssrc, payload_type, seq_offset: 0, next_seq: first_seq, started: false }
    }

    /// Forgets the current position: packets are dropped until the next keyframe start, and the
    /// sequence numbers continue from the last one sent (so the receiver sees no gap to NACK).
    pub fn resync(&mut self) {
        self.started = false;
    }

    /// What is added (wrapping) to the room's sequence numbers since the last (re)start.
    pub fn seq_offset(&self) -> u16 {
        self.seq_offset
    }

    /// Whether the receiver is being sent packets (false while waiting for a keyframe).
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// The packet to send for `p`, or `None` while waiting for a keyframe.
    pub fn rewrite(&mut self, p: &OutPacket) -> Option<rtp::Packet> {
        if !self.started {
            if !p.keyframe_start {
                return None;
            }
            self.started = true;
            self.seq_offset = self.next_seq.wrapping_sub(p.packet.header.sequence_number);
        }
        let mut out = p.packet.clone();
        out.header.ssrc = self.ssrc;
        out.header.payload_type = self.payload_type;
        out.header.sequence_number = p.packet.header.sequence_number.wrapping_add(self.seq_offset);
        self.next_seq = out.header.sequence_number.wrapping_add(1);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pkt(seq: u16, key: bool) -> OutPacket {
        let mut packet = rtp::Packet::default();
        packet.header.sequence_number = seq;
        packet.header.ssrc = 1;
        packet.header.payload_type = 96;
        packet.payload = Bytes::from_static(&[0x10, 0x00]);
        OutPacket { packet, keyframe_start: key }
    }

    #[test]
    fn starts_at_a_keyframe_and_numbers_without_gaps() {
        let mut r = RtpRewriter::new(777, 100, 5000);
        assert!(r.rewrite(&pkt(65534, false)).is_none());
        let a = r.rewrite(&pkt(65535, true)).unwrap();
        assert_eq!((a.header.ssrc, a.header.payload_type, a.header.sequence_number), (777, 100, 5000));
        let b = r.rewrite(&pkt(0, false)).unwrap();
        assert_eq!(b.header.sequence_number, 5001);
        r.resync();
        assert!(r.rewrite(&pkt(10, false)).is_none());
        let c = r.rewrite(&pkt(20, true)).unwrap();
        assert_eq!(c.header.sequence_number, 5002, "no gap after a resync");
    }
}
