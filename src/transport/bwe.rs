//! Send-side bandwidth estimation toward one receiver: GCC (draft-ietf-rmcat-gcc-02) over
//! transport-wide congestion control feedback (TWCC, draft-holmer-rmcat-transport-wide-cc-extensions-01),
//! both from webrtc-rs. Tessera does not pace to the estimate; it reads it to place the receiver on
//! an output tier ([`crate::media::tiers`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{
    BandwidthEstimator, CongestionControlBuilder, EstimatorStats, Gcc, PacketReport, Registry, Slot,
};
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc_sender_only;
use webrtc::peer_connection::MediaEngine;

/// Lowest estimate GCC may report, bits/s.
const MIN_BPS: f64 = 50_000.0;
/// Highest estimate GCC may report, bits/s.
const MAX_BPS: f64 = 50_000_000.0;

/// The latest estimate of one session, readable from any thread.
#[derive(Debug, Default)]
pub struct Estimate {
    /// GCC's target, f64 bits/s as bits (0 until the first feedback).
    target: AtomicU64,
    /// Its delay-based half, same form.
    delay: AtomicU64,
    /// Smoothed fraction of packets lost (0..=1) as GCC counts it from TWCC feedback, same form.
    loss: AtomicU64,
    /// Smoothed fraction lost from the receiver's own RTCP reception reports (RFC 3550 §6.4.1),
    /// same form.
    reported_loss: AtomicU64,
}

fn load(a: &AtomicU64) -> Option<f64> {
    match a.load(Ordering::Relaxed) {
        0 => None,
        b => Some(f64::from_bits(b)),
    }
}

impl crate::media::downstream::BandwidthSource for Estimate {
    fn sample(&self) -> Option<crate::media::tiers::BandwidthSample> {
        let bps = self.bps()?;
        Some(crate::media::tiers::BandwidthSample {
            bps,
            delay_bps: self.delay_based_bps().unwrap_or(bps),
            loss: self.reported_loss().unwrap_or_else(|| self.loss()),
        })
    }
}

impl Estimate {
    /// The estimate in bits/s (the lower of GCC's delay-based and loss-based halves), `None`
    /// before any feedback arrived.
    pub fn bps(&self) -> Option<f64> {
        load(&self.target)
    }

    /// GCC's delay-based half alone, bits/s.
    pub fn delay_based_bps(&self) -> Option<f64> {
        load(&self.delay)
    }

    /// The smoothed fraction of packets lost as GCC counts it from TWCC feedback, 0..=1. On a
    /// path that delays and drops packets it reads far above the real loss (measured: 0.2-0.9 at
    /// 5% loss with 30 ms jitter, `benches/loss.sh`), so the tier choice uses
    /// [`Estimate::reported_loss`] when there is one.
    pub fn loss(&self) -> f64 {
        load(&self.loss).unwrap_or(0.0)
    }

    /// The smoothed fraction lost that the receiver reports in its RTCP reception reports (RFC
    /// 3550 §6.4.1 `fraction lost`: what did not arrive, retransmissions counted as arrived),
    /// 0..=1; `None` before the first report.
    pub fn reported_loss(&self) -> Option<f64> {
        load(&self.reported_loss).map(|l| l.max(0.0))
    }

