//! Edits of the answer webrtc-rs writes, before it goes to the client: sections Tessera rejects
//! (RFC 3264 §6: port 0; RFC 8843 §7.3.3: out of the BUNDLE group). Pure functions over SDP text.

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
}
