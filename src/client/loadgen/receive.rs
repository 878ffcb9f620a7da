//! What a peer receives: the composite and the mix, decoded by GStreamer (or only counted), with
//! frame gaps, freezes, audio gaps and the latency marker measured as they arrive.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::shared::marshal::Marshal;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState};

use super::{AUDIO_GAP, FREEZE, Frame, LoadgenError, marker};

/// The receive jitter buffer (`rtpjitterbuffer latency`, ms) on a clean link.
pub const JITTER_MS: u32 = 60;
/// The receive jitter buffer behind a lossy link (`PeerOpts::link`): long enough for a NACKed
/// packet to come back (a browser's jitter buffer grows the same way when it sees loss and
/// retransmissions).
pub const LOSSY_JITTER_MS: u32 = 200;

#[derive(Default)]
pub(super) struct Received {
    pub(super) frame: Mutex<Option<Frame>>,
    pub(super) frames: AtomicU64,
    pub(super) freezes: AtomicU64,
    pub(super) max_gap_ms: AtomicU64,
    pub(super) last_frame_at: Mutex<Option<Instant>>,
    pub(super) first_frame_at: Mutex<Option<Instant>>,
    pub(super) audio: Mutex<VecDeque<i16>>,
    pub(super) audio_samples: AtomicU64,
    pub(super) video_codec: Mutex<Option<String>>,
    /// JSON messages received on the data channel.
    pub(super) events: Mutex<Vec<serde_json::Value>>,
    /// Count frames (RTP marker bits) and audio packets without decoding (cheap load viewers).
    pub(super) count_only: bool,
    /// Keep decoded RGB (tests); load runs only count frames.
    pub(super) keep_pixels: bool,
    pub(super) audio_packets: AtomicU64,
    pub(super) audio_gaps: AtomicU64,
    pub(super) last_audio_at: Mutex<Option<Instant>>,
    /// Reads latency markers from decoded composite frames.
    pub(super) probe: Option<marker::Probe>,
    /// The decode pipelines' `rtpjitterbuffer latency`, ms: [`JITTER_MS`], or
    /// [`LOSSY_JITTER_MS`] behind a lossy link.
    pub(super) jitter_ms: u32,
}

impl Received {
    /// Counts one composite frame, its gap from the previous one, and the first one's time.
    fn note_frame(&self) {
        let now = Instant::now();
        if let Some(last) = self.last_frame_at.lock().unwrap().replace(now) {
            let gap = now.duration_since(last);
            self.max_gap_ms.fetch_max(gap.as_millis() as u64, Ordering::Relaxed);
            if gap > FREEZE / 2 {
                tracing::debug!(gap_ms = gap.as_millis() as u64, "video gap");
            }
            if gap > FREEZE {
                self.freezes.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.first_frame_at.lock().unwrap().get_or_insert(now);
        self.frames.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one received audio packet and a gap from the previous one.
    fn note_audio_packet(&self) {
        let now = Instant::now();
        if let Some(last) = self.last_audio_at.lock().unwrap().replace(now)
            && now.duration_since(last) > AUDIO_GAP
        {
            tracing::debug!(gap_ms = now.duration_since(last).as_millis() as u64, "audio gap");
            self.audio_gaps.fetch_add(1, Ordering::Relaxed);
        }
        self.audio_packets.fetch_add(1, Ordering::Relaxed);
    }
}

pub(super) struct Handler {
    pub(super) gather_tx: mpsc::Sender<()>,
    pub(super) state_tx: watch::Sender<RTCPeerConnectionState>,
    pub(super) received: Arc<Received>,
    pub(super) tick_tx: Arc<watch::Sender<u64>>,
    pub(super) pipelines: Arc<Mutex<Vec<gst::Pipeline>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gather_tx.try_send(());
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.state_tx.send(state);
    }
    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let (received, tick, pipelines) = (self.received.clone(), self.tick_tx.clone(), self.pipelines.clone());
        tokio::spawn(async move {
            let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
            let mime = track.codec(ssrc).await.map(|c| c.mime_type.to_ascii_lowercase()).unwrap_or_default();
            let kind = track.kind().await;
            // As a browser does: a decoder that lost a packet it needs asks for a keyframe (PLI,
            // RFC 4585 §6.3.1), at most every 300 ms. Tessera's encoders make keyframes on request.
            let keyframe_needed = crate::transport::pli_requester(
                track.clone(),
                ssrc,
                Duration::from_millis(300),
                tokio::runtime::Handle::current(),
                || {},
            );
            let mut src: Option<gst_app::AppSrc> = None;
            while let Some(ev) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(pkt) = ev else { continue };
                if kind == RtpCodecKind::Audio {
                    received.note_audio_packet();
                }
                if received.count_only {
                    if kind == RtpCodecKind::Audio {
                        received.audio_samples.fetch_add(960, Ordering::Relaxed);
                    } else if pkt.header.marker {
                        received.note_frame();
                    }
                    tick.send_modify(|t| *t += 1);
                    continue;
                }
                if src.is_none() {
                    match decode_pipeline(
                        kind,
                        &mime,
                        pkt.header.payload_type,
                        received.clone(),
                        tick.clone(),
                        keyframe_needed.clone(),
                    ) {
                        Ok((p, s)) => {
                            pipelines.lock().unwrap().push(p);
                            src = Some(s);
                        }
                        Err(e) => {
                            tracing::error!("receiver pipeline: {e}");
                            return;
                        }
                    }
                }
                if let (Ok(b), Some(s)) = (pkt.marshal(), src.as_ref()) {
                    let _ = s.push_buffer(gst::Buffer::from_slice(b.freeze()));
                }
            }
        });
    }
}

