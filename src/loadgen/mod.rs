//! A WebRTC peer for load generation and tests: joins a room over HTTP like any client, publishes
//! a solid colour (VP8 encoded by GStreamer), a replayed VP8 WebM file, a latency marker, or
//! nothing, plus an Opus sine tone or pre-encoded talk turns ([`talk`]), and decodes what it
//! receives so callers can check pixels, tones, frame rate, freezes, audio gaps and glass-to-glass
//! latency ([`marker`]). `tessera loadgen` runs many of them against a server.

pub mod analysis;
pub mod cli;
pub mod marker;
pub mod netcap;
pub mod talk;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer_app as gst_app;
use gst::prelude::*;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::shared::marshal::{Marshal, Unmarshal};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder, register_default_interceptors,
};

pub use analysis::{Frame, Rgb};
pub use talk::TalkTurn;

/// A gap between two decoded frames longer than this counts as a freeze.
pub const FREEZE: Duration = Duration::from_millis(200);
/// A gap between two received audio packets longer than this counts as an audio gap.
pub const AUDIO_GAP: Duration = Duration::from_millis(100);

/// Why a peer could not join.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// The server answered the offer with an error status.
    #[error("join refused: HTTP {status}: {reason}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Body text.
        reason: String,
    },
    /// HTTP failed.
    #[error("http: {0}")]
    Http(String),
    /// The WebRTC stack failed.
    #[error("webrtc: {0}")]
    WebRtc(String),
    /// ICE/DTLS did not connect within 10 s.
    #[error("not connected within 10 s")]
    ConnectTimeout,
    /// A GStreamer pipeline failed.
    #[error("gstreamer: {0}")]
    Gst(String),
}

fn w(e: impl std::fmt::Display) -> LoadgenError {
    LoadgenError::WebRtc(e.to_string())
}

/// An HTTP response, as the load generator sees it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Location` header.
    pub location: Option<String>,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// Body text.
    pub body: String,
}

/// Longest an HTTP request of the load generator may take, connect to end of body.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP request (blocking client, run on tokio's blocking pool). Non-2xx statuses are returned,
/// not errors; a request taking longer than [`HTTP_TIMEOUT`] fails.
///
/// # Errors
/// [`LoadgenError::Http`] when the connection fails or times out.
pub async fn http(method: &str, url: &str, content_type: Option<&str>, body: Vec<u8>) -> Result<HttpResponse, LoadgenError> {
    http_auth(method, url, content_type, body, None).await
}

/// [`http`] with an `Authorization: Bearer` token.
///
/// # Errors
/// [`LoadgenError::Http`] when the connection fails.
pub async fn http_auth(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
    token: Option<&str>,
) -> Result<HttpResponse, LoadgenError> {
    let (method, url, ct) = (method.to_string(), url.to_string(), content_type.map(str::to_string));
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        // Bounded, so a wedged server fails a join or a leave instead of hanging the run.
        let agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(HTTP_TIMEOUT)).build().new_agent();
        let mut req = ureq::http::Request::builder().method(method.as_str()).uri(&url);
        if let Some(c) = &ct {
            req = req.header("content-type", c);
        }
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(body).map_err(|e| LoadgenError::Http(e.to_string()))?;
        let mut resp = agent.run(req).map_err(|e| LoadgenError::Http(e.to_string()))?;
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (location, content_type) = (header("location"), header("content-type"));
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Ok(HttpResponse { status: resp.status().as_u16(), location, content_type, body })
    })
    .await
    .map_err(|e| LoadgenError::Http(e.to_string()))?
}

/// Which endpoint a peer joins through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `POST /v1/rooms/{room}/participants`.
    Participant,
    /// `POST /whip/{room}`.
    Whip,
    /// `POST /whep/{room}`.
    Whep,
}

