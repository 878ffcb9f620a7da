//! What a peer publishes: GStreamer sources (a solid colour, a replayed file, the sync flash,
//! noise, the latency marker; a sine tone or the flash beep) whose RTP goes out on the peer's
//! local tracks, and the offer edits a peer makes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::shared::marshal::Unmarshal;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use super::{FLASH_HZ, FLASH_MS, LoadgenError};

/// Starts the flash generator of the pipeline published last (its `appsrc name=gen`).
pub(super) fn start_generator(pipelines: &Arc<Mutex<Vec<gst::Pipeline>>>, video: bool, start: Instant) {
    let src = pipelines
        .lock()
        .unwrap()
        .last()
        .and_then(|p| p.by_name("gen"))
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
    if let Some(src) = src {
        spawn_flash(src, video, start);
    }
}

/// Pushes flash frames (`video`) or beeps into `src` in real time from `start` until the
/// pipeline stops.
fn spawn_flash(src: gst_app::AppSrc, video: bool, start: Instant) {
    let _ = std::thread::Builder::new().name("flash".into()).spawn(move || {
        let period = if video { Duration::from_nanos(1_000_000_000 / 30) } else { Duration::from_millis(20) };
        let on = |t: Duration| (t.as_millis() as u64 % 1000) < FLASH_MS;
        for n in 0u64.. {
            let t = period * n as u32;
            if let Some(wait) = (start + t).checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let data = if video {
                let (w, h) = (640usize, 360usize);
                let mut f = vec![128u8; w * h * 3 / 2];
                f[..w * h].fill(if on(t) { 235 } else { 16 });
                f
            } else {
                (0..960u64)
                    .flat_map(|i| {
                        let ts = t + Duration::from_nanos(i * 1_000_000_000 / 48000);
                        let v = if on(ts) {
                            (0.5 * 32767.0 * (2.0 * std::f64::consts::PI * FLASH_HZ * ts.as_secs_f64()).sin()) as i16
                        } else {
                            0
                        };
                        v.to_le_bytes()
                    })
                    .collect()
            };
            if src.push_buffer(gst::Buffer::from_slice(data)).is_err() {
                return;
            }
        }
    });
}

pub(super) fn local_track(kind: RtpCodecKind, mime: &str, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    local_track_layers(kind, mime, &[(String::new(), ssrc)])
}

/// A local track with one encoding per `(rid, ssrc)`: simulcast when there are several (an empty
/// rid: a plain track).
pub(super) fn local_track_layers(kind: RtpCodecKind, mime: &str, layers: &[(String, u32)]) -> Arc<TrackLocalStaticRTP> {
    let (rate, ch) = if kind == RtpCodecKind::Audio { (48000, 2) } else { (90000, 0) };
    let encodings = layers
        .iter()
        .map(|(rid, ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { rid: rid.clone(), ssrc: Some(*ssrc), ..Default::default() },
            active: true,
            codec: RTCRtpCodec {
                mime_type: mime.into(),
                clock_rate: rate,
                channels: ch,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        })
        .collect();
    let ssrc = layers.first().map_or(0, |l| l.1);
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "loadgen".into(),
        format!("{kind}-{ssrc}"),
        "loadgen".into(),
        kind,
        encodings,
    )))
}

/// Starts a GStreamer source whose `appsink name=sink` yields RTP, and forwards it to `track`.
/// A file source is looped: on end-of-stream it seeks back to the start. Keyframe requests from the
/// server (PLI/FIR) force a keyframe on the element named `enc`, when there is one.
pub(super) fn publish(
    desc: &str,
    track: Arc<TrackLocalStaticRTP>,
    pipelines: &Arc<Mutex<Vec<gst::Pipeline>>>,
) -> Result<(), LoadgenError> {
    publish_with(desc, track, pipelines, None, true).map(|_| ())
}

/// Edits each packet before it is sent (a simulcast layer's MID and RID extensions).
pub(super) type Decorate = Arc<dyn Fn(&mut rtc::rtp::Packet) + Send + Sync>;

