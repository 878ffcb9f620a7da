//! A room's encoder branches: the composite encoded once per codec and output tier, packetized
//! once, fanned out to every receiver of that branch.
//!
//! ```text
//! room clock ─ appsrc(composite) ─ tee ─ queue(leaky) ─ <pipelines/*/vp8-encode> ─ tee ─ rtpvp8pay ─ appsink → broadcast
//!                                      ─ queue(leaky) ─ <h264-encode> ─ tee ─ rtph264pay ─ appsink → broadcast
//!                                      ─ queue(leaky) ─ videoscale ─ 640x360 ─ <vp8-encode> ─ … (a smaller tier)
//!                                                              recordings, egress ┘ (the encoded tee)
//! ```
//! A branch is built the first time a receiver (or a recording, or an egress) asks for its codec
//! and tier; a smaller tier's branch stops when its last receiver leaves it. Encoders make
//! keyframes only on request (receivers' PLI/FIR, a recording's or egress's interval), coalesced
//! per branch by a [`KeyframeGate`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use rtc::shared::marshal::Unmarshal;
use tokio::sync::broadcast;

use super::super::fallback::FragmentSlot;
use super::super::fanout::{OutFrame, OutPacket, starts_keyframe};
use super::super::retransmit::History;
use super::super::tiers::{OutputFormat, Tier};
use super::clock::OutputRequests;
use super::keyframe::{Decision, KeyframeGate};
use super::{VideoError, VideoStats, gst_err};
use crate::codec::{VideoCodec, is_keyframe_start};
use crate::pipelines::{Backends, Params, Role};

/// Frames buffered per encoder branch for receivers that fall behind (6 s at 30 fps). A frame is
/// handed over at once (one wake-up per receiver and frame); the receivers' tasks yield every
/// few packets of a big (key) frame so that it does not starve the room's audio.
const FANOUT_CAPACITY: usize = 180;
/// The encoders' forced keyframe interval, seconds: long enough to mean "only on request". A
/// 1280x720 keyframe is ~30 packets per receiver; every 10 s that burst held up a 100-receiver
/// room's audio for 40-80 ms.
const KEYINT_SECONDS: u32 = 600;
/// RTP packet size of the payloaders, bytes (room for SRTP and header extensions in 1280-byte
/// paths).
const MTU: u32 = 1200;

/// The encoder branches of one room.
pub(super) struct Encoders {
    room: String,
    pipeline: gst::Pipeline,
    /// The composite's tee (branches request pads on it).
    tee: gst::Element,
    format: OutputFormat,
    backends: Backends,
    /// RTP timestamp offset shared by every branch, so a receiver moved between tiers sees one
    /// timeline (RFC 3550 §5.1: random per room).
    ts_offset: u32,
    outputs: Mutex<HashMap<(VideoCodec, Tier), Output>>,
    stats: Arc<VideoStats>,
    requests: Arc<OutputRequests>,
    /// Some gate has a deferred request (the clock polls the gates then).
    deferred: AtomicBool,
    /// Branches attached with a keyframe interval (the clock polls the gates then).
    periodic: AtomicU32,
    /// Some branch encodes on a GPU fragment (the clock checks them for failures then).
    on_gpu: AtomicBool,
    /// Clock ticks since the last check of the GPU fragments.
    ticks: AtomicU32,
}

/// Clock ticks between checks of the branches' GPU fragments (half a second at 30 fps).
const CHECK_EVERY_TICKS: u32 = 15;

struct Output {
    tx: broadcast::Sender<Arc<OutFrame>>,
    /// The branch's last packets, for every receiver's retransmissions.
    history: Arc<History>,
    /// The room tee's pad feeding this branch, and the branch's elements (to take it down).
    tee_pad: gst::Pad,
    elements: Vec<gst::Element>,
    /// The appsink's sink pad: force-key-unit events go upstream from here.
    sink_pad: gst::Pad,
    gate: Arc<Mutex<KeyframeGate>>,
    /// Attached branches that need a keyframe at least this often, by their feeding pad.
    every: Vec<(gst::Pad, Duration)>,
    /// Encoded frames before the payloader: recordings and egress attach here.
    encoded: gst::Element,
    /// The encoder fragment (swapped for `cpu`'s when a GPU encoder fails while running).
    encoder: Arc<FragmentSlot>,
}

