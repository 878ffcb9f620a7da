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
    /// Smoothed fraction of packets lost (0..=1), same form.
    loss: AtomicU64,
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
            loss: self.loss(),
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

    /// The smoothed fraction of packets the receiver reported lost, 0..=1.
    pub fn loss(&self) -> f64 {
        load(&self.loss).unwrap_or(0.0)
    }
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
    Ok((registry.with(Slot::CongestionControl, CongestionControlBuilder::new(est).build()), out))
}
