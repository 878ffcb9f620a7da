//! The element compositor: the room's composite drawn by a GStreamer video aggregator from a
//! backend's `composite` fragment — `cudacompositor` (NVIDIA, GStreamer ≥ 1.26), `vacompositor`
//! (VA-API), or `compositor` (CPU, what the tests run here) — the second implementation of
//! [`Compositor`] beside the CPU canvas.
//!
//! The fragment is split around its aggregator (the first element that is a
//! `GstVideoAggregator`): the **head** before it (e.g. `cudaupload`) makes a picture ready for it,
//! the **tail** after it (e.g. `capsfilter ! cudadownload`) gives the composite back as I420 in
//! system memory.
//!
//! ```text
//! decoder thread:  frame ─ push ─ head (upload, once per frame) ─ ready buffer of the tile
//! label / bars / background: head once, when they change
//! room clock:      every item's ready buffer ─ aggregator pad (xpos, ypos, width, height, zorder)
//!                  ─ aggregator (scales into the tile and composes, on the GPU) ─ tail ─ appsink
//! ```
//!
//! Every composite pushes each shown item's ready buffer (a shallow copy: no pixel is copied, a GPU
//! buffer stays on the GPU) with the tick's timestamp into its own aggregator pad, then pulls the
//! one output: the aggregator runs non-live and composes exactly when every pad has its buffer, so
//! a composite reflects the scene and pictures at the call, as the CPU canvas's does. A pad exists
//! only for what is shown (hidden tiles have none): the background (black), each placed tile's
//! picture and label, the speaker highlight's four bars.
//!
//! If anything fails — the pipeline does not start, a head or the aggregator errors, no composite
//! comes within [`COMPOSITE_TIMEOUT`] — the fragment is marked failed ([`Backends::mark_failed`])
//! and the room switches to the CPU canvas while it runs ([`CpuCompositor`], given every tile,
//! label, the scene and each tile's last frame): the room never fails because of its GPU.
//!
//! Locks: `state` before a tile's `inner`; a decoder takes only its tile's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;

use super::super::canvas::Label;
use super::super::gpu_context;
use super::super::layout::Rect;
use super::super::tiers::OutputFormat;
use super::compositor::{Compositor, Scene};
use super::cpu::CpuCompositor;
use super::{VideoError, VideoStats, gst_err};
use crate::pipelines::{Backends, Fragment, Role};

/// The longest a composite may take before the element compositor counts as failed (a GPU's first
/// use takes 0.2-2 s).
pub const COMPOSITE_TIMEOUT: Duration = Duration::from_secs(3);
/// The speaker highlight's colour (amber, RGB 255,200,0) as I420.
const AMBER: [u8; 3] = [182, 32, 166];
/// Distance of a label from its tile's bottom-left corner, pixels (as the CPU canvas).
const LABEL_MARGIN: u32 = 8;
/// Opacity of a label's box, 0-255 (about the CPU canvas's shading).
const LABEL_BOX_ALPHA: u8 = 90;
/// `zorder` of the highlight bars: above every tile.
const BARS_Z: u32 = 1_000_000;

/// A `composite` fragment split around its aggregator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The elements before the aggregator (empty: none), run once per picture.
    pub head: String,
    /// The aggregator element and its properties, e.g. `cudacompositor`.
    pub aggregator: String,
    /// The elements after it (empty: none).
    pub tail: String,
}

/// Splits `desc` at its first element whose factory makes a `GstVideoAggregator`.
///
/// # Errors
/// A one-line reason when no element of `desc` is a video aggregator here.
pub fn split(desc: &str) -> Result<Split, String> {
    let _ = gst::init();
    let segs: Vec<&str> = desc.split('!').map(str::trim).collect();
    for (i, seg) in segs.iter().enumerate() {
        let Some(factory) = seg.split_whitespace().next().and_then(gst::ElementFactory::find) else { continue };
        let Ok(factory) = factory.load() else { continue };
        let aggregator = gst::glib::Type::from_name("GstVideoAggregator");
        if aggregator.is_some_and(|t| factory.element_type().is_a(t)) {
            return Ok(Split {
                head: segs[..i].join(" ! "),
                aggregator: seg.to_string(),
                tail: segs[i + 1..].join(" ! "),
            });
        }
    }
    Err(format!("no video aggregator element in `{desc}`"))
}

