//! Property tests (proptest, stable toolchain) that feed arbitrary and mutated-valid input to
//! everything that parses what a stranger sends: offer planning and the offer edits before
//! webrtc-rs (SDP), inbound RTP (keyframe and VP8 size detection, header extensions, the MID/PT
//! demultiplexer, simulcast layer switching, frame grouping, the audio jitter buffer), inbound
//! RTCP (keyframe requests), the STUN routing of the shared UDP port, the data-channel messages
//! (chat protocol) and access tokens. Each must answer or refuse, never panic, and keep the
//! invariants stated per target.
//!
//! `cargo test --release --test fuzz` runs each target for `PROPTEST_CASES` cases (default 256:
//! the whole file takes about a second). `FUZZ_SECS=N` instead runs each target for N seconds
//! with fresh seeds, printing the cases run (`benches/fuzz.sh N`). A failure prints the shrunk
//! input; each one found has a plain regression test beside the code it broke (`sdp.rs`:
//! `a_profile_level_id_of_multibyte_characters_is_no_h264`, `refusals_quote_the_offer_on_one_line`;
//! `events.rs`: `chat_limits`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use rtc::shared::marshal::{Marshal, Unmarshal};
use tessera::codec::{self, VideoCodec};
use tessera::media::audio::jitter::{JitterBuffer, Pop};
use tessera::media::ingest::FrameAssembler;
use tessera::media::simulcast::{Arrival, LayerSwitch, Verdict};
use tessera::room::events::{CHAT_MAX_CHARS, ClientMessage, RateLimit, check_chat};
use tessera::signaling::auth::{Auth, Grants, Need};
use tessera::signaling::sdp::{self, Endpoint};
use tessera::transport::{demux, offer, rtcp, stun};

/// Runs `test` on values of `strategy`: `PROPTEST_CASES` cases, or for `FUZZ_SECS` seconds.
/// Panics with the shrunk failing input.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let secs: Option<u64> = std::env::var("FUZZ_SECS").ok().and_then(|s| s.parse().ok());
    // Crashers become plain regression tests; no proptest-regressions files.
    let base = Config { failure_persistence: None, ..Config::default() };
    let Some(secs) = secs else {
        if let Err(e) = TestRunner::new(base).run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        return;
    };
    let (start, mut cases) = (Instant::now(), 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        let config = Config { cases: 2000, ..base.clone() };
        if let Err(e) = TestRunner::new(config.clone()).run(&strategy, &test) {
            panic!("{name}: after {cases} cases: {e}");
        }
        cases += u64::from(config.cases);
    }
    println!("FUZZ {name}: {cases} cases in {:.0} s, no failure", start.elapsed().as_secs_f64());
}

// ---- SDP offers ----

/// Offers as Chrome (simulcast, every codec), Firefox (bundle-only, mDNS, link-local), webrtcbin
/// (no msid, upper-case OPUS) and a WHEP player write them.
const OFFERS: [&str; 4] = [
    include_str!("corpus/chrome.sdp"),
    include_str!("corpus/firefox.sdp"),
    include_str!("corpus/webrtcbin.sdp"),
    include_str!("corpus/whep-h264.sdp"),
];

