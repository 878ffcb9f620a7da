//! Test harness: a Tessera server in-process on loopback, a webrtc-rs test peer that publishes a
//! solid colour (VP8 from GStreamer) and a sine tone (Opus) and decodes what it receives, and
//! the frame/tone analysis the tests assert on.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
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
use tessera::config::{Config, PortRange};
use tessera::server::Server;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder, register_default_interceptors,
};

/// Media tests share two cores: one at a time keeps their timing honest.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the media-test lock for the test's duration.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a server on 127.0.0.1:0 with ephemeral media ports and the default 1280x720 output.
pub async fn server() -> Server {
    server_with(Config::default()).await
}

/// Starts a server with `cfg`, overriding only the addresses (loopback, port 0, ephemeral UDP).
pub async fn server_with(mut cfg: Config) -> Server {
    let _ = tracing_subscriber::fmt().with_env_filter(
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,tessera=info".into()),
    ).with_test_writer().try_init();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.udp_ports = PortRange { low: 0, high: 0 };
    cfg.media_ip = Some("127.0.0.1".parse().unwrap());
    Server::start(cfg).await.expect("server starts")
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// `Location` header.
    pub location: Option<String>,
    /// `Content-Type` header.
    pub content_type: Option<String>,
    /// Body text.
    pub body: String,
}

/// Sends one HTTP request to the server (blocking client on a blocking thread).
pub async fn http(method: &str, url: String, content_type: Option<&str>, body: Vec<u8>) -> Resp {
    let method = method.to_string();
    let ct = content_type.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        let req = ureq::http::Request::builder().method(method.as_str()).uri(&url);
        let req = match &ct {
            Some(c) => req.header("content-type", c),
            None => req,
        };
        let mut resp = agent.run(req.body(body).unwrap()).expect("http request");
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (location, content_type) = (header("location"), header("content-type"));
        Resp { status: resp.status().as_u16(), location, content_type, body: resp.body_mut().read_to_string().unwrap_or_default() }
    })
    .await
    .unwrap()
}

/// `GET /v1/rooms/{room}` as JSON (`Null` on 404).
pub async fn room_json(addr: SocketAddr, room: &str) -> serde_json::Value {
    let r = http("GET", format!("http://{addr}/v1/rooms/{room}"), None, vec![]).await;
    if r.status == 404 {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&r.body).expect("room JSON")
}

/// An RGB colour.
pub type Rgb = (u8, u8, u8);

/// Which endpoint the peer joins through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `/v1/rooms/{room}/participants`.
    Participant,
    /// `/whip/{room}`.
    Whip,
    /// `/whep/{room}`.
    Whep,
}

/// What a test peer does.
#[derive(Debug, Clone)]
pub struct PeerOpts {
    /// Display name.
    pub name: String,
    /// Publish a solid 640x360 VP8 picture of this colour.
    pub colour: Option<Rgb>,
    /// Publish an Opus sine tone of this frequency (Hz).
    pub tone_hz: Option<f64>,
    /// Receive the composite and the mix.
    pub receive: bool,
    /// Video codecs offered for receiving (default VP8 and H264).
    pub receive_codecs: Vec<&'static str>,
    /// Endpoint.
    pub via: Via,
}

impl PeerOpts {
    /// A sendrecv participant publishing `colour` and `tone_hz`.
    pub fn publisher(name: &str, colour: Rgb, tone_hz: f64) -> Self {
        Self {
            name: name.into(),
            colour: Some(colour),
            tone_hz: Some(tone_hz),
            receive: true,
            receive_codecs: vec![MIME_TYPE_VP8, MIME_TYPE_H264],
            via: Via::Participant,
        }
    }

    /// A recvonly WHEP viewer.
    pub fn viewer(name: &str) -> Self {
        Self { name: name.into(), colour: None, tone_hz: None, receive: true, receive_codecs: vec![MIME_TYPE_VP8, MIME_TYPE_H264], via: Via::Whep }
    }
}

/// A decoded frame, packed RGB.
#[derive(Clone)]
pub struct Frame {
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub rgb: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Frame({}x{})", self.width, self.height)
    }
}

impl Frame {
    /// Mean colour of a `2r`×`2r` box around (`x`, `y`).
    pub fn colour_at(&self, x: u32, y: u32, r: u32) -> Rgb {
        let (mut s, mut n) = ([0u64; 3], 0u64);
        for yy in y.saturating_sub(r)..(y + r).min(self.height) {
            for xx in x.saturating_sub(r)..(x + r).min(self.width) {
                let i = ((yy * self.width + xx) * 3) as usize;
                for c in 0..3 {
                    s[c] += self.rgb[i + c] as u64;
                }
                n += 1;
            }
        }
        let n = n.max(1);
        ((s[0] / n) as u8, (s[1] / n) as u8, (s[2] / n) as u8)
    }