impl Encoders {
    pub(super) fn new(
        room: &str,
        pipeline: gst::Pipeline,
        tee: gst::Element,
        format: OutputFormat,
        backends: Backends,
        stats: Arc<VideoStats>,
        requests: Arc<OutputRequests>,
    ) -> Self {
        Self {
            room: room.to_string(),
            pipeline,
            tee,
            format,
            backends,
            ts_offset: crate::ids::random_u32() >> 1,
            outputs: Mutex::new(HashMap::new()),
            stats,
            requests,
            deferred: AtomicBool::new(false),
            periodic: AtomicU32::new(0),
            on_gpu: AtomicBool::new(false),
            ticks: AtomicU32::new(0),
        }
    }

    pub(super) fn count(&self) -> usize {
        self.outputs.lock().unwrap().len()
    }

    pub(super) fn branches(&self) -> Vec<(VideoCodec, Tier, usize)> {
        let outs = self.outputs.lock().unwrap();
        let mut v: Vec<_> = outs.iter().map(|((c, t), o)| (*c, *t, o.tx.receiver_count())).collect();
        v.sort_by_key(|(c, t, _)| (c.encoding_name(), *t));
        v
    }

    pub(super) fn subscribe(
        &self,
        codec: VideoCodec,
        tier: Tier,
    ) -> Result<broadcast::Receiver<Arc<OutFrame>>, VideoError> {
        let mut outs = self.outputs.lock().unwrap();
        if let Some(o) = outs.get(&(codec, tier)) {
            return Ok(o.tx.subscribe());
        }
        let out = self.build(codec, tier)?;
        let rx = out.tx.subscribe();
        outs.insert((codec, tier), out);
        Ok(rx)
    }

    pub(super) fn history(&self, codec: VideoCodec, tier: Tier) -> Option<Arc<History>> {
        self.outputs.lock().unwrap().get(&(codec, tier)).map(|o| o.history.clone())
    }

