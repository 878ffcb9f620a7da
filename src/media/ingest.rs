//! A publisher's video: RTP in → `rtpjitterbuffer` → depayloader → decoder → the room's tile.
//!
//! One small pipeline per published video track, so a broken or hostile stream stops only its own
//! decoder: `rtpjitterbuffer ! rtp<codec>depay ! <decode fragment> ! videoconvert ! appsink(I420)`;
//! the appsink's thread (the jitter buffer's) then scales the frame into the room canvas. The
//! transport task pushes each received frame's packets straight into the jitter buffer through a
//! source pad of our own (no `appsrc`: its queue and thread were one more hand-over and one more
//! wake-up per frame). When the depayloader or the decoder needs a keyframe (start, loss, corrupt
//! frame) it sends `GstForceKeyUnit` upstream; that reaches this pad and is turned into a callback
//! (the transport answers it with a rate-limited PLI to the publisher).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;

use super::bus::watch_bus;
use super::fallback::FragmentSlot;
use super::jitter_target::JitterTarget;
use super::video::{VideoError, VideoInput};
use crate::codec::VideoCodec;
use crate::pipelines::{Backends, Params, Role};

/// Asks the decoders inside `bin` to request keyframes on corrupt frames and to drop them.
fn tune_decoder(bin: &gst::Element) {
    let Some(bin) = bin.downcast_ref::<gst::Bin>() else { return };
    for e in bin.iterate_recurse().into_iter().flatten() {
        if e.is::<gstreamer_video::VideoDecoder>() {
            if e.find_property("automatic-request-sync-points").is_some() {
                e.set_property("automatic-request-sync-points", true);
            }
            if e.find_property("discard-corrupted-frames").is_some() {
                e.set_property("discard-corrupted-frames", true);
            }
        }
    }
}

/// Called (from a GStreamer thread) when the decoder needs a keyframe from the publisher.
pub type KeyframeNeeded = Arc<dyn Fn() + Send + Sync>;

/// The decode pipeline of one published video track.
pub struct VideoIngest {
    pipeline: gst::Pipeline,
    /// Feeds the jitter buffer's sink pad (`application/x-rtp`); not in any element.
    src: gst::Pad,
    valve: gst::Element,
    /// The `rtpjitterbuffer`, whose latency follows [`JitterTarget`].
    jitter: gst::Element,
    target: Mutex<JitterTarget>,
    label: String,
    /// The decoder fragment (swapped for `cpu`'s when a GPU decoder fails while running).
    decoder: Arc<FragmentSlot>,
    on_keyframe_needed: KeyframeNeeded,
}

impl Drop for VideoIngest {
    /// Stops the pipeline on a helper thread: the transition to `Null` joins its streaming
    /// threads, which must not hold up the async worker a leaving publisher's task ends on.
    fn drop(&mut self) {
        let pipeline = self.pipeline.clone();
        let stop = move || {
            let _ = pipeline.set_state(gst::State::Null);
        };
        if let Err(e) = std::thread::Builder::new().name("ingest-stop".into()).spawn(stop.clone()) {
            tracing::debug!("stopping the ingest pipeline inline: {e}");
            stop();
        }
    }
}

