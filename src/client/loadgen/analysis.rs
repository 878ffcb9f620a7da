//! What a receiver checks on decoded media: colours at points of a frame, tone levels in audio.

use std::sync::Arc;

/// An RGB colour, 8 bits per channel.
pub type Rgb = (u8, u8, u8);

/// A decoded frame, packed RGB (`width * height * 3` bytes).
#[derive(Clone)]
pub struct Frame {
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Packed RGB rows, no padding.
    pub rgb: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}

impl Frame {
    /// The frame of a GStreamer sample of packed RGB (`video/x-raw,format=RGB`); `None` for any
    /// other format.
    pub fn from_sample(sample: &gstreamer::Sample) -> Option<Frame> {
        let info = gstreamer_video::VideoInfo::from_caps(sample.caps()?).ok()?;
        if info.format() != gstreamer_video::VideoFormat::Rgb {
            return None;
        }
        let map = sample.buffer()?.map_readable().ok()?;
        let (w, h, stride) = (info.width(), info.height(), info.stride()[0] as usize);
        let mut rgb = Vec::with_capacity((w * h * 3) as usize);
        for row in 0..h as usize {
            rgb.extend_from_slice(map.get(row * stride..row * stride + w as usize * 3)?);
        }
        Some(Frame { width: w, height: h, rgb: Arc::new(rgb) })
    }

    /// Mean colour of the `2r`×`2r` box centred on (`x`, `y`), clipped to the frame.
    pub fn colour_at(&self, x: u32, y: u32, r: u32) -> Rgb {
        let (mut s, mut n) = ([0u64; 3], 0u64);
        for yy in y.saturating_sub(r)..(y + r).min(self.height) {
            for xx in x.saturating_sub(r)..(x + r).min(self.width) {
                let i = ((yy * self.width + xx) * 3) as usize;
                for (c, acc) in s.iter_mut().enumerate() {
                    *acc += self.rgb[i + c] as u64;
                }
                n += 1;
            }
        }
        let n = n.max(1);
        ((s[0] / n) as u8, (s[1] / n) as u8, (s[2] / n) as u8)
    }

    /// Writes the frame as a PNG file (GStreamer `pngenc`).
    ///
    /// # Errors
    /// The pipeline or the file fails.
    pub fn save_png(&self, path: &std::path::Path) -> Result<(), String> {
        use gstreamer as gst;
        use gstreamer::prelude::*;
        gst::init().map_err(|e| e.to_string())?;
        let desc = format!(
            "appsrc name=src caps=video/x-raw,format=RGB,width={},height={},framerate=1/1 ! videoconvert ! pngenc ! filesink name=out",
            self.width, self.height
        );
        let p = gst::parse::launch(&desc)
            .map_err(|e| e.to_string())?
            .downcast::<gst::Pipeline>()
            .map_err(|_| "pipeline")?;
        p.by_name("out").ok_or("filesink")?.set_property("location", path.to_string_lossy().to_string());
        let src = p.by_name("src").ok_or("appsrc")?.downcast::<gstreamer_app::AppSrc>().map_err(|_| "appsrc")?;
        p.set_state(gst::State::Playing).map_err(|e| e.to_string())?;
        src.push_buffer(gst::Buffer::from_slice(self.rgb.as_ref().clone())).map_err(|e| e.to_string())?;
        src.end_of_stream().map_err(|e| e.to_string())?;
        let bus = p.bus().ok_or("bus")?;
        let r = match bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(10), &[gst::MessageType::Eos, gst::MessageType::Error])
        {
            Some(m) if m.type_() == gst::MessageType::Eos => Ok(()),
            Some(m) => Err(format!("{m:?}")),
            None => Err("timed out".into()),
        };
        let _ = p.set_state(gst::State::Null);
        r
    }

    /// Writes the frame as a binary PPM (P6) file.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save_ppm(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut out = format!("P6\n{} {}\n255\n", self.width, self.height).into_bytes();
        out.extend_from_slice(&self.rgb);
        std::fs::write(path, out)
    }
}

/// Whether two colours differ by at most `tol` in every channel.
pub fn close(a: Rgb, b: Rgb, tol: i32) -> bool {
    (a.0 as i32 - b.0 as i32).abs() <= tol
        && (a.1 as i32 - b.1 as i32).abs() <= tol
        && (a.2 as i32 - b.2 as i32).abs() <= tol
}

/// Level of the `freq` Hz component of `samples` (48 kHz mono `i16`), in dB relative to a
/// full-scale sine; Goertzel over a Hann window, so a tone a few bins away does not leak in.
pub fn tone_db(samples: &[i16], freq: f64) -> f64 {
    if samples.len() < 2 {
        return -180.0;
    }
    let n = samples.len() as f64;
    let w = 2.0 * std::f64::consts::PI * freq / 48000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for (i, &x) in samples.iter().enumerate() {
        let win = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1.0)).cos();
        let s0 = x as f64 / 32768.0 * win + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = (s1 * s1 + s2 * s2 - coeff * s1 * s2).max(0.0);
    let amp = 2.0 * power.sqrt() / (n * 0.5);
    20.0 * amp.max(1e-9).log10()
}

/// The `p`th percentile (0..=100, nearest rank) of `v`, which it sorts; `None` when empty.
pub fn percentile(v: &mut [f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable_by(f64::total_cmp);
    let rank = ((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 50.0), Some(10.0));
        assert_eq!(percentile(&mut v, 95.0), Some(19.0));
        assert_eq!(percentile(&mut v, 100.0), Some(20.0));
        assert_eq!(percentile(&mut [], 50.0), None);
    }

    #[test]
    fn goertzel_finds_a_tone_and_not_its_neighbour() {
        let s: Vec<i16> = (0..48000)
            .map(|i| (16384.0 * (2.0 * std::f64::consts::PI * 700.0 * i as f64 / 48000.0).sin()) as i16)
            .collect();
        assert!((tone_db(&s, 700.0) + 6.0).abs() < 0.5, "{}", tone_db(&s, 700.0));
        assert!(tone_db(&s, 400.0) < -80.0);
    }

    #[test]
    fn colour_boxes() {
        let f = Frame { width: 4, height: 2, rgb: Arc::new([[10u8, 20, 30]; 8].concat()) };
        assert_eq!(f.colour_at(1, 1, 1), (10, 20, 30));
        assert!(close((10, 20, 30), (12, 18, 30), 2));
        assert!(!close((10, 20, 30), (13, 20, 30), 2));
    }
}
