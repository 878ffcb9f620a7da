//! Inbound RTP whose SSRC the offer did not declare. webrtc-rs 0.21 maps a publisher's RTP to its
//! m-section by the `a=ssrc` of the offer, and silently drops a stream whose SSRC differs — which
//! `webrtcbin` 1.22 sometimes writes (or leaves out). RFC 8843 §9.2 says to demultiplex by the MID
//! header extension when present, else by a payload type that identifies one m-section.
//!
//! [`SsrcWatch`] (an interceptor that only watches) sees every RTP packet and the streams webrtc-rs
//! bound; for a packet of an unbound SSRC it finds the m-section by its MID extension or its
//! payload type ([`DemuxMap`]) and reports it once. The transport then re-applies the offer with
//! that section's `a=ssrc` corrected ([`declare_ssrc`]): webrtc-rs binds the stream from its next
//! packet. A stream no section claims is counted and logged once per SSRC.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use tokio::sync::mpsc;

/// Slot of [`SsrcWatch`]: after the built-in interceptors (it only watches).
pub const SLOT: usize = 13_500;

/// Where the RTP of an undeclared SSRC belongs, from the offer and the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemuxMap {
    /// The negotiated id of the MID header extension (RFC 8843 §15.2), if any.
    pub mid_ext: Option<u8>,
    /// Payload types of media codecs (not RTX, RED or FEC) that appear in exactly one sending
    /// m-section of the offer, with that section's MID.
    pub by_payload_type: HashMap<u8, String>,
    /// Payload types of RTX, RED and FEC in the offer: a stream of those is never declared as a
    /// section's media stream (Chromium probes bandwidth with RTX padding before its first video
    /// packet; declared first, it would take the section's track).
    pub repair: HashSet<u8>,
}

/// Whether an `a=rtpmap` encoding name is a repair format (RTX, RED, FEC), not media.
fn is_repair(name: &str) -> bool {
    matches!(name.to_ascii_lowercase().as_str(), "rtx" | "red" | "ulpfec" | "flexfec-03")
}

/// The MIDs and media payload types of every m-section of `sdp` that sends (not `recvonly` or
/// `inactive`): `(mid, payload types of codecs other than rtx/red/ulpfec/flexfec)`.
fn sending_sections(sdp: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = vec![];
    let mut cur: Option<(Option<String>, Vec<u8>, bool)> = None;
    let flush = |cur: &mut Option<(Option<String>, Vec<u8>, bool)>, out: &mut Vec<(String, Vec<u8>)>| {
        if let Some((Some(mid), pts, true)) = cur.take() {
            out.push((mid, pts));
        }
    };
    for l in sdp.lines() {
        if l.starts_with("m=") {
            flush(&mut cur, &mut out);
            let media = l.split(' ').next().unwrap_or_default();
            cur = Some((None, vec![], media == "m=audio" || media == "m=video"));
        } else if let Some((mid, pts, sends)) = cur.as_mut() {
            if let Some(m) = l.strip_prefix("a=mid:") {
                *mid = Some(m.trim().to_string());
            } else if l == "a=recvonly" || l == "a=inactive" {
                *sends = false;
            } else if let Some((pt, codec)) = l.strip_prefix("a=rtpmap:").and_then(|r| r.split_once(' '))
                && !is_repair(codec.split('/').next().unwrap_or_default())
                && let Ok(pt) = pt.trim().parse()
            {
                pts.push(pt);
            }
        }
    }
    flush(&mut cur, &mut out);
    out
}

impl DemuxMap {
    /// The map for a session with `offer` (the client's) and `answer` (Tessera's, which says
    /// whether the MID extension was negotiated).
    pub fn new(offer: &str, answer: &str) -> Self {
        let sections = sending_sections(offer);
        let mut count: HashMap<u8, usize> = HashMap::new();
        for (_, pts) in &sections {
            for pt in pts {
                *count.entry(*pt).or_default() += 1;
            }
        }
        let by_payload_type = sections
            .iter()
            .flat_map(|(mid, pts)| pts.iter().filter(|pt| count[pt] == 1).map(move |pt| (*pt, mid.clone())))
            .collect();
        let mid_ext = ["audio", "video"]
            .iter()
            .find_map(|media| crate::codec::extmap_id(answer, media, crate::codec::extmap::MID));
        let repair = offer
            .lines()
            .filter_map(|l| l.strip_prefix("a=rtpmap:").and_then(|r| r.split_once(' ')))
            .filter(|(_, codec)| is_repair(codec.split('/').next().unwrap_or_default()))
            .filter_map(|(pt, _)| pt.trim().parse().ok())
            .collect();
        Self { mid_ext, by_payload_type, repair }
    }

