//! Offer checks: what an SDP offer publishes and wants to receive, and whether Tessera can serve it.

use std::io::Cursor;

use rtc::sdp::description::session::SessionDescription;

use crate::codec::{self, VideoCodec};
use crate::transport::SessionPlan;

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
    /// Direction and whether Opus is offered, for the first `m=audio` (port ≠ 0).
    pub audio: Option<(Direction, bool)>,
    /// Direction, VP8 offered, H264 (packetization-mode=1, baseline family) offered, for the first `m=video`.
    pub video: Option<(Direction, bool, bool)>,
    /// The RFC 6464 audio-level extension id of the first `m=audio`.
    pub audio_level_ext: Option<u8>,
    /// The offer has an `m=application` (SCTP data channel) section.
    pub data_channel: bool,
}

/// Parses an offer and summarizes its audio and video sections.
///
/// # Errors
/// [`OfferError::Malformed`] when the text is not SDP; [`OfferError::NoMedia`] when it has no
/// audio or video section.
pub fn summarize(sdp: &str) -> Result<OfferSummary, OfferError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(OfferError::Malformed("an SDP offer starts with \"v=0\"".into()));
    }
    let desc = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .map_err(|e| OfferError::Malformed(e.to_string()))?;
    let mut audio = None;
    let mut video = None;
    let mut audio_level_ext = None;
    let mut data_channel = false;
    for m in &desc.media_descriptions {
        if m.media_name.port.value == 0 {
            continue;
        }
        if m.media_name.media == "application" {
            data_channel = true;
            continue;
        }
        let dir = if m.has_attribute("sendonly") {
            Direction::SendOnly
        } else if m.has_attribute("recvonly") {
            Direction::RecvOnly
        } else if m.has_attribute("inactive") {
            Direction::Inactive
        } else {
            Direction::SendRecv
        };
        let codecs = m.codecs();
        match m.media_name.media.as_str() {
            "audio" if audio.is_none() => {
                audio_level_ext = m
                    .attributes
                    .iter()
                    .filter(|a| a.key == "extmap")
                    .filter_map(|a| codec::parse_extmap(a.value.as_deref()?))
                    .find(|(_, uri)| *uri == codec::extmap::AUDIO_LEVEL)
                    .map(|(id, _)| id);
                let opus = codecs.values().any(|c| c.name.eq_ignore_ascii_case("opus") && c.clock_rate == 48000);
                audio = Some((dir, opus));
            }
            "video" if video.is_none() => {
                let vp8 = codecs.values().any(|c| c.name.eq_ignore_ascii_case("vp8"));
                let h264 = codecs.values().any(|c| {
                    c.name.eq_ignore_ascii_case("h264")
                        && c.fmtp.contains("packetization-mode=1")
                        && fmtp_value(&c.fmtp, "profile-level-id")
                            .is_some_and(|p| p.len() == 6 && p[..2].eq_ignore_ascii_case("42"))
                });
                video = Some((dir, vp8, h264));
            }
            _ => {}
        }
    }
    if audio.is_none() && video.is_none() {
        return Err(OfferError::NoMedia);
    }
    Ok(OfferSummary { audio, video, audio_level_ext, data_channel })
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

/// Decides the session plan for an offer: sendrecv = publish and receive the room mix;
/// sendonly = publish only; recvonly = receive only. The composite is sent in VP8 when offered,
/// else H264 constrained baseline.
///
/// # Errors
/// [`OfferError`] with the reason the offer cannot be served.
pub fn plan(sdp: &str, endpoint: Endpoint) -> Result<SessionPlan, OfferError> {
    let s = summarize(sdp)?;
    let mut plan = SessionPlan {
        publish_video: false,
        publish_audio: false,
        receive_video: None,
        receive_audio: false,
        audio_level_ext: s.audio_level_ext,
    };
    if let Some((dir, vp8, h264)) = s.video {
        if (dir.sends() || dir.receives()) && !vp8 && !h264 {
            return Err(OfferError::NoCommonCodec("video"));
        }
        plan.publish_video = dir.sends();
        if dir.receives() {
            plan.receive_video = Some(if vp8 { VideoCodec::Vp8 } else { VideoCodec::H264 });
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
        }
        Endpoint::Participant => {}
    }
    if !(plan.publish_audio || plan.publish_video || plan.receive_audio || plan.receive_video.is_some()) {
        return Err(OfferError::NothingToDo);
    }
    Ok(plan)
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

    #[test]
    fn directions_set_the_role() {
        let p = plan(&offer("sendrecv", "sendrecv", VP8), Endpoint::Participant).unwrap();
        assert!(p.publish_audio && p.publish_video && p.receive_audio);
        assert_eq!(p.receive_video, Some(VideoCodec::Vp8));
        let p = plan(&offer("sendonly", "sendonly", VP8), Endpoint::Participant).unwrap();
        assert!(p.publish_video && !p.receive_audio && p.receive_video.is_none());
        let p = plan(&offer("recvonly", "recvonly", H264), Endpoint::Whep).unwrap();
        assert!(!p.publish_video && p.receive_audio);
        assert_eq!(p.receive_video, Some(VideoCodec::H264));
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
