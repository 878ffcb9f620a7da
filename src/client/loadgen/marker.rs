//! The latency marker: a [`VideoSource::Marker`](super::VideoSource::Marker) publisher draws a
//! 16-bit frame counter into each 640x360 frame as big black/white blocks, and remembers when it
//! pushed each counter to its encoder; a receiver finds the marker's tile in the decoded composite,
//! reads the counter, and takes `decoded at − sent at` as one latency sample.
//!
//! The code is an 8×5 grid of blocks over the whole frame (80×72 pixels each at 640x360, about
//! 40×36 in a 320x180 grid tile): row 0 guards (white, black, … from the left), row 1 bits 15..8,
//! row 2 bits 7..0 (white = 1, most significant on the left), row 3 inverted guards, row 4 plain
//! grey (where the server draws the name label).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::media::layout::{Rect, grid, letterbox};

/// Marker frame width, pixels.
pub const WIDTH: u32 = 640;
/// Marker frame height, pixels.
pub const HEIGHT: u32 = 360;
/// Marker frame rate, frames per second.
pub const FPS: u32 = 30;
const COLS: u32 = 8;
const ROWS: u32 = 5;
const WHITE: u8 = 235;
const BLACK: u8 = 16;
const GREY: u8 = 128;
/// Grid sizes tried when looking for the marker tile (1..=this many tiles).
const MAX_GRID: usize = 25;
/// Samples kept per receiver (about 55 minutes at 30 fps).
const MAX_SAMPLES: usize = 100_000;
/// A counter read more than this after it was sent is stale (the 16-bit counter wrapped).
const STALE: Duration = Duration::from_secs(10);

/// Whether block (`col`, `row`) is white for `code`; `None` for the blank row.
fn block_white(code: u16, col: u32, row: u32) -> Option<bool> {
    match row {
        0 => Some(col.is_multiple_of(2)),
        1 => Some(code >> (15 - col) & 1 == 1),
        2 => Some(code >> (7 - col) & 1 == 1),
        3 => Some(!col.is_multiple_of(2)),
        _ => None,
    }
}

/// A [`WIDTH`]×[`HEIGHT`] I420 frame (video-range luma, neutral chroma) showing `code`.
pub fn draw(code: u16) -> Vec<u8> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let mut f = vec![128u8; w * h * 3 / 2];
    let (bw, bh) = (w / COLS as usize, h / ROWS as usize);
    for y in 0..h {
        let row = (y / bh) as u32;
        for (x, px) in f[y * w..(y + 1) * w].iter_mut().enumerate() {
            *px = match block_white(code, (x / bw) as u32, row) {
                Some(true) => WHITE,
                Some(false) => BLACK,
                None => GREY,
            };
        }
    }
    f
}

/// Luma of a decoded frame, read in place: plane 0 of I420/NV12 (1 byte per pixel) or packed RGB
/// (3 bytes per pixel, luma computed).
pub struct Luma<'a> {
    /// Pixel bytes of the plane.
    pub data: &'a [u8],
    /// Bytes per row.
    pub stride: usize,
    /// Bytes per pixel: 1 (a luma plane) or 3 (packed RGB).
    pub bpp: usize,
    /// Frame width, pixels.
    pub width: u32,
    /// Frame height, pixels.
    pub height: u32,
}

impl Luma<'_> {
    fn at(&self, x: u32, y: u32) -> u32 {
        let i = y as usize * self.stride + x as usize * self.bpp;
        match (self.bpp, self.data.get(i..i + self.bpp)) {
            (1, Some(p)) => p[0] as u32,
            (3, Some(p)) => (p[0] as u32 * 66 + p[1] as u32 * 129 + p[2] as u32 * 25) / 256 + 16,
            _ => 0,
        }
    }

    /// Mean luma of the box of half-size `r` around (`x`, `y`), every `step`th pixel.
    fn mean(&self, x: u32, y: u32, r: u32) -> u32 {
        let step = (r / 3).max(1) as usize;
        let (mut s, mut n) = (0u32, 0u32);
        for yy in (y.saturating_sub(r)..(y + r).min(self.height)).step_by(step) {
            for xx in (x.saturating_sub(r)..(x + r).min(self.width)).step_by(step) {
                s += self.at(xx, yy);
                n += 1;
            }
        }
        s / n.max(1)
    }
}

