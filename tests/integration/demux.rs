//! Inbound demultiplexing that survives a wrong or missing `a=ssrc` (RFC 8843 §9.2): a publisher
//! whose offer declares other SSRCs than it sends (as `webrtcbin` 1.22 sometimes does) is still
//! seen and heard, found by its streams' payload types; the room JSON counts the streams declared
//! after the fact.

use std::time::Duration;

use crate::common::{self, PeerOpts, Via, close, tone_db};

/// Every `a=ssrc:N` / `a=ssrc-group:… N …` number of the offer, plus one: SSRCs the client
/// does not send.
fn wrong_ssrcs(sdp: String) -> String {
    let bump = |l: &str, prefix: &str| -> String {
        let rest = &l[prefix.len()..];
        let mut out = prefix.to_string();
        for (i, tok) in rest.split(' ').enumerate() {
            if i > 0 {
                out.push(' ');
            }
            match tok.parse::<u32>() {
                Ok(n) => out.push_str(&n.wrapping_add(1).to_string()),
                Err(_) => out.push_str(tok),
            }
        }
        out
    };
    sdp.split("\r\n")
        .map(|l| {
            if l.starts_with("a=ssrc-group:") {
                bump(l, "a=ssrc-group:")
            } else if let Some(rest) = l.strip_prefix("a=ssrc:") {
                let (n, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                format!("a=ssrc:{} {tail}", n.parse::<u32>().map_or(0, |n| n.wrapping_add(1)))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// No `a=ssrc` at all.
fn no_ssrcs(sdp: String) -> String {
    sdp.split("\r\n").filter(|l| !l.starts_with("a=ssrc")).collect::<Vec<_>>().join("\r\n")
}

async fn publisher_with_bad_ssrcs_is_seen_and_heard(edit: fn(String) -> String, room: &str) {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let mut o = PeerOpts::publisher("odd", (40, 120, 230), 700.0);
    o.via = Via::Whip;
    o.receive = false;
    o.offer_edit = Some(edit);
    let odd = common::join(srv.addr, room, o).await;
    let viewer = common::join(srv.addr, room, PeerOpts::viewer("viewer")).await;
    let f = viewer.wait_frame(Duration::from_secs(20), |f| close(f.colour_at(640, 360, 60), (40, 120, 230), 45)).await;
    let centre = f.as_ref().map(|f| f.colour_at(640, 360, 60));
    let s = viewer.audio_window(48000, Duration::from_secs(10)).await;
    let room_json = common::room_json(srv.addr, room).await;
    let p = room_json["participants"].as_array().unwrap().iter().find(|p| p["id"] == odd.id.as_str()).cloned().unwrap();
    assert!(centre.is_some_and(|c| close(c, (40, 120, 230), 45)), "its video is not in the grid ({centre:?}): {p}");
    assert!(tone_db(&s, 700.0) > -30.0, "its audio is not in the mix: {:.1} dB; {p}", tone_db(&s, 700.0));
    assert_eq!(p["publishes"]["audio"], true, "{p}");
    assert_eq!(p["publishes"]["video"], true, "{p}");
    assert!(p["streams_redeclared"].as_u64().is_some_and(|n| n >= 2), "both streams declared after the fact: {p}");
    assert_eq!(p["streams_unmapped"], 0, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_offer_declares_wrong_ssrcs_is_seen_and_heard() {
    publisher_with_bad_ssrcs_is_seen_and_heard(wrong_ssrcs, "wrong-ssrc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_whose_offer_declares_no_ssrc_is_seen_and_heard() {
    publisher_with_bad_ssrcs_is_seen_and_heard(no_ssrcs, "no-ssrc").await;
}
