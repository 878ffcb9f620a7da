//! Codec vocabulary shared by every layer and by the client: the video codecs Tessera encodes,
//! keyframe detection on RTP payloads, and **the codec table** — payload types, clock rates,
//! `a=fmtp` lines, RTCP feedback and header extensions — that the server's media engine, its
//! answers and the load generator all read, so they cannot disagree.

/// Video codecs Tessera decodes and encodes the composite in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    /// VP8 (RFC 7741 payload); the CPU default.
    Vp8,
    /// H.264 constrained baseline, packetization-mode=1 (RFC 6184).
    H264,
}

impl VideoCodec {
    /// The SDP/MIME encoding name (`VP8`, `H264`).
    pub fn encoding_name(self) -> &'static str {
        self.spec().encoding_name
    }

    /// Its row of the codec table.
    pub fn spec(self) -> &'static CodecSpec {
        match self {
            VideoCodec::Vp8 => &VP8,
            VideoCodec::H264 => &H264,
        }
    }
}

/// Why a receiver gets the composite in the codec it does (shown in the room JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CodecChoice {
    /// The first of the offer's video codecs that Tessera encodes (RFC 3264 §6.1: the offerer's
    /// preference order), among several it encodes.
    OfferOrder,
    /// The only codec of the offer Tessera encodes.
    OnlyCommon,
}

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// `m=audio`.
    Audio,
    /// `m=video`.
    Video,
}

/// One row of the codec table: how a codec is negotiated (RFC 8866 `a=rtpmap`/`a=fmtp`,
/// RFC 4585 `a=rtcp-fb`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecSpec {
    /// MIME type as webrtc-rs spells it (`video/VP8`).
    pub mime: &'static str,
    /// The `a=rtpmap` encoding name (`VP8`).
    pub encoding_name: &'static str,
    /// Audio or video.
    pub kind: MediaKind,
    /// Payload type Tessera offers (an answer uses the offer's).
    pub payload_type: u8,
    /// RTP clock rate, Hz.
    pub clock_rate: u32,
    /// Channels (`a=rtpmap` encoding parameter; 0 for video).
    pub channels: u16,
    /// The `a=fmtp` parameters.
    pub fmtp: &'static str,
    /// `a=rtcp-fb` entries as (type, parameter).
    pub rtcp_feedback: &'static [(&'static str, &'static str)],
    /// Payload type of its RTX stream (RFC 4588, `apt=`), when it has one.
    pub rtx_payload_type: Option<u8>,
}

/// RTCP feedback of every video codec: NACK (RFC 4585 §6.2.1), PLI (§6.3.1), FIR (RFC 5104
/// §4.3.1), REMB.
pub const VIDEO_FEEDBACK: &[(&str, &str)] = &[("nack", ""), ("nack", "pli"), ("ccm", "fir"), ("goog-remb", "")];

/// Opus, 48 kHz, in-band FEC on (RFC 7587).
pub const OPUS: CodecSpec = CodecSpec {
    mime: "audio/opus",
    encoding_name: "opus",
    kind: MediaKind::Audio,
    payload_type: 111,
    clock_rate: 48000,
    channels: 2,
    fmtp: "minptime=10;useinbandfec=1",
    rtcp_feedback: &[],
    rtx_payload_type: None,
};

/// VP8 (RFC 7741).
pub const VP8: CodecSpec = CodecSpec {
    mime: "video/VP8",
    encoding_name: "VP8",
    kind: MediaKind::Video,
    payload_type: 96,
    clock_rate: 90000,
    channels: 0,
    fmtp: "",
    rtcp_feedback: VIDEO_FEEDBACK,
    rtx_payload_type: Some(97),
};

/// H.264 constrained baseline 3.1, packetization-mode=1 (RFC 6184 §8.1).
pub const H264: CodecSpec = CodecSpec {
    mime: "video/H264",
    encoding_name: "H264",
    kind: MediaKind::Video,
    payload_type: 102,
    clock_rate: 90000,
    channels: 0,
    fmtp: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    rtcp_feedback: VIDEO_FEEDBACK,
    rtx_payload_type: Some(103),
};

/// The MIME type of RTX (RFC 4588).
pub const RTX_MIME: &str = "video/rtx";