/// What a peer publishes as video.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSource {
    /// Nothing.
    None,
    /// A solid colour, 640x360 at 30 fps, VP8 encoded live (`videotestsrc pattern=solid-color`).
    Colour(Rgb),
    /// A VP8 WebM file replayed in real time and looped (no encode: cheap for the client).
    File(PathBuf),
    /// A sync marker: white for the first [`FLASH_MS`] of every second, black otherwise, and the
    /// audio (whatever `tone_hz`) a 3 kHz beep exactly then, silence otherwise — both from one
    /// clock, so a receiver or a recording can measure audio/video skew.
    Flash,
    /// Random noise (`videotestsrc pattern=snow`), 640x360 at 30 fps, VP8 at 800 kbit/s: a picture
    /// no encoder can compress, so the composite uses its full bitrate (for bandwidth tests).
    Noise,
    /// The latency marker: 640x360 at 30 fps, each frame showing its 16-bit counter as black and
    /// white blocks ([`marker`]), VP8 encoded live; the send time of each counter is remembered so
    /// a receiver with [`PeerOpts::latency_probe`] can measure latency.
    Marker,
}

/// Length of the [`VideoSource::Flash`] flash and beep, ms (every 1000 ms).
pub const FLASH_MS: u64 = 200;
/// Frequency of the [`VideoSource::Flash`] beep, Hz.
pub const FLASH_HZ: f64 = 3000.0;

/// Starts the flash generator of the pipeline published last (its `appsrc name=gen`).
fn start_generator(pipelines: &Arc<Mutex<Vec<gst::Pipeline>>>, video: bool, start: Instant) {
    let src = pipelines.lock().unwrap().last().and_then(|p| p.by_name("gen")).and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
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
                        let v = if on(ts) { (0.5 * 32767.0 * (2.0 * std::f64::consts::PI * FLASH_HZ * ts.as_secs_f64()).sin()) as i16 } else { 0 };
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

/// What a peer does.
#[derive(Debug, Clone)]
pub struct PeerOpts {
    /// Display name.
    pub name: String,
    /// Video it publishes.
    pub video: VideoSource,
    /// Publishes an Opus sine tone of this frequency, Hz.
    pub tone_hz: Option<f64>,
    /// Amplitude of the tone, 0..=1 (default 0.25, about -15 dBFS).
    pub tone_volume: f64,
    /// Opens a data channel (`tessera`) for room events and chat.
    pub data_channel: bool,
    /// Access token sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// `camera` (default) or `screen`: joins with `?source=`.
    pub source: Option<&'static str>,
    /// Decode what it receives (default); `false` only counts frames and packets.
    pub decode: bool,
    /// Receives the composite and the mix.
    pub receive: bool,
    /// Video codecs offered (MIME types); the default offers VP8 and H264.
    pub video_codecs: Vec<&'static str>,
    /// Endpoint.
    pub via: Via,
    /// Frames between periodic keyframes of a [`VideoSource::Colour`] encode; 0 (the default)
    /// sends keyframes only when the server asks (PLI/FIR), as browsers do.
    pub keyframe_interval: u32,
    /// Caps what it receives to this many bits/s (0 = no cap; changeable while running): a slow
    /// downlink, see [`netcap`].
    pub rate_cap: Option<netcap::Cap>,
    /// Publishes pre-encoded speech-like Opus in talk turns (one shared ticker for the whole
    /// process, RFC 6464 audio levels) instead of a GStreamer-encoded `tone_hz` sine; `None` (the
    /// default) keeps the tone.
    pub talk: Option<TalkTurn>,
    /// Reads the latency marker of a [`VideoSource::Marker`] publisher in the decoded composite
    /// (needs `decode`; the room must use the grid layout): [`ReceiveStats`] gets latency figures.
    pub latency_probe: bool,
}

impl PeerOpts {
    /// A sendrecv participant publishing a solid `colour` and a `tone_hz` sine.
    pub fn publisher(name: &str, colour: Rgb, tone_hz: f64) -> Self {
        Self {
            name: name.into(),
            video: VideoSource::Colour(colour),
            tone_hz: Some(tone_hz),
            receive: true,
            video_codecs: vec![MIME_TYPE_VP8, MIME_TYPE_H264],
            via: Via::Participant,
            keyframe_interval: 0,
            rate_cap: None,
            tone_volume: 0.25,
            data_channel: false,
            token: None,
            source: None,
            decode: true,
            talk: None,
            latency_probe: false,
        }
    }

    /// A recvonly WHEP viewer: a publisher that publishes nothing.
    pub fn viewer(name: &str) -> Self {
        Self { video: VideoSource::None, tone_hz: None, via: Via::Whep, ..Self::publisher(name, (0, 0, 0), 0.0) }
    }
}

/// Receive statistics of one peer.
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    /// Composite frames decoded.
    pub frames: u64,
    /// Gaps longer than [`FREEZE`] between decoded frames.
    pub freezes: u64,
    /// Longest gap between frames, ms.
    pub max_gap_ms: u64,
    /// Audio samples decoded (48 kHz).
    pub audio_samples: u64,
    /// POST → first decoded composite frame, ms.
    pub join_ms: Option<u64>,
    /// Audio RTP packets received (20 ms each), decoded or only counted.
    pub audio_packets: u64,
    /// Gaps longer than [`AUDIO_GAP`] between received audio packets.
    pub audio_gaps: u64,
    /// Latency samples (one per marker frame read), with [`PeerOpts::latency_probe`].
    pub latency_samples: u64,
    /// Median latency, ms: marker frame pushed to the publisher's encoder → decoded here in the
    /// composite (client encode + network + the server's jitter buffer, decode, composite and
    /// encode + network + client jitter buffer and decode).
    pub latency_ms_median: Option<f64>,
    /// 95th percentile of the same, ms.
    pub latency_ms_p95: Option<f64>,
}