    /// Writes the frame as a binary PPM (for looking at a failure).
    pub fn save_ppm(&self, path: &str) {
        let mut out = format!("P6\n{} {}\n255\n", self.width, self.height).into_bytes();
        out.extend_from_slice(&self.rgb);
        let _ = std::fs::write(path, out);
    }
}

/// Whether two colours are within `tol` per channel.
pub fn close(a: Rgb, b: Rgb, tol: i32) -> bool {
    (a.0 as i32 - b.0 as i32).abs() <= tol && (a.1 as i32 - b.1 as i32).abs() <= tol && (a.2 as i32 - b.2 as i32).abs() <= tol
}

/// Power of `freq` (Hz) in `samples` (48 kHz mono), dB relative to a full-scale sine (Goertzel).
pub fn tone_db(samples: &[i16], freq: f64) -> f64 {
    let n = samples.len() as f64;
    let w = 2.0 * std::f64::consts::PI * freq / 48000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for (i, &x) in samples.iter().enumerate() {
        // Hann window keeps neighbouring tones from leaking in.
        let win = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / (n - 1.0)).cos();
        let s0 = x as f64 / 32768.0 * win + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let amp = 2.0 * power.sqrt() / (n * 0.5);
    20.0 * amp.max(1e-9).log10()
}

/// What a peer has received, decoded.
#[derive(Default)]
pub struct Received {
    frame: Mutex<Option<Frame>>,
    frames: AtomicU64,
    audio: Mutex<VecDeque<i16>>,
    audio_samples: AtomicU64,
    video_codec: Mutex<Option<String>>,
    first_frame_at: Mutex<Option<Instant>>,
}

/// A webrtc-rs peer joined to a Tessera room.
pub struct Peer {
    /// Options it was made with.
    pub opts: PeerOpts,
    /// Participant resource (`Location`).
    pub location: String,
    /// Participant id (last segment of `location`).
    pub id: String,
    /// When the offer was POSTed.
    pub posted_at: Instant,
    addr: SocketAddr,
    pc: Arc<dyn PeerConnection>,
    received: Arc<Received>,
    tick: watch::Receiver<u64>,
    pipelines: Arc<Mutex<Vec<gst::Pipeline>>>,
}

impl Drop for Peer {
    fn drop(&mut self) {
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
            let mut src: Option<gst_app::AppSrc> = None;
            while let Some(ev) = track.poll().await {
                let TrackRemoteEvent::OnRtpPacket(pkt) = ev else { continue };
                if src.is_none() {
                    let (p, s) = decode_pipeline(kind, &mime, pkt.header.payload_type, received.clone(), tick.clone());
                    pipelines.lock().unwrap().push(p);
                    src = Some(s);
                }
                if let Ok(b) = pkt.marshal() {
                    let _ = src.as_ref().unwrap().push_buffer(gst::Buffer::from_slice(b.freeze()));
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
) -> (gst::Pipeline, gst_app::AppSrc) {
    let desc = if kind == RtpCodecKind::Audio {
        format!(
            "appsrc name=src is-live=true format=time do-timestamp=true caps=\"application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload={pt}\" \
             ! rtpjitterbuffer latency=60 ! rtpopusdepay ! opusdec plc=true ! audioconvert ! audioresample \
             ! audio/x-raw,format=S16LE,rate=48000,channels=1 ! appsink name=sink sync=false"
        )
    } else {
        let (name, depay, dec) = if mime.contains("h264") {
            ("H264", "rtph264depay", "avdec_h264")
        } else {
            ("VP8", "rtpvp8depay", "vp8dec")
        };
        *received.video_codec.lock().unwrap() = Some(name.to_string());
        format!(
            "appsrc name=src is-live=true format=time do-timestamp=true caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name={name},payload={pt}\" \
             ! rtpjitterbuffer latency=60 ! {depay} ! {dec} ! videoconvert ! video/x-raw,format=RGB \
             ! appsink name=sink sync=false max-buffers=2 drop=true"
        )
    };
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
    let audio = kind == RtpCodecKind::Audio;
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
                    let caps = sample.caps().ok_or(gst::FlowError::Error)?;
                    let info = gstreamer_video::VideoInfo::from_caps(caps).map_err(|_| gst::FlowError::Error)?;
                    let (w, h) = (info.width(), info.height());
                    let stride = info.stride()[0] as usize;
                    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
                    for row in 0..h as usize {
                        rgb.extend_from_slice(&map.as_slice()[row * stride..row * stride + w as usize * 3]);
                    }
                    *received.frame.lock().unwrap() = Some(Frame { width: w, height: h, rgb: Arc::new(rgb) });
                    received.first_frame_at.lock().unwrap().get_or_insert_with(Instant::now);
                    received.frames.fetch_add(1, Ordering::Relaxed);
                }
                tick.send_modify(|t| *t += 1);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    (pipeline, src)
}

fn media_engine() -> MediaEngine {
    let mut m = MediaEngine::default();
    let c = |mime: &str, rate: u32, ch: u16, fmtp: &str, pt: u8| RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec { mime_type: mime.into(), clock_rate: rate, channels: ch, sdp_fmtp_line: fmtp.into(), rtcp_feedback: vec![] },
        payload_type: pt,
    };
    m.register_codec(c(MIME_TYPE_OPUS, 48000, 2, "minptime=10;useinbandfec=1", 111), RtpCodecKind::Audio).unwrap();
    m.register_codec(c(MIME_TYPE_VP8, 90000, 0, "", 96), RtpCodecKind::Video).unwrap();
    m.register_codec(
        c(MIME_TYPE_H264, 90000, 0, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", 102),
        RtpCodecKind::Video,
    )
    .unwrap();
    m
}

fn local_track(kind: RtpCodecKind, mime: &str, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let (rate, ch) = if kind == RtpCodecKind::Audio { (48000, 2) } else { (90000, 0) };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "test".into(),
        format!("{kind}-{ssrc}"),
        "test".into(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            active: true,
            codec: RTCRtpCodec { mime_type: mime.into(), clock_rate: rate, channels: ch, sdp_fmtp_line: String::new(), rtcp_feedback: vec![] },
            ..Default::default()
        }],
    )))
}

