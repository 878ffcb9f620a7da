//! The room's video: decoded inputs → the room canvas (layout, labels, placeholders, speaker
//! highlight) → one encode per codec and output tier → RTP fan-out.
//!
//! ```text
//! publisher decoder thread ─ scale into its tile (Rust, `canvas`) ─┐
//! publisher decoder thread ─ scale into its tile ──────────────────┤  I420 canvas WxH
//! placeholder thread (muted, audio-only, stale tiles) ─────────────┘
//! room clock thread, every 1/fps s, when something changed: copy ─ appsrc(I420 WxH@fps)
//!   ─ tee ─ queue(leaky) ─ <pipelines/*/vp8-encode>  ─ rtpvp8pay  ─ appsink → broadcast
//!         ─ queue(leaky) ─ <pipelines/*/h264-encode> ─ rtph264pay ─ appsink → broadcast
//!         ─ queue(leaky) ─ videoscale ─ 640x360 ─ <vp8-encode> ─ … (a smaller tier)
//! ```
//! Every participant who publishes gets a tile at join. Each decoded frame is scaled once, in the
//! publisher's own decoder thread, straight into its letterboxed rectangle of the canvas (bilinear,
//! [`super::canvas`]), and its name label is blended on it; tiles that overlap (custom layouts) are
//! redrawn in z-order. A tile whose video is muted, absent (audio-only) or stale for a second shows
//! a placeholder (initials on a dark tile), never a frozen frame. Tiles the layout does not show
//! are hidden and their publisher's decoder is told to stop ([`RoomVideo::set_visibility_listener`]).
//! The room clock thread paces the output: a composite is copied out and encoded only when
//! something in it changed (and once a second otherwise), so a join, a leave or a broken publisher
//! never stalls the picture and an idle room costs nothing to encode. An encoder branch is built
//! the first time a receiver asks for its codec and tier ([`super::tiers`]); a smaller tier's
//! branch stops when its last receiver leaves it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gst::prelude::*;
use gstreamer_video::prelude::*;
use rtc::shared::marshal::Unmarshal;
use tokio::sync::broadcast;

use super::canvas::{self, Image, Label, Planes, Yuv};
use super::fanout::{OutFrame, OutPacket, VideoCodec, is_keyframe_start, starts_keyframe};
use super::tiers::Tier;
use crate::pipelines::{Backends, Params, Role};
use crate::room::layout::{self, Layout, Placement, Rect, TileSource};

/// Frames buffered per encoder branch for receivers that fall behind (6 s at 30 fps). A frame is
/// handed over at once (one wake-up per receiver and frame); the receivers' tasks yield every
/// few packets of a big (key) frame so that it does not starve the room's audio.
const FANOUT_CAPACITY: usize = 180;
/// A forced keyframe is asked for again if none came within this long.
const KEYFRAME_RETRY: Duration = Duration::from_millis(500);
/// Least time between two forced keyframes of one encoder: requests closer than this (a burst of
/// joins, each new receiver asking) are served together by one keyframe when it is due. Each
/// keyframe goes to every receiver of the encoder (~30 packets each at 1280x720), so 100 joins
/// made a storm of them that held the transport up for 50-100 ms at a time.
const KEYFRAME_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// The encoders' forced keyframe interval, seconds: long enough to mean "only on request".
const KEYINT_SECONDS: u32 = 600;

/// A tile with no new frame for this long shows its placeholder.
const STALE: Duration = Duration::from_millis(1000);
/// How often placeholders are refreshed (the compositor repeats the last frame in between).
const PLACEHOLDER_PERIOD: Duration = Duration::from_millis(250);
/// Outputs sent after a change (or a keyframe request) even if nothing more changes: inputs arrive
/// unaligned with the room clock, so a tick may see no new frame while video still flows, and an
/// encoder fed an irregular rate makes bursty output (GCC reads the bursts as congestion).
const CHANGE_OUTPUTS: u32 = 3;
/// An unchanged composite is still sent this often (a receiver's decoder and statistics stay
/// alive; a lost frame gets replaced).
const UNCHANGED_REFRESH: Duration = Duration::from_millis(1000);
/// Width of the speaker highlight, pixels.
const HIGHLIGHT: u32 = 4;
/// Placeholder picture size (16:9).
const PLACEHOLDER_SIZE: (u32, u32) = (640, 360);
/// The speaker highlight's colour (amber, RGB 255,200,0).
const AMBER: Yuv = (182, 32, 166);
/// Distance of a label from its tile's bottom-left corner, pixels.
const LABEL_MARGIN: u32 = 8;

/// Output format of the composite.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct OutputFormat {
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Target bitrate of each encode, kbit/s.
    pub kbps: u32,
}

/// Errors building the room's video pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// A GStreamer element could not be made or linked.
    #[error("gstreamer: {0}")]
    Gst(String),
    /// No encoder fragment is usable.
    #[error(transparent)]
    Pipeline(#[from] crate::pipelines::PipelineError),
}

fn gst_err(e: impl std::fmt::Display) -> VideoError {
    VideoError::Gst(e.to_string())
}

/// Counters of one room's video, for the API and metrics.
#[derive(Debug, Default)]
pub struct VideoStats {
    /// Composite frames produced.
    pub frames_out: AtomicU64,
    /// Keyframes forced on an encoder (coalesced requests count once).
    pub keyframes_forced: AtomicU64,
    /// Input frames not drawn (not I420, or unreadable).
    pub frames_dropped: AtomicU64,
    /// Composite frames not encoded because nothing in them changed (no new input frame, layout,
    /// label or highlight) since the last one sent.
    pub frames_unchanged: AtomicU64,
}

/// Called with `true` when a tile becomes visible and `false` when the layout hides it.
pub type VisibilityListener = Arc<dyn Fn(bool) + Send + Sync>;

/// The room's compositor and encoders. Cheap to clone; the pipeline stops when the last clone drops
/// or [`RoomVideo::stop`] is called.
#[derive(Clone)]
pub struct RoomVideo {
    inner: Arc<Inner>,
}

struct Inner {
    room: String,
    pipeline: gst::Pipeline,
    tee: gst::Element,
    /// The picture, drawn by the inputs and copied out by the room clock thread. Lock order:
    /// `state` before `canvas`.
    canvas: Mutex<Canvas>,
    format: OutputFormat,
    backends: Backends,
    state: Mutex<State>,
    stats: Arc<VideoStats>,
    stopped: AtomicBool,
    /// Outputs still to send whatever changed (see [`CHANGE_OUTPUTS`]).
    changes: AtomicU32,
    /// Some output has a deferred keyframe request ([`KEYFRAME_MIN_INTERVAL`]).
    keyframes_deferred: AtomicBool,
    /// Branches attached with a keyframe interval ([`RoomVideo::attach_encoded`]).
    periodic_keyframes: AtomicU32,
    /// RTP timestamp offset shared by every encoder branch, so a receiver moved between tiers
    /// sees one timeline (RFC 3550 §5.1: random per room).
    ts_offset: u32,
}

