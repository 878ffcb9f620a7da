//! A small audio jitter buffer for one publisher's Opus packets, keyed by RTP sequence number.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Frames (20 ms each) buffered before playout starts.
const PREBUFFER: usize = 2;
/// Above this many buffered frames the oldest are dropped to catch up (120 ms).
const MAX_DEPTH: usize = 6;
/// Consecutive missing frames after which the source counts as stopped (100 ms).
const MAX_CONCEALED: u32 = 5;
/// Above this many buffered frames for `SHRINK_AFTER` ticks in a row, one is dropped: a burst's
/// backlog is worked off instead of adding its delay (up to 120 ms) for good.
const TARGET_DEPTH: usize = PREBUFFER + 1;
/// Ticks (20 ms) of a backlog above `TARGET_DEPTH` before one frame of it is dropped (1 s).
const SHRINK_AFTER: u32 = 50;

/// What the mixer gets for one 20 ms tick.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop {
    /// The next packet in order.
    Packet(Bytes),
    /// The next packet is missing: conceal it (Opus PLC).
    Lost,
    /// The next packet is missing but the one after it is here: decode that packet's in-band FEC
    /// (RFC 6716 §2.1.7, `useinbandfec=1` of RFC 7587 §6.1), which carries a coarser copy of the
    /// missing frame. The packet itself stays buffered for the next tick.
    Recover(Bytes),
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
    overflowed: u64,
    /// Ticks in a row with more than `TARGET_DEPTH` frames waiting.
    backlog_ticks: u32,
}

impl JitterBuffer {
    /// Stores a packet with 16-bit sequence number `seq`. Returns `false` when it was dropped: it
    /// came after its turn (already played or concealed).
    pub fn push(&mut self, seq: u16, payload: Bytes) -> bool {
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
            return false;
        }
        self.packets.insert(ext, payload);
        true
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
        // Too many waiting (a burst): drop the oldest and play on from the first kept. Dropping
        // them while `next` stays put would conceal the very packets dropped, and with one packet
        // arriving per tick the buffer would stay full and conceal every frame from then on.
        let mut next = next;
        self.backlog_ticks = if self.packets.len() > TARGET_DEPTH { self.backlog_ticks + 1 } else { 0 };
        let keep = if self.backlog_ticks > SHRINK_AFTER {
            self.backlog_ticks = 0;
            self.packets.len() - 1
        } else {
            MAX_DEPTH
        };
        while self.packets.len() > keep {
            let (k, _) = self.packets.pop_first().unwrap();
            self.overflowed += 1;
            next = next.max(k + 1);
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
        match self.packets.get(&(next + 1)) {
            Some(following) => Pop::Recover(following.clone()),
            None => Pop::Lost,
        }
    }

    /// Packets dropped since the last call because more than `MAX_DEPTH` (120 ms) waited, or a
    /// backlog above `TARGET_DEPTH` lasted a second.
    pub fn take_overflowed(&mut self) -> u64 {
        std::mem::take(&mut self.overflowed)
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
        assert_eq!(j.pop(), Pop::Recover(b(3)), "65535 is missing: from 0's FEC");
        assert!(!j.push(65535, b(2)), "too late now: dropped");
        assert_eq!(j.pop(), Pop::Packet(b(3)));
        j.push(1, b(4));
        assert_eq!(j.pop(), Pop::Packet(b(4)));
        for _ in 0..MAX_CONCEALED {
            assert_eq!(j.pop(), Pop::Lost);
        }
        assert_eq!(j.pop(), Pop::Idle, "stopped talking");
    }

    #[test]
    fn plays_on_after_a_burst_with_one_packet_per_tick() {
        // A burst fills the buffer past its depth, then packets keep arriving one per tick: after
        // dropping the burst's oldest, every tick plays a packet (none is concealed).
        let mut j = JitterBuffer::default();
        for s in 0..(MAX_DEPTH as u16 + 3) {
            j.push(s, b(s as u8));
        }
        let mut seq = MAX_DEPTH as u16 + 3;
        for _ in 0..50 {
            assert!(matches!(j.pop(), Pop::Packet(_)), "a frame concealed while its packets wait");
            j.push(seq, b(0));
            seq += 1;
        }
        assert!(j.take_overflowed() > 0);
        // The backlog is worked off, a frame a second, down to the target depth.
        for _ in 0..(SHRINK_AFTER as usize + 1) * MAX_DEPTH {
            assert!(matches!(j.pop(), Pop::Packet(_)));
            j.push(seq, b(0));
            seq += 1;
        }
        assert!(j.depth() <= TARGET_DEPTH, "still {} frames behind", j.depth());
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
        assert!(j.take_overflowed() >= 13 - MAX_DEPTH as u64);
        assert_eq!(j.take_overflowed(), 0);
    }

    #[test]
    fn a_lost_packet_is_recovered_from_the_next_ones_fec_and_that_one_still_plays() {
        let mut j = JitterBuffer::default();
        for seq in [10u16, 11, 13, 14] {
            j.push(seq, b(seq as u8));
        }
        assert_eq!(j.pop(), Pop::Packet(b(10)));
        assert_eq!(j.pop(), Pop::Packet(b(11)));
        assert_eq!(j.pop(), Pop::Recover(b(13)), "12 is missing, 13 carries its FEC");
        assert_eq!(j.pop(), Pop::Packet(b(13)));
        assert_eq!(j.pop(), Pop::Packet(b(14)));
    }

    #[test]
    fn two_lost_in_a_row_conceal_the_first_and_recover_the_second() {
        let mut j = JitterBuffer::default();
        for seq in [10u16, 11, 14] {
            j.push(seq, b(seq as u8));
        }
        assert_eq!(j.pop(), Pop::Packet(b(10)));
        assert_eq!(j.pop(), Pop::Packet(b(11)));
        assert_eq!(j.pop(), Pop::Lost);
        assert_eq!(j.pop(), Pop::Recover(b(14)));
        assert_eq!(j.pop(), Pop::Packet(b(14)));
    }
}