/// Lines that look like SDP, the kind a mutation splices in.
fn sdp_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "a=[a-z-]{1,14}(:[ -~]{0,40})?",
        "m=(audio|video|application|text|) [0-9]{1,6}(/[0-9])? [A-Z/]{0,20}( [0-9]{1,4}){0,6}",
        "a=rtpmap:[0-9]{1,4} (VP8|H264|opus|OPUS|rtx|red|[A-Za-z0-9]{0,8})(/[0-9]{0,6}(/[0-9]{1,2})?)?",
        "a=fmtp:[0-9]{1,3} ([a-z-]{1,20}=[ -~]{0,12};?){0,4}",
        "a=fmtp:(96|97|102|106|126|[0-9]{1,3}) packetization-mode=1;profile-level-id=.{0,8}",
        "a=rtpmap:(96|97|102|106|126) (H264|VP8)/90000",
        "a=extmap:[0-9]{1,4}(/(sendonly|recvonly))? (urn:ietf:params:rtp-hdrext:(sdes:mid|ssrc-audio-level)|[ -~]{0,30})",
        "a=mid:[ -~]{0,10}",
        "a=candidate:[0-9]{1,3} [0-9] (udp|tcp|UDP) [0-9]{1,10} ([0-9.]{7,15}|[0-9a-f:]{2,39}|[a-z0-9-]{1,20}\\.local) [0-9]{1,6} typ (host|srflx|relay)( raddr [ -~]{0,20})?",
        "a=candidate:[ -~]{0,80}",
        "a=ssrc:[0-9]{0,12} (cname|msid):[ -~]{0,20}",
        "a=ssrc-group:FID( [0-9]{1,10}){0,3}",
        "a=(sendonly|recvonly|inactive|sendrecv|bundle-only|rtcp-mux)",
        "a=rid:[a-z]{0,3} (send|recv)",
        "a=group:BUNDLE( [ -~]{1,6}){0,4}",
        "(v|o|s|t|c|b)=[ -~]{0,40}",
        ".{0,40}",
    ]
}

/// One edit of an offer's lines (indices are taken modulo the line count).
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Replace(usize, String),
    Insert(usize, String),
    /// Put text at a byte offset of a line (on a character boundary).
    Splice(usize, usize, String),
    /// [`Edit::Splice`] into the n-th line of one kind ([`KINDS`]): where parsing happens.
    SpliceKind(usize, usize, usize, String),
    /// Cut the whole text at a byte offset (on a character boundary).
    Truncate(usize),
    /// Use `\n` line ends instead of `\r\n`.
    BareNewlines,
}

/// Line kinds Tessera reads itself.
const KINDS: [&str; 8] = ["a=fmtp:", "a=rtpmap:", "a=mid:", "a=extmap:", "a=candidate:", "a=ssrc:", "m=", "a=rid:"];

fn edit() -> impl Strategy<Value = Edit> {
    let i = any::<usize>();
    prop_oneof![
        i.prop_map(Edit::Delete),
        i.prop_map(Edit::Duplicate),
        (i, i).prop_map(|(a, b)| Edit::Swap(a, b)),
        (i, sdp_line()).prop_map(|(a, l)| Edit::Replace(a, l)),
        (i, sdp_line()).prop_map(|(a, l)| Edit::Insert(a, l)),
        (i, i, ".{0,12}").prop_map(|(a, b, s)| Edit::Splice(a, b, s)),
        (0..KINDS.len(), i, i, ".{0,6}").prop_map(|(k, a, b, s)| Edit::SpliceKind(k, a, b, s)),
        i.prop_map(Edit::Truncate),
        Just(Edit::BareNewlines),
    ]
}