fn decode_pipeline(
    kind: RtpCodecKind,
    mime: &str,
    pt: u8,
    received: Arc<Received>,
    tick: Arc<watch::Sender<u64>>,
    keyframe_needed: crate::media::ingest::KeyframeNeeded,
) -> Result<(gst::Pipeline, gst_app::AppSrc), LoadgenError> {
    let audio = kind == RtpCodecKind::Audio;
    let jitter = if received.jitter_ms == 0 { JITTER_MS } else { received.jitter_ms };
    let desc = if audio {
        format!(
            "appsrc name=src is-live=true format=time do-timestamp=true caps=\"application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload={pt}\" \
             ! rtpjitterbuffer latency={jitter} ! rtpopusdepay ! opusdec plc=true ! audioconvert ! audioresample \
             ! audio/x-raw,format=S16LE,rate=48000,channels=1 ! appsink name=sink sync=false"
        )
    } else {
        let (name, depay, dec) = if mime.contains("h264") {
            ("H264", "rtph264depay", "avdec_h264")
        } else {
            ("VP8", "rtpvp8depay", "vp8dec")
        };
        *received.video_codec.lock().unwrap() = Some(name.to_string());
        let convert = if received.keep_pixels { "! videoconvert ! video/x-raw,format=RGB " } else { "" };
        format!(
            "appsrc name=src is-live=true format=time do-timestamp=true caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name={name},payload={pt}\" \
             ! rtpjitterbuffer latency={jitter} ! {depay} request-keyframe=true ! {dec} {convert}! appsink name=sink sync=false max-buffers=2 drop=true"
        )
    };
    let g = |e: &dyn std::fmt::Display| LoadgenError::Gst(e.to_string());
    let pipeline =
        gst::parse::launch(&desc).map_err(|e| g(&e))?.downcast::<gst::Pipeline>().map_err(|_| g(&"not a pipeline"))?;
    let src =
        pipeline.by_name("src").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()).ok_or_else(|| g(&"no appsrc"))?;
    let sink =
        pipeline.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).ok_or_else(|| g(&"no appsink"))?;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let buf = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buf.map_readable().map_err(|_| gst::FlowError::Error)?;
                if audio {
                    let mut a = received.audio.lock().unwrap();
                    for c in map.as_slice().chunks_exact(2) {
                        a.push_back(i16::from_le_bytes([c[0], c[1]]));
                    }
                    while a.len() > 48000 * 2 {
                        a.pop_front();
                    }
                    received.audio_samples.fetch_add(map.len() as u64 / 2, Ordering::Relaxed);
                } else {
                    received.note_frame();
                    let decoded_at = Instant::now();
                    if received.keep_pixels {
                        let frame = Frame::from_sample(&sample).ok_or(gst::FlowError::Error)?;
                        if let Some(probe) = &received.probe {
                            let stride = frame.width as usize * 3;
                            let luma = marker::Luma {
                                data: &frame.rgb,
                                stride,
                                bpp: 3,
                                width: frame.width,
                                height: frame.height,
                            };
                            probe.on_frame(&luma, decoded_at);
                        }
                        *received.frame.lock().unwrap() = Some(frame);
                    } else if let Some(probe) = &received.probe
                        && let Some(info) = sample.caps().and_then(|c| gstreamer_video::VideoInfo::from_caps(c).ok())
                        && matches!(
                            info.format(),
                            gstreamer_video::VideoFormat::I420
                                | gstreamer_video::VideoFormat::Nv12
                                | gstreamer_video::VideoFormat::Yv12
                        )
                    {
                        // Only the luma plane, read in place: a few thousand pixels per frame.
                        let (off, stride) = (info.offset()[0], info.stride()[0] as usize);
                        if let Some(data) = map.as_slice().get(off..) {
                            let luma =
                                marker::Luma { data, stride, bpp: 1, width: info.width(), height: info.height() };
                            probe.on_frame(&luma, decoded_at);
                        }
                    }
                }
                tick.send_modify(|t| *t += 1);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    if !audio && let Some(pad) = src.static_pad("src") {
        crate::media::ingest::forward_keyframe_requests(&pad, keyframe_needed);
    }
    pipeline.set_state(gst::State::Playing).map_err(|e| g(&e))?;
    Ok((pipeline, src))
}