/// [`publish`] with each packet edited by `decorate`, and keyframe requests forwarded to the
/// pipeline's `enc` only when `keyframes` (else the caller does it with the returned pad).
pub(super) fn publish_with(
    desc: &str,
    track: Arc<TrackLocalStaticRTP>,
    pipelines: &Arc<Mutex<Vec<gst::Pipeline>>>,
    decorate: Option<Decorate>,
    keyframes: bool,
) -> Result<Option<gst::Pad>, LoadgenError> {
    let g = |e: &dyn std::fmt::Display| LoadgenError::Gst(e.to_string());
    let pipeline =
        gst::parse::launch(desc).map_err(|e| g(&e))?.downcast::<gst::Pipeline>().map_err(|_| g(&"not a pipeline"))?;
    let sink =
        pipeline.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).ok_or_else(|| g(&"no appsink"))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                let _ = tx.send(Bytes::copy_from_slice(map.as_slice()));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    let enc_pad = pipeline.by_name("enc").and_then(|e| e.static_pad("src"));
    if let (Some(enc_src), true) = (enc_pad.clone(), keyframes) {
        let t = track.clone();
        tokio::spawn(async move {
            while let Some(ev) = t.poll().await {
                if let TrackLocalEvent::OnRtcpPacket(pkts) = ev
                    && pkts.iter().any(|p| crate::transport::rtcp::is_keyframe_request(p.as_ref()))
                {
                    enc_src.send_event(gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build());
                }
            }
        });
    }
    tokio::spawn(async move {
        let mut timeline = Timeline::default();
        while let Some(mut b) = rx.recv().await {
            if let Ok(mut p) = rtc::rtp::Packet::unmarshal(&mut b) {
                p.header.timestamp = timeline.map(p.header.timestamp);
                if let Some(d) = &decorate {
                    d(&mut p);
                }
                let _ = track.write_rtp(p).await;
            }
        }
    });
    if let Some(bus) = pipeline.bus() {
        let weak = pipeline.downgrade();
        bus.set_sync_handler(move |_, msg| {
            if let gst::MessageView::Eos(_) = msg.view()
                && let Some(p) = weak.upgrade()
            {
                // Loop a replayed file; runs on a streaming thread, so hand the seek to another.
                std::thread::spawn(move || {
                    let _ = p.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT, gst::ClockTime::ZERO);
                });
            }
            gst::BusSyncReply::Drop
        });
    }
    pipeline.set_state(gst::State::Playing).map_err(|e| g(&e))?;
    pipelines.lock().unwrap().push(pipeline);
    Ok(enc_pad)
}

/// A jump of the payloader's RTP timestamps beyond this (ticks; 5 s at 90 kHz) is a discontinuity.
const MAX_TIMESTAMP_STEP: u32 = 450_000;

/// Keeps one stream's RTP timestamps running on through a replayed file's loop, as a camera's
/// do. Each loop is a flushing seek back to the start, after which the payloader stamps from the
/// file's start again: 20 s (1.8 M ticks at 90 kHz) back in time, which the server's jitter buffer
/// answers by resetting its timing (`rtp delta too big, reset skew`); under loss that left every
/// replayed tile freezing for the rest of the run (the composite went unsent for up to a second at
/// a time: `benches/loss.sh`, 5% loss, 25 fps). A backward step, or a forward one past
/// [`MAX_TIMESTAMP_STEP`], continues one frame (the last forward step seen) after the last
/// timestamp sent. Pure.
#[derive(Debug, Default)]
pub struct Timeline {
    /// The last timestamp in (the payloader's).
    prev: Option<u32>,
    /// The last forward step in, ticks (one frame or one audio packet).
    step: u32,
    /// Added (wrapping) to every timestamp in.
    offset: u32,
}

impl Timeline {
    /// The timestamp to send for the payloader's `ts`.
    pub fn map(&mut self, ts: u32) -> u32 {
        if let Some(prev) = self.prev {
            let step = ts.wrapping_sub(prev);
            if (step as i32) < 0 || step > MAX_TIMESTAMP_STEP {
                self.offset = self.offset.wrapping_add(prev.wrapping_add(self.step).wrapping_sub(ts));
            } else if step > 0 {
                self.step = step;
            }
        }
        self.prev = Some(ts);
        ts.wrapping_add(self.offset)
    }
}