impl VideoIngest {
    /// Starts decoding RTP of `codec` with payload type `payload_type` (clock 90 kHz) into `tile`.
    /// `jitter_ms` is the jitter buffer's latency (`rtpjitterbuffer latency`, ms) on a clean path;
    /// it grows while packets are lost (see [`JitterTarget`]).
    ///
    /// # Errors
    /// [`VideoError`] if an element is missing or the pipeline does not start.
    pub fn start(
        label: &str,
        codec: VideoCodec,
        payload_type: u8,
        jitter_ms: u32,
        backends: &Backends,
        tile: VideoInput,
        on_keyframe_needed: KeyframeNeeded,
    ) -> Result<Self, VideoError> {
        let err = |e: &dyn std::fmt::Display| VideoError::Gst(e.to_string());
        let pipeline = gst::Pipeline::with_name(&format!("ingest-{label}"));
        if backends.backend() != "cpu" {
            super::gpu_context::share(&pipeline);
        }
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", "video")
            .field("clock-rate", 90000i32)
            .field("encoding-name", codec.encoding_name())
            .field("payload", payload_type as i32)
            .build();
        let jitter = gst::ElementFactory::make("rtpjitterbuffer")
            .property("latency", jitter_ms)
            .property("do-lost", true)
            // Bounded by its latency: a decoder that falls behind loses the oldest packets (and
            // asks for a keyframe), it does not queue without end.
            .property("drop-on-latency", true)
            .property_from_str("mode", "none")
            .build()
            .map_err(|e| err(&e))?;
        // Closed while the layout hides this publisher: nothing is depayloaded or decoded.
        let valve = gst::ElementFactory::make("valve").property("drop", false).build().map_err(|e| err(&e))?;
        let (depay_name, role) = match codec {
            VideoCodec::Vp8 => ("rtpvp8depay", Role::Vp8Decode),
            VideoCodec::H264 => ("rtph264depay", Role::H264Decode),
        };
        let depay = gst::ElementFactory::make(depay_name).build().map_err(|e| err(&e))?;
        if depay.find_property("request-keyframe").is_some() {
            depay.set_property("request-keyframe", true);
        }
        if depay.find_property("wait-for-keyframe").is_some() {
            depay.set_property("wait-for-keyframe", true);
        }
        let decoder = FragmentSlot::new(label, role, Params { kbps: 0, keyint: 0, fps: 30 }, backends)?;
        tune_decoder(&decoder.element());
        // The room canvas takes I420 (what the CPU decoders give: then this is a passthrough);
        // hardware decoders may give NV12.
        let convert = gst::ElementFactory::make("videoconvert").build().map_err(|e| err(&e))?;
        let sink = gst_app::AppSink::builder()
            .caps(&gst::Caps::builder("video/x-raw").field("format", "I420").build())
            .sync(false)
            .max_buffers(2)
            .drop(true)
            .build();
        // No live source element: without preroll the pipeline goes to PLAYING at once (the jitter
        // buffer holds data until PLAYING, so a prerolling sink would wait for ever).
        sink.set_property("async", false);
        let jitter_sink = jitter.static_pad("sink").ok_or_else(|| err(&"rtpjitterbuffer has no sink pad"))?;
        let elements: Vec<gst::Element> =
            vec![jitter.clone(), valve.clone(), depay, decoder.guard().clone(), decoder.element(), convert.clone()];
        pipeline.add_many(&elements).map_err(|e| err(&e))?;
        pipeline.add(&sink).map_err(|e| err(&e))?;
        gst::Element::link_many(&elements[..4]).map_err(|e| err(&e))?;
        decoder.link(&convert)?;
        convert.link(&sink).map_err(|e| err(&e))?;
        let src = rtp_source_pad(&caps, on_keyframe_needed.clone());
        src.link(&jitter_sink).map_err(|e| err(&e))?;

        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    tile.push(&sample);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        watch_bus(&pipeline, label.to_string());
        while let Err(e) = pipeline.set_state(gst::State::Playing) {
            // A GPU decoder that does not start: the next candidate (`cpu` in the end).
            if !decoder.on_gpu() {
                return Err(err(&e));
            }
            let _ = pipeline.set_state(gst::State::Null);
            decoder.fall_back(&format!("did not start: {e}"))?;
            tune_decoder(&decoder.element());
        }
        src.set_active(true).map_err(|e| err(&e))?;
        // Sticky: stored on the pad and sent ahead of the first buffer.
        let _ = src.push_event(gst::event::StreamStart::new(label));
        let _ = src.push_event(gst::event::Caps::new(&caps));
        let _ = src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new()));
        Ok(Self {
            pipeline,
            src,
            valve,
            jitter,
            target: Mutex::new(JitterTarget::new(jitter_ms)),
            label: label.into(),
            decoder,
            on_keyframe_needed,
        })
    }

    /// A switch for the room's layout: `false` stops depayloading and decoding (the tile is not
    /// shown), `true` resumes and asks the publisher for a keyframe so the picture starts clean.
    pub fn activity_switch(&self, request_keyframe: KeyframeNeeded) -> Arc<dyn Fn(bool) + Send + Sync> {
        let valve = self.valve.clone();
        Arc::new(move |visible: bool| {
            let was_dropping: bool = valve.property("drop");
            valve.set_property("drop", !visible);
            if visible && was_dropping {
                request_keyframe();
            }
        })
    }

    /// Hands the RTP packets of one frame (whole datagrams: header and payload; no copy is made)
    /// to the jitter buffer as one buffer list, each stamped with its arrival (the pipeline's
    /// running time now): one hand-over to the decoder thread per frame. Runs on the caller's
    /// thread only for the jitter buffer's insert (it decodes on its own thread).
    pub fn push_rtp_frame(&self, packets: &mut Vec<bytes::Bytes>) {
        self.adapt_latency(Instant::now());
        let now = self.pipeline.current_running_time();
        let mut list = gst::BufferList::new_sized(packets.len());
        {
            let l = list.get_mut().expect("new list");
            for p in packets.drain(..) {
                let mut b = gst::Buffer::from_slice(p);
                if let Some(b) = b.get_mut() {
                    b.set_dts(now);
                    b.set_pts(now);
                }
                l.add(b);
            }
        }
        let _ = self.src.push_list(list);
    }
}

