//! Edits of the answer webrtc-rs writes, before it goes to the client: sections Tessera rejects
//! (RFC 3264 §6: port 0; RFC 8843 §7.3.3: out of the BUNDLE group), and the candidates Tessera
//! announces (the shared ports on its own addresses, or a public address behind 1:1 NAT — the
//! driver only knows the address it bound). Pure functions over SDP text.

use std::net::IpAddr;

/// A host candidate Tessera announces (RFC 8445 §5.1.1.1; TCP per RFC 6544, passive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCandidate {
    /// Address clients reach the server at.
    pub ip: IpAddr,
    /// Port.
    pub port: u16,
    /// ICE-TCP passive (else UDP).
    pub tcp: bool,
}

impl HostCandidate {
    /// The `a=candidate` line for the `index`-th candidate of its transport: component 1 (RTP and
    /// RTCP are multiplexed), host type preference 126 for UDP; TCP after every UDP one (type
    /// preference 80, local preference with the passive direction, RFC 6544 §4.2).
    pub fn line(&self, index: usize) -> String {
        let i = index.min(8000) as u32;
        let (foundation, transport, priority, suffix) = if self.tcp {
            (format!("2{index}"), "tcp", (80u32 << 24) | (((4u32 << 13) + 8191 - i) << 8) | 255, " tcptype passive")
        } else {
            (format!("1{index}"), "udp", (126u32 << 24) | ((65535 - i) << 8) | 255, "")
        };
        format!("a=candidate:{foundation} 1 {transport} {priority} {} {} typ host{suffix}", self.ip, self.port)
    }
}

/// Replaces every `a=candidate` (and `a=end-of-candidates`) line of `sdp` with `candidates`,
/// followed by `a=end-of-candidates`, where the first one was (else at the end of the first
/// m-section): the answer is complete, there is no trickle.
pub fn replace_candidates(sdp: &str, candidates: &[HostCandidate]) -> String {
    let lines: Vec<&str> = sdp.split("\r\n").collect();
    let first_m = lines.iter().position(|l| l.starts_with("m="));
    let at = lines.iter().position(|l| l.starts_with("a=candidate:")).or_else(|| {
        let m = first_m?;
        Some(lines.iter().skip(m + 1).position(|l| l.starts_with("m=")).map_or(lines.len(), |p| m + 1 + p))
    });
    let (mut udp, mut tcp) = (0, 0);
    let ours: Vec<String> = candidates
        .iter()
        .map(|c| {
            let n = if c.tcp { &mut tcp } else { &mut udp };
            *n += 1;
            c.line(*n - 1)
        })
        .chain(std::iter::once("a=end-of-candidates".to_string()))
        .collect();
    let mut out: Vec<String> = vec![];
    for (i, l) in lines.iter().enumerate() {
        if Some(i) == at {
            out.extend(ours.iter().cloned());
        }
        if l.starts_with("a=candidate:") || *l == "a=end-of-candidates" {
            continue;
        }
        out.push(l.to_string());
    }
    if at.is_some_and(|a| a >= lines.len()) {
        // Candidates go before the trailing empty line of a CRLF-terminated SDP.
        let last = out.pop();
        out.extend(ours);
        out.extend(last);
    }
    out.join("\r\n")
}

/// Announces each host candidate of `sdp` at `public` addresses instead of its own (1:1 NAT: a
/// cloud VM's public address), one line per address, keeping ports and everything else.
pub fn publish_host_candidates(sdp: &str, public: &[IpAddr]) -> String {
    if public.is_empty() {
        return sdp.to_string();
    }
    let mut out: Vec<String> = vec![];
    for l in sdp.split("\r\n") {
        let fields: Vec<&str> = l.split(' ').collect();
        // a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ host ...
        if l.starts_with("a=candidate:") && fields.len() >= 8 && fields[7] == "host" {
            for (k, ip) in public.iter().enumerate() {
                let mut f: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
                f[0] = format!("{}{k}", f[0]);
                f[4] = ip.to_string();
                out.push(f.join(" "));
            }
        } else {
            out.push(l.to_string());
        }
    }
    out.join("\r\n")
}