    /// The MID of the section an RTP packet belongs to: its MID extension, else its payload type.
    pub fn section_of(&self, packet: &rtc::rtp::Packet) -> Option<String> {
        let by_ext = self
            .mid_ext
            .and_then(|id| packet.header.get_extension(id))
            .and_then(|v| std::str::from_utf8(&v).ok().map(str::to_string))
            .filter(|m| !m.is_empty());
        by_ext.or_else(|| self.by_payload_type.get(&packet.header.payload_type).cloned())
    }
}

/// `offer` with the `a=ssrc`/`a=ssrc-group` lines of the section `mid` replaced by one declaring
/// `ssrc` (`a=ssrc:<ssrc> cname:<cname>`, and its `msid` if the section had one): what the client
/// should have written.
pub fn declare_ssrc(offer: &str, mid: &str, ssrc: u32) -> String {
    let lines: Vec<&str> = offer.split("\r\n").collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 2);
    let mut section: Vec<&str> = vec![];
    let flush = |section: &mut Vec<&str>, out: &mut Vec<String>| {
        let this = section.iter().any(|l| l.strip_prefix("a=mid:").is_some_and(|m| m.trim() == mid));
        if !this {
            out.extend(section.drain(..).map(str::to_string));
            return;
        }
        let cname = section
            .iter()
            .find_map(|l| l.strip_prefix("a=ssrc:").and_then(|r| r.split_once(" cname:")).map(|(_, c)| c.to_string()))
            .unwrap_or_else(|| "tessera".to_string());
        let msid = section.iter().find_map(|l| l.strip_prefix("a=msid:").map(str::to_string)).or_else(|| {
            section.iter().find_map(|l| {
                l.strip_prefix("a=ssrc:").and_then(|r| r.split_once(" msid:")).map(|(_, m)| m.to_string())
            })
        });
        out.extend(
            section
                .drain(..)
                .filter(|l| !l.starts_with("a=ssrc:") && !l.starts_with("a=ssrc-group:"))
                .map(str::to_string),
        );
        out.push(format!("a=ssrc:{ssrc} cname:{cname}"));
        if let Some(m) = msid {
            out.push(format!("a=ssrc:{ssrc} msid:{m}"));
        }
    };
    for l in lines {
        if l.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        if l.is_empty() {
            continue;
        }
        section.push(l);
    }
    flush(&mut section, &mut out);
    out.join("\r\n") + "\r\n"
}

/// `offer` with a placeholder `a=ssrc` in every sending audio/video section that declares none
/// (and no `a=rid` simulcast layers). webrtc-rs refuses such an offer when it has more than one
/// media section ("no trackStreams found for SSRC"); with the placeholder it accepts it, and the
/// real SSRC is declared once its first packet arrives, as for a wrong declaration.
pub fn declare_missing_ssrcs(offer: &str) -> String {
    let lines: Vec<&str> = offer.split("\r\n").collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 4);
    let mut section: Vec<&str> = vec![];
    let flush = |section: &mut Vec<&str>, out: &mut Vec<String>| {
        let media = section.first().is_some_and(|l| l.starts_with("m=audio") || l.starts_with("m=video"));
        let sends = !section.iter().any(|l| *l == "a=recvonly" || *l == "a=inactive");
        let declared = section.iter().any(|l| l.starts_with("a=ssrc:") || l.starts_with("a=rid:"));
        let mid = section.iter().any(|l| l.starts_with("a=mid:"));
        out.extend(section.drain(..).map(str::to_string));
        if media && sends && mid && !declared {
            out.push(format!("a=ssrc:{} cname:tessera-placeholder", crate::ids::random_ssrc()));
        }
    };
    for l in lines {
        if l.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        if l.is_empty() {
            continue;
        }
        section.push(l);
    }
    flush(&mut section, &mut out);
    out.join("\r\n") + "\r\n"
}

