//! The room's video: decoded inputs → compositor grid → one encode per codec → RTP fan-out.
//!
//! ```text
//! appsrc(input 0) ─ videoscale ─ capsfilter(tile) ─┐
//! appsrc(input 1) ─ videoscale ─ capsfilter(tile) ─┤
//! videotestsrc(16x16, live clock, alpha 0) ────────┴─ compositor ─ capsfilter(I420 WxH@fps) ─ tee
//!     tee ─ queue(leaky) ─ <pipelines/*/vp8-encode>  ─ rtpvp8pay  ─ appsink → broadcast (VP8)
//!     tee ─ queue(leaky) ─ <pipelines/*/h264-encode> ─ rtph264pay ─ appsink → broadcast (H264)
//! ```
//! Each input is scaled to its letterboxed tile before the compositor (the compositor then places
//! it 1:1, which is the cheap path measured in MEDIA-NOTES). An encoder branch is built the first
//! time a receiver asks for its codec. Inputs are separate `appsrc`s fed from the publishers' own
//! decode pipelines, so a join, a leave or a broken publisher never stalls the composite: the live
//! background source clocks the compositor at the output rate whatever the inputs do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gst::prelude::*;
use rtc::shared::marshal::Unmarshal;
use tokio::sync::broadcast;

use super::fanout::{OutPacket, VideoCodec, is_keyframe_start};
use crate::pipelines::{Backends, Params, Role};
use crate::room::layout::{self, Rect};

/// Packets buffered per codec for receivers that fall behind (~1 s of 720p at 1.5 Mbit/s).
const FANOUT_CAPACITY: usize = 1024;
/// A forced keyframe is asked for again if none came within this long.
const KEYFRAME_RETRY: Duration = Duration::from_millis(500);

/// Output format of the composite.
#[derive(Debug, Clone, Copy, serde::Serialize)]
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

/// Counters of one room's video, for logs and the API.
#[derive(Debug, Default)]
pub struct VideoStats {
    /// Composite frames produced.
    pub frames_out: AtomicU64,
    /// Keyframes forced on an encoder (coalesced requests count once).
    pub keyframes_forced: AtomicU64,
}

/// The room's compositor and encoders. Cheap to clone; the pipeline stops when the last clone drops
/// or [`RoomVideo::stop`] is called.
#[derive(Clone)]
pub struct RoomVideo {
    inner: Arc<Inner>,
}

struct Inner {
    room: String,
    pipeline: gst::Pipeline,
    compositor: gst::Element,
    tee: gst::Element,
    format: OutputFormat,
    backends: Backends,
    state: Mutex<State>,
    stats: Arc<VideoStats>,
}

#[derive(Default)]
struct State {
    /// Inputs in join order (= grid order).
    inputs: Vec<InputState>,
    outputs: HashMap<VideoCodec, Output>,
}

struct InputState {
    id: String,
    elements: Vec<gst::Element>,
    filter: gst::Element,
    pad: gst::Pad,
    /// Decoded size of the source, 0x0 until the first frame.
    src: (u32, u32),
    /// Where it is drawn now.
    rect: Option<Rect>,
}

struct Output {
    tx: broadcast::Sender<Arc<OutPacket>>,
    sink_pad: gst::Pad,
    keyframe: Arc<KeyframeGate>,
}