/// A picture ready for the aggregator: the head's output and its caps.
#[derive(Clone)]
struct Ready {
    buffer: gst::Buffer,
    caps: gst::Caps,
}

/// The head's elements in a pipeline of their own, driven in the caller's thread: a buffer pushed
/// into `src` comes out into `out` before [`Head::run`] returns.
struct Head {
    pipeline: gst::Pipeline,
    src: gst::Pad,
    /// Held: a link does not keep a parentless pad alive.
    _sink: gst::Pad,
    caps: Option<gst::Caps>,
    out: Arc<Mutex<Option<Ready>>>,
}

impl Head {
    fn new(desc: &str, name: &str) -> Result<Self, String> {
        let bin = gst::parse::bin_from_description(desc, true).map_err(|e| e.to_string())?;
        let pipeline = gst::Pipeline::with_name(name);
        pipeline.add(&bin).map_err(|e| e.to_string())?;
        if let Some(bus) = pipeline.bus() {
            bus.set_sync_handler(|_, msg| {
                gpu_context::handle(msg);
                gst::BusSyncReply::Drop
            });
        }
        let out: Arc<Mutex<Option<Ready>>> = Arc::default();
        // The caps of the head's last caps event.
        let out_caps: Arc<Mutex<Option<gst::Caps>>> = Arc::default();
        let (o, oc, oc2) = (out.clone(), out_caps.clone(), out_caps);
        let sink = gst::Pad::builder(gst::PadDirection::Sink)
            .name("head-out")
            .chain_function(move |_, _, buffer| {
                let caps = oc.lock().unwrap().clone().ok_or(gst::FlowError::NotNegotiated)?;
                *o.lock().unwrap() = Some(Ready { buffer, caps });
                Ok(gst::FlowSuccess::Ok)
            })
            // Any caps, whatever came before (the default answers with the current caps).
            .query_function(|pad, parent, query| match query.view_mut() {
                gst::QueryViewMut::Caps(q) => {
                    let caps = q.filter().map_or_else(gst::Caps::new_any, |f| f.to_owned());
                    q.set_result(&caps);
                    true
                }
                gst::QueryViewMut::AcceptCaps(q) => {
                    q.set_result(true);
                    true
                }
                _ => gst::Pad::query_default(pad, parent, query),
            })
            .event_function(move |_, _, event| {
                if let gst::EventView::Caps(c) = event.view() {
                    *oc2.lock().unwrap() = Some(c.caps_owned());
                }
                true
            })
            .build();
        let src = gst::Pad::builder(gst::PadDirection::Src).name("head-in").build();
        let (bin_sink, bin_src) =
            (bin.static_pad("sink").ok_or("head has no sink")?, bin.static_pad("src").ok_or("head has no src")?);
        src.link(&bin_sink).map_err(|e| format!("head input: {e:?}"))?;
        bin_src.link(&sink).map_err(|e| format!("head output: {e:?}"))?;
        sink.set_active(true).map_err(|e| e.to_string())?;
        pipeline.set_state(gst::State::Playing).map_err(|e| format!("head does not start: {e}"))?;
        src.set_active(true).map_err(|e| e.to_string())?;
        src.push_event(gst::event::StreamStart::new(name));
        Ok(Self { pipeline, src, _sink: sink, caps: None, out })
    }

