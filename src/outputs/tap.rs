//! The room side of an output (a recording or an egress): a small bin in the room pipeline — a
//! leaky queue and an `appsink` on the encoded tee of one of the room's encoder branches — that
//! hands every encoded frame to the `appsrc` of the output's **own** pipeline.
//!
//! ```text
//! room pipeline:   encoder ─ tee ─ queue(leaky, 60) ─ appsink ┄┄ Tap::take ┄┄> appsrc ─ … ─ mux ─ filesink / srtsink / …
//!                                                                              (the output's own pipeline)
//! ```
//!
//! Nothing the output does can hold up the room's encoder: the appsink drops when its callback is
//! slow, and the tap drops (instead of queueing without bound) when the output's `appsrc` holds
//! more than its byte budget — a full disk, a stalled socket, a muxer that stopped. After any
//! drop the output is fed again only from the next keyframe, and the owner asks the encoder for
//! one ([`Tap::poll_keyframe`]): so every consumer, new or recovering, starts at a keyframe (with
//! SPS/PPS in band for H.264: the room's encoders put them before every IDR on a forced keyframe).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;

use crate::codec::VideoCodec;
use crate::media::video::{RoomVideo, VideoError, gst_err};

/// How a tap stamps the frames it hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// No timestamps: the output's `appsrc do-timestamp=true` stamps each frame on arrival, on
    /// the output pipeline's clock (live egress).
    Arrival,
    /// The room's running time minus that of the first keyframe handed over, so the output starts
    /// at 0 on the room's clock (files; the audio is stamped on the same clock, see
    /// [`Tap::base`]).
    FromFirstKeyframe,
}

/// What the streaming thread and the owner share.
struct Shared {
    /// The output's video source now (`None` between reconnects and after the end).
    out: Mutex<Option<gst_app::AppSrc>>,
    /// Drop everything until a keyframe (set at connect and after any drop).
    need_key: AtomicBool,
    /// A keyframe is wanted: the owner asks the encoder ([`Tap::poll_keyframe`]).
    want_key: AtomicBool,
    /// Room running time (ns) of the first keyframe handed over; `u64::MAX` before.
    base: AtomicU64,
    /// Frames dropped because the output was full.
    dropped: AtomicU64,
    /// Byte budget of the output's `appsrc` queue.
    max_bytes: u64,
    stamp: Stamp,
}

