//! Offer checks: what an SDP offer publishes and wants to receive, and whether Tessera can serve it.
//!
//! Every m-section of the offer is read in order. One that the offerer rejected (port 0 without
//! `a=bundle-only`, RFC 8843 §6) is skipped; a `bundle-only` one (port 0 + `a=bundle-only`, as
//! `webrtcbin` and Firefox offer with `max-bundle`) is a real media section of the BUNDLE group.
//! Tessera serves the first audio, the first video and the first data-channel section; any other
//! section is rejected in the answer (port 0, out of the BUNDLE group) with a logged reason.

use std::io::Cursor;

use rtc::sdp::description::media::MediaDescription;
use rtc::sdp::description::session::SessionDescription;

use crate::codec::{self, CodecChoice, VideoCodec};
use crate::transport::{Rejected, SessionPlan};

/// Why an offer is refused; the text goes back to the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfferError {
    /// Not parseable as SDP (RFC 8866).
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No `m=audio` or `m=video` section.
    #[error("the offer has no audio or video section")]
    NoMedia,
    /// A section Tessera must use has no codec Tessera supports.
    #[error("no codec in common for {0}: Tessera takes VP8 or H264 (packetization-mode=1) video and Opus audio")]
    NoCommonCodec(&'static str),
    /// The offer neither sends nor receives anything Tessera handles.
    #[error("the offer neither sends nor receives audio or video")]
    NothingToDo,
    /// The offer's directions do not fit the endpoint (e.g. a WHEP offer that only sends).
    #[error("{0}")]
    WrongDirection(&'static str),
    /// Two m-sections with the same `a=mid` (RFC 8843 §7.2.1: a MID identifies one section).
    #[error("duplicate a=mid:{0}")]
    DuplicateMid(String),
}

/// Direction of an m-section from the offerer's side (RFC 8866 §6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Both ways (the default when no attribute is present).
    SendRecv,
    /// The offerer only sends.
    SendOnly,
    /// The offerer only receives.
    RecvOnly,
    /// Neither.
    Inactive,
}

impl Direction {
    fn of(m: &MediaDescription) -> Self {
        if m.has_attribute("sendonly") {
            Direction::SendOnly
        } else if m.has_attribute("recvonly") {
            Direction::RecvOnly
        } else if m.has_attribute("inactive") {
            Direction::Inactive
        } else {
            Direction::SendRecv
        }
    }
    fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// What the offer's first audio and first video sections ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferSummary {
    /// Direction and whether Opus is offered, for the first live `m=audio`.
    pub audio: Option<(Direction, bool)>,
    /// Direction and the video codecs Tessera encodes, in the offer's order (VP8, H264 with
    /// packetization-mode=1 in the baseline family), for the first live `m=video`.
    pub video: Option<(Direction, Vec<VideoCodec>)>,
    /// The RFC 6464 audio-level extension id of the first `m=audio`.
    pub audio_level_ext: Option<u8>,
    /// The offer has an `m=application` (SCTP data channel) section.
    pub data_channel: bool,
    /// Live sections Tessera does not serve.
    pub rejected: Vec<Rejected>,
}

/// Whether an offerer's m-section is live: a non-zero port, or port 0 with `a=bundle-only`
/// (RFC 8843 §6: bundled, its transport that of the BUNDLE group).
fn live(m: &MediaDescription) -> bool {
    m.media_name.port.value != 0 || m.has_attribute("bundle-only")
}

/// The video codecs of `m` Tessera encodes, in the order of its `m=` line's payload types (the
/// offerer's preference, RFC 3264 §5.1).
fn video_codecs(m: &MediaDescription) -> Vec<VideoCodec> {
    let codecs = m.codecs();
    let mut out = vec![];
    for pt in m.media_name.formats.iter().filter_map(|f| f.parse::<u8>().ok()) {
        let Some(c) = codecs.get(&pt) else { continue };
        let found = if c.name.eq_ignore_ascii_case("vp8") {
            Some(VideoCodec::Vp8)
        } else if c.name.eq_ignore_ascii_case("h264")
            && c.fmtp.contains("packetization-mode=1")
            && fmtp_value(&c.fmtp, "profile-level-id")
                // Six hex digits (RFC 6184 §8.1), profile_idc 0x42 (baseline); a value that is
                // not hex is no H.264 (and slicing it could split a character).
                .is_some_and(|p| {
                    p.len() == 6 && p.bytes().all(|b| b.is_ascii_hexdigit()) && p[..2].eq_ignore_ascii_case("42")
                })
        {
            Some(VideoCodec::H264)
        } else {
            None
        };
        if let Some(f) = found
            && !out.contains(&f)
        {
            out.push(f);
        }
    }
    out
}

