//! Simulcast ingest (RFC 8853): a publisher sends its video at several sizes at once (Chrome's
//! and Firefox's `a=rid` layers), and Tessera decodes only the one that fits the publisher's tile.
//! A 320x180 tile of a 16-person grid decodes the 320x180 layer, not the 1280x720 one; a tile
//! made larger by a layout change moves to a larger layer at that layer's next keyframe.
//!
//! [`LayerSwitch`] is the decision, pure and taking `now`: it learns each layer's picture size
//! from its VP8 keyframes (else ranks layers by bitrate), picks the smallest layer at least as
//! wide as the tile, forwards only the chosen layer, and switches at the new layer's keyframe.
//! The forwarded packets are renumbered into one continuous stream (one SSRC, gapless sequence
//! numbers, a timestamp that runs on across switches), so the decoder sees one stream whose
//! resolution changes at a keyframe.

use std::time::{Duration, Instant};

/// Window over which a layer's bitrate is measured.
const RATE_WINDOW: Duration = Duration::from_secs(2);
/// The timestamp step put between the last frame of the old layer and the first of the new
/// one: one frame at 30 fps on the 90 kHz video clock.
const SWITCH_TS_STEP: u32 = 3000;

/// One simulcast layer as Tessera knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Its SSRC.
    pub ssrc: u32,
    /// Its RTP stream id (`a=rid`), e.g. `q`, `h`, `f`.
    pub rid: String,
    /// Its picture size, pixels, once a keyframe told it.
    pub size: Option<(u32, u32)>,
    bytes: u64,
    since: Option<Instant>,
    rate: f64,
}

/// What the switch needs to know of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Its layer's SSRC.
    pub ssrc: u32,
    /// Sequence number.
    pub seq: u16,
    /// RTP timestamp.
    pub ts: u32,
    /// Payload bytes (for the layer's bitrate).
    pub bytes: usize,
    /// It starts a keyframe.
    pub keyframe: bool,
    /// The keyframe's picture size, when the codec says (VP8).
    pub size: Option<(u32, u32)>,
}

/// What to do with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it with this SSRC, sequence number and timestamp.
    Forward {
        /// The forwarded stream's SSRC.
        ssrc: u32,
        /// Sequence number.
        seq: u16,
        /// RTP timestamp.
        ts: u32,
    },
    /// Drop it (another layer is forwarded).
    Drop,
}

/// Which layer of a simulcast publisher is decoded, and the renumbering of what is forwarded.
#[derive(Debug, Default)]
pub struct LayerSwitch {
    layers: Vec<Layer>,
    /// The layer forwarded now.
    current: Option<u32>,
    /// The layer wanted, until its keyframe.
    target: Option<u32>,
    /// The forwarded stream: its SSRC, and offsets from the current layer's numbers.
    out_ssrc: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    last_out: Option<(u16, u32)>,
    /// Width of the tile the publisher is shown in, pixels; `None` while hidden.
    tile_width: Option<u32>,
}

impl LayerSwitch {
    /// Learns a layer (a `TrackRemoteEvent::OnOpen` with a rid).
    pub fn add_layer(&mut self, ssrc: u32, rid: &str) {
        if !self.layers.iter().any(|l| l.ssrc == ssrc) {
            self.layers.push(Layer { ssrc, rid: rid.to_string(), size: None, bytes: 0, since: None, rate: 0.0 });
        }
    }

    /// The layers known so far.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The layer forwarded now.
    pub fn current(&self) -> Option<&Layer> {
        self.current.and_then(|c| self.layers.iter().find(|l| l.ssrc == c))
    }

