//! A small audio jitter buffer for one publisher's Opus packets, keyed by RTP sequence number.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Frames (20 ms each) buffered before playout starts.
const PREBUFFER: usize = 2;
/// Above this many buffered frames the oldest are dropped to catch up (120 ms).
const MAX_DEPTH: usize = 6;
/// Consecutive missing frames after which the source counts as stopped (100 ms).
const MAX_CONCEALED: u32 = 5;

/// What the mixer gets for one 20 ms tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop {
    /// The next packet in order.
    Packet(Bytes),
    /// The next packet is missing: conceal it (Opus PLC).
    Lost,
    /// Not playing: contribute silence.
    Idle,
}

/// Orders packets by extended sequence number and releases one per tick.
#[derive(Debug, Default)]
pub struct JitterBuffer {
    packets: BTreeMap<u64, Bytes>,
    highest: Option<u64>,
    next: Option<u64>,
    concealed: u32,
}

impl JitterBuffer {
    /// Stores a packet with 16-bit sequence number `seq`; late and duplicate packets are dropped.
    pub fn push(&mut self, seq: u16, payload: Bytes) {
        let ext = match self.highest {
            None => (1u64 << 32) + seq as u64,
            Some(h) => {
                let cur = (h & 0xffff) as u16;
                let delta = seq.wrapping_sub(cur) as i16 as i64;
                (h as i64 + delta) as u64
            }
        };
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        if self.next.is_some_and(|n| ext < n) {
            return;
        }
        self.packets.insert(ext, payload);
    }

    /// The frame for this tick.
    pub fn pop(&mut self) -> Pop {
        let Some(next) = self.next else {
            if self.packets.len() < PREBUFFER {
                return Pop::Idle;
            }
            let (&first, _) = self.packets.first_key_value().unwrap();
            self.next = Some(first);
            return self.pop();
        };
        while self.packets.len() > MAX_DEPTH {
            self.packets.pop_first();
        }
        let next =
            self.packets.first_key_value().map_or(next, |(&k, _)| if k > next + MAX_DEPTH as u64 { k } else { next });
        if let Some(p) = self.packets.remove(&next) {
            self.next = Some(next + 1);
            self.concealed = 0;
            return Pop::Packet(p);
        }
        self.concealed += 1;
        if self.concealed > MAX_CONCEALED && self.packets.is_empty() {
            self.next = None;
            self.concealed = 0;
            return Pop::Idle;
        }
        self.next = Some(next + 1);
        Pop::Lost
    }

    /// Packets waiting.
    pub fn depth(&self) -> usize {
        self.packets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn reorders_conceals_and_wraps() {
        let mut j = JitterBuffer::default();
        j.push(65534, b(1));
        assert_eq!(j.pop(), Pop::Idle, "prebuffering");
        j.push(0, b(3)); // 65535 is late
        assert_eq!(j.pop(), Pop::Packet(b(1)));
        assert_eq!(j.pop(), Pop::Lost);
        j.push(65535, b(2)); // too late now: dropped
        assert_eq!(j.pop(), Pop::Packet(b(3)));
        j.push(1, b(4));
        assert_eq!(j.pop(), Pop::Packet(b(4)));
        for _ in 0..MAX_CONCEALED {
            assert_eq!(j.pop(), Pop::Lost);
        }
        assert_eq!(j.pop(), Pop::Idle, "stopped talking");
    }

    #[test]
    fn catches_up_after_a_burst() {
        let mut j = JitterBuffer::default();
        for s in 0..20u16 {
            j.push(s, b(s as u8));
        }
        let Pop::Packet(p) = j.pop() else { panic!() };
        assert!(p[0] >= 13, "old frames dropped, got {}", p[0]);
        assert!(j.depth() <= MAX_DEPTH);
    }
}