/// Parses an offer and summarizes its audio and video sections.
///
/// # Errors
/// [`OfferError::Malformed`] when the text is not SDP; [`OfferError::NoMedia`] when it has no
/// live audio or video section; [`OfferError::DuplicateMid`] when two sections share a MID.
pub fn summarize(sdp: &str) -> Result<OfferSummary, OfferError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(OfferError::Malformed("an SDP offer starts with \"v=0\"".into()));
    }
    let desc = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| OfferError::Malformed(one_line(&e.to_string())))?;
    let mut s = OfferSummary { audio: None, video: None, audio_level_ext: None, data_channel: false, rejected: vec![] };
    let mut mids: Vec<&str> = vec![];
    for m in &desc.media_descriptions {
        let mid = m.attribute("mid").flatten();
        if let Some(mid) = mid {
            if mids.contains(&mid) {
                return Err(OfferError::DuplicateMid(one_line(mid)));
            }
            mids.push(mid);
        }
        if !live(m) {
            continue;
        }
        let reject = |reason| Rejected { mid: mid.map(str::to_string), media: m.media_name.media.clone(), reason };
        match m.media_name.media.as_str() {
            "application" if !s.data_channel => s.data_channel = true,
            "application" => s.rejected.push(reject("one data channel section per connection")),
            "audio" if s.audio.is_none() => {
                s.audio_level_ext = m
                    .attributes
                    .iter()
                    .filter(|a| a.key == "extmap")
                    .filter_map(|a| codec::parse_extmap(a.value.as_deref()?))
                    .find(|(_, uri)| *uri == codec::extmap::AUDIO_LEVEL)
                    .map(|(id, _)| id);
                let opus = m.codecs().values().any(|c| c.name.eq_ignore_ascii_case("opus") && c.clock_rate == 48000);
                s.audio = Some((Direction::of(m), opus));
            }
            "video" if s.video.is_none() => s.video = Some((Direction::of(m), video_codecs(m))),
            "audio" | "video" => s.rejected.push(reject("one audio and one video section per connection")),
            _ => s.rejected.push(reject("not audio, video or a data channel")),
        }
    }
    if s.audio.is_none() && s.video.is_none() {
        return Err(OfferError::NoMedia);
    }
    Ok(s)
}

/// Longest piece of the offer a refusal quotes, characters.
const QUOTE_MAX: usize = 100;

/// `text` (which quotes the client's offer) fit for a one-line reason: control characters
/// escaped (`\r\n` as written), at most [`QUOTE_MAX`] characters. The SDP parser's errors quote
/// the offending line with its line end.
fn one_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(QUOTE_MAX)
        .flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] })
        .collect();
    if text.chars().nth(QUOTE_MAX).is_some() {
        out.push('…');
    }
    out
}

