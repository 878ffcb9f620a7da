//! The element compositor: the room's composite drawn by a GStreamer video aggregator from a
//! backend's `composite` fragment — `cudacompositor` (NVIDIA, GStreamer ≥ 1.26), `vacompositor`
//! (VA-API), or `compositor` (CPU, what the tests run here) — the second implementation of
//! [`Compositor`] beside the CPU canvas.
//!
//! The fragment is split around its aggregator ([`split`]): the **head** before it (e.g.
//! `cudaupload`) makes a picture ready for it, the **tail** after it (e.g. `capsfilter !
//! cudadownload`) gives the composite back as I420 in system memory.
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
//! picture and label, the speaker highlight's four bars. Nothing runs before the first composite:
//! the pipeline starts there, in the room clock's thread.
//!
//! If the head or the aggregator fails — the pipeline does not start, an element errors, no
//! composite comes within [`COMPOSITE_TIMEOUT`] — the fragment is marked failed
//! ([`Backends::mark_failed`]) and the room switches to the CPU canvas while it runs
//! ([`CpuCompositor`], given every tile, label, the scene and each tile's last frame): the room
//! never fails because of its GPU. A frame the head refuses (its format) is dropped and counted,
//! as the CPU canvas does.
//!
//! Locks, in this order: `feed` (the room clock only), `state` (briefly: who is shown where), a
//! tile's `shown` (briefly). A tile's `prepare` (its head, while a picture goes through it) is
//! never held with another.

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
use super::head::{HeadError, Prepare, Ready, label_picture, solid};
pub use super::head::{Split, split};
use super::{VideoError, VideoStats, composite_caps, gst_err};
use crate::pipelines::{Backends, Fragment, Role};

/// The longest a composite may take before the element compositor counts as failed (a GPU's first
/// use takes 0.2-2 s).
pub const COMPOSITE_TIMEOUT: Duration = Duration::from_secs(3);
/// The speaker highlight's colour (amber, RGB 255,200,0) as I420.
const AMBER: [u8; 3] = [182, 32, 166];
/// Distance of a label from its tile's bottom-left corner, pixels (as the CPU canvas).
const LABEL_MARGIN: u32 = 8;

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
    /// Its head, while a picture goes through it.
    prepare: Mutex<Prepare>,
    /// What the composite reads.
    shown: Mutex<Shown>,
}

#[derive(Default)]
struct Shown {
    label: Option<Label>,
    label_ready: Option<Ready>,
    /// The last frame pushed (replayed into the CPU canvas on a fallback).
    last: Option<gst::Sample>,
    ready: Option<Ready>,
    /// A frame pushed with `draw = false` (a new size): shown from the next scene on.
    pending: Option<Ready>,
}

/// One tile in join order and where the scene puts it.
struct Placed {
    tile: Arc<Tile>,
    rect: Option<Rect>,
    z: u32,
}

#[derive(Default)]
struct State {
    tiles: Vec<Placed>,
    scene: Scene,
    next_key: u64,
}

/// What only the room clock touches.
struct Feed {
    links: HashMap<Item, Link>,
    /// Composites made (the timeline of the aggregator's input).
    frames: u64,
    /// The background and the highlight colour, made ready at the first composite.
    statics: Option<(Ready, Ready)>,
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
    feed: Mutex<Feed>,
    state: Mutex<State>,
    dirty: AtomicBool,
    /// Why it failed, set by whichever thread saw it; the next composite falls back.
    failure: Mutex<Option<String>>,
    /// Set (under `state`) when the CPU canvas took over.
    fallen: OnceLock<CpuCompositor>,
    backends: Backends,
    fragment: Fragment,
    stats: Arc<VideoStats>,
}

/// Sets a numeric pad property whatever its type in this element (`gint` `xpos` on `compositor`
/// and `cudacompositor`, `guint` `zorder`).
fn set_num(pad: &gst::Pad, name: &str, v: u32) -> Result<(), String> {
    let spec = pad.find_property(name).ok_or_else(|| format!("aggregator pads have no `{name}`"))?;
    let t = spec.value_type();
    let value = if t == i32::static_type() {
        i32::try_from(v).unwrap_or(i32::MAX).to_value()
    } else if t == u32::static_type() {
        v.to_value()
    } else if t == i64::static_type() {
        i64::from(v).to_value()
    } else if t == u64::static_type() {
        u64::from(v).to_value()
    } else if t == f64::static_type() {
        f64::from(v).to_value()
    } else {
        return Err(format!("pad property `{name}` is a {t}"));
    };
    pad.set_property_from_value(name, &value);
    Ok(())
}