/// Every codec Tessera negotiates, in its preference order.
pub const CODECS: [&CodecSpec; 3] = [&OPUS, &VP8, &H264];

/// RTP header extensions (RFC 8285) Tessera negotiates.
pub mod extmap {
    /// RFC 6464 client-to-mixer audio level: the mixer ranks talkers by it without decoding.
    pub const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    /// RFC 8843 §15.2 / RFC 9143 MID: which m-section an RTP stream belongs to.
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    /// RFC 8852 RtpStreamId: which simulcast layer (`a=rid`) an RTP stream is.
    pub const RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
}

/// Parses the value of an `a=extmap` attribute (RFC 8285 §8: `ID[/direction] URI [attributes]`)
/// into its id and URI.
pub fn parse_extmap(value: &str) -> Option<(u8, &str)> {
    let mut parts = value.split_whitespace();
    let id = parts.next()?.split('/').next()?.parse().ok()?;
    Some((id, parts.next()?))
}

/// The id of header extension `uri` in the first `m=<media>` section of SDP text `sdp`, from its
/// `a=extmap` lines.
pub fn extmap_id(sdp: &str, media: &str, uri: &str) -> Option<u8> {
    let section = format!("m={media}");
    let mut inside = false;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            if inside {
                return None;
            }
            inside = l.starts_with(&section);
        }
        if inside
            && let Some((id, u)) = l.strip_prefix("a=extmap:").and_then(parse_extmap)
            && u == uri
        {
            return Some(id);
        }
    }
    None
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

/// The picture size of a VP8 keyframe whose first RTP packet's payload is `p`: after the RFC 7741
/// §4.2 descriptor, the RFC 6386 §9.1 frame tag (3 bytes, P bit clear), the start code
/// `9d 01 2a`, then width and height as 14-bit little-endian values. `None` for anything else.
pub fn vp8_keyframe_size(p: &[u8]) -> Option<(u32, u32)> {
    if !vp8_keyframe_start(p) {
        return None;
    }
    let header = vp8_descriptor_len(p)?;
    let h = p.get(header..header + 10)?;
    if h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let hgt = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    Some((w as u32, hgt as u32))
}

/// Length of the RFC 7741 §4.2 VP8 payload descriptor at the start of `p`.
fn vp8_descriptor_len(p: &[u8]) -> Option<usize> {
    let b0 = *p.first()?;
    if b0 & 0x80 == 0 {
        return Some(1);
    }
    let b1 = *p.get(1)?;
    let mut i = 2;
    if b1 & 0x80 != 0 {
        i += if *p.get(i)? & 0x80 != 0 { 2 } else { 1 };
    }
    if b1 & 0x40 != 0 {
        i += 1;
    }
    if b1 & 0x30 != 0 {
        i += 1;
    }
    Some(i)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn vp8_keyframes_tell_their_size() {
        // Descriptor (S=1, PID=0), frame tag (P=0), start code, 640 x 360.
        let p = [0x10, 0x50, 0x2a, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
        assert_eq!(vp8_keyframe_size(&p), Some((640, 360)));
        // With an extended descriptor (15-bit picture id).
        let p = [0x90, 0x80, 0x81, 0x23, 0x50, 0x2a, 0x01, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xb4, 0x00];
        assert_eq!(vp8_keyframe_size(&p), Some((320, 180)));
        assert_eq!(vp8_keyframe_size(&[0x10, 0x51, 0x2a, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]), None);
        assert_eq!(vp8_keyframe_size(&[0x10, 0x50, 0x2a]), None);
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

    #[test]
    fn extmaps_are_read_from_the_right_section() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=extmap:3 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=extmap:1/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level vad=on\r\n\
                   a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n";
        assert_eq!(extmap_id(sdp, "audio", extmap::AUDIO_LEVEL), Some(1));
        assert_eq!(extmap_id(sdp, "audio", extmap::MID), Some(4));
        assert_eq!(extmap_id(sdp, "video", extmap::MID), None);
        assert_eq!(parse_extmap("12 urn:x"), Some((12, "urn:x")));
        assert_eq!(parse_extmap("x urn:x"), None);
    }
}
