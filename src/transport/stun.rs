//! The little of STUN (RFC 5389) the shared UDP and TCP ports need to route a datagram to its
//! peer connection before ICE has paired it: is it STUN, a Binding request or response, its
//! transaction id, and the local ICE ufrag in its `USERNAME` (RFC 8445 §7.2.2: `<receiver's
//! ufrag>:<sender's ufrag>`). Pure functions over bytes.

/// The fixed magic cookie of RFC 5389 §6.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// STUN header length, bytes.
const HEADER: usize = 20;
/// Attribute type of `USERNAME` (RFC 5389 §15.3).
const USERNAME: u16 = 0x0006;

/// What a STUN message is, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Binding request (method 0x001, class request): carries `USERNAME`.
    BindingRequest,
    /// A Binding success or error response: routed by its transaction id.
    BindingResponse,
    /// Any other STUN message (indications, other methods).
    Other,
}

/// Whether a datagram is STUN: first byte 0-3 (RFC 7983 §7 demultiplexing), a whole header, the
/// magic cookie, and a length that fits.
pub fn is_stun(p: &[u8]) -> bool {
    p.len() >= HEADER
        && p[0] < 4
        && p[4..8] == MAGIC_COOKIE
        && HEADER + u16::from_be_bytes([p[2], p[3]]) as usize <= p.len()
}

/// The kind of STUN message `p` (which must pass [`is_stun`]).
pub fn kind(p: &[u8]) -> Kind {
    match u16::from_be_bytes([p[0], p[1]]) {
        0x0001 => Kind::BindingRequest,
        0x0101 | 0x0111 => Kind::BindingResponse,
        _ => Kind::Other,
    }
}

/// The 96-bit transaction id of STUN message `p` (which must pass [`is_stun`]).
pub fn transaction_id(p: &[u8]) -> [u8; 12] {
    let mut id = [0u8; 12];
    id.copy_from_slice(&p[8..20]);
    id
}

/// The local ufrag of a Binding request: the part of its `USERNAME` before the first `:`.
/// `None` when `p` is not STUN or has no (UTF-8) `USERNAME`.
pub fn local_ufrag(p: &[u8]) -> Option<&str> {
    if !is_stun(p) {
        return None;
    }
    let end = HEADER + u16::from_be_bytes([p[2], p[3]]) as usize;
    let mut i = HEADER;
    while i + 4 <= end {
        let ty = u16::from_be_bytes([p[i], p[i + 1]]);
        let len = u16::from_be_bytes([p[i + 2], p[i + 3]]) as usize;
        let value = p.get(i + 4..i + 4 + len)?;
        if ty == USERNAME {
            let user = std::str::from_utf8(value).ok()?;
            return Some(user.split(':').next().unwrap_or(user));
        }
        // Attributes are padded to 4 bytes.
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Binding request with `USERNAME` `user` and one more attribute before it.
    fn request(user: &str) -> Vec<u8> {
        let mut attrs = vec![0x80, 0x2a, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]; // ICE-CONTROLLING
        attrs.extend_from_slice(&USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attrs.extend_from_slice(user.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        p.extend_from_slice(&MAGIC_COOKIE);
        p.extend_from_slice(&[9; 12]);
        p.extend_from_slice(&attrs);
        p
    }

    #[test]
    fn a_binding_request_names_its_receivers_ufrag() {
        let p = request("srvufrag:cli");
        assert!(is_stun(&p));
        assert_eq!(kind(&p), Kind::BindingRequest);
        assert_eq!(local_ufrag(&p), Some("srvufrag"));
        assert_eq!(transaction_id(&p), [9; 12]);
        assert_eq!(local_ufrag(&request("odd")), Some("odd"));
    }

    #[test]
    fn other_traffic_is_not_stun() {
        // RTP (0x80), DTLS (22), a truncated header, a bad cookie, a length past the end.
        assert!(!is_stun(&[0x80; 40]));
        assert!(!is_stun(&[22; 40]));
        assert!(!is_stun(&request("a:b")[..19]));
        let mut bad = request("a:b");
        bad[4] = 0;
        assert!(!is_stun(&bad));
        let mut long = request("a:b");
        long[3] = 200;
        assert!(!is_stun(&long));
        assert_eq!(local_ufrag(&[0x80; 40]), None);
        let mut resp = request("a:b");
        resp[0] = 0x01;
        resp[1] = 0x01;
        assert_eq!(kind(&resp), Kind::BindingResponse);
    }
}