    /// One packet arriving at `now`.
    pub fn on_packet(&mut self, now: Instant, a: Arrival) -> Verdict {
        let Arrival { ssrc, seq, ts, bytes, keyframe, size } = a;
        let Some(layer) = self.layers.iter_mut().find(|l| l.ssrc == ssrc) else { return Verdict::Drop };
        let since = *layer.since.get_or_insert(now);
        layer.bytes += bytes as u64;
        let age = now.saturating_duration_since(since);
        if age >= RATE_WINDOW {
            layer.rate = layer.bytes as f64 * 8.0 / age.as_secs_f64();
            layer.bytes = 0;
            layer.since = Some(now);
        }
        if keyframe && size.is_some() {
            layer.size = size;
        }
        // Start on the first keyframe of any layer, move to the wanted one at its keyframe.
        let switch = keyframe && (self.target == Some(ssrc) || self.current.is_none());
        if switch && self.current != Some(ssrc) {
            self.current = Some(ssrc);
            if self.target == Some(ssrc) {
                self.target = None;
            }
            self.out_ssrc.get_or_insert(ssrc);
            match self.last_out {
                Some((s, t)) => {
                    self.seq_offset = s.wrapping_add(1).wrapping_sub(seq);
                    self.ts_offset = t.wrapping_add(SWITCH_TS_STEP).wrapping_sub(ts);
                }
                None => (self.seq_offset, self.ts_offset) = (0, 0),
            }
        }
        if self.current != Some(ssrc) {
            return Verdict::Drop;
        }
        let (out_seq, out_ts) = (seq.wrapping_add(self.seq_offset), ts.wrapping_add(self.ts_offset));
        // Keep the newest numbers (reordered packets do not move the mark back).
        let newer = self.last_out.is_none_or(|(s, _)| out_seq.wrapping_sub(s) < 0x8000);
        if newer {
            self.last_out = Some((out_seq, out_ts));
        }
        Verdict::Forward { ssrc: self.out_ssrc.unwrap_or(ssrc), seq: out_seq, ts: out_ts }
    }

    /// The tile is now `width` pixels wide (`None`: hidden). Returns the SSRC of a layer to ask
    /// for a keyframe (PLI) when another layer is wanted.
    pub fn set_tile_width(&mut self, width: Option<u32>) -> Option<u32> {
        self.tile_width = width;
        self.decide()
    }

    /// The layer that fits the tile: the smallest at least as wide as it when the sizes are known,
    /// else by bitrate rank in proportion to the tile's share of the largest layer; a hidden tile
    /// keeps what it has (its decoder is stopped anyway). Returns a layer to ask a keyframe of.
    pub fn decide(&mut self) -> Option<u32> {
        let want = self.tile_width?;
        let wanted = self.wanted(want)?;
        if Some(wanted) == self.current || Some(wanted) == self.target {
            return None;
        }
        self.target = Some(wanted);
        Some(wanted)
    }

