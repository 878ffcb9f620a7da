//! The CPU compositor: the room's composite assembled in plain memory from one picture per tile.
//!
//! Each decoded frame is scaled once, in its publisher's own decoder thread, into its tile's back
//! picture (bilinear, [`super::super::canvas`]; 0.08 ms for 640x360 → 426x240) and labelled
//! there, with no lock held; a swap under the tile's own lock makes it the tile's front picture.
//! Publishers of a room never wait for each other. When the room clock wants a composite, the
//! front pictures are copied in z-order straight into the output buffer, around them the
//! background (the [`uncovered`] parts, black) and over them the speaker highlight: one write per
//! output pixel, as the copy of a shared canvas would cost, without a lock that every decoder
//! takes. A new scene re-scales each tile's last frame to its new rectangle.
//!
//! Locks: `scene` before a tile's `state`; a decoder takes only its tile's, twice, briefly.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use gstreamer as gst;
use gstreamer_video::prelude::*;

use super::super::canvas::{self, Image, Label, Planes, PlanesMut, Yuv};
use super::super::layout::{Rect, uncovered};
use super::super::tiers::OutputFormat;
use super::compositor::{Compositor, Scene};
use super::{VideoError, VideoStats, composite_caps, gst_err};

/// The speaker highlight's colour (amber, RGB 255,200,0).
const AMBER: Yuv = (182, 32, 166);
/// Distance of a label from its tile's bottom-left corner, pixels.
const LABEL_MARGIN: u32 = 8;

/// The CPU canvas behind [`Compositor`].
pub struct CpuCompositor {
    caps: gst::Caps,
    info: gstreamer_video::VideoInfo,
    pool: gst::BufferPool,
    /// Tiles in join order.
    tiles: RwLock<Vec<Arc<Tile>>>,
    scene: Mutex<Layers>,
    /// Something changed since the last [`Compositor::take_dirty`].
    dirty: AtomicBool,
    stats: Arc<VideoStats>,
}

/// What a composite is made of besides the tiles' pictures.
#[derive(Default)]
struct Layers {
    /// Tiles in drawing order (z, then join order).
    order: Vec<Arc<Tile>>,
    /// The background: the output not covered by a tile's picture.
    background: Vec<Rect>,
    /// Top, bottom, left, right bars of the speaker highlight.
    bars: Option<[Rect; 4]>,
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
    label: Option<Arc<Label>>,
    /// The last frame (or placeholder) pushed, to redraw after a relayout.
    last: Option<gst::Sample>,
    /// The picture the composite shows: the last frame scaled to `rect` and labelled.
    front: Option<Image>,
    /// The picture being drawn next, and the scaler's scratch space (taken out while in use).
    back: Image,
    scratch: Vec<u16>,
}

/// Scales `sample` (I420) into `out` at `rect`'s size and draws `label` on it; `false` when the
/// frame cannot be read (not I420: counted in `stats`).
fn render(
    sample: &gst::Sample,
    rect: Rect,
    label: Option<&Label>,
    out: &mut Image,
    tmp: &mut Vec<u16>,
    stats: &VideoStats,
) -> bool {
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
    out.reshape(rect.w, rect.h);
    out.scale_from_with(&planes, tmp);
    if let Some(l) = label {
        let x = LABEL_MARGIN.min(rect.w.saturating_sub(l.width));
        let y = rect.h.saturating_sub(l.height + LABEL_MARGIN);
        out.draw_label(l, x, y);
    }
    true
}

impl TileState {
    /// Re-renders the front picture from the last frame (after a new rectangle or label), in the
    /// caller's thread.
    fn redraw(&mut self, stats: &VideoStats) {
        let (Some(rect), Some(sample)) = (self.rect, self.last.clone()) else {
            self.front = None;
            return;
        };
        let mut img = self.front.take().unwrap_or_default();
        self.front = render(&sample, rect, self.label.as_deref(), &mut img, &mut self.scratch, stats).then_some(img);
    }
}

impl CpuCompositor {
    /// A black composite of `format`'s size; frames it cannot draw are counted in `stats`.
    ///
    /// # Errors
    /// [`VideoError::Gst`] when the buffer pool cannot be set up.
    pub fn new(format: OutputFormat, stats: Arc<VideoStats>) -> Result<Self, VideoError> {
        let caps = composite_caps(format);
        let info = gstreamer_video::VideoInfo::from_caps(&caps).map_err(gst_err)?;
        let pool = gst::BufferPool::new();
        let mut cfg = pool.config();
        cfg.set_params(Some(&caps), info.size() as u32, 2, 0);
        pool.set_config(cfg).map_err(gst_err)?;
        pool.set_active(true).map_err(gst_err)?;
        let background = vec![Rect { x: 0, y: 0, w: format.width & !1, h: format.height & !1 }];
        Ok(Self {
            caps,
            info,
            pool,
            tiles: RwLock::default(),
            scene: Mutex::new(Layers { background, ..Layers::default() }),
            dirty: AtomicBool::new(true),
            stats,
        })
    }

