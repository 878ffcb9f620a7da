//! The room's video: decoded inputs → tiles drawn by the room's compositor → one encode per codec
//! and output tier → RTP fan-out.
//!
//! ```text
//! publisher decoder thread ─ push ─┐
//! publisher decoder thread ─ push ─┤  tiles (layout, labels, placeholders) ─ compositor (I420 WxH canvas)
//! placeholder thread ──────────────┘
//! room clock thread, every 1/fps s, when something changed: composite ─ appsrc ─ tee ─ encoder branches
//! ```
//! Three owners, each a file with its state and lock: [`tiles`] (who is shown where, labels and
//! placeholders; backend-independent), the compositor behind the [`compositor::Compositor`] seam
//! ([`cpu`], the CPU canvas, for now), and [`encoders`] (branches, keyframe gates, encoded taps for
//! recordings and egress); [`clock`] paces the composite from the one to the other. [`RoomVideo`]
//! is the room's one handle on all of it.

pub mod clock;
pub mod compositor;
pub mod cpu;
pub mod element;
pub mod encoders;
mod head;
pub mod keyframe;
pub mod labels;
pub mod tiles;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use tokio::sync::broadcast;

use super::fanout::OutFrame;
use super::layout::{Layout, Placement, Rect};
use super::tiers::{OutputFormat, Tier};
use crate::codec::VideoCodec;
use crate::pipelines::{Backends, Params, Role};
use clock::OutputRequests;
use compositor::Compositor;
use encoders::Encoders;
use tiles::Tiles;
pub use tiles::{VideoInput, VisibilityListener};

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

pub(crate) fn gst_err(e: impl std::fmt::Display) -> VideoError {
    VideoError::Gst(e.to_string())
}

/// The caps of a room's composite: `video/x-raw,format=I420`, `format`'s size and rate, square
/// pixels.
pub(crate) fn composite_caps(format: OutputFormat) -> gst::Caps {
    gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", format.width as i32)
        .field("height", format.height as i32)
        .field("framerate", gst::Fraction::new(format.fps as i32, 1))
        .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
        .build()
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
    /// GPU fragments (encoders) replaced by the next candidate, `cpu` in the end, because they
    /// failed to start or while running (`media::fallback`).
    pub fallbacks: AtomicU64,
    /// Times the room's element (GPU) compositor failed and the CPU canvas took over (0 or 1).
    pub compositor_fallbacks: AtomicU64,
}

/// The room's tiles, compositor and encoders. Cheap to clone; the pipeline stops when the last
/// clone drops or [`RoomVideo::stop`] is called.
#[derive(Clone)]
pub struct RoomVideo {
    inner: Arc<Inner>,
}