/// Reads the code drawn by [`draw`] from the picture at `rect` of a frame; `None` unless the
/// guards are there with clear contrast and every bit is clearly black or white.
pub fn read(luma: &Luma, rect: Rect) -> Option<u16> {
    if rect.w < COLS * 4 || rect.h < ROWS * 4 || rect.x + rect.w > luma.width || rect.y + rect.h > luma.height {
        return None;
    }
    let r = (rect.w / COLS).min(rect.h / ROWS) / 5;
    let at = |col: u32, row: u32| {
        luma.mean(rect.x + (2 * col + 1) * rect.w / (2 * COLS), rect.y + (2 * row + 1) * rect.h / (2 * ROWS), r.max(1))
    };
    let (mut white_min, mut black_max) = (255u32, 0u32);
    for row in [0, 3] {
        for col in 0..COLS {
            let v = at(col, row);
            if block_white(0, col, row) == Some(true) {
                white_min = white_min.min(v);
            } else {
                black_max = black_max.max(v);
            }
            if white_min < black_max + 80 {
                return None;
            }
        }
    }
    let (mid, margin) = ((white_min + black_max) / 2, (white_min - black_max) / 4);
    let mut code = 0u16;
    for row in [1, 2] {
        for col in 0..COLS {
            let v = at(col, row);
            if v.abs_diff(mid) < margin {
                return None;
            }
            code = code << 1 | u16::from(v > mid);
        }
    }
    Some(code)
}

/// Where a [`WIDTH`]×[`HEIGHT`] picture can be in a `width`×`height` grid composite: the
/// letterboxed cells of grids of 1..=25 tiles, with and without the server's 4-pixel speaker
/// highlight inset.
fn candidates(width: u32, height: u32) -> Vec<Rect> {
    let mut v = vec![];
    for n in 1..=MAX_GRID {
        for cell in grid(n, width, height) {
            let inset = 4u32.min(cell.w / 4).min(cell.h / 4) & !1;
            let inner = Rect { x: cell.x + inset, y: cell.y + inset, w: cell.w - 2 * inset, h: cell.h - 2 * inset };
            for r in [letterbox(cell, WIDTH, HEIGHT), letterbox(inner, WIDTH, HEIGHT)] {
                if !v.contains(&r) {
                    v.push(r);
                }
            }
        }
    }
    v
}

/// Send times of marker counters, process-wide: every marker source takes its counters from one
/// sequence, so a counter read anywhere in the process names one frame.
struct SentLog {
    epoch: Instant,
    next: AtomicU32,
    /// Nanoseconds after `epoch` + 1 that counter `i` was sent; 0 for never.
    at: Vec<AtomicU64>,
}

fn sent_log() -> &'static SentLog {
    static LOG: OnceLock<SentLog> = OnceLock::new();
    LOG.get_or_init(|| SentLog {
        epoch: Instant::now(),
        next: AtomicU32::new(0),
        at: (0..=u16::MAX).map(|_| AtomicU64::new(0)).collect(),
    })
}

/// The next counter to draw.
pub(crate) fn next_code() -> u16 {
    sent_log().next.fetch_add(1, Ordering::Relaxed) as u16
}

/// Records that the frame showing `code` went to the encoder at `at`.
pub(crate) fn record_sent(code: u16, at: Instant) {
    let log = sent_log();
    log.at[code as usize].store(at.saturating_duration_since(log.epoch).as_nanos() as u64 + 1, Ordering::Relaxed);
}

fn sent_at(code: u16) -> Option<Instant> {
    let log = sent_log();
    match log.at[code as usize].load(Ordering::Relaxed) {
        0 => None,
        n => Some(log.epoch + Duration::from_nanos(n - 1)),
    }
}

/// A receiver's marker reader: remembers where it last found the marker and collects latency
/// samples (ms).
#[derive(Default)]
pub(crate) struct Probe {
    state: Mutex<ProbeState>,
    samples: Mutex<Vec<f64>>,
}

#[derive(Default)]
struct ProbeState {
    rect: Option<Rect>,
    last_code: Option<u16>,
    candidates: Vec<Rect>,
    size: (u32, u32),
    frames_since_search: u32,
}