impl VideoIngest {
    /// The backend decoding this track: `--backend`'s, or `cpu` after a fallback.
    pub fn decoder_backend(&self) -> String {
        self.decoder.backend()
    }

    /// A GPU decoder that failed while running is swapped for the next candidate (`cpu` in the
    /// end) on a thread of its own, and the publisher is asked for a keyframe to start it.
    fn check_decoder(&self) {
        if !self.decoder.on_gpu() || self.decoder.failure().is_none() {
            return;
        }
        let (decoder, keyframe, label) = (self.decoder.clone(), self.on_keyframe_needed.clone(), self.label.clone());
        let swap = move || {
            if decoder.check() {
                tune_decoder(&decoder.element());
                keyframe();
            } else {
                tracing::warn!(tile = %label, "the failed decoder was not replaced");
            }
        };
        if let Err(e) = std::thread::Builder::new().name("ingest-fallback".into()).spawn(swap) {
            tracing::error!(tile = %self.label, "no thread for the decoder fallback: {e}");
        }
    }

    /// Once a [`super::jitter_target::PERIOD`]: reads the jitter buffer's `stats` (`num-lost`)
    /// and sets the latency [`JitterTarget`] asks for.
    fn adapt_latency(&self, now: Instant) {
        let mut target = self.target.lock().unwrap();
        if !target.due(now) {
            return;
        }
        self.check_decoder();
        let stats: gst::Structure = self.jitter.property("stats");
        let lost = stats.get::<u64>("num-lost").unwrap_or(0);
        if let Some(ms) = target.update(now, lost) {
            tracing::info!(tile = %self.label, latency_ms = ms, lost, "video jitter buffer latency changed");
            self.jitter.set_property("latency", ms);
        }
    }
}

/// Most packets one frame hands to the decoder at once; a longer frame goes in pieces.
pub const MAX_FRAME_PACKETS: usize = 64;

/// Groups a publisher's RTP packets (whole datagrams) into frames, so the decoder thread is woken
/// once per frame: a frame ends at the marker bit (RFC 3550 §5.1: the frame's last packet), or
/// when a packet of another frame (timestamp) shows that the marker was lost, or at
/// [`MAX_FRAME_PACKETS`]. Pure.
#[derive(Debug, Default)]
pub struct FrameAssembler {
    packets: Vec<bytes::Bytes>,
    timestamp: u32,
}

impl FrameAssembler {
    /// Adds packet `bytes` (RTP timestamp `timestamp`, marker bit `marker`); calls `ready` with
    /// every frame it completes, before or with this packet.
    pub fn push(
        &mut self,
        bytes: bytes::Bytes,
        timestamp: u32,
        marker: bool,
        mut ready: impl FnMut(&mut Vec<bytes::Bytes>),
    ) {
        if !self.packets.is_empty() && timestamp != self.timestamp {
            ready(&mut self.packets);
            self.packets.clear();
        }
        self.timestamp = timestamp;
        self.packets.push(bytes);
        if marker || self.packets.len() >= MAX_FRAME_PACKETS {
            ready(&mut self.packets);
            self.packets.clear();
        }
    }
}