struct Inner {
    pipeline: gst::Pipeline,
    /// The composite's source, which the clock pushes into once started.
    src: gst_app::AppSrc,
    /// [`RoomVideo::start`] ran: the pipeline plays and the clock and placeholder threads run.
    started: std::sync::Mutex<bool>,
    /// Generation of the clock thread: one that sees another number ends (a park, a restart).
    generation: AtomicU64,
    format: OutputFormat,
    tiles: Arc<Tiles>,
    compositor: Arc<dyn Compositor>,
    encoders: Encoders,
    requests: Arc<OutputRequests>,
    stats: Arc<VideoStats>,
    stopped: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tiles.stop();
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl RoomVideo {
    /// Builds and starts the room's video (no encoder runs until [`RoomVideo::subscribe`]), with
    /// `layout` and at most `cap` visible tiles, composited by the backend's `composite` fragment
    /// where it has one that runs here (an [`element::ElementCompositor`]), else on the CPU canvas.
    ///
    /// # Errors
    /// [`VideoError::Gst`] when an element is missing or the pipeline cannot start.
    pub fn new(
        room: &str,
        format: OutputFormat,
        backends: Backends,
        layout: Layout,
        cap: usize,
    ) -> Result<Self, VideoError> {
        let video = Self::new_idle(room, format, backends, layout, cap)?;
        video.start()?;
        Ok(video)
    }

    /// Builds the room's video as [`RoomVideo::new`] does, but runs nothing — no clock, no
    /// placeholder thread, the pipeline in `NULL` — until [`RoomVideo::start`]: an empty room
    /// costs no CPU and no thread.
    ///
    /// # Errors
    /// [`VideoError::Gst`] when an element is missing.
    pub fn new_idle(
        room: &str,
        format: OutputFormat,
        backends: Backends,
        layout: Layout,
        cap: usize,
    ) -> Result<Self, VideoError> {
        gst::init().map_err(gst_err)?;
        let stats = Arc::new(VideoStats::default());
        let compositor = choose_compositor(room, &backends, format, &stats)?;
        let pipeline = gst::Pipeline::with_name(&format!("room-{room}"));
        if backends.backend() != "cpu" {
            super::gpu_context::share(&pipeline);
        }
        // The composite comes from the room clock thread. No latency of its own (it is pushed the
        // moment it is due), and it never blocks that thread: a full queue drops the oldest.
        let src = gst_app::AppSrc::builder()
            .name("composite")
            .caps(compositor.caps())
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
        let requests = Arc::new(OutputRequests::default());
        let tiles = Tiles::new(room, format, compositor.clone(), layout, cap, stats.clone());
        let encoders = Encoders::new(room, pipeline.clone(), tee, format, backends, stats.clone(), requests.clone());
        let inner = Arc::new(Inner {
            pipeline,
            src,
            started: std::sync::Mutex::new(false),
            generation: AtomicU64::new(0),
            format,
            tiles,
            compositor,
            encoders,
            requests,
            stats,
            stopped: AtomicBool::new(false),
        });
        Ok(Self { inner })
    }

    /// Starts what [`RoomVideo::new_idle`] left idle: the pipeline plays, the room clock and the
    /// placeholder thread run. Later calls (and calls after [`RoomVideo::stop`]) do nothing.
    ///
    /// # Errors
    /// [`VideoError::Gst`] when the pipeline cannot start.
    pub fn start(&self) -> Result<(), VideoError> {
        let mut started = self.inner.started.lock().unwrap();
        if *started || self.inner.stopped.load(Ordering::Relaxed) {
            return Ok(());
        }
        let room = self.inner.pipeline.name();
        let room = room.strip_prefix("room-").unwrap_or(&room);
        super::bus::watch_bus(&self.inner.pipeline, room.to_string());
        self.inner.pipeline.set_state(gst::State::Playing).map_err(gst_err)?;
        let period = Duration::from_nanos(1_000_000_000 / u64::from(self.inner.format.fps.max(1)));
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        clock::spawn(Arc::downgrade(&self.inner), self.inner.src.clone(), period, generation);
        self.inner.tiles.start();
        *started = true;
        Ok(())
    }

    /// Idles a started room video again, as [`RoomVideo::new_idle`] left it: the clock and the
    /// placeholder thread end (within a frame and a placeholder period), the pipeline — its
    /// encoder branches included — goes to `NULL`. Tiles, layout and branches stay, and
    /// [`RoomVideo::start`] runs them again. For a room that nobody is in and that records
    /// nothing.
    pub fn park(&self) {
        let mut started = self.inner.started.lock().unwrap();
        if !*started {
            return;
        }
        self.inner.generation.fetch_add(1, Ordering::SeqCst);
        self.inner.tiles.park();
        let _ = self.inner.pipeline.set_state(gst::State::Null);
        *started = false;
    }

    /// Whether [`RoomVideo::start`] ran.
    pub fn started(&self) -> bool {
        *self.inner.started.lock().unwrap()
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
    /// None today; kept for backends whose tiles can fail to allocate.
    pub fn add_input(&self, id: &str, name: &str, screen: bool) -> Result<VideoInput, VideoError> {
        Ok(self.inner.tiles.add_input(id, name, screen))
    }

    /// Removes participant `id`'s tile and re-lays out the others. Unknown ids are ignored.
    pub fn remove_input(&self, id: &str) {
        self.inner.tiles.remove_input(id);
    }

    /// Calls `listener` now and whenever tile `id` is shown or hidden by the layout (a hidden
    /// tile's publisher need not be decoded).
    pub fn set_visibility_listener(&self, id: &str, listener: VisibilityListener) {
        self.inner.tiles.set_visibility_listener(id, listener);
    }

    /// Sets the layout; takes effect with the next composite frame.
    pub fn set_layout(&self, layout: Layout) {
        self.inner.tiles.set_layout(layout);
    }

    /// Sets the cap of visible tiles (at least 1).
    pub fn set_max_visible(&self, cap: usize) {
        self.inner.tiles.set_max_visible(cap);
    }

    /// The current layout.
    pub fn layout(&self) -> Layout {
        self.inner.tiles.layout()
    }

    /// Sets the active speaker (highlighted in the grid, large in speaker layouts) and the
    /// participants talking now (`tick`, in 20 ms units, orders them for last-N).
    pub fn set_speaking(&self, speaker: Option<&str>, talking: &[String], tick: u64) {
        self.inner.tiles.set_speaking(speaker, talking, tick);
    }

    /// Server- or self-mute: a video-muted tile shows its placeholder; an audio-muted tile's label
    /// says so. Unknown ids are ignored. Returns at once: the label (a small GStreamer pipeline,
    /// 5-35 ms) is rendered on a blocking thread and drawn when ready, unless another mute of the
    /// same tile came first.
    pub fn set_muted(&self, id: &str, audio: bool, video: bool) {
        self.inner.tiles.set_muted(id, audio, video);
    }

    /// Where each tile is drawn now: the layout's placements (cells) in drawing order.
    pub fn placements(&self) -> Vec<Placement> {
        self.inner.tiles.placements()
    }

    /// Where each input is drawn now, in join order: `(participant id, letterboxed rect)`;
    /// `None` while hidden.
    pub fn tiles(&self) -> Vec<(String, Option<Rect>)> {
        self.inner.tiles.tiles()
    }

    /// The active speaker, if any.
    pub fn speaker(&self) -> Option<String> {
        self.inner.tiles.speaker()
    }

    /// The backend compositing the room now ([`Compositor::backend`]: `cpu`, or the backend
    /// whose `composite` fragment runs).
    pub fn compositor_backend(&self) -> String {
        self.inner.compositor.backend()
    }

    /// Number of encoder branches running (codecs × tiers).
    pub fn encoders(&self) -> usize {
        self.inner.encoders.count()
    }

    /// The encoder branches running, as (codec, tier, receivers).
    pub fn encoder_branches(&self) -> Vec<(VideoCodec, Tier, usize)> {
        self.inner.encoders.branches()
    }

    /// The backend encoding each branch, as (codec, tier, backend): the one asked for, or `cpu`
    /// after a fallback.
    pub fn encoder_backends(&self) -> Vec<(VideoCodec, Tier, String)> {
        self.inner.encoders.backends_in_use()
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
    pub fn subscribe_tier(
        &self,
        codec: VideoCodec,
        tier: Tier,
    ) -> Result<broadcast::Receiver<Arc<OutFrame>>, VideoError> {
        self.inner.encoders.subscribe(codec, tier)
    }

    /// The retransmission history of the `codec` encoder branch of `tier`
    /// ([`crate::media::retransmit`]); `None` when that branch is not running.
    pub fn history(&self, codec: VideoCodec, tier: Tier) -> Option<Arc<crate::media::retransmit::History>> {
        self.inner.encoders.history(codec, tier)
    }

    /// Takes down the smaller-tier encoder branches nobody receives any more (the full tier
    /// stays: recordings and egress attach to it). Call after dropping a tier's receiver.
    pub fn release_idle_tiers(&self) {
        self.inner.encoders.release_idle_tiers();
    }

    /// Asks the full-size `codec` encoder for a keyframe ([`RoomVideo::request_keyframe_tier`]).
    pub fn request_keyframe(&self, codec: VideoCodec) {
        self.request_keyframe_tier(codec, Tier::Full);
    }

    /// Asks the `codec` encoder of `tier` for a keyframe, coalesced with other requests
    /// ([`keyframe::KeyframeGate`]).
    pub fn request_keyframe_tier(&self, codec: VideoCodec, tier: Tier) {
        self.inner.encoders.request_keyframe(codec, tier, Instant::now());
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
    pub fn attach_encoded(
        &self,
        codec: VideoCodec,
        branch: &gst::Bin,
        keyframe_every: Duration,
    ) -> Result<gst::Pad, VideoError> {
        self.inner.encoders.attach_encoded(codec, branch, keyframe_every)
    }

    /// The room pipeline's running time now (what `appsrc do-timestamp` stamps).
    pub fn running_time(&self) -> Option<gst::ClockTime> {
        self.inner.pipeline.current_running_time()
    }

    /// Stops feeding `branch` from `pad` (from [`RoomVideo::attach_encoded`]) and sends it
    /// end-of-stream, so muxers finalize; the caller waits for the branch's EOS and then calls
    /// [`RoomVideo::remove_branch`].
    pub fn detach_encoded(&self, pad: &gst::Pad, branch: &gst::Bin) {
        self.inner.encoders.detach_encoded(pad, branch);
    }

    /// Stops `branch` and takes it out of the room pipeline.
    pub fn remove_branch(&self, branch: &gst::Bin) {
        self.inner.encoders.remove_branch(branch);
    }

    /// Stops the clock, the placeholders and the pipeline; later calls do nothing.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::Relaxed);
        self.inner.tiles.stop();
        let _ = self.inner.pipeline.set_state(gst::State::Null);
    }
}

/// The room's compositor: an [`element::ElementCompositor`] from the first variant of `backends`'
/// `composite` fragment that starts here (a variant that does not is marked failed and counted in
/// [`VideoStats::compositor_fallbacks`]), else the CPU canvas (always on `cpu`, which has no such
/// fragment).
fn choose_compositor(
    room: &str,
    backends: &Backends,
    format: OutputFormat,
    stats: &Arc<VideoStats>,
) -> Result<Arc<dyn Compositor>, VideoError> {
    if backends.backend() != "cpu" {
        let p = Params { kbps: format.kbps, keyint: Params::TYPICAL.keyint, fps: format.fps };
        while let Ok(built) = backends.build(Role::Composite, p) {
            match element::ElementCompositor::new(room, backends, &built.fragment, format, stats.clone()) {
                Ok(c) => return Ok(Arc::new(c)),
                Err(e) => {
                    tracing::warn!(room, backend = %built.fragment.backend, variant = built.fragment.variant,
                        "the composite fragment does not run: {e}");
                    backends.mark_failed(Role::Composite, &built.fragment, &e.to_string());
                    stats.compositor_fallbacks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        backends.note_serving(Role::Composite, "cpu");
    }
    Ok(Arc::new(cpu::CpuCompositor::new(format, stats.clone())?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::fanout::starts_keyframe;

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

    const SMALL: OutputFormat = OutputFormat { width: 320, height: 180, fps: 30, kbps: 300 };

    #[tokio::test]
    async fn forced_keyframes_are_spaced_and_a_request_in_between_is_deferred_not_lost() {
        let video = RoomVideo::new("kf-test", SMALL, Backends::new("cpu", None), Layout::Grid, 16).unwrap();
        let mut rx = video.subscribe(VideoCodec::Vp8).unwrap();
        next_keyframe(&mut rx).await; // the encoder's first frame
        let forced = || video.stats().keyframes_forced.load(Ordering::Relaxed);

        let n = forced();
        video.request_keyframe_tier(VideoCodec::Vp8, Tier::Full);
        assert_eq!(forced(), n + 1, "the first request forces a keyframe at once");
        let first = next_keyframe(&mut rx).await;

        // Asked again right after: deferred until the minimum interval has passed, then forced
        // by the room clock without another request.
        video.request_keyframe_tier(VideoCodec::Vp8, Tier::Full);
        assert_eq!(forced(), n + 1, "a request within the minimum interval waits");
        let second = next_keyframe(&mut rx).await;
        assert_eq!(forced(), n + 2, "the deferred request was served");
        let gap = second.duration_since(first);
        assert!(gap >= keyframe::KEYFRAME_MIN_INTERVAL - Duration::from_millis(40), "keyframes {gap:?} apart");
        video.stop();
    }

    #[tokio::test]
    async fn an_attached_branch_gets_keyframes_at_its_interval_until_detached() {
        let video = RoomVideo::new("kf-every", SMALL, Backends::new("cpu", None), Layout::Grid, 16).unwrap();
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