/// Coalesces keyframe requests: one force-key-unit per outstanding request, retried after
/// [`KEYFRAME_RETRY`] if no keyframe came.
#[derive(Default)]
struct KeyframeGate {
    pending: AtomicBool,
    last_request: Mutex<Option<Instant>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl RoomVideo {
    /// Builds and starts the room's compositor (no encoder runs until [`RoomVideo::subscribe`]).
    ///
    /// # Errors
    /// [`VideoError::Gst`] when an element is missing or the pipeline cannot start.
    pub fn new(room: &str, format: OutputFormat, backends: Backends) -> Result<Self, VideoError> {
        gst::init().map_err(gst_err)?;
        let pipeline = gst::Pipeline::with_name(&format!("room-{room}"));
        let clock_src = gst::ElementFactory::make("videotestsrc")
            .property("is-live", true)
            .property_from_str("pattern", "black")
            .build()
            .map_err(gst_err)?;
        let clock_caps = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .field("width", 16)
                    .field("height", 16)
                    .field("framerate", gst::Fraction::new(format.fps as i32, 1))
                    .build(),
            )
            .build()
            .map_err(gst_err)?;
        let compositor = gst::ElementFactory::make("compositor")
            .property_from_str("background", "black")
            .build()
            .map_err(gst_err)?;
        let out_caps = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .field("width", format.width as i32)
                    .field("height", format.height as i32)
                    .field("framerate", gst::Fraction::new(format.fps as i32, 1))
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .build(),
            )
            .build()
            .map_err(gst_err)?;
        let tee = gst::ElementFactory::make("tee").property("allow-not-linked", true).build().map_err(gst_err)?;
        // Without any encoder yet the tee needs a sink so the compositor runs and prerolls.
        let idle = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
            .map_err(gst_err)?;
        pipeline.add_many([&clock_src, &clock_caps, &compositor, &out_caps, &tee, &idle]).map_err(gst_err)?;
        gst::Element::link_many([&clock_src, &clock_caps]).map_err(gst_err)?;
        let clock_pad = compositor.request_pad_simple("sink_%u").ok_or_else(|| gst_err("compositor pad"))?;
        clock_pad.set_property("alpha", 0.0f64);
        clock_pad.set_property("zorder", 0u32);
        clock_caps.static_pad("src").unwrap().link(&clock_pad).map_err(gst_err)?;
        gst::Element::link_many([&compositor, &out_caps, &tee, &idle]).map_err(gst_err)?;

