//! The CPU compositor: the room's composite as an I420 canvas in plain memory ([`Image`]).
//!
//! Each decoded frame is scaled once, in its publisher's own decoder thread, into its tile's
//! patch (bilinear, [`super::super::canvas`]; 0.08 ms for 640x360 → 426x240) and labelled there;
//! only then is the canvas locked, for the copy of the patch into it (and of the overlapping
//! tiles above it, in custom layouts). So publishers of a room never queue on one lock while
//! scaling: the lock covers a copy of tile size. A new scene redraws everything (background,
//! tiles in z-order, highlight) from each tile's last frame. The room clock copies the canvas out
//! into a buffer from a pool.
//!
//! Locks: `canvas` before a tile's `state`; a decoder thread holds its tile's lock alone while it
//! scales, then takes the canvas lock and the tile's lock again for the copy.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use gstreamer as gst;
use gstreamer_video::prelude::*;

use super::super::canvas::{self, Image, Label, Planes, Yuv};
use super::super::layout::Rect;
use super::super::tiers::OutputFormat;
use super::compositor::{Compositor, Scene};
use super::{VideoError, VideoStats, gst_err};

/// The speaker highlight's colour (amber, RGB 255,200,0).
const AMBER: Yuv = (182, 32, 166);
/// Distance of a label from its tile's bottom-left corner, pixels.
const LABEL_MARGIN: u32 = 8;

/// The CPU canvas behind [`Compositor`].
pub struct CpuCompositor {
    caps: gst::Caps,
    info: gstreamer_video::VideoInfo,
    pool: gst::BufferPool,
    canvas: Mutex<Canvas>,
    /// Tiles in join order.
    tiles: RwLock<Vec<Arc<Tile>>>,
    stats: Arc<VideoStats>,
}

struct Canvas {
    image: Image,
    /// Top, bottom, left, right bars of the speaker highlight.
    bars: Option<[Rect; 4]>,
    /// Something was drawn since the last [`Compositor::take_dirty`].
    dirty: bool,
}

struct Tile {
    id: String,
    state: Mutex<TileState>,
}

#[derive(Default)]
struct TileState {
    /// Where it is drawn (letterboxed), `None` while hidden.
    rect: Option<Rect>,
    z: u32,
    /// Another visible tile overlaps this one (custom layouts): copies redraw the ones above.
    overlaps: bool,
    label: Option<Label>,
    /// The last frame (or placeholder) pushed, to redraw after a relayout.
    last: Option<gst::Sample>,
    /// The tile as last drawn: scaled and labelled, `rect`-sized.
    patch: Image,
    /// Scratch space of the scaler.
    scratch: Vec<u16>,
}