#[derive(Default)]
struct Received {
    frame: Mutex<Option<Frame>>,
    frames: AtomicU64,
    freezes: AtomicU64,
    max_gap_ms: AtomicU64,
    last_frame_at: Mutex<Option<Instant>>,
    first_frame_at: Mutex<Option<Instant>>,
    audio: Mutex<VecDeque<i16>>,
    audio_samples: AtomicU64,
    video_codec: Mutex<Option<String>>,
    /// JSON messages received on the data channel.
    events: Mutex<Vec<serde_json::Value>>,
    /// Count frames (RTP marker bits) and audio packets without decoding (cheap load viewers).
    count_only: bool,
    /// Keep decoded RGB (tests); load runs only count frames.
    keep_pixels: bool,
    audio_packets: AtomicU64,
    audio_gaps: AtomicU64,
    last_audio_at: Mutex<Option<Instant>>,
    /// Reads latency markers from decoded composite frames.
    probe: Option<marker::Probe>,
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

/// A WebRTC peer joined to a Tessera room.
pub struct Peer {
    /// Options it was made with.
    pub opts: PeerOpts,
    /// Participant resource URL path (`Location`).
    pub location: String,
    /// Participant id (last segment of `location`).
    pub id: String,
    /// When the offer was POSTed.
    pub posted_at: Instant,
    base: String,
    pc: Arc<dyn PeerConnection>,
    received: Arc<Received>,
    tick: watch::Receiver<u64>,
    pipelines: Arc<Mutex<Vec<gst::Pipeline>>>,
    channel: Option<Arc<dyn webrtc::data_channel::DataChannel>>,
    talk: Option<Arc<talk::TalkStream>>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(t) = &self.talk {
            t.stop();
        }
        for p in self.pipelines.lock().unwrap().drain(..) {
            let _ = p.set_state(gst::State::Null);
        }
    }
}