        let stats = Arc::new(VideoStats::default());
        let s = stats.clone();
        out_caps.static_pad("src").unwrap().add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            s.frames_out.fetch_add(1, Ordering::Relaxed);
            gst::PadProbeReturn::Ok
        });

        let inner = Arc::new(Inner {
            room: room.to_string(),
            pipeline,
            compositor,
            tee,
            format,
            backends,
            state: Mutex::new(State::default()),
            stats,
        });
        watch_bus(&inner.pipeline, room.to_string());
        inner.pipeline.set_state(gst::State::Playing).map_err(gst_err)?;
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

    /// Adds a tile for participant `id` at the end of the grid and re-lays out every tile.
    /// Frames pushed into the returned handle are drawn there.
    ///
    /// # Errors
    /// [`VideoError::Gst`] if the elements cannot be made or linked.
    pub fn add_input(&self, id: &str) -> Result<VideoInput, VideoError> {
        let inner = &self.inner;
        let appsrc = gst_app::AppSrc::builder()
            .name(format!("in-{id}"))
            .is_live(true)
            .format(gst::Format::Time)
            .max_buffers(2)
            .leaky_type(gst_app::AppLeakyType::Downstream)
            .build();
        let scale = gst::ElementFactory::make("videoscale")
            .property_from_str("method", "bilinear")
            .property("add-borders", false)
            .build()
            .map_err(gst_err)?;
        let filter = gst::ElementFactory::make("capsfilter").build().map_err(gst_err)?;
        let elements: Vec<gst::Element> = vec![appsrc.clone().upcast(), scale, filter.clone()];
        inner.pipeline.add_many(&elements).map_err(gst_err)?;
        gst::Element::link_many(&elements).map_err(gst_err)?;
        let pad = inner.compositor.request_pad_simple("sink_%u").ok_or_else(|| gst_err("compositor pad"))?;
        pad.set_property("zorder", 1u32);
        // Not drawn until the first frame tells us its size.
        pad.set_property("alpha", 0.0f64);
        filter.static_pad("src").unwrap().link(&pad).map_err(gst_err)?;
        for e in &elements {
            e.sync_state_with_parent().map_err(gst_err)?;
        }
        {
            let mut st = inner.state.lock().unwrap();
            st.inputs.push(InputState { id: id.to_string(), elements, filter, pad, src: (0, 0), rect: None });
            relayout(&inner.format, &mut st.inputs);
        }
        tracing::info!(room = %inner.room, participant = id, "video tile added");
        Ok(VideoInput { id: id.to_string(), appsrc, video: Arc::downgrade(inner), size: Mutex::new((0, 0)) })
    }

    /// Removes participant `id`'s tile and re-lays out the others. Unknown ids are ignored.
    pub fn remove_input(&self, id: &str) {
        let inner = &self.inner;
        let removed = {
            let mut st = inner.state.lock().unwrap();
            let Some(i) = st.inputs.iter().position(|x| x.id == id) else { return };
            let input = st.inputs.remove(i);
            relayout(&inner.format, &mut st.inputs);
            input
        };
        for e in &removed.elements {
            let _ = e.set_state(gst::State::Null);
        }
        let _ = inner.pipeline.remove_many(&removed.elements);
        inner.compositor.release_request_pad(&removed.pad);
        tracing::info!(room = %inner.room, participant = id, "video tile removed");
    }

    /// Where each input is drawn now, in join order: `(participant id, rect)`; `None` until the
    /// input's first frame.
    pub fn tiles(&self) -> Vec<(String, Option<Rect>)> {
        let st = self.inner.state.lock().unwrap();
        st.inputs.iter().map(|i| (i.id.clone(), i.rect)).collect()
    }

    /// A receiver of the room's packets in `codec`, building that encoder branch on first use.
    /// Call [`RoomVideo::request_keyframe`] once the receiver is ready to start.
    ///
    /// # Errors
    /// [`VideoError`] if the encoder branch cannot be built.
    pub fn subscribe(&self, codec: VideoCodec) -> Result<broadcast::Receiver<Arc<OutPacket>>, VideoError> {
        let mut st = self.inner.state.lock().unwrap();
        if let Some(o) = st.outputs.get(&codec) {
            return Ok(o.tx.subscribe());
        }
        let out = self.build_output(codec)?;
        let rx = out.tx.subscribe();
        st.outputs.insert(codec, out);
        Ok(rx)
    }

    /// Asks the `codec` encoder for a keyframe. Requests made while one is outstanding share it
    /// (so receivers joining within one frame interval get the same keyframe).
    pub fn request_keyframe(&self, codec: VideoCodec) {
        let st = self.inner.state.lock().unwrap();
        let Some(o) = st.outputs.get(&codec) else { return };
        let mut last = o.keyframe.last_request.lock().unwrap();
        let outstanding = o.keyframe.pending.load(Ordering::Acquire);
        if outstanding && last.is_some_and(|t| t.elapsed() < KEYFRAME_RETRY) {
            return;
        }
        o.keyframe.pending.store(true, Ordering::Release);
        *last = Some(Instant::now());
        let ev = gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
        o.sink_pad.push_event(ev);
        self.inner.stats.keyframes_forced.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops the pipeline; later calls do nothing.
    pub fn stop(&self) {
        let _ = self.inner.pipeline.set_state(gst::State::Null);
    }

    fn build_output(&self, codec: VideoCodec) -> Result<Output, VideoError> {
        let inner = &self.inner;
        let f = inner.format;
        let params = Params { kbps: f.kbps, keyint: f.fps * 10, fps: f.fps };
        let (role, pay) = match codec {
            VideoCodec::Vp8 => (
                Role::Vp8Encode,
                gst::ElementFactory::make("rtpvp8pay")
                    .property("mtu", 1200u32)
                    .property_from_str("picture-id-mode", "15-bit")
                    .build()
                    .map_err(gst_err)?,
            ),
            VideoCodec::H264 => (
                Role::H264Encode,
                gst::ElementFactory::make("rtph264pay")
                    .property("mtu", 1200u32)
                    .property("config-interval", -1i32)
                    .property_from_str("aggregate-mode", "zero-latency")
                    .build()
                    .map_err(gst_err)?,
            ),
        };
        let queue = gst::ElementFactory::make("queue")
            .property("max-size-buffers", 2u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64)
            .property_from_str("leaky", "downstream")
            .build()
            .map_err(gst_err)?;
        let enc = inner.backends.make_bin(role, params)?;
        let sink = gst_app::AppSink::builder().sync(false).max_buffers(64).drop(false).build();
        let elements: Vec<gst::Element> = vec![queue.clone(), enc.upcast(), pay, sink.clone().upcast()];
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
                    let Some(buf) = sample.buffer() else { return Ok(gst::FlowSuccess::Ok) };
                    let Ok(map) = buf.map_readable() else { return Ok(gst::FlowSuccess::Ok) };
                    let mut bytes = Bytes::copy_from_slice(map.as_slice());
                    match rtc::rtp::Packet::unmarshal(&mut bytes) {
                        Ok(packet) => {
                            let keyframe_start = is_keyframe_start(codec, &packet.payload);
                            if keyframe_start {
                                gate.pending.store(false, Ordering::Release);
                            }
                            // No receiver is not an error: the branch keeps running for the next.
                            let _ = tx2.send(Arc::new(OutPacket { packet, keyframe_start }));
                        }
                        Err(e) => tracing::warn!(%room, "payloader output is not RTP: {e}"),
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let src = inner.tee.request_pad_simple("src_%u").ok_or_else(|| gst_err("tee pad"))?;
        src.link(&queue.static_pad("sink").unwrap()).map_err(gst_err)?;
        for e in &elements {
            e.sync_state_with_parent().map_err(gst_err)?;
        }
        tracing::info!(room = %inner.room, ?codec, "encoder branch started");
        Ok(Output { tx, sink_pad: sink.static_pad("sink").unwrap(), keyframe })
    }
}

/// Recomputes every input's tile: grid cell in join order, letterboxed to the source's aspect.
fn relayout(format: &OutputFormat, inputs: &mut [InputState]) {
    let cells = layout::grid(inputs.len(), format.width, format.height);
    for (input, cell) in inputs.iter_mut().zip(cells) {
        let rect = (input.src.0 > 0).then(|| layout::letterbox(cell, input.src.0, input.src.1));
        if rect == input.rect {
            continue;
        }
        input.rect = rect;
        if let Some(r) = rect {
            input.filter.set_property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("width", r.w as i32)
                    .field("height", r.h as i32)
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .build(),
            );
            input.pad.set_property("xpos", r.x as i32);
            input.pad.set_property("ypos", r.y as i32);
            input.pad.set_property("width", r.w as i32);
            input.pad.set_property("height", r.h as i32);
            input.pad.set_property("alpha", 1.0f64);
        } else {
            input.pad.set_property("alpha", 0.0f64);
        }
    }
}