impl Probe {
    /// Looks for the marker in a frame decoded at `now`: first where it was last time, else (at
    /// most every 5th frame) at every grid position; records a sample for each new counter.
    pub(crate) fn on_frame(&self, luma: &Luma, now: Instant) {
        let mut st = self.state.lock().unwrap();
        if st.size != (luma.width, luma.height) {
            st.candidates = candidates(luma.width, luma.height);
            st.size = (luma.width, luma.height);
            st.rect = None;
        }
        let mut code = st.rect.and_then(|r| read(luma, r));
        if code.is_none() {
            let due = st.rect.is_some() || st.frames_since_search == 0;
            st.frames_since_search = (st.frames_since_search + 1) % 5;
            if !due {
                return;
            }
            st.rect = None;
            for &r in &st.candidates {
                if let Some(c) = read(luma, r) {
                    (st.rect, code) = (Some(r), Some(c));
                    break;
                }
            }
        }
        let Some(code) = code else { return };
        // The compositor repeats a tile's last picture until a new one arrives: count each once.
        if st.last_code.replace(code) == Some(code) {
            return;
        }
        if let Some(sent) = sent_at(code)
            && let Some(d) = now.checked_duration_since(sent)
            && d < STALE
        {
            let mut s = self.samples.lock().unwrap();
            if s.len() < MAX_SAMPLES {
                s.push(d.as_secs_f64() * 1000.0);
            }
        }
    }

    /// Latency samples so far, ms, in arrival order.
    pub(crate) fn samples(&self) -> Vec<f64> {
        self.samples.lock().unwrap().clone()
    }
}

/// Pushes marker frames into `src` at [`FPS`] in real time until the pipeline stops, recording
/// each counter's send time just before the push.
pub(crate) fn spawn_source(src: gstreamer_app::AppSrc) {
    let _ = std::thread::Builder::new().name("marker".into()).spawn(move || {
        let start = Instant::now();
        let period = Duration::from_nanos(1_000_000_000 / FPS as u64);
        for n in 0u32.. {
            if let Some(wait) = (start + period * n).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let code = next_code();
            let frame = gstreamer::Buffer::from_slice(draw(code));
            record_sent(code, Instant::now());
            if src.push_buffer(frame).is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn luma_of(frame: &[u8]) -> Luma<'_> {
        Luma { data: frame, stride: WIDTH as usize, bpp: 1, width: WIDTH, height: HEIGHT }
    }

    #[test]
    fn codes_round_trip() {
        for code in [0u16, 1, 0x8000, 0xa5a5, 0xffff, 12345] {
            let f = draw(code);
            assert_eq!(read(&luma_of(&f), Rect { x: 0, y: 0, w: WIDTH, h: HEIGHT }), Some(code));
        }
        // A plain frame is no marker.
        let grey = vec![128u8; (WIDTH * HEIGHT) as usize];
        assert_eq!(read(&luma_of(&grey), Rect { x: 0, y: 0, w: WIDTH, h: HEIGHT }), None);
    }

    #[test]
    fn found_in_a_downscaled_grid_tile() {
        // The marker scaled (nearest) into tile 5 of a 16-tile 1280x720 grid, with a little noise.
        let (w, h) = (1280u32, 720u32);
        let tile = letterbox(grid(16, w, h)[5], WIDTH, HEIGHT);
        let src = draw(0xbeef);
        let mut out = vec![60u8; (w * h) as usize];
        for y in 0..tile.h {
            for x in 0..tile.w {
                let (sx, sy) = (x * WIDTH / tile.w, y * HEIGHT / tile.h);
                let noise = ((x * 7 + y * 13) % 11) as u8;
                out[((tile.y + y) * w + tile.x + x) as usize] = src[(sy * WIDTH + sx) as usize].saturating_add(noise);
            }
        }
        let luma = Luma { data: &out, stride: w as usize, bpp: 1, width: w, height: h };
        let p = Probe::default();
        let code = next_code();
        record_sent(code, Instant::now());
        p.on_frame(&luma, Instant::now());
        assert_eq!(p.state.lock().unwrap().rect, Some(tile));
        assert_eq!(p.state.lock().unwrap().last_code, Some(0xbeef));
    }
}
