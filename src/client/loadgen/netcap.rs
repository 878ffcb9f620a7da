//! A capped downlink for a test peer: an interceptor at the wire end of the receive path that lets
//! inbound RTP through at most at a given rate, queueing up to [`MAX_QUEUE`] and dropping the rest
//! (a drop-tail bottleneck, like a slow access link). Queueing delays arrival times, which the
//! peer's TWCC feedback reports, so the sender's GCC sees both delay growth and loss.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;
use rtc::shared::marshal::MarshalSize;

/// Slot of [`RateCap`]: below every built-in receive interceptor (NACK generator 7000, TWCC
/// receiver 8000, receiver reports 10000), so they see its drops and delays.
pub const SLOT: usize = 500;
/// Longest a packet waits in the bottleneck before the queue drops new arrivals.
pub const MAX_QUEUE: Duration = Duration::from_millis(150);

/// The cap, bits/s; 0 = no cap. Shared so a test can change it while the peer runs.
pub type Cap = Arc<AtomicU64>;

/// Delays and drops inbound RTP to fit [`Cap`]; RTCP and everything outbound pass untouched.
pub struct RateCap {
    cap: Cap,
    /// When the bottleneck finishes sending what it holds.
    busy_until: Option<Instant>,
    queue: VecDeque<(Instant, TaggedPacket)>,
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
    /// Packets dropped by the cap.
    pub dropped: u64,
}

impl RateCap {
    /// A bottleneck at `cap` bits/s.
    pub fn new(cap: Cap) -> Self {
        Self {
            cap,
            busy_until: None,
            queue: VecDeque::new(),
            read: VecDeque::new(),
            write: VecDeque::new(),
            dropped: 0,
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for RateCap {
    crate::transport::queued_passthrough!();

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Error> {
        let bps = self.cap.load(Ordering::Relaxed);
        let size = match &msg.message.packet {
            Packet::Rtp(p) if bps > 0 => p.marshal_size(),
            _ => {
                self.read.push_back(msg);
                return Ok(());
            }
        };
        let now = msg.now;
        let start = self.busy_until.filter(|t| *t > now).unwrap_or(now);
        if start - now > MAX_QUEUE {
            self.dropped += 1;
            return Ok(());
        }
        // Serialisation time of this packet (plus IP/UDP/SRTP overhead) at the capped rate.
        let done = start + Duration::from_secs_f64((size + 48) as f64 * 8.0 / bps as f64);
        self.busy_until = Some(done);
        self.queue.push_back((done, msg));
        Ok(())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        while let Some((due, _)) = self.queue.front() {
            if *due > now {
                break;
            }
            let (due, mut msg) = self.queue.pop_front().expect("front exists");
            msg.now = due;
            self.read.push_back(msg);
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        self.queue.front().map(|(t, _)| *t)
    }
}

impl Interceptor for RateCap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