    fn tile(&self, id: &str) -> Option<Arc<Tile>> {
        self.tiles.read().unwrap().iter().find(|t| t.id == id).cloned()
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

    fn backend(&self) -> String {
        "cpu".into()
    }

    fn add_tile(&self, id: &str, label: Option<Label>) {
        let state = Mutex::new(TileState { label: label.map(Arc::new), ..TileState::default() });
        self.tiles.write().unwrap().push(Arc::new(Tile { id: id.to_string(), state }));
    }

    fn remove_tile(&self, id: &str) {
        self.tiles.write().unwrap().retain(|t| t.id != id);
    }

    fn set_label(&self, id: &str, label: Option<Label>) {
        let Some(t) = self.tile(id) else { return };
        let mut st = t.state.lock().unwrap();
        st.label = label.map(Arc::new);
        st.redraw(&self.stats);
        self.dirty.store(true, Ordering::Release);
    }

    fn set_scene(&self, scene: &Scene) {
        let mut layers = self.scene.lock().unwrap();
        let tiles = self.tiles.read().unwrap().clone();
        let mut order: Vec<(u32, usize)> = vec![];
        let mut rects = vec![];
        for (i, t) in tiles.iter().enumerate() {
            let place = scene.tiles.iter().find(|p| p.id == t.id);
            let mut st = t.state.lock().unwrap();
            let (rect, z) = (place.and_then(|p| p.rect), place.map_or(0, |p| p.z));
            let moved = st.rect != rect;
            (st.rect, st.z) = (rect, z);
            if moved || st.front.as_ref().is_none_or(|f| rect.is_none_or(|r| (f.width, f.height) != (r.w, r.h))) {
                st.redraw(&self.stats);
            }
            if let Some(r) = rect {
                order.push((z, i));
                rects.push(r);
            }
        }
        order.sort();
        let (w, h) = (self.info.width() & !1, self.info.height() & !1);
        *layers = Layers {
            order: order.into_iter().map(|(_, i)| tiles[i].clone()).collect(),
            background: uncovered(w, h, &rects),
            bars: scene.highlight,
        };
        self.dirty.store(true, Ordering::Release);
    }

    fn push(&self, id: &str, frame: &gst::Sample, draw: bool) {
        let Some(t) = self.tile(id) else { return };
        let (rect, label, mut back, mut scratch) = {
            let mut st = t.state.lock().unwrap();
            st.last = Some(frame.clone());
            let Some(rect) = st.rect.filter(|_| draw) else { return };
            (rect, st.label.clone(), std::mem::take(&mut st.back), std::mem::take(&mut st.scratch))
        };
        // The scaling, with no lock held.
        let drawn = render(frame, rect, label.as_deref(), &mut back, &mut scratch, &self.stats);
        let mut st = t.state.lock().unwrap();
        if drawn && st.rect == Some(rect) {
            let old = st.front.replace(back);
            st.back = old.unwrap_or_default();
            self.dirty.store(true, Ordering::Release);
        } else {
            st.back = back;
        }
        st.scratch = scratch;
    }

    fn take_dirty(&self) -> bool {
        self.dirty.swap(false, Ordering::AcqRel)
    }

    fn composite(&self) -> Option<gst::Buffer> {
        let buf = self.pool.acquire_buffer(None).ok()?;
        let mut frame = gstreamer_video::VideoFrame::from_buffer_writable(buf, &self.info).ok()?;
        let strides =
            [frame.plane_stride()[0] as usize, frame.plane_stride()[1] as usize, frame.plane_stride()[2] as usize];
        let (w, h) = (self.info.width() & !1, self.info.height() & !1);
        {
            let [y, u, v, _] = frame.planes_data_mut();
            let mut out =
                PlanesMut { planes: [(y, strides[0]), (u, strides[1]), (v, strides[2])], width: w, height: h };
            let layers = self.scene.lock().unwrap();
            for r in &layers.background {
                out.fill(r.x, r.y, r.w, r.h, canvas::BLACK);
            }
            for t in &layers.order {
                let st = t.state.lock().unwrap();
                match (st.rect, st.front.as_ref()) {
                    (Some(r), Some(img)) if (img.width, img.height) == (r.w, r.h) => out.blit(img, r.x, r.y),
                    (Some(r), _) => out.fill(r.x, r.y, r.w, r.h, canvas::BLACK),
                    _ => {}
                }
            }
            for r in layers.bars.iter().flatten() {
                out.fill(r.x, r.y, r.w, r.h, AMBER);
            }
        }
        Some(frame.into_buffer())
    }
}