impl ElementCompositor {
    /// The compositor of room `room` from `fragment` (a `composite` fragment of `backends`), at
    /// `format`'s size and rate (I420 out); `stats` counts what it drops and its fallback. Builds
    /// the elements but runs nothing (milliseconds): the pipeline starts at the first composite.
    ///
    /// # Errors
    /// [`VideoError::Gst`] when the fragment has no video aggregator, does not parse, or its tail
    /// does not link to I420 in system memory — the caller then uses the CPU canvas.
    pub fn new(
        room: &str,
        backends: &Backends,
        fragment: &Fragment,
        format: OutputFormat,
        stats: Arc<VideoStats>,
    ) -> Result<Self, VideoError> {
        gst::init().map_err(gst_err)?;
        let parts = split(&fragment.description).map_err(VideoError::Gst)?;
        let caps = composite_caps(format);
        let pipeline = gst::Pipeline::with_name(&format!("composite-{room}"));
        let aggregator = gst::parse::launch(&parts.aggregator).map_err(gst_err)?;
        let filter = gst::ElementFactory::make("capsfilter").property("caps", &caps).build().map_err(gst_err)?;
        // No last sample kept: the composite handed out has one owner, so the room clock stamps
        // it without a copy.
        let sink = gst_app::AppSink::builder().sync(false).max_buffers(2).enable_last_sample(false).build();
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
        if let Some(bus) = pipeline.bus() {
            bus.set_sync_handler(|_, msg| {
                gpu_context::handle(msg);
                gst::BusSyncReply::Pass
            });
        }
        Ok(Self {
            room: room.to_string(),
            caps,
            format,
            backend: fragment.backend.clone(),
            head: parts.head,
            pipeline,
            aggregator,
            sink,
            feed: Mutex::new(Feed { links: HashMap::new(), frames: 0, statics: None }),
            state: Mutex::default(),
            dirty: AtomicBool::new(true),
            failure: Mutex::default(),
            fallen: OnceLock::new(),
            backends: backends.clone(),
            fragment: fragment.clone(),
            stats,
        })
    }

    /// The backend whose fragment composites (`cpu` after a fallback).
    pub fn backend(&self) -> &str {
        if self.fallen.get().is_some() { "cpu" } else { &self.backend }
    }

    fn fail(&self, why: String) {
        let mut f = self.failure.lock().unwrap();
        if f.is_none() {
            *f = Some(why);
        }
    }

    /// Makes `what` ready through `tile`'s head: `None` when refused (counted as dropped) or
    /// failed (the next composite falls back).
    fn prepare(
        &self,
        tile: &Tile,
        what: &str,
        run: impl FnOnce(&mut Prepare) -> Result<Ready, HeadError>,
    ) -> Option<Ready> {
        match run(&mut tile.prepare.lock().unwrap()) {
            Ok(r) => Some(r),
            Err(HeadError::Refused(e)) => {
                self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(room = %self.room, participant = %tile.id, "{what} not drawn: {e}");
                None
            }
            Err(HeadError::Failed(e)) => {
                self.fail(format!("{what} of {}: {e}", tile.id));
                None
            }
        }
    }