impl Shared {
    /// Streaming thread of the room's encoder branch: hand `sample` to the output, or drop it.
    fn take(&self, sample: &gst::Sample) {
        let Some(buf) = sample.buffer() else { return };
        let guard = self.out.lock().unwrap();
        let Some(src) = guard.as_ref() else {
            self.need_key.store(true, Ordering::Relaxed);
            return;
        };
        let key = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
        if self.need_key.load(Ordering::Relaxed) && !key {
            self.want_key.store(true, Ordering::Relaxed);
            return;
        }
        if src.current_level_bytes() > self.max_bytes {
            // The output does not keep up (or does not move at all): drop, and start it again at
            // a keyframe once it has room.
            self.need_key.store(true, Ordering::Relaxed);
            self.want_key.store(true, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut b = buf.copy();
        {
            let b = b.make_mut();
            match self.stamp {
                Stamp::Arrival => {
                    b.set_pts(gst::ClockTime::NONE);
                    b.set_dts(gst::ClockTime::NONE);
                }
                Stamp::FromFirstKeyframe => {
                    // Encoders stamp in their own segment (x264enc adds 1000 h to every PTS):
                    // running time through the upstream segment.
                    let seg = sample.segment().and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned());
                    let running = |t: Option<gst::ClockTime>| {
                        t.and_then(|t| seg.as_ref().map_or(Some(t), |s| s.to_running_time(t)))
                    };
                    let Some(pts) = running(buf.pts()) else { return };
                    let mut base = self.base.load(Ordering::Acquire);
                    if base == u64::MAX {
                        // Only a keyframe gets here first (need_key is set until one passes).
                        base = pts.nseconds();
                        self.base.store(base, Ordering::Release);
                    }
                    let Some(rel) = pts.nseconds().checked_sub(base) else { return };
                    let dts = running(buf.dts()).and_then(|d| d.nseconds().checked_sub(base));
                    b.set_pts(gst::ClockTime::from_nseconds(rel));
                    // No B-frames: decode order is presentation order (mp4mux needs a DTS).
                    b.set_dts(gst::ClockTime::from_nseconds(dts.unwrap_or(rel)));
                }
            }
        }
        if src.caps().is_none()
            && let Some(caps) = sample.caps()
        {
            src.set_caps(Some(&caps.to_owned()));
        }
        match src.push_buffer(b) {
            Ok(_) => self.need_key.store(false, Ordering::Relaxed),
            Err(_) => self.need_key.store(true, Ordering::Relaxed),
        }
    }
}

/// One output's tap on the room's encoded video.
pub struct Tap {
    bin: gst::Bin,
    /// The encoded tee's pad feeding the bin; `None` once stopped.
    feed: Mutex<Option<gst::Pad>>,
    video: RoomVideo,
    codec: VideoCodec,
    shared: Arc<Shared>,
}

impl Tap {
    /// Adds a tap named `name` to the room's full-size `codec` encode (building that encoder if
    /// no receiver uses it) and asks for a keyframe at least every `keyframe_every` until
    /// stopped. Frames go nowhere until [`Tap::connect`]; the output's `appsrc` may hold at most
    /// `max_bytes` before frames are dropped.
    ///
    /// # Errors
    /// [`VideoError`] when the bin cannot be made or the encoder cannot be tapped.
    pub fn start(
        name: &str,
        video: &RoomVideo,
        codec: VideoCodec,
        keyframe_every: Duration,
        stamp: Stamp,
        max_bytes: u64,
    ) -> Result<Arc<Self>, VideoError> {
        let bin = gst::Bin::with_name(name);
        let q = gst::ElementFactory::make("queue")
            .property_from_str("leaky", "downstream")
            .property("max-size-buffers", 60u32)
            .property("max-size-bytes", 0u32)
            .property("max-size-time", 0u64)
            .build()
            .map_err(gst_err)?;
        let sink = gst_app::AppSink::builder().sync(false).async_(false).max_buffers(60).drop(true).build();
        bin.add_many([&q, sink.upcast_ref()]).map_err(gst_err)?;
        q.link(&sink).map_err(gst_err)?;
        let ghost = gst::GhostPad::with_target(&q.static_pad("sink").unwrap()).map_err(gst_err)?;
        ghost.set_active(true).map_err(gst_err)?;
        bin.add_pad(&ghost).map_err(gst_err)?;
        let shared = Arc::new(Shared {
            out: Mutex::new(None),
            need_key: AtomicBool::new(true),
            want_key: AtomicBool::new(false),
            base: AtomicU64::new(u64::MAX),
            dropped: AtomicU64::new(0),
            max_bytes,
            stamp,
        });
        let sh = shared.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    sh.take(&sample);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let feed = video.attach_encoded(codec, &bin, keyframe_every)?;
        Ok(Arc::new(Self { bin, feed: Mutex::new(Some(feed)), video: video.clone(), codec, shared }))
    }

    /// Feeds `src` (the output pipeline's video `appsrc`) from the next keyframe on, and asks the
    /// encoder for one now. Replaces the previous source.
    pub fn connect(&self, src: gst_app::AppSrc) {
        self.shared.need_key.store(true, Ordering::Relaxed);
        *self.shared.out.lock().unwrap() = Some(src);
        self.video.request_keyframe(self.codec);
    }

    /// Stops feeding the output's source (frames are dropped until the next [`Tap::connect`]).
    pub fn disconnect(&self) {
        *self.shared.out.lock().unwrap() = None;
    }

    /// Asks the encoder for a keyframe when the tap is waiting for one (after a connect whose
    /// request was lost, or after dropping frames). Call now and then (every 0.5 s); the encoder
    /// branch's keyframe gate coalesces requests.
    pub fn poll_keyframe(&self) {
        if self.shared.want_key.swap(false, Ordering::Relaxed) {
            self.video.request_keyframe(self.codec);
        }
    }

    /// With [`Stamp::FromFirstKeyframe`]: the room running time of the output's time 0, once the
    /// first keyframe was handed over.
    pub fn base(&self) -> Option<gst::ClockTime> {
        let b = self.shared.base.load(Ordering::Acquire);
        (b != u64::MAX).then(|| gst::ClockTime::from_nseconds(b))
    }

    /// Frames dropped because the output's source was over its byte budget.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Takes the tap out of the room pipeline: unlinks it from the encoded tee at an idle moment
    /// (waiting up to 1 s for one), then stops and removes it. A later call does nothing.
    pub async fn stop(&self) {
        self.disconnect();
        let Some(feed) = self.feed.lock().unwrap().take() else { return };
        self.video.detach_encoded(&feed, &self.bin);
        // The bin leaves the pipeline only once the tee no longer pushes into it: a buffer pushed
        // into a stopping bin returns FLUSHING to the tee, and from it to the room's encoder.
        for _ in 0..50 {
            if feed.peer().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.video.remove_branch(&self.bin);
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        *self.shared.out.lock().unwrap() = None;
    }
}