impl TileState {
    /// Scales the last frame into the patch and labels it; `false` when there is nothing to draw
    /// (hidden, no frame yet, or a frame that is not I420 — counted as dropped).
    fn render(&mut self, stats: &VideoStats) -> bool {
        let TileState { rect, label, last, patch, scratch, .. } = self;
        let (Some(rect), Some(sample)) = (*rect, last.as_ref()) else { return false };
        let (Some(buf), Some(caps)) = (sample.buffer(), sample.caps()) else { return false };
        let Ok(info) = gstreamer_video::VideoInfo::from_caps(caps) else { return false };
        if info.format() != gstreamer_video::VideoFormat::I420 {
            stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let Ok(frame) = gstreamer_video::VideoFrameRef::from_buffer_ref_readable(buf, &info) else {
            stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let plane = |k: u32| (frame.plane_data(k).unwrap_or(&[]), frame.plane_stride()[k as usize] as usize);
        let planes =
            Planes { planes: [plane(0), plane(1), plane(2)], width: info.width() & !1, height: info.height() & !1 };
        patch.reshape(rect.w, rect.h);
        patch.scale_from_with(&planes, scratch);
        if let Some(l) = label {
            let x = LABEL_MARGIN.min(rect.w.saturating_sub(l.width));
            let y = rect.h.saturating_sub(l.height + LABEL_MARGIN);
            patch.draw_label(l, x, y);
        }
        true
    }

    /// The patch, when it is drawn at `rect` now.
    fn drawn_at(&self) -> Option<(Rect, &Image)> {
        self.rect.filter(|r| self.patch.width == r.w && self.patch.height == r.h).map(|r| (r, &self.patch))
    }
}

fn intersects(a: Rect, b: Rect) -> bool {
    a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h
}

impl CpuCompositor {
    /// A black canvas of `format`'s size; frames it cannot draw are counted in `stats`.
    ///
    /// # Errors
    /// [`VideoError::Gst`] when the buffer pool cannot be set up.
    pub fn new(format: OutputFormat, stats: Arc<VideoStats>) -> Result<Self, VideoError> {
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", format.width as i32)
            .field("height", format.height as i32)
            .field("framerate", gst::Fraction::new(format.fps as i32, 1))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build();
        let info = gstreamer_video::VideoInfo::from_caps(&caps).map_err(gst_err)?;
        let pool = gst::BufferPool::new();
        let mut cfg = pool.config();
        cfg.set_params(Some(&caps), info.size() as u32, 2, 0);
        pool.set_config(cfg).map_err(gst_err)?;
        pool.set_active(true).map_err(gst_err)?;
        let image = Image::new(format.width, format.height, canvas::BLACK);
        Ok(Self {
            caps,
            info,
            pool,
            canvas: Mutex::new(Canvas { image, bars: None, dirty: true }),
            tiles: RwLock::default(),
            stats,
        })
    }

    fn tile(&self, id: &str) -> Option<Arc<Tile>> {
        self.tiles.read().unwrap().iter().find(|t| t.id == id).cloned()
    }

    /// Copies tile `t`'s patch into the canvas, then the patches of the tiles above it that
    /// overlap it. The caller holds the canvas lock.
    fn blit(&self, cv: &mut Canvas, t: &Tile) {
        let st = t.state.lock().unwrap();
        let Some((r, patch)) = st.drawn_at() else { return };
        cv.image.blit(patch, r.x, r.y);
        cv.dirty = true;
        if !st.overlaps {
            return;
        }
        let z = st.z;
        drop(st);
        let tiles = self.tiles.read().unwrap();
        let Some(i) = tiles.iter().position(|x| std::ptr::eq(x.as_ref(), t)) else { return };
        for (j, other) in tiles.iter().enumerate() {
            if j == i {
                continue;
            }
            let o = other.state.lock().unwrap();
            let above = o.z > z || (o.z == z && j > i);
            if let Some((or, op)) = o.drawn_at()
                && above
                && o.overlaps
                && intersects(or, r)
            {
                cv.image.blit(op, or.x, or.y);
            }
        }
    }
}

impl Drop for CpuCompositor {
    fn drop(&mut self) {
        let _ = self.pool.set_active(false);
    }
}

impl Compositor for CpuCompositor {
    fn caps(&self) -> &gst::Caps {
        &self.caps
    }

    fn add_tile(&self, id: &str, label: Option<Label>) {
        let state = Mutex::new(TileState { label, ..TileState::default() });
        self.tiles.write().unwrap().push(Arc::new(Tile { id: id.to_string(), state }));
    }

    fn remove_tile(&self, id: &str) {
        self.tiles.write().unwrap().retain(|t| t.id != id);
    }

    fn set_label(&self, id: &str, label: Option<Label>) {
        let Some(t) = self.tile(id) else { return };
        let drawn = {
            let mut st = t.state.lock().unwrap();
            st.label = label;
            st.render(&self.stats)
        };
        if drawn {
            let mut cv = self.canvas.lock().unwrap();
            self.blit(&mut cv, &t);
        }
    }

    fn set_scene(&self, scene: &Scene) {
        let mut cv = self.canvas.lock().unwrap();
        let tiles = self.tiles.read().unwrap().clone();
        let rects: Vec<Option<Rect>> = tiles
            .iter()
            .map(|t| {
                let place = scene.tiles.iter().find(|p| p.id == t.id);
                let mut st = t.state.lock().unwrap();
                st.rect = place.and_then(|p| p.rect);
                st.z = place.map_or(0, |p| p.z);
                st.rect
            })
            .collect();
        for (i, t) in tiles.iter().enumerate() {
            t.state.lock().unwrap().overlaps = rects[i]
                .is_some_and(|r| rects.iter().enumerate().any(|(j, o)| j != i && o.is_some_and(|o| intersects(o, r))));
        }
        // Redraw: background, tiles in z-order (join order among equals), highlight.
        let (w, h) = (cv.image.width, cv.image.height);
        cv.image.fill(0, 0, w, h, canvas::BLACK);
        let mut order: Vec<(u32, usize)> =
            tiles.iter().enumerate().map(|(i, t)| (t.state.lock().unwrap().z, i)).collect();
        order.sort();
        for (_, i) in order {
            let mut st = tiles[i].state.lock().unwrap();
            if st.render(&self.stats)
                && let Some((r, patch)) = st.drawn_at()
            {
                cv.image.blit(patch, r.x, r.y);
            }
        }
        cv.bars = scene.highlight;
        for r in cv.bars.into_iter().flatten() {
            cv.image.fill(r.x, r.y, r.w, r.h, AMBER);
        }
        cv.dirty = true;
    }

    fn push(&self, id: &str, frame: &gst::Sample, draw: bool) {
        let Some(t) = self.tile(id) else { return };
        let drawn = {
            let mut st = t.state.lock().unwrap();
            st.last = Some(frame.clone());
            draw && st.render(&self.stats)
        };
        if drawn {
            let mut cv = self.canvas.lock().unwrap();
            self.blit(&mut cv, &t);
        }
    }

    fn take_dirty(&self) -> bool {
        std::mem::take(&mut self.canvas.lock().unwrap().dirty)
    }

    fn composite(&self) -> Option<gst::Buffer> {
        let buf = self.pool.acquire_buffer(None).ok()?;
        let mut frame = gstreamer_video::VideoFrame::from_buffer_writable(buf, &self.info).ok()?;
        let cv = self.canvas.lock().unwrap();
        let pic = cv.image.planes();
        for (k, (data, stride)) in pic.planes.iter().enumerate() {
            let ds = frame.plane_stride()[k] as usize;
            let Ok(dst) = frame.plane_data_mut(k as u32) else { continue };
            let row = (*stride).min(ds);
            for (d, s) in dst.chunks_mut(ds).zip(data.chunks(*stride)) {
                d[..row].copy_from_slice(&s[..row]);
            }
        }
        drop(cv);
        Some(frame.into_buffer())
    }
}
