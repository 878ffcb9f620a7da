//! Random identifiers and wall-clock time, for every layer: SSRCs, RTP start values (RFC 3550
//! §5.1: sequence numbers and timestamps start at random values), participant ids, and
//! milliseconds since the Unix epoch for events.

use std::hash::{BuildHasher, Hasher};

/// A random 32-bit number (std's randomly keyed SipHash over the time; not for cryptography).
pub fn random_u32() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish() as u32
}

/// A random non-zero SSRC (RFC 3550 §8: chosen at random).
pub fn random_ssrc() -> u32 {
    random_u32().max(1)
}

/// Milliseconds since the Unix epoch, server time.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_differ() {
        let v: std::collections::HashSet<u32> = (0..64).map(|_| random_u32()).collect();
        assert!(v.len() > 60, "{} distinct of 64", v.len());
        assert_ne!(random_ssrc(), 0);
    }
}