/// `offer` with an `a=msid:tessera <kind>-<mid>` (RFC 8830) after the `a=mid` of every audio/video
/// section that names no track (neither `a=msid` nor an `a=ssrc ... msid:`). webrtc-rs keys the
/// remote tracks of a connection by track id: two unnamed sections would share the empty id, and
/// the second stream's packets would go to the first's track (webrtcbin 1.22 writes no `msid`);
/// it also only treats `a=rid` layers as simulcast when the section names its track.
pub fn name_unnamed_tracks(offer: &str) -> String {
    let lines: Vec<&str> = offer.split("\r\n").collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 4);
    let mut section: Vec<&str> = vec![];
    let flush = |section: &mut Vec<&str>, out: &mut Vec<String>| {
        let kind = section.first().and_then(|l| l.strip_prefix("m=")).and_then(|l| l.split(' ').next());
        let named =
            section.iter().any(|l| l.starts_with("a=msid:") || (l.starts_with("a=ssrc:") && l.contains(" msid:")));
        let mid = section.iter().find_map(|l| l.strip_prefix("a=mid:")).map(str::trim).map(str::to_string);
        let media = matches!(kind, Some("audio" | "video"));
        for l in section.drain(..) {
            out.push(l.to_string());
            if media
                && !named
                && let (Some(kind), Some(mid)) = (kind, &mid)
                && l.starts_with("a=mid:")
            {
                out.push(format!("a=msid:tessera {kind}-{mid}"));
            }
        }
    };
    for l in lines {
        if l.starts_with("m=") {
            flush(&mut section, &mut out);
        }
        if l.is_empty() {
            continue;
        }
        section.push(l);
    }
    flush(&mut section, &mut out);
    out.join("\r\n") + "\r\n"
}

/// An inbound RTP stream webrtc-rs did not bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unbound {
    /// Its SSRC.
    pub ssrc: u32,
    /// The m-section it belongs to, when its MID extension or payload type says.
    pub mid: Option<String>,
    /// Its payload type.
    pub payload_type: u8,
}