/// Rejects the m-sections whose `a=mid` is in `mids`: their `m=` port becomes 0 and they leave
/// the `a=group:BUNDLE` line. Other lines are kept as they are (CRLF line ends).
pub fn reject_sections(sdp: &str, mids: &[&str]) -> String {
    if mids.is_empty() {
        return sdp.to_string();
    }
    let lines: Vec<&str> = sdp.split("\r\n").collect();
    // Index of each section's first line, and its mid.
    let mut sections: Vec<(usize, Option<&str>)> = vec![];
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("m=") {
            sections.push((i, None));
        } else if let (Some(mid), Some(last)) = (l.strip_prefix("a=mid:"), sections.last_mut()) {
            last.1 = Some(mid.trim());
        }
    }
    let rejected_starts: Vec<usize> =
        sections.iter().filter(|(_, mid)| mid.is_some_and(|m| mids.contains(&m))).map(|(i, _)| *i).collect();
    let out: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if rejected_starts.contains(&i) {
                // m=<media> <port> <proto> <fmt ...>
                let mut parts: Vec<&str> = l.split(' ').collect();
                if parts.len() > 1 {
                    parts[1] = "0";
                }
                parts.join(" ")
            } else if let Some(group) = l.strip_prefix("a=group:BUNDLE") {
                let kept: Vec<&str> = group.split_whitespace().filter(|m| !mids.contains(m)).collect();
                format!("a=group:BUNDLE {}", kept.join(" ")).trim_end().to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    out.join("\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_section_gets_port_zero_and_leaves_the_bundle() {
        let sdp = "v=0\r\na=group:BUNDLE 0 1 2\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\n";
        let out = reject_sections(sdp, &["2"]);
        assert!(out.contains("a=group:BUNDLE 0 1\r\n"), "{out}");
        assert!(out.contains("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1"));
        assert!(out.contains("m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:2"));
        assert!(out.ends_with("\r\n"));
        assert_eq!(reject_sections(sdp, &[]), sdp);
    }

    const ANSWER: &str = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40001 typ host\r\n\
                          a=candidate:2 1 tcp 1 127.0.0.1 9 typ host tcptype active\r\na=end-of-candidates\r\n\
                          m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n";

    #[test]
    fn the_shared_ports_are_announced_instead_of_the_drivers_candidates() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let out = replace_candidates(
            ANSWER,
            &[HostCandidate { ip, port: 7882, tcp: false }, HostCandidate { ip, port: 7881, tcp: true }],
        );
        let cands: Vec<&str> = out.lines().filter(|l| l.starts_with("a=candidate")).collect();
        assert_eq!(cands.len(), 2, "{out}");
        assert!(cands[0].ends_with("udp 2130706431 192.0.2.7 7882 typ host"), "{}", cands[0]);
        assert!(cands[1].contains(" tcp ") && cands[1].ends_with("192.0.2.7 7881 typ host tcptype passive"));
        assert_eq!(out.matches("a=end-of-candidates").count(), 1);
        // Still in the first section, before the second.
        assert!(out.find("7881").unwrap() < out.find("m=video").unwrap());
        assert!(out.ends_with("a=mid:1\r\n"));
        // No candidate lines at all: they go at the end of the first section.
        let bare = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\n";
        let out = replace_candidates(bare, &[HostCandidate { ip, port: 1, tcp: false }]);
        assert!(out.starts_with("v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=candidate:10 1 udp"), "{out}");
        assert!(out.ends_with("a=end-of-candidates\r\n"));
    }

    #[test]
    fn host_candidates_are_published_at_the_public_address() {
        let out = publish_host_candidates(ANSWER, &["198.51.100.1".parse().unwrap()]);
        assert!(out.contains("a=candidate:10 1 udp 2130706431 198.51.100.1 40001 typ host"), "{out}");
        assert_eq!(publish_host_candidates(ANSWER, &[]), ANSWER);
    }
}