    /// Runs `buffer` (of `caps`) through the head.
    fn run(&mut self, buffer: gst::Buffer, caps: &gst::Caps) -> Result<Ready, String> {
        if self.caps.as_ref() != Some(caps) {
            if !self.src.push_event(gst::event::Caps::new(caps)) {
                return Err(format!("head refuses {caps}"));
            }
            if self.caps.is_none() {
                self.src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new()));
            }
            self.caps = Some(caps.clone());
        }
        self.src.push(buffer).map_err(|e| format!("head: {e:?}"))?;
        self.out.lock().unwrap().take().ok_or_else(|| "head gave no buffer".to_string())
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Makes pictures ready: through the head, or as they are when the fragment has none.
enum Prepare {
    Direct,
    Head(Box<Head>),
}

impl Prepare {
    fn new(head: &str, name: &str) -> Result<Self, String> {
        Ok(if head.is_empty() { Prepare::Direct } else { Prepare::Head(Box::new(Head::new(head, name)?)) })
    }

    fn run(&mut self, buffer: gst::Buffer, caps: &gst::Caps) -> Result<Ready, String> {
        match self {
            Prepare::Direct => Ok(Ready { buffer, caps: caps.clone() }),
            Prepare::Head(h) => h.run(buffer, caps),
        }
    }

    fn sample(&mut self, s: &gst::Sample) -> Result<Ready, String> {
        let (Some(b), Some(c)) = (s.buffer_owned(), s.caps_owned()) else { return Err("empty sample".into()) };
        self.run(b, &c)
    }
}

/// What an aggregator pad shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Item {
    Background,
    Picture(u64),
    Label(u64),
    Bar(usize),
}

/// One aggregator pad and the pad of ours that feeds it.
struct Link {
    ours: gst::Pad,
    theirs: gst::Pad,
    caps: Option<gst::Caps>,
    place: Option<(Rect, u32)>,
}

struct Tile {
    id: String,
    /// Key of its items.
    key: u64,
    inner: Mutex<TileInner>,
}

struct TileInner {
    label: Option<Label>,
    label_ready: Option<Ready>,
    /// The last frame pushed (replayed into the CPU canvas on a fallback).
    last: Option<gst::Sample>,
    ready: Option<Ready>,
    prepare: Prepare,
}

struct State {
    /// Tiles in join order, with their place (rect, z).
    tiles: Vec<(Arc<Tile>, Option<Rect>, u32)>,
    scene: Scene,
    links: HashMap<Item, Link>,
    next_key: u64,
    /// Composites made (the timeline of the aggregator's input).
    frames: u64,
}

/// A room's composite drawn by a GStreamer video aggregator (see the module docs).
pub struct ElementCompositor {
    room: String,
    caps: gst::Caps,
    format: OutputFormat,
    backend: String,
    head: String,
    pipeline: gst::Pipeline,
    aggregator: gst::Element,
    sink: gst_app::AppSink,
    background: Ready,
    amber: Ready,
    state: Mutex<State>,
    dirty: AtomicBool,
    /// Why it failed, set by whichever thread saw it; the next composite falls back.
    failure: Mutex<Option<String>>,
    fallen: OnceLock<CpuCompositor>,
    backends: Backends,
    fragment: Fragment,
    stats: Arc<VideoStats>,
}

/// A solid I420 picture of 16x16.
fn solid(yuv: [u8; 3]) -> (gst::Buffer, gst::Caps) {
    let mut data = vec![yuv[0]; 256];
    data.extend(std::iter::repeat_n(yuv[1], 64));
    data.extend(std::iter::repeat_n(yuv[2], 64));
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", 16)
        .field("height", 16)
        .field("framerate", gst::Fraction::new(0, 1))
        .build();
    (gst::Buffer::from_mut_slice(data), caps)
}