struct State {
    /// Tiles in join order.
    inputs: Vec<InputState>,
    /// Encoder branches by codec and tier.
    outputs: HashMap<(VideoCodec, Tier), Output>,
    layout: Layout,
    cap: usize,
    speaker: Option<String>,
    /// Tick of each participant's last speech (for last-N and featured tiles).
    last_spoke: HashMap<String, u64>,
    placements: Vec<Placement>,
}

struct InputState {
    id: String,
    name: String,
    screen: bool,
    /// Size of the frames arriving now (picture or placeholder), 0x0 before the first.
    src: (u32, u32),
    /// Where it is drawn now.
    rect: Option<Rect>,
    visible: bool,
    on_visible: Option<VisibilityListener>,
    shared: Arc<InputShared>,
    audio_muted: bool,
}

/// The composite and what each tile last drew into it.
struct Canvas {
    image: Image,
    /// In join order (as `State::inputs`).
    tiles: Vec<Tile>,
    /// Top, bottom, left, right bars of the speaker highlight.
    bars: Option<[Rect; 4]>,
    /// Something was drawn since the last output.
    dirty: bool,
    /// Scratch space of the scaler.
    scratch: Vec<u16>,
}

struct Tile {
    id: String,
    /// Where it is drawn (letterboxed), `None` while hidden or before its first frame.
    rect: Option<Rect>,
    z: u32,
    /// Whether another visible tile overlaps this one (custom layouts): then it is drawn through
    /// `patch`, else straight into the picture.
    overlaps: bool,
    /// The tile as last drawn (scaled, labelled) while it overlaps another, to redraw it over a
    /// lower tile.
    patch: Image,
    label: Option<Label>,
    /// The last frame (or placeholder) pushed, to redraw after a relayout.
    last: Option<gst::Sample>,
}