    /// Takes one reception report's `fraction lost` (0..=255, of 256) into the smoothed figure.
    fn note_report(&self, fraction_lost: u8) {
        let l = f64::from(fraction_lost) / 256.0;
        let smoothed = match load(&self.reported_loss) {
            Some(prev) => prev + REPORT_SMOOTHING * (l - prev),
            None => l,
        };
        // 0 is stored as the smallest positive number: 0 bits mean "none yet".
        self.reported_loss.store(smoothed.max(f64::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
    }
}

/// Weight of a new reception report in the smoothed loss (reports come about once a second).
const REPORT_SMOOTHING: f64 = 0.3;

/// Slot of [`ReportedLoss`]: application side of the sender-report interceptor (11 000), which
/// lets reception reports through; free between webrtc-rs's interval PLI (12 000) and jitter
/// buffer (13 000) slots, below `demux::SLOT` and `rtcp::SLOT`.
pub const REPORTED_LOSS_SLOT: usize = 12_500;

/// Reads the `fraction lost` of every reception report the receiver sends (in its RR or SR
/// packets; the largest of a packet's blocks, so the worse of audio and video) into an
/// [`Estimate`]; passes everything on.
pub struct ReportedLoss {
    out: Arc<Estimate>,
    read: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
    write: std::collections::VecDeque<rtc::interceptor::TaggedPacket>,
}

impl rtc::sansio::Protocol<rtc::interceptor::TaggedPacket, rtc::interceptor::TaggedPacket, ()> for ReportedLoss {
    type Rout = rtc::interceptor::TaggedPacket;
    type Wout = rtc::interceptor::TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        use rtc::rtcp::receiver_report::ReceiverReport;
        use rtc::rtcp::sender_report::SenderReport;
        if let rtc::interceptor::Packet::Rtcp(packets) = &msg.message.packet {
            for p in packets {
                let any = p.as_any();
                let blocks = match (any.downcast_ref::<ReceiverReport>(), any.downcast_ref::<SenderReport>()) {
                    (Some(rr), _) => &rr.reports,
                    (_, Some(sr)) => &sr.reports,
                    _ => continue,
                };
                if let Some(worst) = blocks.iter().map(|b| b.fraction_lost).max() {
                    self.out.note_report(worst);
                }
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
        self.write.pop_front()
    }
}

impl rtc::interceptor::Interceptor for ReportedLoss {
    fn bind_local_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &rtc::interceptor::StreamInfo) {}
}

/// GCC that publishes its target after every update.
struct Publishing {
    gcc: Gcc,
    out: Arc<Estimate>,
    fed: bool,
}

impl Publishing {
    fn publish(&self) {
        if self.fed {
            let st = self.gcc.stats();
            self.out.target.store(self.gcc.target_bitrate().to_bits(), Ordering::Relaxed);
            self.out.delay.store(st.delay_based_bitrate.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
            self.out.loss.store(st.packet_loss.unwrap_or(0.0).max(f64::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
        }
    }
}

impl BandwidthEstimator for Publishing {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.gcc.on_reports(now, reports);
        self.fed |= !reports.is_empty();
        self.publish();
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
        self.publish();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

/// Adds TWCC sequence numbers to what the session sends (and negotiates the extension and
/// `transport-cc` feedback), and a GCC estimator fed by the receiver's feedback, starting at
/// `initial_bps`. Returns the registry and the estimate it keeps current.
///
/// # Errors
/// When the media engine refuses the header extension.
pub fn configure(
    registry: Registry,
    media_engine: &mut MediaEngine,
    initial_bps: f64,
) -> Result<(Registry, Arc<Estimate>), rtc::shared::error::Error> {
    let out = Arc::new(Estimate::default());
    let registry = configure_twcc_sender_only(registry, media_engine)?;
    let est = Publishing { gcc: Gcc::new(initial_bps, MIN_BPS, MAX_BPS), out: out.clone(), fed: false };
    let loss = ReportedLoss { out: out.clone(), read: Default::default(), write: Default::default() };
    let registry = registry
        .with(Slot::CongestionControl, CongestionControlBuilder::new(est).build())
        .with(REPORTED_LOSS_SLOT.into(), loss);
    Ok((registry, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::downstream::BandwidthSource;

    #[test]
    fn the_tier_choice_sees_the_receivers_reported_loss_smoothed() {
        let e = Estimate::default();
        e.target.store(1e6f64.to_bits(), Ordering::Relaxed);
        e.loss.store(0.6f64.to_bits(), Ordering::Relaxed);
        assert_eq!(e.sample().unwrap().loss, 0.6, "GCC's figure until a report arrives");
        e.note_report(0);
        assert_eq!(e.reported_loss(), Some(f64::MIN_POSITIVE));
        assert!(e.sample().unwrap().loss < 1e-9, "a clean report overrides GCC's 60%");
        // 5% (13/256) reported again and again converges on 5%.
        for _ in 0..30 {
            e.note_report(13);
        }
        let l = e.sample().unwrap().loss;
        assert!((l - 13.0 / 256.0).abs() < 1e-3, "{l}");
        // One bad report moves it by 30% of the difference, not all the way.
        e.note_report(128);
        let l2 = e.reported_loss().unwrap();
        assert!((l2 - (l + 0.3 * (0.5 - l))).abs() < 1e-9, "{l2}");
    }

    /// A slot holds one interceptor: a second one there replaces the first (webrtc-rs warns
    /// and goes on), as this one once replaced the demultiplexer's SSRC watch.
    #[test]
    fn tessera_interceptor_slots_are_distinct() {
        let slots = [REPORTED_LOSS_SLOT, crate::transport::demux::SLOT, crate::transport::rtcp::SLOT];
        for (i, a) in slots.iter().enumerate() {
            assert!(slots[i + 1..].iter().all(|b| b != a), "slot {a} used twice: {slots:?}");
        }
        for builtin in [10_000, 11_000, 12_000, 13_000] {
            assert!(!slots.contains(&builtin), "slot {builtin} is webrtc-rs's own");
        }
    }
}