/// `label` as a BGRA picture: white text over a translucent black box.
fn label_picture(label: &Label) -> (gst::Buffer, gst::Caps) {
    let mut data = Vec::with_capacity(label.luma.len() * 4);
    for (&y, &a) in label.luma.iter().zip(&label.alpha) {
        data.extend_from_slice(&[y, y, y, a.max(LABEL_BOX_ALPHA)]);
    }
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "BGRA")
        .field("width", label.width as i32)
        .field("height", label.height as i32)
        .field("framerate", gst::Fraction::new(0, 1))
        .build();
    (gst::Buffer::from_mut_slice(data), caps)
}

/// Sets a numeric pad property whatever its type in this element (`gint` on `compositor`,
/// `guint` `zorder`, `gdouble` `alpha`).
fn set_num(pad: &gst::Pad, name: &str, v: f64) -> Result<(), String> {
    let spec = pad.find_property(name).ok_or_else(|| format!("aggregator pads have no `{name}`"))?;
    let t = spec.value_type();
    let value = if t == i32::static_type() {
        (v as i32).to_value()
    } else if t == u32::static_type() {
        (v as u32).to_value()
    } else if t == i64::static_type() {
        (v as i64).to_value()
    } else if t == u64::static_type() {
        (v as u64).to_value()
    } else if t == f64::static_type() {
        v.to_value()
    } else if t == f32::static_type() {
        (v as f32).to_value()
    } else {
        return Err(format!("pad property `{name}` is a {t}"));
    };
    pad.set_property_from_value(name, &value);
    Ok(())
}

impl ElementCompositor {
    /// The compositor of room `room` from `fragment` (a `composite` fragment of `backends`), at
    /// `format`'s size and rate; `stats` counts what it drops and its fallback.
    ///
    /// # Errors
    /// [`VideoError::Gst`] when the fragment has no video aggregator, does not parse, or its
    /// pipeline does not make a first (black) composite within [`COMPOSITE_TIMEOUT`] — the caller
    /// then uses the CPU canvas.
    pub fn new(
        room: &str,
        backends: &Backends,
        fragment: &Fragment,
        format: OutputFormat,
        stats: Arc<VideoStats>,
    ) -> Result<Self, VideoError> {
        gst::init().map_err(gst_err)?;
        let parts = split(&fragment.description).map_err(VideoError::Gst)?;
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", format.width as i32)
            .field("height", format.height as i32)
            .field("framerate", gst::Fraction::new(format.fps as i32, 1))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build();
        let pipeline = gst::Pipeline::with_name(&format!("composite-{room}"));
        let aggregator = gst::parse::launch(&parts.aggregator).map_err(gst_err)?;
        let filter = gst::ElementFactory::make("capsfilter").property("caps", &caps).build().map_err(gst_err)?;
        let sink = gst_app::AppSink::builder().sync(false).max_buffers(2).build();
        pipeline.add(&aggregator).map_err(gst_err)?;
        let mut last = aggregator.clone();
        if !parts.tail.is_empty() {
            let tail: gst::Element = gst::parse::bin_from_description(&parts.tail, true).map_err(gst_err)?.upcast();
            pipeline.add(&tail).map_err(gst_err)?;
            last.link(&tail).map_err(gst_err)?;
            last = tail;
        }
        pipeline.add_many([&filter, sink.upcast_ref()]).map_err(gst_err)?;
        gst::Element::link_many([&last, &filter, sink.upcast_ref()]).map_err(gst_err)?;
        let failure: Mutex<Option<String>> = Mutex::default();
        if let Some(bus) = pipeline.bus() {
            bus.set_sync_handler(|_, msg| {
                gpu_context::handle(msg);
                gst::BusSyncReply::Pass
            });
        }
        pipeline.set_state(gst::State::Playing).map_err(|e| VideoError::Gst(format!("{}: {e}", parts.aggregator)))?;
        let mut prepare = Prepare::new(&parts.head, &format!("composite-head-{room}")).map_err(VideoError::Gst)?;
        let (b, c) = solid([16, 128, 128]);
        let background = prepare.run(b, &c).map_err(VideoError::Gst)?;
        let (b, c) = solid(AMBER);
        let amber = prepare.run(b, &c).map_err(VideoError::Gst)?;
        let state = State { tiles: vec![], scene: Scene::default(), links: HashMap::new(), next_key: 0, frames: 0 };
        let this = Self {
            room: room.to_string(),
            caps,
            format,
            backend: fragment.backend.clone(),
            head: parts.head,
            pipeline,
            aggregator,
            sink,
            background,
            amber,
            state: Mutex::new(state),
            dirty: AtomicBool::new(true),
            failure,
            fallen: OnceLock::new(),
            backends: backends.clone(),
            fragment: fragment.clone(),
            stats,
        };
        // The first composite proves the chain runs (and takes the GPU's first-use time here,
        // not in the room clock).
        let first = this.compose(&mut this.state.lock().unwrap());
        first.map_err(VideoError::Gst)?;
        Ok(this)
    }