/// Builds the GStreamer source of a published track and forwards its RTP to `track`.
fn publish(desc: String, track: Arc<TrackLocalStaticRTP>, pipelines: &Arc<Mutex<Vec<gst::Pipeline>>>) {
    let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline.by_name("sink").unwrap().downcast::<gst_app::AppSink>().unwrap();
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
    tokio::spawn(async move {
        while let Some(mut b) = rx.recv().await {
            if let Ok(p) = rtc::rtp::Packet::unmarshal(&mut b) {
                let _ = track.write_rtp(p).await;
            }
        }
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    pipelines.lock().unwrap().push(pipeline);
}

impl Peer {
    /// Joins `room` on the server at `addr`: offers, POSTs, applies the answer, waits until
    /// connected, then starts publishing.
    pub async fn join(addr: SocketAddr, room: &str, opts: PeerOpts) -> Peer {
        gst::init().unwrap();
        let mut me = media_engine();
        let registry = register_default_interceptors(Registry::new(), &mut me).unwrap();
        let (gather_tx, mut gather_rx) = mpsc::channel(1);
        let (state_tx, mut state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (tick_tx, tick) = watch::channel(0u64);
        let received = Arc::new(Received::default());
        let pipelines = Arc::new(Mutex::new(vec![]));
        let handler = Arc::new(Handler { gather_tx, state_tx, received: received.clone(), tick_tx: Arc::new(tick_tx), pipelines: pipelines.clone() });
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(SettingEngineBuilder::new().with_include_loopback_candidate(true).build())
            .with_handler(handler)
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .unwrap();
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let seed = (Instant::now().elapsed().as_nanos() as u32) ^ (opts.name.len() as u32 * 7919) ^ std::process::id();
        let dir = |send: bool| match (send, opts.receive) {
            (true, true) => RTCRtpTransceiverDirection::Sendrecv,
            (true, false) => RTCRtpTransceiverDirection::Sendonly,
            (false, _) => RTCRtpTransceiverDirection::Recvonly,
        };
        let mut video_track = None;
        let mut audio_track = None;
        if opts.colour.is_some() {
            let t = local_track(RtpCodecKind::Video, MIME_TYPE_VP8, 0x1000_0000 | (seed & 0xffff));
            pc.add_transceiver_from_track(t.clone(), Some(RTCRtpTransceiverInit { direction: dir(true), ..Default::default() }))
                .await
                .unwrap();
            video_track = Some(t);
        } else if opts.receive {
            pc.add_transceiver_from_kind(RtpCodecKind::Video, Some(RTCRtpTransceiverInit { direction: dir(false), ..Default::default() }))
                .await
                .unwrap();
        }
        if opts.tone_hz.is_some() {
            let t = local_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, 0x2000_0000 | (seed & 0xffff));
            pc.add_transceiver_from_track(t.clone(), Some(RTCRtpTransceiverInit { direction: dir(true), ..Default::default() }))
                .await
                .unwrap();
            audio_track = Some(t);
        } else if opts.receive {
            pc.add_transceiver_from_kind(RtpCodecKind::Audio, Some(RTCRtpTransceiverInit { direction: dir(false), ..Default::default() }))
                .await
                .unwrap();
        }
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), gather_rx.recv()).await;
        let mut sdp = pc.local_description().await.unwrap().sdp;
        if opts.receive_codecs.len() == 1 {
            sdp = keep_only_video_codec(&sdp, opts.receive_codecs[0]);
        }
        let path = match opts.via {
            Via::Participant => format!("/v1/rooms/{room}/participants?name={}", opts.name),
            Via::Whip => format!("/whip/{room}?name={}", opts.name),
            Via::Whep => format!("/whep/{room}?name={}", opts.name),
        };
        let posted_at = Instant::now();
        let resp = http("POST", format!("http://{addr}{path}"), Some("application/sdp"), sdp.into_bytes()).await;
        assert_eq!(resp.status, 201, "join {}: {}", opts.name, resp.body);
        assert_eq!(resp.content_type.as_deref(), Some("application/sdp"));
        let location = resp.location.expect("Location header");
        let id = location.rsplit('/').next().unwrap().to_string();
        pc.set_remote_description(RTCSessionDescription::answer(resp.body).unwrap()).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if *state_rx.borrow_and_update() == RTCPeerConnectionState::Connected {
                    break;
                }
                state_rx.changed().await.unwrap();
            }
        })
        .await
        .expect("peer connects within 10 s");
        if let (Some(t), Some((r, g, b))) = (video_track, opts.colour) {
            let ssrc = 0x1000_0000 | (seed & 0xffff);
            publish(
                format!(
                    "videotestsrc is-live=true pattern=solid-color foreground-color=0xff{r:02x}{g:02x}{b:02x} \
                     ! video/x-raw,format=I420,width=640,height=360,framerate=30/1 \
                     ! vp8enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate=200000 keyframe-max-dist=30 threads=1 \
                     ! rtpvp8pay pt=96 ssrc={ssrc} mtu=1200 picture-id-mode=15-bit ! appsink name=sink sync=false"
                ),
                t,
                &pipelines,
            );
        }
        if let (Some(t), Some(f)) = (audio_track, opts.tone_hz) {
            let ssrc = 0x2000_0000 | (seed & 0xffff);
            publish(
                format!(
                    "audiotestsrc is-live=true wave=sine freq={f} volume=0.25 ! audio/x-raw,rate=48000,channels=1 \
                     ! opusenc bitrate=48000 frame-size=20 ! rtpopuspay pt=111 ssrc={ssrc} ! appsink name=sink sync=false"
                ),
                t,
                &pipelines,
            );
        }
        Peer { opts, location, id, posted_at, addr, pc, received, tick, pipelines }
    }

    /// Waits (up to `timeout`) for a decoded frame that satisfies `pred`; returns the last frame
    /// seen (which may not satisfy it) so the caller's assertion can describe it.
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

    /// Waits until `n` more audio samples arrived, then returns the last `n` (48 kHz mono).
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

    /// Frames decoded so far.
    pub fn frames(&self) -> u64 {
        self.received.frames.load(Ordering::Relaxed)
    }

    /// Codec of the received composite (`VP8`/`H264`).
    pub fn video_codec(&self) -> Option<String> {
        self.received.video_codec.lock().unwrap().clone()
    }

    /// When the first composite frame was decoded.
    pub fn first_frame_at(&self) -> Option<Instant> {
        *self.received.first_frame_at.lock().unwrap()
    }

    /// DELETEs the participant resource; returns the status.
    pub async fn leave(&self) -> u16 {
        let r = http("DELETE", format!("http://{}{}", self.addr, self.location), None, vec![]).await;
        let _ = self.pc.close().await;
        r.status
    }
}