    /// Starts the pipeline and makes the static pictures ready (first composite only).
    fn start(&self, feed: &mut Feed) -> Result<(Ready, Ready), String> {
        if let Some(s) = &feed.statics {
            return Ok(s.clone());
        }
        self.pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("the composite pipeline does not start: {e}"))?;
        let mut head = Prepare::new(&self.head, &format!("composite-head-{}", self.room))?;
        let mut ready = |c: [u8; 3]| {
            let (b, caps) = solid(c);
            head.run(b, &caps).map_err(|e| format!("{e:?}"))
        };
        let statics = (ready([16, 128, 128])?, ready(AMBER)?);
        feed.statics = Some(statics.clone());
        Ok(statics)
    }

    /// What the next composite shows: `(item, picture, rectangle, zorder)` in drawing order.
    fn items(&self, background: Ready, amber: Ready) -> Vec<(Item, Ready, Rect, u32)> {
        let st = self.state.lock().unwrap();
        let full = Rect { x: 0, y: 0, w: self.format.width, h: self.format.height };
        let mut want = vec![(Item::Background, background, full, 0)];
        // Drawing order as the CPU canvas's: z, then join order.
        let mut order: Vec<(u32, usize)> =
            st.tiles.iter().enumerate().filter(|(_, p)| p.rect.is_some()).map(|(i, p)| (p.z, i)).collect();
        order.sort_unstable();
        let mut rank = 0u32;
        for (_, i) in order {
            let Placed { tile, rect: Some(r), .. } = &st.tiles[i] else { continue };
            let shown = tile.shown.lock().unwrap();
            let Some(ready) = shown.ready.clone() else { continue };
            rank += 1;
            want.push((Item::Picture(tile.key), ready, *r, 2 * rank));
            // A label wider than its tile is scaled down to fit (the CPU canvas clips it); one
            // still taller than the tile is left out.
            if let (Some(l), Some(lr)) = (&shown.label, &shown.label_ready) {
                let w = l.width.min(r.w);
                let h = (u64::from(l.height) * u64::from(w) / u64::from(l.width.max(1))) as u32;
                if h > 0 && h <= r.h {
                    let x = r.x + LABEL_MARGIN.min(r.w - w);
                    let y = r.y + r.h.saturating_sub(h + LABEL_MARGIN);
                    want.push((Item::Label(tile.key), lr.clone(), Rect { x, y, w, h }, 2 * rank + 1));
                }
            }
        }
        for (i, bar) in st.scene.highlight.iter().flatten().enumerate() {
            want.push((Item::Bar(i), amber.clone(), *bar, 2 * rank + 2));
        }
        want
    }

    /// Feeds every shown item to its pad for the next tick and pulls the composite.
    fn compose(&self, feed: &mut Feed) -> Result<gst::Buffer, String> {
        let (background, amber) = self.start(feed)?;
        let want = self.items(background, amber);
        // Pads for what is no longer shown go, and so do pads whose caps change: a caps change
        // on a running aggregator pad holds its output back by a frame (GStreamer 1.22's
        // videoaggregator), a new pad does not.
        let gone: Vec<Item> = feed
            .links
            .iter()
            .filter(|(k, l)| !want.iter().any(|w| w.0 == **k && l.caps.as_ref() == Some(&w.1.caps)))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(l) = feed.links.remove(&k) {
                let _ = l.ours.unlink(&l.theirs);
                let _ = l.ours.set_active(false);
                self.aggregator.release_request_pad(&l.theirs);
            }
        }
        let n = feed.frames;
        feed.frames += 1;
        let fps = u64::from(self.format.fps.max(1));
        let at = |k: u64| gst::ClockTime::SECOND.mul_div_floor(k, fps).unwrap_or(gst::ClockTime::ZERO);
        let (pts, duration) = (at(n), at(n + 1) - at(n));
        // Every pad first: the aggregator composes as soon as each pad it has holds a buffer.
        for (item, ready, rect, z) in &want {
            let link = match feed.links.entry(*item) {
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
                for (name, v) in
                    [("xpos", rect.x), ("ypos", rect.y), ("width", rect.w), ("height", rect.h), ("zorder", *z)]
                {
                    set_num(&link.theirs, name, v)?;
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
            feed.links[&item].ours.push(buf).map_err(|e| format!("aggregator input: {e:?}"))?;
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

    /// Switches to the CPU canvas, given everything this compositor knows; `None` when not even
    /// the CPU canvas can be made (no buffer pool). The element pipeline and the heads are
    /// stopped on a thread of their own (a stuck GPU element must not hold the room).
    fn fall_back(&self, feed: &mut Feed, why: &str) -> Option<&CpuCompositor> {
        let mut st = self.state.lock().unwrap();
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
        for p in &st.tiles {
            cpu.add_tile(&p.tile.id, p.tile.shown.lock().unwrap().label.clone());
        }
        cpu.set_scene(&st.scene);
        for p in &st.tiles {
            if let Some(s) = p.tile.shown.lock().unwrap().last.clone() {
                cpu.push(&p.tile.id, &s, true);
            }
        }
        let cpu = self.fallen.get_or_init(|| cpu);
        let tiles = std::mem::take(&mut st.tiles);
        let links: Vec<Link> = feed.links.drain().map(|(_, l)| l).collect();
        let (pipeline, statics) = (self.pipeline.clone(), feed.statics.take());
        let stop = move || {
            for l in &links {
                let _ = l.ours.set_active(false);
            }
            let _ = pipeline.set_state(gst::State::Null);
            drop((tiles, links, statics));
        };
        if std::thread::Builder::new().name("composite-stop".into()).spawn(stop).is_err() {
            tracing::warn!(room = %self.room, "could not stop the element compositor's pipeline");
        }
        Some(cpu)
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
        // The head starts here, before any lock (a GPU context hand-off).
        let prepare = match self.fallen.get() {
            Some(_) => Prepare::Direct,
            None => Prepare::new(&self.head, &format!("tile-head-{}-{id}", self.room)).unwrap_or_else(|e| {
                self.fail(format!("tile {id}: {e}"));
                Prepare::Direct
            }),
        };
        {
            let mut st = self.state.lock().unwrap();
            if let Some(c) = self.fallen.get() {
                return c.add_tile(id, label);
            }
            let key = st.next_key;
            st.next_key += 1;
            let tile = Tile { id: id.to_string(), key, prepare: Mutex::new(prepare), shown: Mutex::default() };
            st.tiles.push(Placed { tile: Arc::new(tile), rect: None, z: 0 });
        }
        self.set_label(id, label);
    }

    fn remove_tile(&self, id: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(c) = self.fallen.get() {
            return c.remove_tile(id);
        }
        st.tiles.retain(|p| p.tile.id != id);
        self.dirty.store(true, Ordering::Release);
    }

    fn set_label(&self, id: &str, label: Option<Label>) {
        let tile = {
            let st = self.state.lock().unwrap();
            if let Some(c) = self.fallen.get() {
                return c.set_label(id, label);
            }
            st.tiles.iter().find(|p| p.tile.id == id).map(|p| p.tile.clone())
        };
        let Some(t) = tile else { return };
        let ready = label.as_ref().and_then(|l| {
            let (b, caps) = label_picture(l);
            self.prepare(&t, "label", |p| p.run(b, &caps))
        });
        {
            let mut shown = t.shown.lock().unwrap();
            shown.label_ready = ready;
            shown.label = label.clone();
        }
        self.dirty.store(true, Ordering::Release);
        // Taken over while this was made ready: the CPU canvas gets it too.
        let st = self.state.lock().unwrap();
        if let Some(c) = self.fallen.get() {
            drop(st);
            c.set_label(id, label);
        }
    }

    fn set_scene(&self, scene: &Scene) {
        let mut st = self.state.lock().unwrap();
        if let Some(c) = self.fallen.get() {
            return c.set_scene(scene);
        }
        for p in &mut st.tiles {
            let place = scene.tiles.iter().find(|t| t.id == p.tile.id);
            (p.rect, p.z) = (place.and_then(|t| t.rect), place.map_or(0, |t| t.z));
            let mut shown = p.tile.shown.lock().unwrap();
            if let Some(new) = shown.pending.take() {
                shown.ready = Some(new);
            }
        }
        st.scene = scene.clone();
        self.dirty.store(true, Ordering::Release);
    }

    fn push(&self, id: &str, frame: &gst::Sample, draw: bool) {
        let found = {
            let st = self.state.lock().unwrap();
            if let Some(c) = self.fallen.get() {
                return c.push(id, frame, draw);
            }
            st.tiles.iter().find(|p| p.tile.id == id).map(|p| (p.tile.clone(), p.rect.is_some()))
        };
        let Some((t, placed)) = found else { return };
        let ready = self.prepare(&t, "picture", |p| p.sample(frame));
        {
            let mut shown = t.shown.lock().unwrap();
            shown.last = Some(frame.clone());
            match (ready, draw) {
                (Some(r), true) => shown.ready = Some(r),
                (Some(r), false) => shown.pending = Some(r),
                (None, _) => return,
            }
        }
        if draw && placed {
            self.dirty.store(true, Ordering::Release);
        }
        // Taken over while this was made ready: the CPU canvas gets it too.
        let st = self.state.lock().unwrap();
        if let Some(c) = self.fallen.get() {
            drop(st);
            c.push(id, frame, draw);
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
        let mut feed = self.feed.lock().unwrap();
        let failed = self.failure.lock().unwrap().take();
        let why = match failed {
            Some(why) => why,
            None => match self.compose(&mut feed) {
                Ok(b) => return Some(b),
                Err(why) => why,
            },
        };
        self.fall_back(&mut feed, &why)?.composite()
    }
}

#[cfg(test)]
#[path = "element_tests.rs"]
mod tests;