    /// The backend whose fragment composites (`cpu` after a fallback).
    pub fn backend(&self) -> &str {
        if self.fallen.get().is_some() { "cpu" } else { &self.backend }
    }

    fn tile(&self, id: &str) -> Option<Arc<Tile>> {
        self.state.lock().unwrap().tiles.iter().find(|t| t.0.id == id).map(|t| t.0.clone())
    }

    fn fail(&self, why: String) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            *f = Some(why);
        }
    }

    /// Feeds every shown item to its pad for the next tick and pulls the composite.
    fn compose(&self, st: &mut State) -> Result<gst::Buffer, String> {
        let mut want: Vec<(Item, Ready, Rect, u32)> = vec![];
        let full = Rect { x: 0, y: 0, w: self.format.width, h: self.format.height };
        want.push((Item::Background, self.background.clone(), full, 0));
        for (tile, rect, z) in &st.tiles {
            let Some(r) = rect else { continue };
            let inner = tile.inner.lock().unwrap();
            let Some(ready) = inner.ready.clone() else { continue };
            want.push((Item::Picture(tile.key), ready, *r, 2 * z + 2));
            if let (Some(l), Some(lr)) = (&inner.label, &inner.label_ready) {
                let (w, h) = (l.width.min(r.w), l.height.min(r.h));
                let x = r.x + LABEL_MARGIN.min(r.w - w);
                let y = r.y + r.h.saturating_sub(h + LABEL_MARGIN);
                want.push((Item::Label(tile.key), lr.clone(), Rect { x, y, w, h }, 2 * z + 3));
            }
        }
        for (i, bar) in st.scene.highlight.iter().flatten().enumerate() {
            want.push((Item::Bar(i), self.amber.clone(), *bar, BARS_Z));
        }
        // Pads for what is no longer shown go, and so do pads whose caps change: a caps change
        // on a running aggregator pad holds its output back by a frame (GStreamer 1.22's
        // videoaggregator), a new pad does not.
        let gone: Vec<Item> = st
            .links
            .iter()
            .filter(|(k, l)| !want.iter().any(|w| w.0 == **k && l.caps.as_ref() == Some(&w.1.caps)))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(l) = st.links.remove(&k) {
                let _ = l.ours.unlink(&l.theirs);
                let _ = l.ours.set_active(false);
                self.aggregator.release_request_pad(&l.theirs);
            }
        }
        let n = st.frames;
        st.frames += 1;
        let fps = u64::from(self.format.fps.max(1));
        let at = |k: u64| gst::ClockTime::SECOND.mul_div_floor(k, fps).unwrap_or(gst::ClockTime::ZERO);
        let (pts, duration) = (at(n), at(n + 1) - at(n));
        // Every pad first: the aggregator composes as soon as each pad it has holds a buffer.
        for (item, ready, rect, z) in &want {
            let link = match st.links.entry(*item) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(self.link(*item, n)?),
            };
            if link.caps.is_none() {
                if !link.ours.push_event(gst::event::Caps::new(&ready.caps)) {
                    return Err(format!("the aggregator refuses {}", ready.caps));
                }
                link.ours.push_event(gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new()));
                link.caps = Some(ready.caps.clone());
            }
            if link.place != Some((*rect, *z)) {
                let p = &link.theirs;
                for (name, v) in
                    [("xpos", rect.x), ("ypos", rect.y), ("width", rect.w), ("height", rect.h), ("zorder", *z)]
                {
                    set_num(p, name, f64::from(v))?;
                }
                link.place = Some((*rect, *z));
            }
        }
        for (item, ready, _, _) in want {
            let mut buf = ready.buffer.copy();
            {
                let b = buf.make_mut();
                b.set_pts(pts);
                b.set_duration(duration);
            }
            st.links[&item].ours.push(buf).map_err(|e| format!("aggregator input: {e:?}"))?;
        }
        // Pulled in slices, so that an error on the bus ends the wait at once.
        let deadline = std::time::Instant::now() + COMPOSITE_TIMEOUT;
        loop {
            if let Some(e) = self.bus_error() {
                return Err(e);
            }
            if let Some(sample) = self.sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) {
                return sample.buffer_owned().ok_or_else(|| "a composite without a buffer".to_string());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("no composite within {} ms", COMPOSITE_TIMEOUT.as_millis()));
            }
        }
    }

    /// The first error on the pipeline's bus, if any (the other messages are dropped).
    fn bus_error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(msg) = bus.pop() {
            if let gst::MessageView::Error(e) = msg.view() {
                let src = e.src().map(|s| s.name().to_string()).unwrap_or_default();
                return Some(format!("{src}: {}", e.error()));
            }
        }
        None
    }

    /// A new aggregator pad for `item`, fed by a pad of ours, its stream starting at frame `n`.
    fn link(&self, item: Item, n: u64) -> Result<Link, String> {
        let theirs = self.aggregator.request_pad_simple("sink_%u").ok_or("the aggregator gives no more sink pads")?;
        let ours = gst::Pad::builder(gst::PadDirection::Src).name(format!("{item:?}")).build();
        ours.link(&theirs).map_err(|e| format!("aggregator pad: {e:?}"))?;
        ours.set_active(true).map_err(|e| e.to_string())?;
        ours.push_event(gst::event::StreamStart::new(&format!("{}-{item:?}-{n}", self.room)));
        Ok(Link { ours, theirs, caps: None, place: None })
    }

    /// Switches to the CPU canvas, given everything this compositor knows (under `st`); `None`
    /// when not even the CPU canvas can be made (no buffer pool).
    fn fall_back(&self, st: &mut State, why: &str) -> Option<&CpuCompositor> {
        if let Some(c) = self.fallen.get() {
            return Some(c);
        }
        tracing::warn!(room = %self.room, backend = %self.backend, reason = %why,
            "the element compositor failed; the room composites on the CPU canvas from now on");
        self.backends.mark_failed(Role::Composite, &self.fragment, why);
        self.backends.note_serving(Role::Composite, "cpu");
        self.stats.compositor_fallbacks.fetch_add(1, Ordering::Relaxed);
        let cpu = match CpuCompositor::new(self.format, self.stats.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(room = %self.room, "the CPU canvas cannot be made either: {e}");
                return None;
            }
        };
        for (t, _, _) in &st.tiles {
            cpu.add_tile(&t.id, t.inner.lock().unwrap().label.clone());
        }
        cpu.set_scene(&st.scene);
        for (t, _, _) in &st.tiles {
            if let Some(s) = t.inner.lock().unwrap().last.clone() {
                cpu.push(&t.id, &s, true);
            }
        }
        for (_, l) in st.links.drain() {
            let _ = l.ours.set_active(false);
        }
        let _ = self.pipeline.set_state(gst::State::Null);
        Some(self.fallen.get_or_init(|| cpu))
    }
}