fn floor_boundary(s: &str, at: usize) -> usize {
    (0..=at.min(s.len())).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

fn apply(offer: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = offer.split("\r\n").map(str::to_string).collect();
    let mut bare = false;
    let mut cut = None;
    for e in edits {
        let n = lines.len().max(1);
        match e {
            Edit::Delete(i) if !lines.is_empty() => drop(lines.remove(i % n)),
            Edit::Duplicate(i) if !lines.is_empty() => lines.insert(i % n, lines[i % n].clone()),
            Edit::Swap(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
            Edit::Replace(i, l) if !lines.is_empty() => lines[i % n] = l.clone(),
            Edit::Insert(i, l) => lines.insert(i % (lines.len() + 1), l.clone()),
            Edit::Splice(i, at, s) if !lines.is_empty() => {
                let line = &mut lines[i % n];
                let at = floor_boundary(line, at % (line.len() + 1));
                line.insert_str(at, s);
            }
            Edit::SpliceKind(k, i, at, s) => {
                let of_kind: Vec<usize> = (0..lines.len()).filter(|&j| lines[j].starts_with(KINDS[*k])).collect();
                if !of_kind.is_empty() {
                    let line = &mut lines[of_kind[i % of_kind.len()]];
                    let at = floor_boundary(line, at % (line.len() + 1));
                    line.insert_str(at, s);
                }
            }
            Edit::Truncate(at) => cut = Some(*at),
            Edit::BareNewlines => bare = true,
            _ => {}
        }
    }
    let mut text = lines.join(if bare { "\n" } else { "\r\n" });
    if let Some(at) = cut {
        text.truncate(floor_boundary(&text, at % (text.len() + 1)));
    }
    text
}

/// Everything Tessera does with an offer's text before webrtc-rs reads it, for every endpoint.
fn plan_everything(text: &str) -> Result<(), TestCaseError> {
    for endpoint in [Endpoint::Participant, Endpoint::Whip, Endpoint::Whep] {
        match sdp::plan(text, endpoint) {
            Ok(p) => {
                let s = &p.session;
                prop_assert!(s.publish_audio || s.publish_video || s.receive_audio || s.receive_video.is_some());
                if endpoint == Endpoint::Whep {
                    prop_assert!(!s.publish_audio && !s.publish_video, "a WHEP plan publishes: {s:?}");
                }
                if endpoint == Endpoint::Whip {
                    prop_assert!(!s.receive_audio && s.receive_video.is_none(), "a WHIP plan receives: {s:?}");
                }
            }
            Err(e) => {
                let reason = e.to_string();
                prop_assert!(!reason.is_empty() && !reason.contains('\n'), "not a one-line reason: {reason:?}");
            }
        }
    }
    let (filtered, _) = offer::filter_candidates(text);
    let named = demux::name_unnamed_tracks(&demux::declare_missing_ssrcs(&filtered));
    let map = demux::DemuxMap::new(&named, text);
    for mid in map.by_payload_type.values() {
        let _ = demux::declare_ssrc(&named, mid, 0xdead_beef);
    }
    let _ = demux::declare_ssrc(&named, "0", 1);
    let _ = sdp::plan(&named, Endpoint::Participant);
    for media in ["audio", "video"] {
        for uri in [codec::extmap::MID, codec::extmap::AUDIO_LEVEL, codec::extmap::RID] {
            let _ = codec::extmap_id(text, media, uri);
        }
    }
    Ok(())
}

#[test]
fn offers_mutated_from_real_ones_are_planned_or_refused_with_a_reason() {
    let strategy = (0..OFFERS.len(), prop::collection::vec(edit(), 1..8));
    fuzz("sdp_mutated", strategy, |(which, edits)| plan_everything(&apply(OFFERS[which], &edits)));
}

#[test]
fn arbitrary_text_offers_are_planned_or_refused_with_a_reason() {
    let strategy = prop_oneof![
        ".{0,300}",
        "v=0\r\n[ -~\r\n]{0,300}",
        prop::collection::vec(sdp_line(), 0..30).prop_map(|l| format!("v=0\r\n{}\r\n", l.join("\r\n"))),
    ];
    fuzz("sdp_arbitrary", strategy, |text: String| plan_everything(&text));
}

#[test]
fn the_real_offers_are_planned() {
    for (i, o) in OFFERS.iter().enumerate() {
        let endpoint = if i == 3 {
            Endpoint::Whep
        } else if i == 2 {
            Endpoint::Whip
        } else {
            Endpoint::Participant
        };
        assert!(sdp::plan(o, endpoint).is_ok(), "offer {i}: {:?}", sdp::plan(o, endpoint));
    }
}

// ---- Inbound RTP ----

/// RTP packets as publishers send them (VP8 or H.264 payloads, one-byte or two-byte header
/// extensions with MID and audio level), then with bytes overwritten and cut.
fn rtp_packet() -> impl Strategy<Value = Vec<u8>> {
    let payload = prop_oneof![
        // VP8 descriptors: S bit, X with I/L/T/K, 7/15-bit picture ids; then a keyframe header.
        (any::<u8>(), any::<u8>(), any::<u16>(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(
            |(b0, b1, pic, rest)| {
                let mut p = vec![b0 | 0x10, b1];
                p.extend_from_slice(&pic.to_be_bytes());
                p.extend_from_slice(&[0x50, 0x2a, 0x01, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
                p.extend(rest);
                p
            }
        ),
        // H.264: single NAL, STAP-A with sizes, FU-A.
        (prop::sample::select(vec![1u8, 5, 7, 8, 24, 28]), prop::collection::vec(any::<u8>(), 0..60)).prop_map(
            |(t, rest)| {
                let mut p = vec![0x60 | t];
                p.extend(rest);
                p
            }
        ),
        prop::collection::vec(any::<u8>(), 0..200),
    ];
    let ext = prop::collection::vec((1u8..15, prop::collection::vec(any::<u8>(), 1..8)), 0..4);
    (any::<u16>(), any::<u32>(), any::<u32>(), any::<bool>(), 0u8..128, ext, payload, any::<bool>()).prop_map(
        |(seq, ts, ssrc, marker, pt, ext, payload, two_byte)| {
            let mut h = rtc::rtp::Header {
                version: 2,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                marker,
                payload_type: pt,
                ..Default::default()
            };
            if !ext.is_empty() {
                h.extension = true;
                h.extension_profile = if two_byte { 0x1000 } else { 0xBEDE };
                for (id, v) in ext {
                    let _ = h.set_extension(id, Bytes::from(v));
                }
            }
            let p = rtc::rtp::Packet { header: h, payload: Bytes::from(payload) };
            p.marshal().map(|b| b.to_vec()).unwrap_or_default()
        },
    )
}

fn mutated(bytes: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (bytes, prop::collection::vec((any::<usize>(), any::<u8>()), 0..4), any::<Option<usize>>()).prop_map(
        |(mut b, writes, cut)| {
            if !b.is_empty() {
                let n = b.len();
                for (i, v) in writes {
                    b[i % n] = v;
                }
            }
            if let Some(c) = cut {
                b.truncate(c % (b.len() + 1));
            }
            b
        },
    )
}

/// What Tessera reads of one inbound RTP datagram.
fn read_rtp(bytes: &[u8]) -> Result<(), TestCaseError> {
    for c in [VideoCodec::Vp8, VideoCodec::H264] {
        let _ = codec::is_keyframe_start(c, bytes);
    }
    if let Some((w, h)) = codec::vp8_keyframe_size(bytes) {
        prop_assert!(w < 1 << 14 && h < 1 << 14);
    }
    let Ok(p) = rtc::rtp::Packet::unmarshal(&mut Bytes::copy_from_slice(bytes)) else { return Ok(()) };
    for c in [VideoCodec::Vp8, VideoCodec::H264] {
        let _ = codec::is_keyframe_start(c, &p.payload);
    }
    let _ = codec::vp8_keyframe_size(&p.payload);
    for id in 0..=15 {
        // The audio level (RFC 6464) as `receive_audio` reads it.
        let _ = p.header.get_extension(id).and_then(|b| b.first().map(|l| l & 0x7f));
    }
    let offer = OFFERS[0];
    for mid_ext in [None, Some(4), p.header.get_extension_ids().first().copied()] {
        let map = demux::DemuxMap { mid_ext, ..demux::DemuxMap::new(offer, "") };
        let _ = map.section_of(&p);
    }
    Ok(())
}

#[test]
fn inbound_rtp_is_read_or_dropped() {
    let strategy = prop_oneof![prop::collection::vec(any::<u8>(), 0..300), mutated(rtp_packet())];
    fuzz("rtp", strategy, |b| read_rtp(&b));
}

#[test]
fn simulcast_switching_and_frame_grouping_take_any_packet_order() {
    let arrival =
        (0u32..4, any::<u16>(), any::<u32>(), 0usize..1500, any::<bool>(), any::<Option<(u16, u16)>>(), 0u64..3000);
    let strategy = (prop::collection::vec(arrival, 1..80), prop::collection::vec(any::<Option<u16>>(), 0..6));
    fuzz("simulcast", strategy, |(arrivals, widths)| {
        let t0 = Instant::now();
        let mut s = LayerSwitch::default();
        for (ssrc, rid) in [(1, "q"), (2, "h"), (3, "f")] {
            s.add_layer(ssrc, rid);
        }
        let mut frames = FrameAssembler::default();
        let mut widths = widths.into_iter();
        let (mut now, mut grouped, mut pushed) = (t0, 0usize, 0usize);
        for (i, (ssrc, seq, ts, bytes, keyframe, size, dt)) in arrivals.into_iter().enumerate() {
            now += Duration::from_millis(dt);
            let size = size.map(|(w, h)| (u32::from(w), u32::from(h)));
            let a = Arrival { ssrc, seq, ts, bytes, keyframe, size };
            if let Verdict::Forward { .. } = s.on_packet(now, a) {
                prop_assert!(s.current().is_some(), "forwarded with no current layer");
            }
            if i % 10 == 0
                && let Some(w) = widths.next()
            {
                let _ = s.set_tile_width(w.map(u32::from));
            }
            pushed += 1;
            frames.push(Bytes::from(vec![0u8; 12]), ts, keyframe, |f| grouped += f.len());
        }
        prop_assert!(grouped <= pushed);
        Ok(())
    });
}

#[test]
fn the_audio_jitter_buffer_plays_each_packet_once_in_any_arrival_order() {
    // Push (a sequence number) or tick.
    let op =
        prop_oneof![any::<u16>().prop_map(Some), Just(None), (0u16..8).prop_map(|d| Some(30_000u16.wrapping_add(d)))];
    fuzz("jitter", prop::collection::vec(op, 1..300), |ops| {
        let mut j = JitterBuffer::default();
        let mut played = std::collections::HashSet::new();
        let mut n = 0u32;
        for op in ops {
            match op {
                Some(seq) => {
                    n += 1;
                    j.push(seq, Bytes::from(n.to_be_bytes().to_vec()));
                }
                None => {
                    if let Pop::Packet(p) = j.pop() {
                        prop_assert!(played.insert(p.clone()), "packet {p:?} played twice");
                    }
                }
            }
        }
        let _ = j.take_overflowed();
        Ok(())
    });
}

// ---- Inbound RTCP ----

fn rtcp_compound() -> impl Strategy<Value = Vec<u8>> {
    use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use rtc::rtcp::receiver_report::ReceiverReport;
    (any::<u32>(), any::<u32>(), any::<u8>(), 0usize..3).prop_map(|(a, b, n, which)| {
        let pli = PictureLossIndication { sender_ssrc: a, media_ssrc: b };
        let fir =
            FullIntraRequest { sender_ssrc: a, media_ssrc: b, fir: vec![FirEntry { ssrc: b, sequence_number: n }] };
        let rr = ReceiverReport { ssrc: a, ..Default::default() };
        let packets: Vec<Box<dyn rtc::rtcp::Packet>> = match which {
            0 => vec![Box::new(rr), Box::new(pli)],
            1 => vec![Box::new(rr), Box::new(fir)],
            _ => vec![Box::new(pli), Box::new(fir), Box::new(rr)],
        };
        rtc::rtcp::packet::marshal(&packets).map(|b| b.to_vec()).unwrap_or_default()
    })
}

#[test]
fn inbound_rtcp_is_read_or_dropped() {
    let strategy = prop_oneof![prop::collection::vec(any::<u8>(), 0..200), mutated(rtcp_compound())];
    fuzz("rtcp", strategy, |b| {
        if let Ok(packets) = rtc::rtcp::packet::unmarshal(&mut Bytes::from(b)) {
            for p in &packets {
                let _ = rtcp::is_keyframe_request(p.as_ref());
            }
        }
        Ok(())
    });
}

// ---- STUN on the shared UDP port ----

fn binding_request() -> impl Strategy<Value = Vec<u8>> {
    ("[ -~]{0,40}", prop::collection::vec(any::<u8>(), 0..24)).prop_map(|(user, extra)| {
        let mut attrs = vec![0x80, 0x2a, 0x00, extra.len() as u8];
        attrs.extend(&extra);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        attrs.extend_from_slice(&[0x00, 0x06]);
        attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attrs.extend_from_slice(user.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        p.extend_from_slice(&[7; 12]);
        p.extend(attrs);
        p
    })
}

#[test]
fn datagrams_on_the_shared_port_are_routed_or_dropped() {
    let strategy = prop_oneof![prop::collection::vec(any::<u8>(), 0..100), mutated(binding_request())];
    fuzz("stun", strategy, |p| {
        if stun::is_stun(&p) {
            let _ = (stun::kind(&p), stun::transaction_id(&p));
        }
        if let Some(ufrag) = stun::local_ufrag(&p) {
            prop_assert!(!ufrag.contains(':'));
        }
        Ok(())
    });
}

// ---- Data channel (chat protocol) ----

#[test]
fn data_channel_messages_are_acted_on_or_refused() {
    let valid = prop_oneof![
        ".{0,1200}".prop_map(|t| serde_json::json!({"type": "chat", "text": t}).to_string()),
        (any::<Option<bool>>(), any::<Option<bool>>())
            .prop_map(|(a, v)| serde_json::json!({"type": "mute", "audio": a, "video": v}).to_string()),
    ];
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        mutated(valid.prop_map(String::into_bytes)),
        "\\{\"type\": ?\"[a-z_]{0,8}\"(, ?\"[a-z]{0,6}\": ?(true|null|\"[ -~]{0,10}\"|[0-9]{1,30}|\\[\\]|\\{\\}))*\\}"
            .prop_map(String::into_bytes),
    ];
    fuzz("chat", strategy, |data| {
        if let Ok(ClientMessage::Chat { text }) = serde_json::from_slice::<ClientMessage>(&data)
            && let Ok(kept) = check_chat(&text)
        {
            prop_assert!(!kept.is_empty() && kept.chars().count() <= CHAT_MAX_CHARS);
            prop_assert!(kept.chars().all(|c| !c.is_control() || c == '\n'), "{kept:?}");
        }
        Ok(())
    });
}

#[test]
fn the_chat_rate_limit_takes_any_clock() {
    fuzz("chat_rate", prop::collection::vec(0u64..2_000, 1..200), |steps| {
        let t0 = Instant::now();
        let mut r = RateLimit::new(5.0, t0);
        let (mut now, mut allowed) = (t0, 0u64);
        for ms in steps {
            now += Duration::from_millis(ms);
            allowed += u64::from(r.allow(now));
        }
        // A burst of 5, then 5 a second.
        let bound = 5 + (now - t0).as_secs_f64().ceil() as u64 * 5;
        prop_assert!(allowed <= bound, "{allowed} allowed, at most {bound}");
        Ok(())
    });
}

// ---- Access tokens ----

#[test]
fn tokens_that_are_not_exactly_minted_grant_nothing_more() {
    let auth = Auth::new(Some("fuzz-secret"));
    let grants = Grants { publish: true, subscribe: false, admin: false };
    let token = auth.mint("room", "alice", Some("Alice"), grants, Duration::from_secs(3600));
    let edits = prop::collection::vec((any::<usize>(), "[ -~]{0,3}", any::<bool>()), 1..4);
    let strategy = prop_oneof![
        edits.prop_map(move |e| {
            let mut t = token.clone();
            for (at, s, delete) in e {
                let at = at % (t.len() + 1);
                if delete && at < t.len() {
                    t.remove(at);
                } else {
                    t.insert_str(at, &s);
                }
            }
            format!("Bearer {t}")
        }),
        "(Bearer|bearer|Basic|) ?[ -~]{0,200}",
        "Bearer [A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,43}",
    ];
    fuzz("token", strategy, |value| {
        let mut headers = axum::http::HeaderMap::new();
        if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
            headers.insert(axum::http::header::AUTHORIZATION, v);
        }
        for (room, need) in [(Some("room"), Need::Member), (Some("room"), Need::Admin), (None, Need::Member)] {
            if let Ok(Some(claims)) = auth.check(&headers, room, need) {
                prop_assert_eq!(&claims.sub, "alice", "{}", value);
                prop_assert_eq!(claims.grants, grants);
                prop_assert!(need != Need::Admin);
                prop_assert!(claims.covers("room") && room == Some("room"));
            }
        }
        Ok(())
    });
}