    fn wanted(&self, tile_width: u32) -> Option<u32> {
        if self.layers.len() < 2 {
            return None;
        }
        if self.layers.iter().all(|l| l.size.is_some()) {
            let mut by_width: Vec<&Layer> = self.layers.iter().collect();
            by_width.sort_by_key(|l| l.size.map(|(w, _)| w));
            return by_width
                .iter()
                .find(|l| l.size.is_some_and(|(w, _)| w >= tile_width))
                .or(by_width.last())
                .map(|l| l.ssrc);
        }
        // Sizes unknown (H.264): rank by bitrate once every layer has one.
        if self.layers.iter().any(|l| l.rate <= 0.0) {
            return None;
        }
        let mut by_rate: Vec<&Layer> = self.layers.iter().collect();
        by_rate.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let largest = self.current().and_then(|l| l.size).map_or(1280, |(w, _)| w).max(tile_width);
        // Each smaller layer is taken as half the width of the next (Chrome's and Firefox's
        // default scaleResolutionDownBy 4, 2, 1).
        let n = by_rate.len();
        let idx = (0..n).find(|&i| (largest >> (n - 1 - i)) >= tile_width).unwrap_or(n - 1);
        Some(by_rate[idx].ssrc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn a(ssrc: u32, seq: u16, ts: u32, bytes: usize, keyframe: bool, size: Option<(u32, u32)>) -> Arrival {
        Arrival { ssrc, seq, ts, bytes, keyframe, size }
    }

    fn switch_with_sizes(t0: Instant) -> LayerSwitch {
        let mut s = LayerSwitch::default();
        for (ssrc, rid) in [(1, "q"), (2, "h"), (3, "f")] {
            s.add_layer(ssrc, rid);
        }
        // A keyframe of each layer teaches its size; the first one starts forwarding.
        assert!(matches!(s.on_packet(t0, a(3, 100, 9000, 1000, true, Some((1280, 720)))), Verdict::Forward { .. }));
        s.on_packet(t0, a(2, 500, 50_000, 800, true, Some((640, 360))));
        s.on_packet(t0, a(1, 900, 70_000, 600, true, Some((320, 180))));
        assert_eq!(s.current().map(|l| l.rid.as_str()), Some("f"));
        s
    }

    #[test]
    fn a_small_tile_moves_to_the_layer_that_fits_at_its_keyframe_without_a_gap() {
        let t0 = Instant::now();
        let mut s = switch_with_sizes(t0);
        // A 426-pixel tile (a 3x3 grid of 1280x720): the 640x360 layer fits.
        assert_eq!(s.set_tile_width(Some(426)), Some(2), "ask the 640x360 layer for a keyframe");
        assert_eq!(s.set_tile_width(Some(426)), None, "asked once");
        // Until its keyframe, the old layer goes on and the new one is dropped.
        assert_eq!(s.on_packet(t0 + 10 * MS, a(2, 501, 53_000, 800, false, None)), Verdict::Drop);
        assert_eq!(
            s.on_packet(t0 + 10 * MS, a(3, 101, 12_000, 1000, false, None)),
            Verdict::Forward { ssrc: 3, seq: 101, ts: 12_000 }
        );
        // The keyframe of the 640x360 layer: the switch, numbered on from the last forwarded.
        assert_eq!(
            s.on_packet(t0 + 40 * MS, a(2, 502, 56_000, 800, true, Some((640, 360)))),
            Verdict::Forward { ssrc: 3, seq: 102, ts: 12_000 + SWITCH_TS_STEP }
        );
        assert_eq!(
            s.on_packet(t0 + 70 * MS, a(2, 503, 59_000, 800, false, None)),
            Verdict::Forward { ssrc: 3, seq: 103, ts: 15_000 + 3000 }
        );
        assert_eq!(s.on_packet(t0 + 70 * MS, a(3, 102, 15_000, 1000, false, None)), Verdict::Drop);
        assert_eq!(s.current().map(|l| l.rid.as_str()), Some("h"));
        // A tile wider than every layer takes the largest; a hidden one changes nothing.
        assert_eq!(s.set_tile_width(Some(1920)), Some(3));
        assert_eq!(s.set_tile_width(None), None);
        // A 1/16 tile (320 wide) takes the 320x180 layer.
        assert_eq!(s.set_tile_width(Some(320)), Some(1));
    }

    #[test]
    fn without_sizes_layers_are_ranked_by_bitrate() {
        let t0 = Instant::now();
        let mut s = LayerSwitch::default();
        for (ssrc, rid) in [(7, "a"), (8, "b"), (9, "c")] {
            s.add_layer(ssrc, rid);
        }
        s.on_packet(t0, a(9, 1, 1, 100, true, None));
        assert_eq!(s.set_tile_width(Some(320)), None, "no rate known yet");
        for k in 0..=20u32 {
            let t = t0 + RATE_WINDOW * k / 10;
            s.on_packet(t, a(7, k as u16, k, 300, false, None));
            s.on_packet(t, a(8, k as u16, k, 1_000, false, None));
            s.on_packet(t, a(9, k as u16 + 1, k, 4_000, false, None));
        }
        // 320 of a 1280-wide largest layer: a quarter, the lowest rate.
        assert_eq!(s.set_tile_width(Some(320)), Some(7));
        assert_eq!(s.set_tile_width(Some(600)), Some(8));
    }

    #[test]
    fn one_layer_is_never_switched() {
        let mut s = LayerSwitch::default();
        s.add_layer(5, "x");
        let t0 = Instant::now();
        assert!(matches!(s.on_packet(t0, a(5, 1, 1, 10, true, Some((640, 360)))), Verdict::Forward { .. }));
        assert_eq!(s.set_tile_width(Some(100)), None);
        assert_eq!(s.on_packet(t0, a(6, 1, 1, 10, true, None)), Verdict::Drop, "an unknown SSRC is dropped");
    }
}