fn fmtp_value<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Which endpoint an offer came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/rooms/{room}/participants`: the offer's directions decide.
    Participant,
    /// `/whip/{room}`: must send; whatever it receives is ignored by WHIP clients but allowed.
    Whip,
    /// `/whep/{room}`: must only receive.
    Whep,
}

/// What an offer gets: the session plan, and the sections the answer rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferPlan {
    /// What the session sends and receives.
    pub session: SessionPlan,
    /// Live sections the answer rejects (port 0), with the reasons to log.
    pub rejected: Vec<Rejected>,
}

/// Decides the session plan for an offer: sendrecv = publish and receive the room mix;
/// sendonly = publish only; recvonly = receive only. The composite goes out in the first codec
/// of the offer's video section that Tessera encodes (the offerer's preference, RFC 3264 §6.1):
/// an H.264-first offer from a set-top box with an H.264 decoder gets H.264.
///
/// # Errors
/// [`OfferError`] with the reason the offer cannot be served.
pub fn plan(sdp: &str, endpoint: Endpoint) -> Result<OfferPlan, OfferError> {
    let s = summarize(sdp)?;
    let mut plan = SessionPlan {
        publish_video: false,
        publish_audio: false,
        receive_video: None,
        codec_choice: None,
        receive_audio: false,
        audio_level_ext: s.audio_level_ext,
    };
    if let Some((dir, codecs)) = &s.video {
        if (dir.sends() || dir.receives()) && codecs.is_empty() {
            return Err(OfferError::NoCommonCodec("video"));
        }
        plan.publish_video = dir.sends();
        if dir.receives() {
            plan.receive_video = codecs.first().copied();
            plan.codec_choice = Some(if codecs.len() > 1 { CodecChoice::OfferOrder } else { CodecChoice::OnlyCommon });
        }
    }
    if let Some((dir, opus)) = s.audio {
        if (dir.sends() || dir.receives()) && !opus {
            return Err(OfferError::NoCommonCodec("audio"));
        }
        plan.publish_audio = dir.sends();
        plan.receive_audio = dir.receives();
    }
    match endpoint {
        Endpoint::Whep => {
            if plan.publish_audio || plan.publish_video {
                return Err(OfferError::WrongDirection("a WHEP offer must be recvonly"));
            }
        }
        Endpoint::Whip => {
            if !(plan.publish_audio || plan.publish_video) {
                return Err(OfferError::WrongDirection("a WHIP offer must send audio or video"));
            }
            // WHIP is ingest only (RFC 9725 §4.2): nothing is sent back.
            plan.receive_audio = false;
            plan.receive_video = None;
            plan.codec_choice = None;
        }
        Endpoint::Participant => {}
    }
    if !(plan.publish_audio || plan.publish_video || plan.receive_audio || plan.receive_video.is_some()) {
        return Err(OfferError::NothingToDo);
    }
    Ok(OfferPlan { session: plan, rejected: s.rejected })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(audio_dir: &str, video_dir: &str, video_codecs: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na={audio_dir}\r\na=rtpmap:111 opus/48000/2\r\n\
             m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na={video_dir}\r\n{video_codecs}"
        )
    }
    const VP8: &str = "a=rtpmap:96 VP8/90000\r\n";
    const H264: &str = "a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    fn session(sdp: &str, e: Endpoint) -> SessionPlan {
        plan(sdp, e).unwrap().session
    }

    #[test]
    fn directions_set_the_role() {
        let p = session(&offer("sendrecv", "sendrecv", VP8), Endpoint::Participant);
        assert!(p.publish_audio && p.publish_video && p.receive_audio);
        assert_eq!(p.receive_video, Some(VideoCodec::Vp8));
        let p = session(&offer("sendonly", "sendonly", VP8), Endpoint::Participant);
        assert!(p.publish_video && !p.receive_audio && p.receive_video.is_none());
        let p = session(&offer("recvonly", "recvonly", H264), Endpoint::Whep);
        assert!(!p.publish_video && p.receive_audio);
        assert_eq!(p.receive_video, Some(VideoCodec::H264));
        assert_eq!(p.codec_choice, Some(CodecChoice::OnlyCommon));
    }

    #[test]
    fn the_offers_codec_order_decides() {
        let both = format!("{VP8}{H264}");
        let vp8_first = offer("recvonly", "recvonly", &both);
        let h264_first = vp8_first.replace("SAVPF 96 102", "SAVPF 102 96");
        let p = session(&vp8_first, Endpoint::Whep);
        assert_eq!((p.receive_video, p.codec_choice), (Some(VideoCodec::Vp8), Some(CodecChoice::OfferOrder)));
        let p = session(&h264_first, Endpoint::Whep);
        assert_eq!((p.receive_video, p.codec_choice), (Some(VideoCodec::H264), Some(CodecChoice::OfferOrder)));
        // A codec Tessera does not encode first is passed over.
        let av1_first = offer("recvonly", "recvonly", &format!("a=rtpmap:35 AV1/90000\r\n{H264}"))
            .replace("SAVPF 96 102", "SAVPF 35 102");
        assert_eq!(session(&av1_first, Endpoint::Whep).receive_video, Some(VideoCodec::H264));
    }

    #[test]
    fn bundle_only_sections_are_served_and_rejected_ones_skipped() {
        // webrtcbin/Firefox max-bundle: the second section has port 0 and a=bundle-only.
        let bundle_only = offer("sendonly", "sendonly", VP8)
            .replace("m=video 9 ", "m=video 0 ")
            .replace("a=mid:1\r\n", "a=mid:1\r\na=bundle-only\r\n");
        let p = session(&bundle_only, Endpoint::Whip);
        assert!(p.publish_audio && p.publish_video, "the bundle-only video is published: {p:?}");
        // Port 0 without bundle-only: the offerer rejected the section itself.
        let rejected = offer("sendonly", "sendonly", VP8).replace("m=video 9 ", "m=video 0 ");
        let p = session(&rejected, Endpoint::Whip);
        assert!(p.publish_audio && !p.publish_video);
    }

    #[test]
    fn extra_sections_are_rejected_with_a_reason() {
        let two_videos = format!(
            "{}m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=bundle-only\r\na=sendonly\r\n{VP8}",
            offer("sendrecv", "sendrecv", VP8)
        );
        let p = plan(&two_videos, Endpoint::Participant).unwrap();
        assert!(p.session.publish_video);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].mid.as_deref(), Some("2"));
        let dup = two_videos.replace("a=mid:2", "a=mid:1");
        assert_eq!(plan(&dup, Endpoint::Participant), Err(OfferError::DuplicateMid("1".into())));
    }

    #[test]
    fn refusals_quote_the_offer_on_one_line() {
        // Found by tests/fuzz.rs: the SDP parser's error quotes the bad line with its line end.
        for text in ["v=0\r\n \n", "v=0\r\na\n", "v=0\r\nA\r\no="] {
            let Err(OfferError::Malformed(reason)) = plan(text, Endpoint::Participant) else { panic!("{text:?}") };
            assert!(!reason.contains(['\r', '\n']), "{reason:?}");
        }
        let long = format!("v=0\r\n{}\r\n", "x".repeat(500));
        let reason = plan(&long, Endpoint::Participant).unwrap_err().to_string();
        assert!(reason.chars().count() < 150 && reason.ends_with('…'), "{reason}");
        let dup = offer("sendrecv", "sendrecv", VP8)
            .replace("a=mid:1", "a=mid:0\u{7}")
            .replace("a=mid:0\r", "a=mid:0\u{7}\r");
        assert_eq!(plan(&dup, Endpoint::Participant), Err(OfferError::DuplicateMid("0\\u{7}".into())));
    }

    #[test]
    fn a_profile_level_id_of_multibyte_characters_is_no_h264() {
        let h264 =
            |id: &str| format!("a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id={id}\r\n");
        // Six bytes whose second ends inside a character: slicing two bytes would panic.
        for id in ["4é123", "éé42", "42e01f"] {
            let p = plan(&offer("recvonly", "recvonly", &h264(id)), Endpoint::Whep);
            assert_eq!(p.is_ok(), id == "42e01f", "{id}: {p:?}");
        }
    }

    #[test]
    fn refusals_have_reasons() {
        assert!(matches!(plan("hello", Endpoint::Participant), Err(OfferError::Malformed(_))));
        assert_eq!(
            plan(&offer("sendrecv", "sendrecv", "a=rtpmap:96 AV1/90000\r\n"), Endpoint::Participant),
            Err(OfferError::NoCommonCodec("video"))
        );
        assert!(matches!(
            plan(&offer("sendonly", "sendonly", VP8), Endpoint::Whep),
            Err(OfferError::WrongDirection(_))
        ));
        assert!(matches!(
            plan(&offer("recvonly", "recvonly", VP8), Endpoint::Whip),
            Err(OfferError::WrongDirection(_))
        ));
        assert_eq!(plan(&offer("inactive", "inactive", VP8), Endpoint::Participant), Err(OfferError::NothingToDo));
        let no_media = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
        assert_eq!(plan(no_media, Endpoint::Participant), Err(OfferError::NoMedia));
    }
}