impl Drop for ElementCompositor {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Compositor for ElementCompositor {
    fn caps(&self) -> &gst::Caps {
        &self.caps
    }

    fn backend(&self) -> String {
        ElementCompositor::backend(self).to_string()
    }

    fn add_tile(&self, id: &str, label: Option<Label>) {
        if let Some(c) = self.fallen.get() {
            return c.add_tile(id, label);
        }
        let mut st = self.state.lock().unwrap();
        let key = st.next_key;
        st.next_key += 1;
        let prepare = match Prepare::new(&self.head, &format!("tile-head-{}-{id}", self.room)) {
            Ok(p) => p,
            Err(e) => {
                self.fail(format!("tile {id}: {e}"));
                Prepare::Direct
            }
        };
        let inner = TileInner { label: None, label_ready: None, last: None, ready: None, prepare };
        let tile = Arc::new(Tile { id: id.to_string(), key, inner: Mutex::new(inner) });
        st.tiles.push((tile, None, 0));
        drop(st);
        self.set_label(id, label);
    }

    fn remove_tile(&self, id: &str) {
        if let Some(c) = self.fallen.get() {
            return c.remove_tile(id);
        }
        self.state.lock().unwrap().tiles.retain(|t| t.0.id != id);
        self.dirty.store(true, Ordering::Release);
    }

