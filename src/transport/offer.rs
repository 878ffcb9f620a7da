//! Edits of a client's offer before webrtc-rs reads it: the remote candidates Tessera will not
//! send connectivity checks to. A server should not probe link-local, multicast or unspecified
//! addresses for strangers — `169.254.169.254:80` is a cloud's metadata service — and webrtc-rs
//! has no filter of its own (its `with_ip_filter` is a to-do). A line that does not parse as a
//! candidate goes too: webrtc-rs would refuse the whole offer for it. Pure functions over SDP.

use std::net::IpAddr;

/// Why a remote candidate is dropped, if it is.
pub fn refused_candidate(line: &str) -> Option<&'static str> {
    // a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 || fields[6] != "typ" || fields[5].parse::<u16>().is_err() {
        return Some("does not parse");
    }
    let Ok(ip) = fields[4].parse::<IpAddr>() else {
        // An mDNS name (`….local`): not resolved (mDNS is off), harmless to keep.
        return None;
    };
    let refused = match ip {
        IpAddr::V4(v) => v.is_link_local() || v.is_multicast() || v.is_unspecified() || v.is_broadcast(),
        IpAddr::V6(v) => {
            let seg = v.segments()[0];
            (seg & 0xffc0) == 0xfe80 || v.is_multicast() || v.is_unspecified()
        }
    };
    refused.then_some("link-local, multicast, broadcast or unspecified address")
}

/// `offer` without the candidate lines Tessera does not check ([`refused_candidate`]), and how
/// many were dropped.
pub fn filter_candidates(offer: &str) -> (String, usize) {
    let mut dropped = 0;
    let kept: Vec<&str> = offer
        .split("\r\n")
        .filter(|l| {
            let refuse = l.strip_prefix("a=candidate:").and_then(refused_candidate);
            if let Some(why) = refuse {
                tracing::debug!(candidate = %l, why, "remote candidate dropped");
                dropped += 1;
            }
            refuse.is_none()
        })
        .collect();
    (kept.join("\r\n"), dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_link_local_and_multicast_candidates_are_dropped() {
        let offer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=candidate:1 1 udp 2122260223 192.0.2.10 50000 typ host\r\n\
            a=candidate:2 1 udp 2122260223 169.254.169.254 80 typ host\r\n\
            a=candidate:3 1 udp 2122260223 fe80::1 50001 typ host\r\n\
            a=candidate:4 1 udp 2122260223 239.1.2.3 50002 typ host\r\n\
            a=candidate:5 1 udp 2122260223 0.0.0.0 9 typ host\r\n\
            a=candidate:6 1 udp 2122260223 4f3c2a.local 50003 typ host\r\n\
            a=candidate:7 garbage\r\n\
            a=candidate:8 1 udp 1686052607 203.0.113.5 61000 typ srflx raddr 192.0.2.10 rport 50000\r\n";
        let (out, dropped) = filter_candidates(offer);
        assert_eq!(dropped, 5, "{out}");
        for kept in ["192.0.2.10 50000", "4f3c2a.local", "203.0.113.5"] {
            assert!(out.contains(kept), "{kept} kept");
        }
        for gone in ["169.254.169.254", "fe80::1", "239.1.2.3", "0.0.0.0 9", "garbage"] {
            assert!(!out.contains(gone), "{gone} dropped");
        }
        assert!(out.ends_with("rport 50000\r\n"));
    }
}
