//! Mix-minus maths: one total per 20 ms tick, each talker's mix is `total − own`. Pure, unit-tested.
//!
//! Samples are mono 48 kHz `i16` PCM, [`FRAME_SAMPLES`] per frame. The total is accumulated in
//! `i32` so subtracting a participant's own frame is exact (no float residue of their voice),
//! then a limiter maps the wide sum into `i16` without clipping.

/// Samples per channel in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;

/// Sums `frames` into `total` (`i32`, [`FRAME_SAMPLES`] long), overwriting it.
pub fn sum_into(total: &mut [i32], frames: &[&[i16]]) {
    total.fill(0);
    for f in frames {
        for (t, s) in total.iter_mut().zip(f.iter()) {
            *t += *s as i32;
        }
    }
}

/// Writes `limit(total − own)` into `out`: what a participant hears, everyone but themselves.
/// Pass `None` for `own` to get the full mix (a viewer, or a participant whose own audio is silent).
pub fn mix_minus(total: &[i32], own: Option<&[i16]>, limiter: &mut Limiter, out: &mut [i16]) {
    match own {
        Some(own) => {
            for ((o, t), s) in out.iter_mut().zip(total).zip(own) {
                *o = limiter.sample(*t - *s as i32);
            }
        }
        None => {
            for (o, t) in out.iter_mut().zip(total) {
                *o = limiter.sample(*t);
            }
        }
    }
    limiter.end_frame();
}

/// Ramps `frame` linearly from silence up to full level over its length, so a source whose
/// decoding just (re)started does not click in.
pub fn fade_in(frame: &mut [i16]) {
    let n = frame.len() as f32;
    for (i, s) in frame.iter_mut().enumerate() {
        *s = (*s as f32 * (i as f32 / n)) as i16;
    }
}

/// Ramps `frame` linearly from full level down to silence over its length, so a source whose
/// decoding stops after this frame does not click out.
pub fn fade_out(frame: &mut [i16]) {
    let n = frame.len() as f32;
    for (i, s) in frame.iter_mut().enumerate() {
        *s = (*s as f32 * ((n - 1.0 - i as f32) / n)) as i16;
    }
}

/// Mean power of a frame in dBFS (0 = full-scale square wave, about −3 for a full-scale sine);
/// −100 for digital silence.
pub fn level_dbfs(frame: &[i16]) -> f32 {
    if frame.is_empty() {
        return -100.0;
    }
    let sum: f64 = frame.iter().map(|&s| (s as f64) * (s as f64)).sum();
    let ms = sum / frame.len() as f64 / (32768.0 * 32768.0);
    if ms <= 1e-10 { -100.0 } else { (10.0 * ms.log10()) as f32 }
}

/// A peak limiter with instant attack and slow release: the gain drops at once to keep the sample
/// under the ceiling (−1 dBFS, 29204) and recovers by about 6 dB per 100 ms. State carries across
/// frames, so one limiter belongs to one output stream.
#[derive(Debug, Clone)]
pub struct Limiter {
    gain: f32,
}

const CEILING: f32 = 29204.0;
/// Per-sample release factor: ~6 dB / 100 ms at 48 kHz.
const RELEASE: f32 = 1.000_144;

impl Default for Limiter {
    fn default() -> Self {
        Self { gain: 1.0 }
    }
}

impl Limiter {
    /// Limits one sample of a wide sum to `i16`.
    #[inline]
    pub fn sample(&mut self, x: i32) -> i16 {
        let xf = x as f32;
        let peak = xf.abs() * self.gain;
        if peak > CEILING {
            self.gain = CEILING / xf.abs();
        }
        let y = xf * self.gain;
        if self.gain < 1.0 {
            self.gain = (self.gain * RELEASE).min(1.0);
        }
        y.clamp(-32768.0, 32767.0) as i16
    }

    /// Marks a frame boundary (kept for future look-ahead; the gain already carries over).
    pub fn end_frame(&mut self) {}

    /// The current gain, 0 < gain ≤ 1.
    pub fn gain(&self) -> f32 {
        self.gain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, amp: f32) -> Vec<i16> {
        (0..FRAME_SAMPLES)
            .map(|i| (amp * (2.0 * std::f32::consts::PI * freq * i as f32 / 48000.0).sin()) as i16)
            .collect()
    }

    #[test]
    fn own_voice_is_removed_exactly() {
        let a = tone(440.0, 8000.0);
        let b = tone(660.0, 8000.0);
        let mut total = vec![0i32; FRAME_SAMPLES];
        sum_into(&mut total, &[&a, &b]);
        let mut out = vec![0i16; FRAME_SAMPLES];
        mix_minus(&total, Some(&a), &mut Limiter::default(), &mut out);
        assert_eq!(out, b, "A hears exactly B");
        mix_minus(&total, None, &mut Limiter::default(), &mut out);
        assert!(out.iter().zip(&a).zip(&b).all(|((o, x), y)| *o == x + y));
    }

    #[test]
    fn limiter_keeps_a_loud_sum_under_full_scale() {
        let loud: Vec<Vec<i16>> = (0..8).map(|_| tone(300.0, 30000.0)).collect();
        let refs: Vec<&[i16]> = loud.iter().map(|v| v.as_slice()).collect();
        let mut total = vec![0i32; FRAME_SAMPLES];
        sum_into(&mut total, &refs);
        let mut lim = Limiter::default();
        let mut out = vec![0i16; FRAME_SAMPLES];
        mix_minus(&total, None, &mut lim, &mut out);
        assert!(out.iter().all(|s| (*s as f32).abs() <= CEILING + 1.0));
        assert!(lim.gain() < 0.2);
        // The shape is kept: the output is still a 300 Hz tone, not a square wave.
        assert!(level_dbfs(&out) < -3.0);
    }

    #[test]
    fn fades_start_and_end_at_silence() {
        let mut a = vec![20000i16; FRAME_SAMPLES];
        fade_in(&mut a);
        assert_eq!(a[0], 0);
        assert!(a[FRAME_SAMPLES - 1] > 19900 && a.windows(2).all(|w| w[0] <= w[1]));
        let mut b = vec![20000i16; FRAME_SAMPLES];
        fade_out(&mut b);
        assert_eq!(b[FRAME_SAMPLES - 1], 0);
        assert!(b[0] > 19900 && b.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn levels() {
        assert_eq!(level_dbfs(&[0; 960]), -100.0);
        let l = level_dbfs(&tone(1000.0, 32767.0));
        assert!((l + 3.0).abs() < 0.3, "{l}");
    }
}