/// A source pad outside any element that feeds RTP of `caps` to a jitter buffer: it answers the
/// latency query (live, no latency of its own) and the caps query, accepts upstream events, and
/// turns `GstForceKeyUnit` from downstream into `on_keyframe_needed`.
fn rtp_source_pad(caps: &gst::Caps, on_keyframe_needed: KeyframeNeeded) -> gst::Pad {
    let query_caps = caps.clone();
    let pad = gst::Pad::builder(gst::PadDirection::Src)
        .name("rtp_src")
        .event_function(|_, _, _| true)
        .query_function(move |_, _, q| match q.view_mut() {
            gst::QueryViewMut::Latency(l) => {
                l.set(true, gst::ClockTime::ZERO, gst::ClockTime::NONE);
                true
            }
            gst::QueryViewMut::Caps(c) => {
                c.set_result(&query_caps);
                true
            }
            _ => false,
        })
        .build();
    forward_keyframe_requests(&pad, on_keyframe_needed);
    pad
}

/// Calls `on_keyframe_needed` for each `GstForceKeyUnit` event that reaches source pad `pad` from
/// downstream (a depayloader with `request-keyframe=true` or a decoder that lost its reference).
pub fn forward_keyframe_requests(pad: &gst::Pad, on_keyframe_needed: KeyframeNeeded) {
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        if let Some(ev) = info.event()
            && gstreamer_video::UpstreamForceKeyUnitEvent::parse(ev).is_ok()
        {
            on_keyframe_needed();
        }
        gst::PadProbeReturn::Ok
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::media::layout::Layout;
    use crate::media::tiers::OutputFormat;
    use crate::media::video::RoomVideo;

    #[test]
    fn frames_end_at_the_marker_a_new_timestamp_or_the_packet_cap() {
        let mut a = FrameAssembler::default();
        let mut frames: Vec<usize> = vec![];
        let b = || bytes::Bytes::from_static(b"p");
        a.push(b(), 1, false, |f| frames.push(f.len()));
        a.push(b(), 1, true, |f| frames.push(f.len()));
        assert_eq!(frames, [2], "the marker ends a frame");
        a.push(b(), 2, false, |f| frames.push(f.len()));
        a.push(b(), 3, false, |f| frames.push(f.len()));
        assert_eq!(frames, [2, 1], "a new timestamp ends a frame whose marker was lost");
        for _ in 0..MAX_FRAME_PACKETS * 2 {
            a.push(b(), 4, false, |f| frames.push(f.len()));
        }
        assert_eq!(frames, [2, 1, 1, MAX_FRAME_PACKETS, MAX_FRAME_PACKETS]);
    }

    /// A VP8 packet of a delta frame (RFC 7741 §4.2 descriptor with S=1, PID=0; RFC 6386 §9.1
    /// frame tag with P=1), as a publisher's stream looks when its start was lost.
    fn vp8_delta_packet(seq: u16) -> bytes::Bytes {
        let mut p = vec![0x80, 0x60 | 0x80, (seq >> 8) as u8, seq as u8, 0, 0, 0x0b, 0xb8, 0, 0, 0, 1];
        p.extend_from_slice(&[0x10, 0x01, 0x00, 0x00]);
        p.extend(std::iter::repeat_n(0u8, 100));
        bytes::Bytes::from(p)
    }

    #[test]
    fn a_stream_without_a_keyframe_makes_the_decoder_ask_for_one() {
        gst::init().unwrap();
        let format = OutputFormat { width: 320, height: 180, fps: 30, kbps: 300 };
        let video = RoomVideo::new("ingest-test", format, Backends::new("cpu", None), Layout::Grid, 16).unwrap();
        let tile = video.add_input("p1", "P1", false).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let on_keyframe: KeyframeNeeded = Arc::new(move || {
            let _ = tx.lock().unwrap().send(());
        });
        let ingest = VideoIngest::start(
            "ingest-test-p1",
            VideoCodec::Vp8,
            96,
            50,
            &Backends::new("cpu", None),
            tile,
            on_keyframe,
        )
        .unwrap();
        // A frame every 33 ms (as a publisher sends them) until the request comes, for up to 5 s.
        let asked = (1..=150u16).any(|seq| {
            ingest.push_rtp_frame(&mut vec![vp8_delta_packet(seq)]);
            rx.recv_timeout(Duration::from_millis(33)).is_ok()
        });
        assert!(asked, "no keyframe request reached the ingest's source pad");
        drop(ingest);
        video.stop();
    }
}