    pub(super) fn release_idle_tiers(&self) {
        let idle: Vec<Output> = {
            let mut outs = self.outputs.lock().unwrap();
            let keys: Vec<_> = outs
                .iter()
                .filter(|((_, t), o)| *t != Tier::Full && o.tx.receiver_count() == 0)
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| outs.remove(k)).collect()
        };
        for o in idle {
            let (pipeline, tee, room) = (self.pipeline.clone(), self.tee.clone(), self.room.clone());
            let mut elements = o.elements;
            elements.push(o.encoder.element());
            // Unlink at an idle moment of the tee's pad (no buffer in flight), then stop the
            // branch off the streaming thread.
            o.tee_pad.add_probe(gst::PadProbeType::IDLE, move |pad, _| {
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

    pub(super) fn request_keyframe(&self, codec: VideoCodec, tier: Tier, now: Instant) {
        let outs = self.outputs.lock().unwrap();
        let Some(o) = outs.get(&(codec, tier)) else { return };
        let decision = o.gate.lock().unwrap().request(now);
        self.act(o, decision);
    }

    /// Room clock, each tick: forces the deferred keyframes whose interval has passed and the ones
    /// attached branches need. Two atomic loads when there are neither.
    pub(super) fn force_due_keyframes(&self, now: Instant) {
        let deferred = self.deferred.swap(false, Ordering::AcqRel);
        if !deferred && self.periodic.load(Ordering::Acquire) == 0 {
            return;
        }
        let outs = self.outputs.lock().unwrap();
        for o in outs.values() {
            let every = o.every.iter().map(|(_, d)| *d).min();
            let decision = o.gate.lock().unwrap().poll(now, every);
            self.act(o, decision);
        }
    }

    /// Room clock, each tick: every [`CHECK_EVERY_TICKS`], swaps the branches' GPU encoders that
    /// failed while running for the next candidate (`cpu` in the end; [`FragmentSlot`]). One
    /// atomic load when no branch encodes on a GPU.
    pub(super) fn check_fragments(&self) {
        if !self.on_gpu.load(Ordering::Relaxed)
            || !self.ticks.fetch_add(1, Ordering::Relaxed).is_multiple_of(CHECK_EVERY_TICKS)
        {
            return;
        }
        let outs = self.outputs.lock().unwrap();
        let mut still = false;
        for ((codec, tier), o) in outs.iter() {
            if o.encoder.check() {
                self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(room = %self.room, ?codec, ?tier, backend = %o.encoder.backend(), "encoder branch fell back");
                self.request_keyframe_locked(o);
            }
            still |= o.encoder.on_gpu();
        }
        self.on_gpu.store(still, Ordering::Relaxed);
    }

    fn request_keyframe_locked(&self, o: &Output) {
        let decision = o.gate.lock().unwrap().request(Instant::now());
        self.act(o, decision);
    }

    /// The backend of each branch's encoder: (codec, tier, backend), sorted.
    pub(super) fn backends_in_use(&self) -> Vec<(VideoCodec, Tier, String)> {
        let outs = self.outputs.lock().unwrap();
        let mut v: Vec<_> = outs.iter().map(|((c, t), o)| (*c, *t, o.encoder.backend())).collect();
        v.sort_by_key(|(c, t, _)| (c.encoding_name(), *t));
        v
    }

    fn act(&self, o: &Output, decision: Decision) {
        match decision {
            Decision::Force => {
                let ev = gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
                o.sink_pad.push_event(ev);
                // The encoder makes the keyframe from its next input: let one through now.
                self.requests.ask();
                self.stats.keyframes_forced.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Defer => self.deferred.store(true, Ordering::Release),
            Decision::Coalesce | Decision::Idle => {}
        }
    }

    pub(super) fn attach_encoded(
        &self,
        codec: VideoCodec,
        branch: &gst::Bin,
        every: Duration,
    ) -> Result<gst::Pad, VideoError> {
        let tee = {
            let mut outs = self.outputs.lock().unwrap();
            let o = match outs.entry((codec, Tier::Full)) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => v.insert(self.build(codec, Tier::Full)?),
            };
            o.encoded.clone()
        };
        self.pipeline.add(branch).map_err(gst_err)?;
        branch.sync_state_with_parent().map_err(gst_err)?;
        let sink = branch.static_pad("sink").ok_or_else(|| gst_err("branch has no sink pad"))?;
        let src = tee.request_pad_simple("src_%u").ok_or_else(|| gst_err("tee pad"))?;
        src.link(&sink).map_err(gst_err)?;
        if let Some(o) = self.outputs.lock().unwrap().get_mut(&(codec, Tier::Full)) {
            o.every.push((src.clone(), every));
            self.periodic.fetch_add(1, Ordering::AcqRel);
        }
        self.request_keyframe(codec, Tier::Full, Instant::now());
        Ok(src)
    }

    pub(super) fn detach_encoded(&self, pad: &gst::Pad, branch: &gst::Bin) {
        for o in self.outputs.lock().unwrap().values_mut() {
            let before = o.every.len();
            o.every.retain(|(p, _)| p != pad);
            if o.every.len() < before {
                self.periodic.fetch_sub(1, Ordering::AcqRel);
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

    pub(super) fn remove_branch(&self, branch: &gst::Bin) {
        let _ = branch.set_state(gst::State::Null);
        let _ = self.pipeline.remove(branch);
    }

    /// Builds, starts and links the branch for `codec` at `tier`.
    fn build(&self, codec: VideoCodec, tier: Tier) -> Result<Output, VideoError> {
        let f = self.format;
        let params = Params { kbps: tier.kbps(f), keyint: KEYINT_SECONDS * f.fps, fps: f.fps };
        let (role, pay) = match codec {
            VideoCodec::Vp8 => (
                Role::Vp8Encode,
                gst::ElementFactory::make("rtpvp8pay")
                    .property("mtu", MTU)
                    .property_from_str("picture-id-mode", "15-bit")
                    .property("timestamp-offset", self.ts_offset)
                    .build()
                    .map_err(gst_err)?,
            ),
            VideoCodec::H264 => (
                Role::H264Encode,
                gst::ElementFactory::make("rtph264pay")
                    .property("mtu", MTU)
                    .property("config-interval", -1i32)
                    .property("timestamp-offset", self.ts_offset)
                    .property_from_str("aggregate-mode", "zero-latency")
                    .build()
                    .map_err(gst_err)?,
            ),
        };
        // Hold up to 6 frames (200 ms) and drop the oldest beyond, so a slow encoder never stalls
        // the room clock.
        let queue = gst::ElementFactory::make("queue")
            .property("max-size-buffers", 6u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64)
            .property_from_str("leaky", "downstream")
            .build()
            .map_err(gst_err)?;
        let encoder = FragmentSlot::new(&self.room, role, params, &self.backends)?;
        // The payloader pushes each frame's packets as one buffer list: one sample per frame.
        let sink = gst_app::AppSink::builder().sync(false).async_(false).max_buffers(64).drop(false).build();
        sink.set_property("buffer-list", true);
        let encoded = gst::ElementFactory::make("tee").property("allow-not-linked", true).build().map_err(gst_err)?;
        let mut elements: Vec<gst::Element> = vec![queue.clone()];
        if tier != Tier::Full {
            // Scale the composite down once for everyone on this tier.
            let (w, h) = tier.size(f);
            elements.push(gst::ElementFactory::make("videoscale").build().map_err(gst_err)?);
            let caps = gst::Caps::builder("video/x-raw")
                .field("width", w as i32)
                .field("height", h as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build();
            elements.push(gst::ElementFactory::make("capsfilter").property("caps", caps).build().map_err(gst_err)?);
        }
        elements.push(encoder.guard().clone());
        let enc_at = elements.len();
        elements.extend([encoder.element(), encoded.clone(), pay, sink.clone().upcast()]);
        self.pipeline.add_many(&elements).map_err(gst_err)?;
        gst::Element::link_many(&elements[..enc_at]).map_err(gst_err)?;
        encoder.link(&encoded)?;
        gst::Element::link_many(&elements[enc_at + 1..]).map_err(gst_err)?;
        // The slot may have replaced the fragment while linking.
        elements[enc_at] = encoder.element();

        let (tx, _) = broadcast::channel(FANOUT_CAPACITY);
        let gate = Arc::new(Mutex::new(KeyframeGate::default()));
        let history = Arc::new(History::default());
        let (tx2, g, h) = (tx.clone(), gate.clone(), history.clone());
        let room = self.room.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let frame = packets_of(&sample, codec, &room);
                    if frame.is_empty() {
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    if starts_keyframe(&frame) {
                        g.lock().unwrap().keyframe_seen();
                    }
                    let frame = Arc::new(frame);
                    h.push(frame.clone());
                    // No receiver is not an error: the branch keeps running for the next.
                    let _ = tx2.send(frame);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        // Start the branch (sink first) before linking it: a frame pushed into a linked but not
        // yet running branch returns FLUSHING to the tee, which would stop the room clock's pushes.
        for (i, e) in elements.iter().enumerate().rev() {
            if let Err(err) = e.sync_state_with_parent() {
                // A GPU encoder that does not start (no session, a refused preset): the next candidate.
                if i != enc_at || !encoder.on_gpu() {
                    return Err(gst_err(err));
                }
                encoder.fall_back(&format!("did not start: {err}"))?;
                self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
            }
        }
        // From here the branch's elements do not include the encoder (the slot owns it).
        elements.remove(enc_at);
        if encoder.on_gpu() {
            self.on_gpu.store(true, Ordering::Relaxed);
        }
        let src = self.tee.request_pad_simple("src_%u").ok_or_else(|| gst_err("tee pad"))?;
        let queue_sink = queue.static_pad("sink").ok_or_else(|| gst_err("queue has no sink pad"))?;
        while let Err(e) = src.link(&queue_sink) {
            // A GPU encoder that cannot take the composite (its caps reach the tee through the
            // queue): the next candidate.
            if !encoder.on_gpu() {
                return Err(gst_err(e));
            }
            encoder.fall_back(&format!("does not take the composite: {e}"))?;
            self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        let sink_pad = sink.static_pad("sink").ok_or_else(|| gst_err("appsink has no sink pad"))?;
        tracing::info!(room = %self.room, ?codec, ?tier, "encoder branch started");
        Ok(Output { tx, history, tee_pad: src, elements, sink_pad, gate, every: vec![], encoded, encoder })
    }
}

/// The RTP packets of one payloader sample (a buffer list: one encoded frame), parsed once.
fn packets_of(sample: &gst::Sample, codec: VideoCodec, room: &str) -> OutFrame {
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
    frame
}