impl Canvas {
    /// Scales tile `i`'s last frame into its patch, labels it and copies it into the picture.
    fn draw(&mut self, i: usize, stats: &VideoStats) {
        let Canvas { image, tiles, scratch, .. } = self;
        let tile = &mut tiles[i];
        let (Some(rect), Some(sample)) = (tile.rect, tile.last.as_ref()) else { return };
        let (Some(buf), Some(caps)) = (sample.buffer(), sample.caps()) else { return };
        let Ok(info) = gstreamer_video::VideoInfo::from_caps(caps) else { return };
        if info.format() != gstreamer_video::VideoFormat::I420 {
            stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(frame) = gstreamer_video::VideoFrameRef::from_buffer_ref_readable(buf, &info) else {
            stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let plane = |k: u32| (frame.plane_data(k).unwrap_or(&[]), frame.plane_stride()[k as usize] as usize);
        let planes = Planes { planes: [plane(0), plane(1), plane(2)], width: info.width() & !1, height: info.height() & !1 };
        let label_at = |l: &Label| (LABEL_MARGIN.min(rect.w.saturating_sub(l.width)), rect.h.saturating_sub(l.height + LABEL_MARGIN));
        if tile.overlaps {
            tile.patch.reshape(rect.w, rect.h);
            tile.patch.scale_from_with(&planes, scratch);
            if let Some(l) = &tile.label {
                let (x, y) = label_at(l);
                tile.patch.draw_label(l, x, y);
            }
            image.blit(&tile.patch, rect.x, rect.y);
        } else {
            image.scale_into(&planes, rect.x, rect.y, rect.w, rect.h, scratch);
            if let Some(l) = &tile.label {
                let (x, y) = label_at(l);
                image.draw_label(l, rect.x + x, rect.y + y);
            }
        }
        self.dirty = true;
    }

    /// Draws tile `i` and then the tiles above it that overlap it.
    fn draw_tile(&mut self, i: usize, stats: &VideoStats) {
        self.draw(i, stats);
        let Some(r) = self.tiles[i].rect else { return };
        let z = self.tiles[i].z;
        for j in 0..self.tiles.len() {
            let t = &self.tiles[j];
            let above = t.z > z || (t.z == z && j > i);
            if let Some(o) = t.rect
                && above
                && t.overlaps
                && t.patch.width == o.w
                && o.x < r.x + r.w
                && r.x < o.x + o.w
                && o.y < r.y + r.h
                && r.y < o.y + o.h
            {
                let Canvas { image, tiles, .. } = self;
                image.blit(&tiles[j].patch, o.x, o.y);
            }
        }
    }

    /// Redraws the whole picture: background, tiles in z-order, highlight.
    fn redraw(&mut self, stats: &VideoStats) {
        let (w, h) = (self.image.width, self.image.height);
        self.image.fill(0, 0, w, h, canvas::BLACK);
        let mut order: Vec<usize> = (0..self.tiles.len()).collect();
        order.sort_by_key(|&i| self.tiles[i].z);
        for i in order {
            self.draw(i, stats);
        }
        for r in self.bars.into_iter().flatten() {
            self.image.fill(r.x, r.y, r.w, r.h, AMBER);
        }
        self.dirty = true;
    }
}

/// What the push path and the placeholder thread share with the layout.
struct InputShared {
    video_muted: AtomicBool,
    last_frame: Mutex<Option<Instant>>,
    showing_placeholder: AtomicBool,
    placeholder: Option<gst::Sample>,
    size: Mutex<(u32, u32)>,
}

struct Output {
    tx: broadcast::Sender<Arc<OutFrame>>,
    /// The room tee's pad feeding this branch, and the branch's elements (to take it down).
    tee_pad: gst::Pad,
    elements: Vec<gst::Element>,
    sink_pad: gst::Pad,
    keyframe: Arc<KeyframeGate>,
    /// Encoded frames before the payloader: recordings and egress attach here.
    encoded: gst::Element,
}

/// Coalesces keyframe requests: one force-key-unit per outstanding request, retried after
/// [`KEYFRAME_RETRY`] if no keyframe came.
#[derive(Default)]
struct KeyframeGate {
    pending: AtomicBool,
    /// When the last keyframe was forced.
    last_request: Mutex<Option<Instant>>,
    /// A request waits for [`KEYFRAME_MIN_INTERVAL`] to pass (the room clock forces it).
    deferred: AtomicBool,
    /// Branches attached to the encoded stream that need a keyframe at least this often (a
    /// recording's seek points, an egress's segments), by their feeding pad: the room clock
    /// forces one when the last is older than the shortest of them.
    every: Mutex<Vec<(gst::Pad, Duration)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

fn make(factory: &str) -> Result<gst::Element, VideoError> {
    gst::ElementFactory::make(factory).build().map_err(gst_err)
}

/// Renders the placeholder of a participant: initials, centred on a dark 640x360 I420 tile.
fn render_placeholder(name: &str) -> Option<gst::Sample> {
    let initials: String = name
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_' || c == '.')
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect();
    let initials = if initials.is_empty() { "?".to_string() } else { initials };
    let (w, h) = PLACEHOLDER_SIZE;
    let desc = format!(
        "videotestsrc num-buffers=1 pattern=solid-color foreground-color=0xff262b36 \
         ! video/x-raw,format=I420,width={w},height={h},framerate=1/1 \
         ! textoverlay name=t valignment=center halignment=center font-desc=\"Sans Bold 96\" color=0xffd8dee9 \
         ! appsink name=s sync=false"
    );
    let p = gst::parse::launch(&desc).ok()?.downcast::<gst::Pipeline>().ok()?;
    p.by_name("t")?.set_property("text", &initials);
    let sink = p.by_name("s")?.downcast::<gst_app::AppSink>().ok()?;
    p.set_state(gst::State::Playing).ok()?;
    let sample = sink.pull_sample().ok();
    let _ = p.set_state(gst::State::Null);
    sample
}

/// Renders a tile label (`Sans Bold 14`, white, with [`Label`]'s shaded box) with `textrender`.
fn render_label(text: &str) -> Option<Label> {
    let (w, h) = (640u32, 48u32);
    let desc = format!(
        "appsrc name=src caps=text/x-raw,format=utf8 ! textrender font-desc=\"Sans Bold 14\" halignment=left valignment=top \
         ! video/x-raw,format=AYUV,width={w},height={h} ! appsink name=s sync=false"
    );
    let p = gst::parse::launch(&desc).ok()?.downcast::<gst::Pipeline>().ok()?;
    let src = p.by_name("src")?.downcast::<gst_app::AppSrc>().ok()?;
    let sink = p.by_name("s")?.downcast::<gst_app::AppSink>().ok()?;
    p.set_state(gst::State::Playing).ok()?;
    let mut buf = gst::Buffer::from_slice(text.as_bytes().to_vec());
    buf.get_mut()?.set_pts(gst::ClockTime::ZERO);
    let _ = src.push_buffer(buf);
    let _ = src.end_of_stream();
    let sample = sink.pull_sample().ok();
    let _ = p.set_state(gst::State::Null);
    let sample = sample?;
    let info = gstreamer_video::VideoInfo::from_caps(sample.caps()?).ok()?;
    let frame = gstreamer_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer()?, &info).ok()?;
    Label::from_ayuv(frame.plane_data(0).ok()?, frame.plane_stride()[0] as usize, info.width(), info.height(), 4)
}

impl RoomVideo {
    /// Builds and starts the room's compositor (no encoder runs until [`RoomVideo::subscribe`]),
    /// with `layout` and at most `cap` visible tiles.
    ///
    /// # Errors
    /// [`VideoError::Gst`] when an element is missing or the pipeline cannot start.
    pub fn new(room: &str, format: OutputFormat, backends: Backends, layout: Layout, cap: usize) -> Result<Self, VideoError> {
        gst::init().map_err(gst_err)?;
        let pipeline = gst::Pipeline::with_name(&format!("room-{room}"));
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", format.width as i32)
            .field("height", format.height as i32)
            .field("framerate", gst::Fraction::new(format.fps as i32, 1))
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build();
        let info = gstreamer_video::VideoInfo::from_caps(&caps).map_err(gst_err)?;
        // The composite comes from the room clock thread. No latency of its own (it is pushed the
        // moment it is due), and it never blocks that thread: a full queue drops the oldest.
        let src = gst_app::AppSrc::builder()
            .name("composite")
            .caps(&caps)
            .is_live(true)
            .format(gst::Format::Time)
            .min_latency(0)
            .max_latency(-1)
            .max_buffers(2)
            .leaky_type(gst_app::AppLeakyType::Downstream)
            .build();
        let tee = gst::ElementFactory::make("tee").property("allow-not-linked", true).build().map_err(gst_err)?;
        // Without any encoder yet the tee needs a sink so the pipeline runs.
        let idle = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .map_err(gst_err)?;
        let src_el: gst::Element = src.clone().upcast();
        pipeline.add_many([&src_el, &tee, &idle]).map_err(gst_err)?;
        gst::Element::link_many([&src_el, &tee, &idle]).map_err(gst_err)?;
        let pool = gst::BufferPool::new();
        let mut cfg = pool.config();
        cfg.set_params(Some(&caps), info.size() as u32, 2, 0);
        pool.set_config(cfg).map_err(gst_err)?;
        pool.set_active(true).map_err(gst_err)?;

        let inner = Arc::new(Inner {
            room: room.to_string(),
            pipeline,
            tee,
            canvas: Mutex::new(Canvas {
                image: Image::new(format.width, format.height, canvas::BLACK),
                tiles: vec![],
                bars: None,
                dirty: true,
                scratch: vec![],
            }),
            format,
            backends,
            state: Mutex::new(State {
                inputs: vec![],
                outputs: HashMap::new(),
                layout,
                cap,
                speaker: None,
                last_spoke: HashMap::new(),
                placements: vec![],
            }),
            stats: Arc::new(VideoStats::default()),
            stopped: AtomicBool::new(false),
            changes: AtomicU32::new(CHANGE_OUTPUTS),
            keyframes_deferred: AtomicBool::new(false),
            periodic_keyframes: AtomicU32::new(0),
            ts_offset: {
                use std::hash::{BuildHasher, Hasher};
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write(room.as_bytes());
                (h.finish() as u32) >> 1
            },
        });
        watch_bus(&inner.pipeline, room.to_string());
        inner.pipeline.set_state(gst::State::Playing).map_err(gst_err)?;
        spawn_placeholder_thread(Arc::downgrade(&inner));
        spawn_clock_thread(Arc::downgrade(&inner), src, pool, info);
        Ok(Self { inner })
    }

    /// The output format.
    pub fn format(&self) -> OutputFormat {
        self.inner.format
    }

    /// The room's video counters.
    pub fn stats(&self) -> Arc<VideoStats> {
        self.inner.stats.clone()
    }

    /// Adds a tile for participant `id` (label `name`; `screen` for a screen share) at the end of
    /// the join order and re-lays out. It shows a placeholder until frames are pushed into the
    /// returned handle. Blocks for 5-35 ms (the label and placeholder are rendered by two small
    /// GStreamer pipelines): call it from a blocking thread, not an async worker.
    ///
    /// # Errors
    /// [`VideoError::Gst`] if the elements cannot be made or linked.
    pub fn add_input(&self, id: &str, name: &str, screen: bool) -> Result<VideoInput, VideoError> {
        let inner = &self.inner;
        let shared = Arc::new(InputShared {
            video_muted: AtomicBool::new(false),
            last_frame: Mutex::new(None),
            showing_placeholder: AtomicBool::new(false),
            placeholder: render_placeholder(name),
            size: Mutex::new((0, 0)),
        });
        let label = render_label(name);
        {
            let mut st = inner.state.lock().unwrap();
            inner.canvas.lock().unwrap().tiles.push(Tile { id: id.to_string(), rect: None, z: 0, overlaps: false, patch: Image::default(), label, last: None });
            st.inputs.push(InputState {
                id: id.to_string(),
                name: name.to_string(),
                screen,
                src: (0, 0),
                rect: None,
                visible: false,
                on_visible: None,
                shared: shared.clone(),
                audio_muted: false,
            });
            relayout(inner, &mut st);
        }
        // Show the placeholder at once rather than an empty cell.
        push_placeholder(inner, id, &shared);
        tracing::info!(room = %inner.room, participant = id, "tile added");
        Ok(VideoInput { id: id.to_string(), video: Arc::downgrade(inner), shared })
    }

    /// Removes participant `id`'s tile and re-lays out the others. Unknown ids are ignored.
    pub fn remove_input(&self, id: &str) {
        let inner = &self.inner;
        let removed = {
            let mut st = inner.state.lock().unwrap();
            let Some(i) = st.inputs.iter().position(|x| x.id == id) else { return };
            let input = st.inputs.remove(i);
            st.last_spoke.remove(id);
            if st.speaker.as_deref() == Some(id) {
                st.speaker = None;
            }
            inner.canvas.lock().unwrap().tiles.retain(|t| t.id != id);
            relayout(inner, &mut st);
            input
        };
        drop(removed);
        tracing::info!(room = %inner.room, participant = id, "tile removed");
    }

    /// Calls `listener` now and whenever tile `id` is shown or hidden by the layout (a hidden
    /// tile's publisher need not be decoded).
    pub fn set_visibility_listener(&self, id: &str, listener: VisibilityListener) {
        let mut st = self.inner.state.lock().unwrap();
        if let Some(i) = st.inputs.iter_mut().find(|i| i.id == id) {
            listener(i.visible);
            i.on_visible = Some(listener);
        }
    }

    /// Sets the layout; takes effect with the next composite frame.
    pub fn set_layout(&self, layout: Layout) {
        let mut st = self.inner.state.lock().unwrap();
        st.layout = layout;
        relayout(&self.inner, &mut st);
    }

    /// Sets the cap of visible tiles (at least 1).
    pub fn set_max_visible(&self, cap: usize) {
        let mut st = self.inner.state.lock().unwrap();
        st.cap = cap.max(1);
        relayout(&self.inner, &mut st);
    }

    /// The current layout.
    pub fn layout(&self) -> Layout {
        self.inner.state.lock().unwrap().layout.clone()
    }

    /// Sets the active speaker (highlighted in the grid, large in speaker layouts) and the
    /// participants talking now (`tick` orders them for last-N).
    pub fn set_speaking(&self, speaker: Option<&str>, talking: &[String], tick: u64) {
        let mut st = self.inner.state.lock().unwrap();
        for t in talking {
            st.last_spoke.insert(t.clone(), tick);
        }
        let changed_speaker = st.speaker.as_deref() != speaker;
        st.speaker = speaker.map(str::to_string);
        // Last-N only changes the picture when someone hidden starts talking.
        let hidden_talker = talking.iter().any(|t| st.inputs.iter().any(|i| &i.id == t && !i.visible));
        if changed_speaker || hidden_talker {
            relayout(&self.inner, &mut st);
        }
    }

    /// Server- or self-mute: a video-muted tile shows its placeholder; an audio-muted tile's label
    /// says so. Unknown ids are ignored. Returns at once: the label (a small GStreamer pipeline,
    /// 5-35 ms) is rendered on a helper thread and drawn when ready, unless another mute of the
    /// same tile came first.
    pub fn set_muted(&self, id: &str, audio: bool, video: bool) {
        let name = {
            let mut st = self.inner.state.lock().unwrap();
            let Some(i) = st.inputs.iter_mut().find(|i| i.id == id) else { return };
            i.shared.video_muted.store(video, Ordering::Relaxed);
            i.audio_muted = audio;
            i.name.clone()
        };
        let (inner, id) = (Arc::downgrade(&self.inner), id.to_string());
        let render = move || {
            let label = render_label(&if audio { format!("{name}  [mic off]") } else { name });
            let Some(inner) = inner.upgrade() else { return };
            let st = inner.state.lock().unwrap();
            if st.inputs.iter().any(|i| i.id == id && i.audio_muted == audio) {
                let mut cv = inner.canvas.lock().unwrap();
                if let Some(t) = cv.tiles.iter().position(|t| t.id == id) {
                    cv.tiles[t].label = label;
                    cv.draw_tile(t, &inner.stats);
                }
            }
        };
        if let Err(e) = std::thread::Builder::new().name("label".into()).spawn(render) {
            tracing::warn!(room = %self.inner.room, "label thread: {e}");
        }
    }

    /// Where each tile is drawn now: the layout's placements (cells) in drawing order.
    pub fn placements(&self) -> Vec<Placement> {
        self.inner.state.lock().unwrap().placements.clone()
    }

    /// Where each input is drawn now, in join order: `(participant id, letterboxed rect)`;
    /// `None` while hidden.
    pub fn tiles(&self) -> Vec<(String, Option<Rect>)> {
        let st = self.inner.state.lock().unwrap();
        st.inputs.iter().map(|i| (i.id.clone(), i.rect)).collect()
    }

    /// The active speaker, if any.
    pub fn speaker(&self) -> Option<String> {
        self.inner.state.lock().unwrap().speaker.clone()
    }

    /// Number of encoder branches running (codecs × tiers).
    pub fn encoders(&self) -> usize {
        self.inner.state.lock().unwrap().outputs.len()
    }

    /// The encoder branches running, as (codec, tier, receivers).
    pub fn encoder_branches(&self) -> Vec<(VideoCodec, Tier, usize)> {
        let st = self.inner.state.lock().unwrap();
        let mut v: Vec<_> = st.outputs.iter().map(|((c, t), o)| (*c, *t, o.tx.receiver_count())).collect();
        v.sort_by_key(|(c, t, _)| (c.encoding_name(), *t));
        v
    }

    /// A receiver of the room's full-size packets in `codec` ([`RoomVideo::subscribe_tier`] with
    /// [`Tier::Full`]).
    ///
    /// # Errors
    /// [`VideoError`] if the encoder branch cannot be built.
    pub fn subscribe(&self, codec: VideoCodec) -> Result<broadcast::Receiver<Arc<OutFrame>>, VideoError> {
        self.subscribe_tier(codec, Tier::Full)
    }

    /// A receiver of the room's packets in `codec` at `tier`, building that encoder branch on
    /// first use (its first frame is a keyframe). Call [`RoomVideo::request_keyframe_tier`] once
    /// the receiver is ready to start.
    ///
    /// # Errors
    /// [`VideoError`] if the encoder branch cannot be built.
    pub fn subscribe_tier(&self, codec: VideoCodec, tier: Tier) -> Result<broadcast::Receiver<Arc<OutFrame>>, VideoError> {
        let mut st = self.inner.state.lock().unwrap();
        if let Some(o) = st.outputs.get(&(codec, tier)) {
            return Ok(o.tx.subscribe());
        }
        let out = self.build_output(codec, tier)?;
        let rx = out.tx.subscribe();
        st.outputs.insert((codec, tier), out);
        Ok(rx)
    }

    /// Takes down the smaller-tier encoder branches nobody receives any more (the full tier
    /// stays: recordings and egress attach to it). Call after dropping a tier's receiver.
    pub fn release_idle_tiers(&self) {
        let idle: Vec<Output> = {
            let mut st = self.inner.state.lock().unwrap();
            let keys: Vec<_> =
                st.outputs.iter().filter(|((_, t), o)| *t != Tier::Full && o.tx.receiver_count() == 0).map(|(k, _)| *k).collect();
            keys.iter().filter_map(|k| st.outputs.remove(k)).collect()
        };
        for o in idle {
            let (pipeline, tee, room) = (self.inner.pipeline.clone(), self.inner.tee.clone(), self.inner.room.clone());
            let pad = o.tee_pad.clone();
            let elements = o.elements;
            // Unlink at an idle moment of the tee's pad (no buffer in flight), then stop the
            // branch off the streaming thread.
            pad.add_probe(gst::PadProbeType::IDLE, move |pad, _| {
                if let Some(peer) = pad.peer() {
                    let _ = pad.unlink(&peer);
                }
                tee.release_request_pad(pad);
                let (pipeline, elements, room) = (pipeline.clone(), elements.clone(), room.clone());
                std::thread::spawn(move || {
                    for e in &elements {
                        let _ = e.set_state(gst::State::Null);
                    }
                    let _ = pipeline.remove_many(&elements);
                    tracing::info!(%room, "idle encoder branch stopped");
                });
                gst::PadProbeReturn::Remove
            });
        }
    }

    /// Asks the full-size `codec` encoder for a keyframe ([`RoomVideo::request_keyframe_tier`]).
    pub fn request_keyframe(&self, codec: VideoCodec) {
        self.request_keyframe_tier(codec, Tier::Full);
    }

    /// Asks the `codec` encoder of `tier` for a keyframe. Requests made while one is outstanding
    /// share it (so receivers joining within one frame interval get the same keyframe).
    pub fn request_keyframe_tier(&self, codec: VideoCodec, tier: Tier) {
        let st = self.inner.state.lock().unwrap();
        let Some(o) = st.outputs.get(&(codec, tier)) else { return };
        let mut last = o.keyframe.last_request.lock().unwrap();
        let outstanding = o.keyframe.pending.load(Ordering::Acquire);
        if outstanding && last.is_some_and(|t| t.elapsed() < KEYFRAME_RETRY) {
            return;
        }
        if !outstanding && last.is_some_and(|t| t.elapsed() < KEYFRAME_MIN_INTERVAL) {
            o.keyframe.deferred.store(true, Ordering::Release);
            self.inner.keyframes_deferred.store(true, Ordering::Release);
            return;
        }
        force_keyframe(&self.inner, o, &mut last);
    }

    /// Adds `branch` (a bin with a `sink` ghost pad taking encoded `codec` frames, e.g. a
    /// recording) to the room pipeline and feeds it the room's encoded video, building that encoder
    /// if no receiver uses it yet. Returns the feeding pad for [`RoomVideo::detach_encoded`]. The
    /// branch gets the encoder's buffers as they are (room running time); a keyframe is requested
    /// now and then at least every `keyframe_every` (the encoders make none unasked) until the
    /// branch is detached.
    ///
    /// # Errors
    /// [`VideoError`] if the encoder or the link fails.
    pub fn attach_encoded(&self, codec: VideoCodec, branch: &gst::Bin, keyframe_every: Duration) -> Result<gst::Pad, VideoError> {
        let inner = &self.inner;
        let (tee, gate) = {
            let mut st = inner.state.lock().unwrap();
            let o = match st.outputs.entry((codec, Tier::Full)) {
                std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => v.insert(self.build_output(codec, Tier::Full)?),
            };
            (o.encoded.clone(), o.keyframe.clone())
        };
        inner.pipeline.add(branch).map_err(gst_err)?;
        branch.sync_state_with_parent().map_err(gst_err)?;
        let sink = branch.static_pad("sink").ok_or_else(|| gst_err("branch has no sink pad"))?;
        let src = tee.request_pad_simple("src_%u").ok_or_else(|| gst_err("tee pad"))?;
        src.link(&sink).map_err(gst_err)?;
        gate.every.lock().unwrap().push((src.clone(), keyframe_every));
        inner.periodic_keyframes.fetch_add(1, Ordering::AcqRel);
        self.request_keyframe(codec);
        Ok(src)
    }

    /// The room pipeline's running time now (what `appsrc do-timestamp` stamps).
    pub fn running_time(&self) -> Option<gst::ClockTime> {
        self.inner.pipeline.current_running_time()
    }

    /// Stops feeding `branch` from `pad` (from [`RoomVideo::attach_encoded`]) and sends it
    /// end-of-stream, so muxers finalize; the caller waits for the branch's EOS and then calls
    /// [`RoomVideo::remove_branch`].
    pub fn detach_encoded(&self, pad: &gst::Pad, branch: &gst::Bin) {
        for o in self.inner.state.lock().unwrap().outputs.values() {
            let mut every = o.keyframe.every.lock().unwrap();
            let before = every.len();
            every.retain(|(p, _)| p != pad);
            if every.len() < before {
                self.inner.periodic_keyframes.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let sink = branch.static_pad("sink");
        let tee = pad.parent_element();
        let p = pad.clone();
        pad.add_probe(gst::PadProbeType::IDLE, move |_, _| {
            if let Some(sink) = &sink {
                let _ = p.unlink(sink);
                sink.send_event(gst::event::Eos::new());
            }
            if let Some(t) = &tee {
                t.release_request_pad(&p);
            }
            gst::PadProbeReturn::Remove
        });
    }

    /// Stops `branch` and takes it out of the room pipeline.
    pub fn remove_branch(&self, branch: &gst::Bin) {
        let _ = branch.set_state(gst::State::Null);
        let _ = self.inner.pipeline.remove(branch);
    }

    /// Stops the pipeline; later calls do nothing.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        let _ = self.inner.pipeline.set_state(gst::State::Null);
    }

    fn build_output(&self, codec: VideoCodec, tier: Tier) -> Result<Output, VideoError> {
        let inner = &self.inner;
        let f = inner.format;
        // No periodic keyframes: receivers ask with PLI/FIR (as libwebrtc senders do), and a
        // recording or an egress asks on its own schedule. A 1280x720 keyframe is ~30 packets per
        // receiver; every 10 s that burst held up a 100-receiver room's audio for 40-80 ms.
        let params = Params { kbps: tier.kbps(f), keyint: KEYINT_SECONDS * f.fps, fps: f.fps };
        let (role, pay) = match codec {
            VideoCodec::Vp8 => (
                Role::Vp8Encode,
                gst::ElementFactory::make("rtpvp8pay")
                    .property("mtu", 1200u32)
                    .property_from_str("picture-id-mode", "15-bit")
                    .property("timestamp-offset", inner.ts_offset)
                    .build()
                    .map_err(gst_err)?,
            ),
            VideoCodec::H264 => (
                Role::H264Encode,
                gst::ElementFactory::make("rtph264pay")
                    .property("mtu", 1200u32)
                    .property("config-interval", -1i32)
                    .property("timestamp-offset", inner.ts_offset)
                    .property_from_str("aggregate-mode", "zero-latency")
                    .build()
                    .map_err(gst_err)?,
            ),
        };
        // The compositor can hand over a few frames at once (live aggregation catching up); hold up
        // to 6 (200 ms) and drop the oldest beyond, so a slow encoder never stalls the grid.
        let queue = gst::ElementFactory::make("queue")
            .property("max-size-buffers", 6u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64)
            .property_from_str("leaky", "downstream")
            .build()
            .map_err(gst_err)?;
        let enc = inner.backends.make_bin(role, params)?;
        // The payloader pushes each frame's packets as one buffer list: one sample per frame.
        let sink = gst_app::AppSink::builder().sync(false).async_(false).max_buffers(64).drop(false).build();
        sink.set_property("buffer-list", true);
        let encoded = gst::ElementFactory::make("tee").property("allow-not-linked", true).build().map_err(gst_err)?;
        let mut elements: Vec<gst::Element> = vec![queue.clone()];
        if tier != Tier::Full {
            // Scale the composite down once for everyone on this tier.
            let (w, h) = tier.size(f);
            elements.push(make("videoscale")?);
            elements.push(
                gst::ElementFactory::make("capsfilter")
                    .property(
                        "caps",
                        gst::Caps::builder("video/x-raw")
                            .field("width", w as i32)
                            .field("height", h as i32)
                            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                            .build(),
                    )
                    .build()
                    .map_err(gst_err)?,
            );
        }
        elements.extend([enc.upcast(), encoded.clone(), pay, sink.clone().upcast()]);
        inner.pipeline.add_many(&elements).map_err(gst_err)?;
        gst::Element::link_many(&elements).map_err(gst_err)?;

        let (tx, _) = broadcast::channel(FANOUT_CAPACITY);
        let keyframe = Arc::new(KeyframeGate::default());
        let (tx2, gate) = (tx.clone(), keyframe.clone());
        let room = inner.room.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let mut frame = OutFrame::with_capacity(sample.buffer_list().map_or(1, |l| l.len()));
                    let mut add = |buf: &gst::BufferRef| {
                        let Ok(map) = buf.map_readable() else { return };
                        let mut bytes = Bytes::copy_from_slice(map.as_slice());
                        match rtc::rtp::Packet::unmarshal(&mut bytes) {
                            Ok(packet) => {
                                let keyframe_start = is_keyframe_start(codec, &packet.payload);
                                frame.push(OutPacket { packet, keyframe_start });
                            }
                            Err(e) => tracing::warn!(%room, "payloader output is not RTP: {e}"),
                        }
                    };
                    if let Some(list) = sample.buffer_list() {
                        list.iter().for_each(&mut add);
                    } else if let Some(buf) = sample.buffer() {
                        add(buf);
                    }
                    if frame.is_empty() {
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    if starts_keyframe(&frame) {
                        gate.pending.store(false, Ordering::Release);
                    }
                    // No receiver is not an error: the branch keeps running for the next.
                    let _ = tx2.send(Arc::new(frame));
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        // Start the branch (sink first) before linking it: a frame pushed into a linked but not
        // yet running branch returns FLUSHING to the tee, which would stop the compositor.
        for e in elements.iter().rev() {
            e.sync_state_with_parent().map_err(gst_err)?;
        }
        let src = inner.tee.request_pad_simple("src_%u").ok_or_else(|| gst_err("tee pad"))?;
        src.link(&queue.static_pad("sink").unwrap()).map_err(gst_err)?;
        tracing::info!(room = %inner.room, ?codec, ?tier, "encoder branch started");
        Ok(Output { tx, tee_pad: src, elements, sink_pad: sink.static_pad("sink").unwrap(), keyframe, encoded })
    }
}

/// Recomputes the placements and applies them: each placed tile letterboxed in its cell (inset
/// for the speaker highlight in the grid), hidden tiles not drawn, listeners told; then redraws
/// the canvas.
fn relayout(inner: &Inner, st: &mut State) {
    let f = inner.format;
    let sources: Vec<TileSource> = st
        .inputs
        .iter()
        .map(|i| TileSource { id: i.id.clone(), screen: i.screen, last_spoke: st.last_spoke.get(&i.id).copied() })
        .collect();
    let placements = layout::place(&st.layout, &sources, st.speaker.as_deref(), f.width, f.height, st.cap);
    let highlight_grid = matches!(st.layout, Layout::Grid) && st.inputs.len() > 1;
    let mut highlight: Option<Rect> = None;
    let mut drawn: Vec<(String, Option<Rect>, u32)> = Vec::with_capacity(st.inputs.len());
    for input in st.inputs.iter_mut() {
        let placed = placements.iter().find(|p| p.participant == input.id);
        let visible = placed.is_some();
        if visible != input.visible {
            input.visible = visible;
            if let Some(l) = &input.on_visible {
                l(visible);
            }
        }
        let Some(p) = placed else {
            input.rect = None;
            drawn.push((input.id.clone(), None, 0));
            continue;
        };
        let mut cell = p.cell;
        if highlight_grid && st.speaker.as_deref() == Some(input.id.as_str()) {
            highlight = Some(cell);
            let inset = HIGHLIGHT.min(cell.w / 4).min(cell.h / 4) & !1;
            cell = Rect { x: cell.x + inset, y: cell.y + inset, w: cell.w - 2 * inset, h: cell.h - 2 * inset };
        }
        input.rect = (input.src.0 > 0).then(|| layout::letterbox(cell, input.src.0, input.src.1));
        drawn.push((input.id.clone(), input.rect, 10 + p.z));
    }
    // The speaker highlight: four bars around the speaker's cell.
    let bars = highlight
        .map(|c| {
            let t = HIGHLIGHT.min(c.w / 4).min(c.h / 4) & !1;
            [
                Rect { x: c.x, y: c.y, w: c.w, h: t },
                Rect { x: c.x, y: c.y + c.h - t, w: c.w, h: t },
                Rect { x: c.x, y: c.y, w: t, h: c.h },
                Rect { x: c.x + c.w - t, y: c.y, w: t, h: c.h },
            ]
        })
        .filter(|b| b[0].h > 0 && b[2].w > 0);
    st.placements = placements;
    let mut cv = inner.canvas.lock().unwrap();
    for (id, rect, z) in drawn {
        if let Some(t) = cv.tiles.iter_mut().find(|t| t.id == id) {
            t.rect = rect;
            t.z = z;
        }
    }
    let rects: Vec<Option<Rect>> = cv.tiles.iter().map(|t| t.rect).collect();
    for (i, t) in cv.tiles.iter_mut().enumerate() {
        t.overlaps = t.rect.is_some_and(|r| {
            rects.iter().enumerate().any(|(j, o)| {
                j != i && o.is_some_and(|o| o.x < r.x + r.w && r.x < o.x + o.w && o.y < r.y + r.h && r.y < o.y + o.h)
            })
        });
    }
    cv.bars = bars;
    cv.redraw(&inner.stats);
}

/// Draws `shared`'s placeholder in a tile (once: while it keeps showing, the canvas keeps it).
fn push_placeholder(inner: &Inner, id: &str, shared: &InputShared) {
    let Some(sample) = &shared.placeholder else { return };
    if shared.showing_placeholder.swap(true, Ordering::Relaxed) {
        return;
    }
    push_frame(inner, id, shared, sample);
}

/// Draws one frame into a tile; re-lays out (and so redraws everything) when its size changed (a
/// new source resolution, or placeholder ↔ picture).
fn push_frame(inner: &Inner, id: &str, shared: &InputShared, sample: &gst::Sample) {
    let Some(caps) = sample.caps() else { return };
    let Ok(info) = gstreamer_video::VideoInfo::from_caps(caps) else {
        inner.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let dims = (info.width(), info.height());
    let resized = {
        let mut size = shared.size.lock().unwrap();
        std::mem::replace(&mut *size, dims) != dims
    };
    {
        let mut cv = inner.canvas.lock().unwrap();
        let Some(i) = cv.tiles.iter().position(|t| t.id == id) else { return };
        cv.tiles[i].last = Some(sample.clone());
        if !resized {
            cv.draw_tile(i, &inner.stats);
            return;
        }
    }
    let mut st = inner.state.lock().unwrap();
    if let Some(input) = st.inputs.iter_mut().find(|i| i.id == id) {
        input.src = dims;
    }
    relayout(inner, &mut st);
}

/// The room's output clock: every 1/fps s, when something was drawn since the last output (or
/// [`UNCHANGED_REFRESH`] passed, or a keyframe is due), copies the canvas into a buffer from `pool`
/// and pushes it into `src`, stamped with the pipeline's running time.
/// Asks `o`'s encoder for a keyframe from its next input (`GstForceKeyUnit` upstream of it).
fn force_keyframe(inner: &Inner, o: &Output, last: &mut Option<Instant>) {
    o.keyframe.deferred.store(false, Ordering::Release);
    o.keyframe.pending.store(true, Ordering::Release);
    *last = Some(Instant::now());
    let ev = gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
    o.sink_pad.push_event(ev);
    // The encoder makes the keyframe from its next input: let one through now.
    inner.changes.store(CHANGE_OUTPUTS, Ordering::Release);
    inner.stats.keyframes_forced.fetch_add(1, Ordering::Relaxed);
}

/// Room clock thread, each tick: forces the deferred keyframes whose [`KEYFRAME_MIN_INTERVAL`]
/// has passed, and the ones attached branches need ([`RoomVideo::attach_encoded`]). Costs two
/// atomic loads when there are neither.
fn force_due_keyframes(inner: &Inner) {
    let deferred = inner.keyframes_deferred.swap(false, Ordering::AcqRel);
    if !deferred && inner.periodic_keyframes.load(Ordering::Acquire) == 0 {
        return;
    }
    let st = inner.state.lock().unwrap();
    for o in st.outputs.values() {
        let every = o.keyframe.every.lock().unwrap().iter().map(|(_, d)| *d).min();
        let deferred = o.keyframe.deferred.load(Ordering::Acquire);
        if !deferred && every.is_none() {
            continue;
        }
        let mut last = o.keyframe.last_request.lock().unwrap();
        let age = last.map_or(Duration::MAX, |t| t.elapsed());
        if deferred && age < KEYFRAME_MIN_INTERVAL {
            inner.keyframes_deferred.store(true, Ordering::Release);
        } else if deferred || every.is_some_and(|e| age >= e) {
            force_keyframe(inner, o, &mut last);
        }
    }
}

fn spawn_clock_thread(video: Weak<Inner>, src: gst_app::AppSrc, pool: gst::BufferPool, info: gstreamer_video::VideoInfo) {
    let period = Duration::from_nanos(1_000_000_000 / u64::from(info.fps().numer().max(1) as u32));
    let _ = std::thread::Builder::new().name("room-clock".into()).spawn(move || {
        let mut next = Instant::now();
        let mut last_sent: Option<Instant> = None;
        // Outputs still to send since the last change: while video flows the output keeps its
        // steady rate (inputs arrive unaligned with this clock, so a tick can see no new frame).
        let mut hold = 0u32;
        loop {
            next += period;
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else if now - next > period * 5 {
                next = now; // starved: do not burst to catch up
            }
            let Some(inner) = video.upgrade() else { break };
            if inner.stopped.load(Ordering::Relaxed) {
                break;
            }
            force_due_keyframes(&inner);
            let now = Instant::now();
            let forced = inner.changes.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok();
            let buf = {
                let mut cv = inner.canvas.lock().unwrap();
                if std::mem::take(&mut cv.dirty) {
                    hold = CHANGE_OUTPUTS;
                }
                let changed = hold > 0;
                hold = hold.saturating_sub(1);
                let due = changed || forced || last_sent.is_none_or(|t| now.duration_since(t) >= UNCHANGED_REFRESH);
                if !due {
                    inner.stats.frames_unchanged.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let Ok(buf) = pool.acquire_buffer(None) else { break };
                let Ok(mut frame) = gstreamer_video::VideoFrame::from_buffer_writable(buf, &info) else { break };
                let pic = cv.image.planes();
                for (k, (data, stride)) in pic.planes.iter().enumerate() {
                    let ds = frame.plane_stride()[k] as usize;
                    let Ok(dst) = frame.plane_data_mut(k as u32) else { continue };
                    let row = (*stride).min(ds);
                    for (d, s) in dst.chunks_mut(ds).zip(data.chunks(*stride)) {
                        d[..row].copy_from_slice(&s[..row]);
                    }
                }
                frame.into_buffer()
            };
            let mut buf = buf;
            if let Some(b) = buf.get_mut() {
                b.set_pts(inner.pipeline.current_running_time());
                b.set_duration(gst::ClockTime::from_nseconds(period.as_nanos() as u64));
            }
            last_sent = Some(now);
            inner.stats.frames_out.fetch_add(1, Ordering::Relaxed);
            drop(inner);
            if src.push_buffer(buf).is_err() {
                break;
            }
        }
        let _ = pool.set_active(false);
    });
}

/// Draws the placeholders of muted, audio-only and stale tiles, checked every
/// [`PLACEHOLDER_PERIOD`].
fn spawn_placeholder_thread(video: Weak<Inner>) {
    let _ = std::thread::Builder::new().name("placeholders".into()).spawn(move || {
        loop {
            std::thread::sleep(PLACEHOLDER_PERIOD);
            let Some(inner) = video.upgrade() else { return };
            if inner.stopped.load(Ordering::Relaxed) {
                return;
            }
            let due: Vec<(String, Arc<InputShared>)> = {
                let st = inner.state.lock().unwrap();
                st.inputs
                    .iter()
                    .filter(|i| i.visible && !i.shared.showing_placeholder.load(Ordering::Relaxed))
                    .filter(|i| {
                        i.shared.video_muted.load(Ordering::Relaxed)
                            || i.shared.last_frame.lock().unwrap().is_none_or(|t| t.elapsed() > STALE)
                    })
                    .map(|i| (i.id.clone(), i.shared.clone()))
                    .collect()
            };
            for (id, shared) in due {
                push_placeholder(&inner, &id, &shared);
            }
        }
    });
}

/// A decoded video source feeding one tile. Dropping it does not remove the tile; call
/// [`RoomVideo::remove_input`].
pub struct VideoInput {
    id: String,
    video: Weak<Inner>,
    shared: Arc<InputShared>,
}

impl VideoInput {
    /// Draws one decoded frame (`I420`, any size; other formats are counted in
    /// [`VideoStats::frames_dropped`]) into the tile, scaled to it, in the calling thread; it
    /// shows from the next composite on. Ignored while the tile is video-muted (its placeholder
    /// shows).
    pub fn push(&self, sample: &gst::Sample) {
        if self.shared.video_muted.load(Ordering::Relaxed) {
            return;
        }
        let Some(video) = self.video.upgrade() else { return };
        *self.shared.last_frame.lock().unwrap() = Some(Instant::now());
        self.shared.showing_placeholder.store(false, Ordering::Relaxed);
        push_frame(&video, &self.id, &self.shared, sample);
    }
}

/// Logs errors and warnings from a pipeline's bus, tagged with the room; stops when the bus does.
pub(crate) fn watch_bus(pipeline: &gst::Pipeline, room: String) {
    let Some(bus) = pipeline.bus() else { return };
    let weak = pipeline.downgrade();
    std::thread::Builder::new()
        .name(format!("bus-{room}"))
        .spawn(move || {
            loop {
                let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(500)) else {
                    match weak.upgrade() {
                        Some(p) if p.current_state() != gst::State::Null || p.pending_state() != gst::State::VoidPending => continue,
                        Some(p) if p.current_state() == gst::State::Null => break,
                        Some(_) => continue,
                        None => break,
                    }
                };
                use gst::MessageView;
                match msg.view() {
                    MessageView::Error(e) => tracing::error!(
                        %room,
                        element = %msg.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                        "pipeline error: {} ({:?})",
                        e.error(),
                        e.debug()
                    ),
                    MessageView::Warning(w) => tracing::warn!(
                        %room,
                        element = %msg.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                        "pipeline warning: {}",
                        w.error()
                    ),
                    _ => {}
                }
            }
        })
        .ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next keyframe start on `rx`, within 5 s.
    async fn next_keyframe(rx: &mut broadcast::Receiver<Arc<OutFrame>>) -> Instant {
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(f) if starts_keyframe(&f) => return Instant::now(),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("encoder branch closed"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("a keyframe within 5 s")
    }

    #[tokio::test]
    async fn forced_keyframes_are_spaced_and_a_request_in_between_is_deferred_not_lost() {
        let format = OutputFormat { width: 320, height: 180, fps: 30, kbps: 300 };
        let video = RoomVideo::new("kf-test", format, Backends::new("cpu", None), Layout::Grid, 16).unwrap();
        let mut rx = video.subscribe(VideoCodec::Vp8).unwrap();
        next_keyframe(&mut rx).await; // the encoder's first frame
        let forced = || video.stats().keyframes_forced.load(Ordering::Relaxed);

        let n = forced();
        video.request_keyframe_tier(VideoCodec::Vp8, Tier::Full);
        assert_eq!(forced(), n + 1, "the first request forces a keyframe at once");
        let first = next_keyframe(&mut rx).await;

        // Asked again right after: deferred until KEYFRAME_MIN_INTERVAL has passed, then forced
        // by the room clock without another request.
        video.request_keyframe_tier(VideoCodec::Vp8, Tier::Full);
        assert_eq!(forced(), n + 1, "a request within the minimum interval waits");
        let second = next_keyframe(&mut rx).await;
        assert_eq!(forced(), n + 2, "the deferred request was served");
        let gap = second.duration_since(first);
        assert!(gap >= KEYFRAME_MIN_INTERVAL - Duration::from_millis(40), "keyframes {gap:?} apart");
        video.stop();
    }

    #[tokio::test]
    async fn an_attached_branch_gets_keyframes_at_its_interval_until_detached() {
        let format = OutputFormat { width: 320, height: 180, fps: 30, kbps: 300 };
        let video = RoomVideo::new("kf-every", format, Backends::new("cpu", None), Layout::Grid, 16).unwrap();
        let mut rx = video.subscribe(VideoCodec::Vp8).unwrap();
        next_keyframe(&mut rx).await;
        let branch = gst::parse::bin_from_description("fakesink sync=false async=false", true).unwrap();
        let every = Duration::from_millis(400);
        let pad = video.attach_encoded(VideoCodec::Vp8, &branch, every).unwrap();
        let mut at = vec![next_keyframe(&mut rx).await]; // the one asked for on attach
        for _ in 0..2 {
            at.push(next_keyframe(&mut rx).await);
        }
        for w in at.windows(2) {
            let gap = w[1].duration_since(w[0]);
            assert!(gap >= every - Duration::from_millis(40) && gap < every * 2, "keyframes {gap:?} apart");
        }
        video.detach_encoded(&pad, &branch);
        let quiet = tokio::time::timeout(every * 3, next_keyframe(&mut rx)).await;
        assert!(quiet.is_err(), "no keyframe is forced once the branch is detached");
        video.stop();
    }

}