/// Sends a forced keyframe to the encoder of the layer each PLI (RFC 4585 §6.3.1) names.
pub(super) fn forward_layer_keyframe_requests(track: Arc<TrackLocalStaticRTP>, encoders: Vec<(u32, gst::Pad)>) {
    use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    tokio::spawn(async move {
        while let Some(ev) = track.poll().await {
            let TrackLocalEvent::OnRtcpPacket(pkts) = ev else { continue };
            for p in &pkts {
                let Some(pli) = p.as_any().downcast_ref::<PictureLossIndication>() else { continue };
                for (_, pad) in encoders.iter().filter(|(ssrc, _)| *ssrc == pli.media_ssrc) {
                    pad.send_event(gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build());
                }
            }
        }
    });
}

/// `sdp` with the video m-line's payload types reordered: those of `mime` (e.g. `video/H264`)
/// first, the rest as they were. The server sends the composite in the first codec it can
/// (RFC 3264 §6.1), so this is how a client says which it prefers.
pub(super) fn prefer_video_codec(sdp: &str, mime: &str) -> String {
    let first = video_payload_types(sdp, mime);
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out: Vec<String> = vec![];
    for l in sdp.lines() {
        if l.starts_with("m=video") {
            let parts: Vec<&str> = l.split(' ').collect();
            let (head, pts) = parts.split_at(3.min(parts.len()));
            let mut line: Vec<&str> = head.to_vec();
            line.extend(pts.iter().filter(|p| first.iter().any(|f| f == *p)));
            line.extend(pts.iter().filter(|p| !first.iter().any(|f| f == *p)));
            out.push(line.join(" "));
        } else {
            out.push(l.to_string());
        }
    }
    let mut s = out.join(eol);
    s.push_str(eol);
    s
}

/// The payload types of the video section's `a=rtpmap` lines for `mime` (e.g. `video/VP8`).
fn video_payload_types(sdp: &str, mime: &str) -> Vec<String> {
    let want = mime.rsplit('/').next().unwrap_or(mime).to_ascii_lowercase();
    let mut pts = vec![];
    let mut in_video = false;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            in_video = l.starts_with("m=video");
        }
        if in_video
            && let Some((pt, codec)) = l.strip_prefix("a=rtpmap:").and_then(|r| r.split_once(' '))
            && codec.to_ascii_lowercase().starts_with(&want)
        {
            pts.push(pt.to_string());
        }
    }
    pts
}

/// Removes every video codec but `mime` (`video/VP8` or `video/H264`) from an offer.
pub(super) fn keep_only_video_codec(sdp: &str, mime: &str) -> String {
    let keep = video_payload_types(sdp, mime);
    let mut out = vec![];
    let mut in_video = false;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            in_video = l.starts_with("m=video");
            if in_video {
                let mut parts: Vec<&str> = l.split(' ').take(3).collect();
                parts.extend(keep.iter().map(String::as_str));
                out.push(parts.join(" "));
                continue;
            }
        }
        if in_video
            && let Some(rest) =
                l.strip_prefix("a=rtpmap:").or(l.strip_prefix("a=fmtp:")).or(l.strip_prefix("a=rtcp-fb:"))
            && !keep.iter().any(|k| rest.split(' ').next() == Some(k.as_str()))
        {
            continue;
        }
        out.push(l.to_string());
    }
    out.join("\r\n") + "\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_looped_file_keeps_its_timestamps_running_one_frame_on() {
        let mut t = Timeline::default();
        let first = 4_000_000_000u32;
        // 20 s of 30 fps (three packets a frame), then the file starts again at `first`.
        let mut out = vec![];
        for _ in 0..2 {
            for f in 0..600u32 {
                for _ in 0..3 {
                    out.push(t.map(first.wrapping_add(f * 3000)));
                }
            }
        }
        let steps: Vec<u32> = out.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        assert!(steps.iter().all(|&s| s == 0 || s == 3000), "{:?}", steps.iter().find(|&&s| s != 0 && s != 3000));
        assert_eq!(out[0], first, "a stream that never loops is sent as it is");
        assert_eq!(out[1800], out[1799].wrapping_add(3000), "the loop is one frame after the last");
    }

    #[test]
    fn a_big_forward_jump_is_a_discontinuity_too() {
        let mut t = Timeline::default();
        assert_eq!(t.map(100), 100);
        assert_eq!(t.map(1060), 1060);
        assert_eq!(t.map(1060 + 10 * MAX_TIMESTAMP_STEP), 2020);
        assert_eq!(t.map(1060 + 10 * MAX_TIMESTAMP_STEP + 960), 2980);
    }
}