struct Handler {
    gather_tx: mpsc::Sender<()>,
    state_tx: watch::Sender<RTCPeerConnectionState>,
    received: Arc<Received>,
    tick_tx: Arc<watch::Sender<u64>>,
    pipelines: Arc<Mutex<Vec<gst::Pipeline>>>,
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
                    match decode_pipeline(kind, &mime, pkt.header.payload_type, received.clone(), tick.clone(), keyframe_needed.clone()) {
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
    let desc = if audio {
        format!(
            "appsrc name=src is-live=true format=time do-timestamp=true caps=\"application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload={pt}\" \
             ! rtpjitterbuffer latency=60 ! rtpopusdepay ! opusdec plc=true ! audioconvert ! audioresample \
             ! audio/x-raw,format=S16LE,rate=48000,channels=1 ! appsink name=sink sync=false"
        )
    } else {
        let (name, depay, dec) =
            if mime.contains("h264") { ("H264", "rtph264depay", "avdec_h264") } else { ("VP8", "rtpvp8depay", "vp8dec") };
        *received.video_codec.lock().unwrap() = Some(name.to_string());
        let convert = if received.keep_pixels { "! videoconvert ! video/x-raw,format=RGB " } else { "" };
        format!(
            "appsrc name=src is-live=true format=time do-timestamp=true caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name={name},payload={pt}\" \
             ! rtpjitterbuffer latency=60 ! {depay} request-keyframe=true ! {dec} {convert}! appsink name=sink sync=false max-buffers=2 drop=true"
        )
    };
    let g = |e: &dyn std::fmt::Display| LoadgenError::Gst(e.to_string());
    let pipeline = gst::parse::launch(&desc).map_err(|e| g(&e))?.downcast::<gst::Pipeline>().map_err(|_| g(&"not a pipeline"))?;
    let src = pipeline.by_name("src").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()).ok_or_else(|| g(&"no appsrc"))?;
    let sink = pipeline.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).ok_or_else(|| g(&"no appsink"))?;
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
                            let luma = marker::Luma { data: &frame.rgb, stride, bpp: 3, width: frame.width, height: frame.height };
                            probe.on_frame(&luma, decoded_at);
                        }
                        *received.frame.lock().unwrap() = Some(frame);
                    } else if let Some(probe) = &received.probe
                        && let Some(info) = sample.caps().and_then(|c| gstreamer_video::VideoInfo::from_caps(c).ok())
                        && matches!(info.format(), gstreamer_video::VideoFormat::I420 | gstreamer_video::VideoFormat::Nv12 | gstreamer_video::VideoFormat::Yv12)
                    {
                        // Only the luma plane, read in place: a few thousand pixels per frame.
                        let (off, stride) = (info.offset()[0], info.stride()[0] as usize);
                        if let Some(data) = map.as_slice().get(off..) {
                            let luma = marker::Luma { data, stride, bpp: 1, width: info.width(), height: info.height() };
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

fn media_engine() -> Result<MediaEngine, LoadgenError> {
    let mut m = MediaEngine::default();
    let c = |mime: &str, rate: u32, ch: u16, fmtp: &str, pt: u8| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec { mime_type: mime.into(), clock_rate: rate, channels: ch, sdp_fmtp_line: fmtp.into(), rtcp_feedback: vec![] },
        payload_type: pt,
    };
    m.register_codec(c(MIME_TYPE_OPUS, 48000, 2, "minptime=10;useinbandfec=1", 111), RtpCodecKind::Audio).map_err(w)?;
    m.register_header_extension(
        rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability { uri: crate::transport::AUDIO_LEVEL_URI.into() },
        RtpCodecKind::Audio,
        None,
    )
    .map_err(w)?;
    m.register_codec(c(MIME_TYPE_VP8, 90000, 0, "", 96), RtpCodecKind::Video).map_err(w)?;
    m.register_codec(
        c(MIME_TYPE_H264, 90000, 0, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", 102),
        RtpCodecKind::Video,
    )
    .map_err(w)?;
    Ok(m)
}

fn local_track(kind: RtpCodecKind, mime: &str, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let (rate, ch) = if kind == RtpCodecKind::Audio { (48000, 2) } else { (90000, 0) };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "loadgen".into(),
        format!("{kind}-{ssrc}"),
        "loadgen".into(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            active: true,
            codec: RTCRtpCodec { mime_type: mime.into(), clock_rate: rate, channels: ch, sdp_fmtp_line: String::new(), rtcp_feedback: vec![] },
            ..Default::default()
        }],
    )))
}