/// Removes every video codec but `mime` (`video/VP8` or `video/H264`) from an offer.
fn keep_only_video_codec(sdp: &str, mime: &str) -> String {
    let want = mime.rsplit('/').next().unwrap().to_ascii_lowercase();
    let mut keep_pts = vec![];
    let mut in_video = false;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            in_video = l.starts_with("m=video");
        }
        if in_video && let Some(rest) = l.strip_prefix("a=rtpmap:") {
            let (pt, codec) = rest.split_once(' ').unwrap();
            if codec.to_ascii_lowercase().starts_with(&want) {
                keep_pts.push(pt.to_string());
            }
        }
    }
    let mut out = vec![];
    in_video = false;
    for l in sdp.lines() {
        if l.starts_with("m=") {
            in_video = l.starts_with("m=video");
            if in_video {
                let mut parts: Vec<&str> = l.split(' ').take(3).collect();
                parts.extend(keep_pts.iter().map(|s| s.as_str()));
                out.push(parts.join(" "));
                continue;
            }
        }
        if in_video
            && let Some(rest) = l.strip_prefix("a=rtpmap:").or(l.strip_prefix("a=fmtp:")).or(l.strip_prefix("a=rtcp-fb:"))
        {
            let pt = rest.split(' ').next().unwrap();
            if !keep_pts.iter().any(|k| k == pt) {
                continue;
            }
        }
        out.push(l.to_string());
    }
    out.join("\r\n") + "\r\n"
}