/// Watches inbound RTP for SSRCs webrtc-rs did not bind, reporting each once.
pub struct SsrcWatch {
    map: Arc<Mutex<Option<DemuxMap>>>,
    bound: HashSet<u32>,
    reported: HashSet<u32>,
    tx: mpsc::UnboundedSender<Unbound>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl SsrcWatch {
    /// A watch reporting to `tx`, classifying with the map put into `map` once the answer exists
    /// (nothing is reported before).
    pub fn new(map: Arc<Mutex<Option<DemuxMap>>>, tx: mpsc::UnboundedSender<Unbound>) -> Self {
        Self { map, bound: HashSet::new(), reported: HashSet::new(), tx, read: VecDeque::new(), write: VecDeque::new() }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for SsrcWatch {
    super::queued_passthrough!();

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        if let Packet::Rtp(p) = &msg.message.packet
            && !self.bound.contains(&p.header.ssrc)
            && !self.reported.contains(&p.header.ssrc)
            && let Some(map) = self.map.lock().unwrap().as_ref()
            && !map.repair.contains(&p.header.payload_type)
        {
            self.reported.insert(p.header.ssrc);
            let _ = self.tx.send(Unbound {
                ssrc: p.header.ssrc,
                mid: map.section_of(p),
                payload_type: p.header.payload_type,
            });
        }
        self.read.push_back(msg);
        Ok(())
    }
}

impl Interceptor for SsrcWatch {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.bound.insert(info.ssrc);
        self.bound.extend(info.ssrc_rtx);
        self.bound.extend(info.ssrc_fec);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.bound.remove(&info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\na=group:BUNDLE 0 1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:0\r\na=sendonly\r\na=msid:s t\r\na=rtpmap:96 VP8/90000\r\n\
        a=rtpmap:97 rtx/90000\r\na=ssrc-group:FID 11 12\r\na=ssrc:11 cname:cn\r\na=ssrc:12 cname:cn\r\n\
        m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\na=bundle-only\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
        a=ssrc:21 cname:cn\r\n";

    #[test]
    fn payload_types_and_the_mid_extension_name_the_section() {
        let answer = "v=0\r\nm=audio 9 X 111\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n";
        let map = DemuxMap::new(OFFER, answer);
        assert_eq!(map.mid_ext, Some(4));
        assert_eq!(map.by_payload_type.get(&96).map(String::as_str), Some("0"));
        assert_eq!(map.by_payload_type.get(&111).map(String::as_str), Some("1"));
        assert!(!map.by_payload_type.contains_key(&97), "RTX identifies no section");
        assert_eq!(map.repair, HashSet::from([97]), "and is never declared as a section's media");
        let mut p = rtc::rtp::Packet::default();
        p.header.payload_type = 111;
        assert_eq!(map.section_of(&p).as_deref(), Some("1"));
        p.header.payload_type = 5;
        assert_eq!(map.section_of(&p), None);
        // A payload type two sections share identifies neither.
        let shared =
            OFFER.replace("SAVPF 111", "SAVPF 96").replace("a=rtpmap:111 opus/48000/2", "a=rtpmap:96 VP8/90000");
        assert!(!DemuxMap::new(&shared, "").by_payload_type.contains_key(&96));
    }

    /// Chromium's RTX padding can come before its first video packet: only the video stream is
    /// reported for declaring, never the RTX one.
    #[test]
    fn an_undeclared_rtx_stream_is_not_reported_as_the_sections_media() {
        let map = Arc::new(Mutex::new(Some(DemuxMap::new(OFFER, ""))));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watch = SsrcWatch::new(map, tx);
        let packet = |ssrc: u32, payload_type: u8| {
            let mut p = rtc::rtp::Packet::default();
            (p.header.ssrc, p.header.payload_type) = (ssrc, payload_type);
            TaggedPacket {
                now: std::time::Instant::now(),
                transport: Default::default(),
                message: rtc::interceptor::AttributedPacket::new(Packet::Rtp(p)),
            }
        };
        watch.handle_read(packet(500, 97)).unwrap();
        watch.handle_read(packet(500, 97)).unwrap();
        assert!(rx.try_recv().is_err(), "RTX padding declares nothing");
        watch.handle_read(packet(600, 96)).unwrap();
        let u = rx.try_recv().unwrap();
        assert_eq!((u.ssrc, u.mid.as_deref(), u.payload_type), (600, Some("0"), 96));
        assert_eq!(watch.read.len(), 3, "every packet passes on");
    }

    #[test]
    fn the_real_ssrc_replaces_the_declared_ones_of_that_section_only() {
        let fixed = declare_ssrc(OFFER, "0", 99);
        let video: &str = fixed.split("m=audio").next().unwrap();
        assert!(!video.contains("a=ssrc:11") && !video.contains("a=ssrc-group"), "{video}");
        assert!(video.contains("a=ssrc:99 cname:cn\r\na=ssrc:99 msid:s t\r\n"), "{video}");
        assert!(fixed.contains("a=ssrc:21 cname:cn"), "the audio section is untouched");
        // A section that declared nothing gets a declaration.
        let none = OFFER.replace("a=ssrc:21 cname:cn\r\n", "");
        assert!(declare_ssrc(&none, "1", 7).ends_with("a=rtpmap:111 opus/48000/2\r\na=ssrc:7 cname:tessera\r\n"));
    }

    #[test]
    fn sections_without_a_track_name_get_one_per_mid() {
        let offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:video0\r\na=ssrc:5 cname:c\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:audio1\r\na=ssrc:6 cname:c\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=msid:s t\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n";
        let named = name_unnamed_tracks(offer);
        assert!(named.contains("a=mid:video0\r\na=msid:tessera video-video0\r\na=ssrc:5"), "{named}");
        assert!(named.contains("a=mid:audio1\r\na=msid:tessera audio-audio1\r\n"), "{named}");
        assert_eq!(named.matches("a=msid:").count(), 3, "{named}");
        // A named section keeps its name when its SSRC is declared again.
        let declared = declare_ssrc("v=0\r\nm=audio 9 X 111\r\na=mid:a\r\na=ssrc:1 msid:s t\r\n", "a", 9);
        assert!(declared.contains("a=ssrc:9 msid:s t"), "{declared}");
    }

    #[test]
    fn a_sending_section_without_a_declaration_gets_a_placeholder() {
        let none = OFFER.replace("a=ssrc:21 cname:cn\r\n", "");
        let fixed = declare_missing_ssrcs(&none);
        let audio = fixed.split("m=audio").nth(1).unwrap();
        assert!(audio.contains(" cname:tessera-placeholder\r\n"), "{audio}");
        assert_eq!(fixed.matches("tessera-placeholder").count(), 1, "the video section declared its own");
        let recvonly = none.replace("a=mid:1\r\na=bundle-only\r\na=sendonly", "a=mid:1\r\na=bundle-only\r\na=recvonly");
        assert!(!declare_missing_ssrcs(&recvonly).contains("placeholder"), "a receiving section needs none");
    }
}
