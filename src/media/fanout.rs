//! Fan-out of one encoded stream to many receivers: the room packetizes each encoded frame once;
//! every receiver gets the same payload under its own SSRC, payload type and sequence numbers.

use rtc::rtp;

/// Video codecs Tessera encodes the composite in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// VP8 (RFC 7741 payload); the default.
    Vp8,
    /// H.264 constrained baseline, packetization-mode=1 (RFC 6184).
    H264,
}

impl VideoCodec {
    /// The SDP/MIME encoding name (`VP8`, `H264`).
    pub fn encoding_name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::H264 => "H264",
        }
    }
}

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

/// Whether an RTP payload is the first packet of a keyframe.
///
/// VP8: RFC 7741 §4.2 payload descriptor with S=1 and PID=0, then the VP8 payload header's P bit
/// (RFC 6386 §9.1) clear. H264: an SPS (type 7) or IDR slice (type 5) as a single NAL unit, inside
/// a STAP-A (type 24), or at the start of an FU-A (type 28, S bit) (RFC 6184 §5).
pub fn is_keyframe_start(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_keyframe_start(payload),
        VideoCodec::H264 => h264_keyframe_start(payload),
    }
}

fn vp8_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let x = b0 & 0x80 != 0;
    let s = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !s || pid != 0 {
        return false;
    }
    let mut i = 1;
    if x {
        let Some(&b1) = p.get(1) else { return false };
        i = 2;
        if b1 & 0x80 != 0 {
            // I: PictureID, 7 or 15 bits.
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if b1 & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if b1 & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    p.get(i).is_some_and(|h| h & 0x01 == 0)
}

fn h264_keyframe_start(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        5 | 7 => true,
        24 => {
            // STAP-A: 16-bit sizes followed by NAL units.
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                if matches!(p[i + 2] & 0x1f, 5 | 7) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, 5 | 7)),
        _ => false,
    }
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

    #[test]
    fn vp8_keyframes() {
        // S=1, PID=0, no extension; payload header P=0 → keyframe.
        assert!(is_keyframe_start(VideoCodec::Vp8, &[0x10, 0x00, 0x00]));
        // P=1 → interframe.
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x10, 0x01]));
        // Continuation packet (S=0).
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x00, 0x00]));
        // X=1, I=1 with a 15-bit picture id (2 bytes), then P=0.
        assert!(is_keyframe_start(VideoCodec::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x50]));
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x51]));
        assert!(!is_keyframe_start(VideoCodec::Vp8, &[]));
    }

    #[test]
    fn h264_keyframes() {
        assert!(is_keyframe_start(VideoCodec::H264, &[0x67, 0x42]));
        assert!(is_keyframe_start(VideoCodec::H264, &[0x65]));
        assert!(!is_keyframe_start(VideoCodec::H264, &[0x41]));
        // STAP-A holding SPS.
        assert!(is_keyframe_start(VideoCodec::H264, &[0x78, 0x00, 0x02, 0x67, 0x42]));
        // FU-A start of an IDR, and its continuation.
        assert!(is_keyframe_start(VideoCodec::H264, &[0x7c, 0x85]));
        assert!(!is_keyframe_start(VideoCodec::H264, &[0x7c, 0x05]));
    }
}