    fn set_label(&self, id: &str, label: Option<Label>) {
        if let Some(c) = self.fallen.get() {
            return c.set_label(id, label);
        }
        let Some(t) = self.tile(id) else { return };
        let mut inner = t.inner.lock().unwrap();
        inner.label_ready = match &label {
            Some(l) => {
                let (b, c) = label_picture(l);
                match inner.prepare.run(b, &c) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        self.fail(format!("label of {id}: {e}"));
                        None
                    }
                }
            }
            None => None,
        };
        inner.label = label;
        self.dirty.store(true, Ordering::Release);
    }

    fn set_scene(&self, scene: &Scene) {
        if let Some(c) = self.fallen.get() {
            return c.set_scene(scene);
        }
        let mut st = self.state.lock().unwrap();
        for (t, rect, z) in &mut st.tiles {
            let place = scene.tiles.iter().find(|p| p.id == t.id);
            (*rect, *z) = (place.and_then(|p| p.rect), place.map_or(0, |p| p.z));
        }
        st.scene = scene.clone();
        self.dirty.store(true, Ordering::Release);
    }

    fn push(&self, id: &str, frame: &gst::Sample, draw: bool) {
        if let Some(c) = self.fallen.get() {
            return c.push(id, frame, draw);
        }
        let Some(t) = self.tile(id) else { return };
        let mut inner = t.inner.lock().unwrap();
        inner.last = Some(frame.clone());
        match inner.prepare.sample(frame) {
            Ok(r) => inner.ready = Some(r),
            Err(e) => {
                self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                self.fail(format!("picture of {id}: {e}"));
                return;
            }
        }
        if draw {
            self.dirty.store(true, Ordering::Release);
        }
    }

    fn take_dirty(&self) -> bool {
        if let Some(c) = self.fallen.get() {
            return c.take_dirty();
        }
        self.dirty.swap(false, Ordering::AcqRel)
    }

    fn composite(&self) -> Option<gst::Buffer> {
        if let Some(c) = self.fallen.get() {
            return c.composite();
        }
        let mut st = self.state.lock().unwrap();
        let failed = self.failure.lock().unwrap().take();
        let why = match failed {
            Some(why) => why,
            None => match self.compose(&mut st) {
                Ok(b) => return Some(b),
                Err(why) => why,
            },
        };
        self.fall_back(&mut st, &why)?.composite()
    }
}

#[cfg(test)]
#[path = "element_tests.rs"]
mod tests;