/// Starts a GStreamer source whose `appsink name=sink` yields RTP, and forwards it to `track`.
/// A file source is looped: on end-of-stream it seeks back to the start. Keyframe requests from the
/// server (PLI/FIR) force a keyframe on the element named `enc`, when there is one.
fn publish(desc: &str, track: Arc<TrackLocalStaticRTP>, pipelines: &Arc<Mutex<Vec<gst::Pipeline>>>) -> Result<(), LoadgenError> {
    let g = |e: &dyn std::fmt::Display| LoadgenError::Gst(e.to_string());
    let pipeline = gst::parse::launch(desc).map_err(|e| g(&e))?.downcast::<gst::Pipeline>().map_err(|_| g(&"not a pipeline"))?;
    let sink = pipeline.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).ok_or_else(|| g(&"no appsink"))?;
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
    if let Some(enc_src) = pipeline.by_name("enc").and_then(|e| e.static_pad("src")) {
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
        while let Some(mut b) = rx.recv().await {
            if let Ok(p) = rtc::rtp::Packet::unmarshal(&mut b) {
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
    Ok(())
}

impl Peer {
    /// Joins `room` on the server at `base` (e.g. `http://127.0.0.1:8080`): offers, POSTs, applies
    /// the answer, waits until connected (10 s), then starts publishing. `keep_pixels` keeps the
    /// latest decoded frame as RGB for [`Peer::wait_frame`] (costly; load runs leave it off).
    ///
    /// # Errors
    /// [`LoadgenError`] when the server refuses, or the connection or a pipeline fails.
    pub async fn join(base: &str, room: &str, opts: PeerOpts, keep_pixels: bool) -> Result<Peer, LoadgenError> {
        gst::init().map_err(|e| LoadgenError::Gst(e.to_string()))?;
        let mut me = media_engine()?;
        let registry = register_default_interceptors(Registry::new(), &mut me)
            .map_err(w)?
            .with(crate::transport::rtcp::SLOT.into(), crate::transport::rtcp::KeyframeRequestInterceptor::default());
        let registry = match &opts.rate_cap {
            Some(cap) => registry.with(netcap::SLOT.into(), netcap::RateCap::new(cap.clone())),
            None => registry,
        };
        let (gather_tx, mut gather_rx) = mpsc::channel(1);
        let (state_tx, mut state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (tick_tx, tick) = watch::channel(0u64);
        let probe = (opts.latency_probe && opts.decode).then(marker::Probe::default);
        let received = Arc::new(Received { keep_pixels, count_only: !opts.decode, probe, ..Default::default() });
        let pipelines = Arc::new(Mutex::new(vec![]));
        let handler_tick = Arc::new(tick_tx);
        let handler = Arc::new(Handler { gather_tx, state_tx, received: received.clone(), tick_tx: handler_tick.clone(), pipelines: pipelines.clone() });
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_include_loopback_candidate(true)
                    .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
                    .build(),
            )
            .with_handler(handler)
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .map_err(w)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let seed = random_u32();
        let (video_ssrc, audio_ssrc) = (seed | 1, seed.rotate_left(16) | 2);
        let dir = |send: bool| match (send, opts.receive) {
            (true, true) => RTCRtpTransceiverDirection::Sendrecv,
            (true, false) => RTCRtpTransceiverDirection::Sendonly,
            (false, _) => RTCRtpTransceiverDirection::Recvonly,
        };
        let init = |send: bool| Some(RTCRtpTransceiverInit { direction: dir(send), ..Default::default() });
        let mut video_track = None;
        let mut audio_track = None;
        if opts.video != VideoSource::None {
            let t = local_track(RtpCodecKind::Video, MIME_TYPE_VP8, video_ssrc);
            pc.add_transceiver_from_track(t.clone(), init(true)).await.map_err(w)?;
            video_track = Some(t);
        } else if opts.receive {
            pc.add_transceiver_from_kind(RtpCodecKind::Video, init(false)).await.map_err(w)?;
        }
        if opts.tone_hz.is_some() || opts.talk.is_some() {
            let t = local_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, audio_ssrc);
            pc.add_transceiver_from_track(t.clone(), init(true)).await.map_err(w)?;
            audio_track = Some(t);
        } else if opts.receive {
            pc.add_transceiver_from_kind(RtpCodecKind::Audio, init(false)).await.map_err(w)?;
        }
        let channel = if opts.data_channel {
            let dc = pc.create_data_channel("tessera", None).await.map_err(w)?;
            let (dc2, received2, tick2) = (dc.clone(), received.clone(), handler_tick.clone());
            tokio::spawn(async move {
                while let Some(ev) = dc2.poll().await {
                    if let webrtc::data_channel::DataChannelEvent::OnMessage(m) = ev
                        && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.data)
                    {
                        received2.events.lock().unwrap().push(v);
                        tick2.send_modify(|t| *t += 1);
                    }
                }
            });
            Some(dc)
        } else {
            None
        };
        let offer = pc.create_offer(None).await.map_err(w)?;
        pc.set_local_description(offer).await.map_err(w)?;
        let _ = tokio::time::timeout(Duration::from_secs(5), gather_rx.recv()).await;
        let mut sdp = pc.local_description().await.ok_or_else(|| w("no local description"))?.sdp;
        if opts.video_codecs.len() == 1 {
            sdp = keep_only_video_codec(&sdp, opts.video_codecs[0]);
        }
        // Percent-encode the name for the query string (RFC 3986 unreserved characters stay).
        let name: String = opts
            .name
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let source = opts.source.map(|s| format!("&source={s}")).unwrap_or_default();
        let path = match opts.via {
            Via::Participant => format!("/v1/rooms/{room}/participants?name={name}{source}"),
            Via::Whip => format!("/whip/{room}?name={name}"),
            Via::Whep => format!("/whep/{room}?name={name}"),
        };
        let posted_at = Instant::now();
        let sdp_sent = sdp.clone();
        let resp = http_auth("POST", &format!("{base}{path}"), Some("application/sdp"), sdp.into_bytes(), opts.token.as_deref()).await?;
        if resp.status != 201 || resp.content_type.as_deref() != Some("application/sdp") {
            return Err(LoadgenError::Refused { status: resp.status, reason: resp.body });
        }
        let location = resp.location.ok_or_else(|| LoadgenError::Http("201 without Location".into()))?;
        let id = location.rsplit('/').next().unwrap_or_default().to_string();
        let level_ext = audio_level_ext(&resp.body);
        if opts.talk.is_some() && level_ext != audio_level_ext(&sdp_sent) {
            tracing::warn!(offer = ?audio_level_ext(&sdp_sent), answer = ?level_ext, "audio-level extension ids differ");
        }
        pc.set_remote_description(RTCSessionDescription::answer(resp.body).map_err(w)?).await.map_err(w)?;
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if *state_rx.borrow_and_update() == RTCPeerConnectionState::Connected {
                    return Ok(());
                }
                if state_rx.changed().await.is_err() {
                    return Err(LoadgenError::ConnectTimeout);
                }
            }
        })
        .await
        .map_err(|_| LoadgenError::ConnectTimeout)??;
        if let Some(t) = video_track {
            let src = match &opts.video {
                VideoSource::Colour((r, g, b)) => format!(
                    "videotestsrc is-live=true pattern=solid-color foreground-color=0xff{r:02x}{g:02x}{b:02x} \
                     ! video/x-raw,format=I420,width=640,height=360,framerate=30/1 \
                     ! vp8enc name=enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate=200000 threads=1 {}",
                    if opts.keyframe_interval == 0 {
                        "keyframe-mode=disabled".to_string()
                    } else {
                        format!("keyframe-max-dist={}", opts.keyframe_interval)
                    }
                ),
                VideoSource::File(path) => format!("filesrc location=\"{}\" ! matroskademux", path.display()),
                VideoSource::Flash => "appsrc name=gen is-live=true do-timestamp=true format=time \
                     caps=video/x-raw,format=I420,width=640,height=360,framerate=30/1 \
                     ! vp8enc name=enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate=300000 threads=1 keyframe-max-dist=30"
                    .to_string(),
                VideoSource::Marker => format!(
                    "appsrc name=gen is-live=true do-timestamp=true format=time max-buffers=2 leaky-type=downstream \
                     caps=video/x-raw,format=I420,width={},height={},framerate={}/1 \
                     ! vp8enc name=enc deadline=1 cpu-used=-6 end-usage=cbr target-bitrate=300000 threads=1 \
                     error-resilient=1 lag-in-frames=0 keyframe-max-dist=300",
                    marker::WIDTH,
                    marker::HEIGHT,
                    marker::FPS
                ),
                VideoSource::Noise => "videotestsrc is-live=true pattern=snow \
                     ! video/x-raw,format=I420,width=640,height=360,framerate=30/1 \
                     ! vp8enc name=enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate=800000 threads=1 keyframe-mode=disabled"
                    .to_string(),
                VideoSource::None => unreachable!(),
            };
            let sync = !matches!(opts.video, VideoSource::Flash | VideoSource::Marker);
            let desc = format!("{src} ! rtpvp8pay pt=96 ssrc={video_ssrc} mtu=1200 picture-id-mode=15-bit ! appsink name=sink sync={sync}");
            publish(&desc, t, &pipelines)?;
        }
        let flash_start = Instant::now() + Duration::from_millis(50);
        if opts.video == VideoSource::Flash {
            start_generator(&pipelines, true, flash_start);
        }
        if opts.video == VideoSource::Marker
            && let Some(src) = pipelines.lock().unwrap().last().and_then(|p| p.by_name("gen")).and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        {
            marker::spawn_source(src);
        }
        let mut talk = None;
        if let (Some(t), Some(turn)) = (&audio_track, opts.talk) {
            talk = Some(talk::TalkStream::start(t.clone(), audio_ssrc, level_ext, turn, seed));
        } else if let (Some(t), true) = (&audio_track, opts.video == VideoSource::Flash) {
            let desc = format!(
                "appsrc name=gen is-live=true do-timestamp=true format=time caps=audio/x-raw,format=S16LE,rate=48000,channels=1,layout=interleaved \
                 ! opusenc bitrate=48000 frame-size=20 ! rtpopuspay pt=111 ssrc={audio_ssrc} ! appsink name=sink sync=false"
            );
            publish(&desc, t.clone(), &pipelines)?;
            start_generator(&pipelines, false, flash_start);
        } else if let (Some(t), Some(f)) = (audio_track, opts.tone_hz) {
            let desc = format!(
                "audiotestsrc is-live=true wave=sine freq={f} volume={} ! audio/x-raw,rate=48000,channels=1 \
                 ! opusenc bitrate=48000 frame-size=20 ! rtpopuspay pt=111 ssrc={audio_ssrc} ! appsink name=sink sync=false",
                opts.tone_volume
            );
            publish(&desc, t, &pipelines)?;
        }
        Ok(Peer { opts, location, id, posted_at, base: base.to_string(), pc, received, tick, pipelines, channel, talk })
    }

    /// Waits (up to `timeout`) for a decoded frame that satisfies `pred` and returns it; on timeout
    /// returns the last frame seen (which does not satisfy it), so a caller can describe it.
    /// Needs `keep_pixels`.
    pub async fn wait_frame(&self, timeout: Duration, pred: impl Fn(&Frame) -> bool) -> Option<Frame> {
        let mut tick = self.tick.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let f = self.received.frame.lock().unwrap().clone();
            if let Some(f) = &f
                && pred(f)
            {
                return Some(f.clone());
            }
            if tokio::time::timeout_at(deadline, tick.changed()).await.is_err() {
                return f;
            }
        }
    }

    /// Waits until `frames()` reaches `n` or `timeout` passes; returns whether it did.
    pub async fn wait_frames(&self, n: u64, timeout: Duration) -> bool {
        let mut tick = self.tick.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.frames() < n {
            if tokio::time::timeout_at(deadline, tick.changed()).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Waits until `n` more audio samples arrived (or `timeout`), then returns the last `n`
    /// (48 kHz mono).
    pub async fn audio_window(&self, n: usize, timeout: Duration) -> Vec<i16> {
        let target = self.received.audio_samples.load(Ordering::Relaxed) + n as u64;
        let mut tick = self.tick.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.received.audio_samples.load(Ordering::Relaxed) < target {
            if tokio::time::timeout_at(deadline, tick.changed()).await.is_err() {
                break;
            }
        }
        let a = self.received.audio.lock().unwrap();
        a.iter().skip(a.len().saturating_sub(n)).copied().collect()
    }

    /// Waits (up to `timeout`) for a data-channel message satisfying `pred`; returns it.
    pub async fn wait_event(&self, timeout: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
        let mut tick = self.tick.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = self.received.events.lock().unwrap().iter().find(|v| pred(v)).cloned() {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline, tick.changed()).await.is_err() {
                return None;
            }
        }
    }

    /// Every data-channel message received so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.received.events.lock().unwrap().clone()
    }

    /// Sends a JSON message on the data channel.
    ///
    /// # Errors
    /// No data channel, or it is not open.
    pub async fn send(&self, msg: &serde_json::Value) -> Result<(), LoadgenError> {
        let dc = self.channel.as_ref().ok_or_else(|| w("no data channel (PeerOpts::data_channel)"))?;
        dc.send_text(&msg.to_string()).await.map_err(w)
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> u64 {
        self.received.frames.load(Ordering::Relaxed)
    }

    /// Receive statistics so far.
    pub fn stats(&self) -> ReceiveStats {
        let r = &self.received;
        let mut latency = self.latency_ms();
        ReceiveStats {
            frames: r.frames.load(Ordering::Relaxed),
            freezes: r.freezes.load(Ordering::Relaxed),
            max_gap_ms: r.max_gap_ms.load(Ordering::Relaxed),
            audio_samples: r.audio_samples.load(Ordering::Relaxed),
            join_ms: r.first_frame_at.lock().unwrap().map(|t| t.duration_since(self.posted_at).as_millis() as u64),
            audio_packets: r.audio_packets.load(Ordering::Relaxed),
            audio_gaps: r.audio_gaps.load(Ordering::Relaxed),
            latency_samples: latency.len() as u64,
            latency_ms_median: analysis::percentile(&mut latency.clone(), 50.0),
            latency_ms_p95: analysis::percentile(&mut latency, 95.0),
        }
    }

    /// Latency samples so far (ms, in arrival order), with [`PeerOpts::latency_probe`]; see
    /// [`ReceiveStats::latency_ms_median`] for what one includes.
    pub fn latency_ms(&self) -> Vec<f64> {
        self.received.probe.as_ref().map(marker::Probe::samples).unwrap_or_default()
    }

    /// Codec of the received composite (`VP8` or `H264`).
    pub fn video_codec(&self) -> Option<String> {
        self.received.video_codec.lock().unwrap().clone()
    }

    /// DELETEs the participant resource and closes the connection; returns the HTTP status.
    ///
    /// # Errors
    /// [`LoadgenError::Http`] when the request fails.
    pub async fn leave(&self) -> Result<u16, LoadgenError> {
        if let Some(t) = &self.talk {
            t.stop();
        }
        let r = http_auth("DELETE", &format!("{}{}", self.base, self.location), None, vec![], self.opts.token.as_deref()).await?;
        let _ = self.pc.close().await;
        Ok(r.status)
    }
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish() as u32
}