/// A decoded video source feeding one tile. Dropping it does not remove the tile; call
/// [`RoomVideo::remove_input`].
pub struct VideoInput {
    id: String,
    appsrc: gst_app::AppSrc,
    video: Weak<Inner>,
    size: Mutex<(u32, u32)>,
}

impl VideoInput {
    /// Queues one decoded frame (any raw format and size) for the next composite. The frame is
    /// stamped with the room pipeline's running time on arrival, so it shows as soon as it comes.
    pub fn push(&self, sample: &gst::Sample) {
        let (Some(buf), Some(caps)) = (sample.buffer(), sample.caps()) else { return };
        let Some(video) = self.video.upgrade() else { return };
        if let Ok(info) = gstreamer_video::VideoInfo::from_caps(caps) {
            let dims = (info.width(), info.height());
            let mut size = self.size.lock().unwrap();
            if *size != dims {
                *size = dims;
                self.appsrc.set_caps(Some(&caps.to_owned()));
                let mut st = video.state.lock().unwrap();
                if let Some(input) = st.inputs.iter_mut().find(|i| i.id == self.id) {
                    input.src = dims;
                }
                relayout(&video.format, &mut st.inputs);
            }
        }
        let mut buf = buf.copy();
        {
            let b = buf.make_mut();
            b.set_pts(video.pipeline.current_running_time());
            b.set_dts(gst::ClockTime::NONE);
            b.set_duration(gst::ClockTime::NONE);
        }
        let _ = self.appsrc.push_buffer(buf);
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