/// The id of the RFC 6464 audio-level extension in the first `m=audio` section of `sdp` (the
/// answer: what was negotiated), from its `a=extmap:ID[/direction] URI` line.
fn audio_level_ext(sdp: &str) -> Option<u8> {
    let mut in_audio = false;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            if in_audio {
                return None;
            }
            in_audio = l.starts_with("m=audio");
        }
        if in_audio
            && let Some((id, rest)) = l.strip_prefix("a=extmap:").and_then(|r| r.split_once(' '))
            && rest.split_whitespace().next() == Some(crate::transport::AUDIO_LEVEL_URI)
        {
            return id.split('/').next()?.parse().ok();
        }
    }
    None
}

/// Removes every video codec but `mime` (`video/VP8` or `video/H264`) from an offer.
fn keep_only_video_codec(sdp: &str, mime: &str) -> String {
    let want = mime.rsplit('/').next().unwrap_or(mime).to_ascii_lowercase();
    let mut keep = vec![];
    let mut in_video = false;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            in_video = l.starts_with("m=video");
        }
        if in_video
            && let Some((pt, codec)) = l.strip_prefix("a=rtpmap:").and_then(|r| r.split_once(' '))
            && codec.to_ascii_lowercase().starts_with(&want)
        {
            keep.push(pt.to_string());
        }
    }
    let mut out = vec![];
    in_video = false;
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
            && let Some(rest) = l.strip_prefix("a=rtpmap:").or(l.strip_prefix("a=fmtp:")).or(l.strip_prefix("a=rtcp-fb:"))
            && !keep.iter().any(|k| rest.split(' ').next() == Some(k.as_str()))
        {
            continue;
        }
        out.push(l.to_string());
    }
    out.join("\r\n") + "\r\n"
}
