//! Transport: webrtc-rs peer connections. Builds one per participant on a port from the configured
//! UDP range, answers the offer (non-trickle: the answer carries every candidate), exposes the
//! remote tracks as RTP streams, and the local tracks Tessera sends the composite and mix on.

pub mod answer;
pub mod bwe;
pub mod rtcp;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateType, RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription, Registry,
    SettingEngineBuilder, register_default_interceptors,
};

use crate::codec::{self, CodecChoice, CodecSpec, MediaKind, VideoCodec};
use crate::config::{Config, PortRange};
use crate::media::downstream::ReceiverTrack;

/// How long the answer waits for ICE gathering to complete.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// Transport errors, each with the reason a client is told.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The offer was refused by the WebRTC stack (e.g. no DTLS fingerprint, bad ICE credentials).
    #[error("offer rejected: {0}")]
    Offer(String),
    /// No UDP port of the range could be bound.
    #[error("no free UDP port in {0}")]
    NoPort(PortRange),
    /// Any other failure of the WebRTC stack.
    #[error("webrtc: {0}")]
    WebRtc(String),
}

fn rtc_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::WebRtc(e.to_string())
}

/// What a participant's session sends and receives, decided from the offer by signaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionPlan {
    /// The peer sends video we will decode.
    pub publish_video: bool,
    /// The peer sends audio we will mix.
    pub publish_audio: bool,
    /// Send the composite in this codec.
    pub receive_video: Option<VideoCodec>,
    /// Why that codec.
    pub codec_choice: Option<CodecChoice>,
    /// Send the mix.
    pub receive_audio: bool,
    /// The offer's id for the RFC 6464 audio-level header extension, when it has one.
    pub audio_level_ext: Option<u8>,
}

/// An m-section of an offer that the answer rejects (port 0, left out of the BUNDLE group; RFC
/// 3264 §6, RFC 8843 §7.3.3), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its `a=mid` (every section of a WebRTC offer has one).
    pub mid: Option<String>,
    /// `m=` media type.
    pub media: String,
    /// Why Tessera does not serve it.
    pub reason: &'static str,
}

/// Events of one session, delivered by the transport to whoever owns the participant.
pub trait SessionEvents: Send + Sync + 'static {
    /// A remote track started; read it with [`RemoteTrack::next_rtp`].
    fn on_remote_track(&self, track: RemoteTrack);
    /// The peer connection changed state (`Failed` and `Closed` mean the participant is gone).
    fn on_state(&self, state: RTCPeerConnectionState);
    /// The peer opened a data channel (room events and chat travel on it).
    fn on_data_channel(&self, _channel: Arc<dyn webrtc::data_channel::DataChannel>) {}
}

/// RTCP counters of one session, shown in the rooms API.
#[derive(Debug, Default)]
pub struct SessionCounters {
    /// PLIs sent to this participant's published video.
    pub plis_sent: AtomicU64,
    /// PLIs/FIRs this participant sent about the composite it receives.
    pub keyframe_requests_received: AtomicU64,
}

/// Shared by every session: settings and the port allocator.
pub struct Transport {
    bind_ip: IpAddr,
    ports: PortRange,
    next_port: AtomicU16,
    public_ips: Vec<String>,
    ice_servers: Vec<RTCIceServer>,
    pli_interval: Duration,
    /// Where a receiver's bandwidth estimate starts, bits/s (above the largest tier's need, so a
    /// receiver starts on the full tier and only feedback moves it).
    initial_estimate_bps: f64,
}

/// Parses `stun:host:port`, `turn:host:port?transport=udp` and the `turn:user:pass@host:port`
/// shorthand into an ICE server entry.
pub fn parse_ice_server(url: &str) -> RTCIceServer {
    if let Some((scheme, rest)) = url.split_once(':')
        && (scheme == "turn" || scheme == "turns")
        && let Some((cred, host)) = rest.rsplit_once('@')
        && let Some((user, pass)) = cred.split_once(':')
    {
        return RTCIceServer { urls: vec![format!("{scheme}:{host}")], username: user.into(), credential: pass.into() };
    }
    RTCIceServer { urls: vec![url.to_string()], ..Default::default() }
}

impl Transport {
    /// Transport settings from the server configuration.
    pub fn new(cfg: &Config) -> Self {
        Self {
            bind_ip: cfg.media_bind_ip(),
            ports: cfg.udp_ports,
            next_port: AtomicU16::new(cfg.udp_ports.low),
            public_ips: cfg.public_ips.iter().map(|ip| ip.to_string()).collect(),
            ice_servers: cfg.ice_servers.iter().map(|u| parse_ice_server(u)).collect(),
            pli_interval: Duration::from_millis(cfg.pli_interval_ms),
            initial_estimate_bps: cfg.video_kbps as f64 * 1000.0 * 2.5,
        }
    }

    /// The ICE servers as given to clients.
    pub fn ice_servers(&self) -> &[RTCIceServer] {
        &self.ice_servers
    }

    /// Answers `offer` (SDP text) for participant `id`: builds the peer connection, adds the local
    /// tracks `plan` asks for, and returns the session with the complete answer (all candidates
    /// inline) once ICE gathering is done or after 5 s.
    ///
    /// # Errors
    /// [`TransportError::Offer`] when the stack refuses the offer, [`TransportError::NoPort`] when
    /// the port range is exhausted, [`TransportError::WebRtc`] otherwise.
    pub async fn answer(
        &self,
        id: &str,
        offer: &str,
        plan: SessionPlan,
        rejected: &[Rejected],
        events: Arc<dyn SessionEvents>,
    ) -> Result<(Session, String), TransportError> {
        let offer =
            RTCSessionDescription::offer(offer.to_string()).map_err(|e| TransportError::Offer(e.to_string()))?;
        let (gather_tx, mut gather_rx) = mpsc::channel(1);
        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let counters = Arc::new(SessionCounters::default());
        let handler = Arc::new(Handler {
            counters: counters.clone(),
            events,
            gather_tx,
            state_tx,
            pli_interval: self.pli_interval,
            runtime: tokio::runtime::Handle::current(),
        });
        let (pc, bandwidth) = self.build(handler, plan.receive_video.is_some()).await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let result = async {
            pc.set_remote_description(offer).await.map_err(|e| TransportError::Offer(e.to_string()))?;
            let video = match plan.receive_video {
                Some(codec) => Some(
                    LocalTrack::add(&pc, id, RtpCodecKind::Video, rtp_codec(codec.spec()), counters.clone()).await?,
                ),
                None => None,
            };
            let audio = if plan.receive_audio {
                Some(LocalTrack::add(&pc, id, RtpCodecKind::Audio, rtp_codec(&codec::OPUS), counters.clone()).await?)
            } else {
                None
            };
            let answer = pc.create_answer(None).await.map_err(|e| TransportError::Offer(e.to_string()))?;
            pc.set_local_description(answer).await.map_err(rtc_err)?;
            let _ = tokio::time::timeout(GATHER_TIMEOUT, gather_rx.recv()).await;
            let sdp = pc.local_description().await.ok_or_else(|| rtc_err("no local description"))?.sdp;
            for r in rejected {
                tracing::info!(mid = ?r.mid, media = %r.media, reason = r.reason, "m-section rejected in the answer");
            }
            let mids: Vec<&str> = rejected.iter().filter_map(|r| r.mid.as_deref()).collect();
            let sdp = answer::reject_sections(&sdp, &mids);
            for t in video.iter().chain(audio.iter()) {
                t.resolve_payload_type().await;
            }
            Ok((video, audio, sdp))
        }
        .await;
        match result {
            Ok((video, audio, sdp)) => Ok((Session { pc, video, audio, state: state_rx, counters, bandwidth }, sdp)),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }

    /// Builds the peer connection; `estimate`: add TWCC and a GCC estimator for what it sends.
    async fn build(
        &self,
        handler: Arc<Handler>,
        estimate: bool,
    ) -> Result<(impl PeerConnection + use<>, Option<Arc<bwe::Estimate>>), TransportError> {
        let span = if self.ports.low == 0 { 1 } else { (self.ports.high - self.ports.low) as u32 + 1 };
        let mut last_err = None;
        for _ in 0..span.min(64) {
            let port = if self.ports.low == 0 {
                0
            } else {
                let p = self.next_port.fetch_add(1, Ordering::Relaxed);
                if p < self.ports.low || p > self.ports.high {
                    self.next_port.store(self.ports.low + 1, Ordering::Relaxed);
                    self.ports.low
                } else {
                    p
                }
            };
            let mut media_engine = media_engine(Feedback::Full)?;
            let registry = register_default_interceptors(Registry::new(), &mut media_engine).map_err(rtc_err)?;
            let registry = registry.with(rtcp::SLOT.into(), rtcp::KeyframeRequestInterceptor::default());
            let (registry, bandwidth) = if estimate {
                let (r, e) = bwe::configure(registry, &mut media_engine, self.initial_estimate_bps).map_err(rtc_err)?;
                (r, Some(e))
            } else {
                (registry, None)
            };
            // No mDNS: Tessera announces plain IPs, and joining the multicast group fails on
            // hosts without a multicast-capable interface (a loopback-only container).
            let mut settings =
                SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled);
            if self.bind_ip.is_loopback() {
                settings = settings.with_include_loopback_candidate(true);
            }
            if !self.public_ips.is_empty() {
                settings = settings.with_nat_1to1_ips(self.public_ips.clone(), RTCIceCandidateType::Host);
            }
            let config = RTCConfigurationBuilder::new().with_ice_servers(self.ice_servers.clone()).build();
            let built = PeerConnectionBuilder::new()
                .with_configuration(config)
                .with_media_engine(media_engine)
                .with_interceptor_registry(registry)
                .with_setting_engine(settings.build())
                .with_handler(handler.clone())
                .with_udp_addrs(vec![SocketAddr::new(self.bind_ip, port)])
                .build()
                .await;
            match built {
                Ok(pc) => return Ok((pc, bandwidth)),
                Err(e) => {
                    tracing::debug!(port, "bind failed: {e}");
                    last_err = Some(e);
                }
            }
        }
        if self.ports.low == 0 {
            return Err(rtc_err(last_err.map(|e| e.to_string()).unwrap_or_default()));
        }
        Err(TransportError::NoPort(self.ports))
    }
}

/// The codec of a track sending `spec` (no feedback: that is negotiated per m-section).
pub fn rtp_codec(spec: &CodecSpec) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: spec.mime.into(),
        clock_rate: spec.clock_rate,
        channels: spec.channels,
        sdp_fmtp_line: spec.fmtp.into(),
        rtcp_feedback: vec![],
    }
}

/// What a media engine negotiates beyond the codecs themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Each codec's RTCP feedback (NACK, PLI, FIR, REMB) and RTX for the video codecs: the server.
    Full,
    /// Codecs only: the load generator's peers, which ask for keyframes with plain PLIs and do not
    /// NACK (so a capped downlink is not made worse by retransmissions of what it dropped).
    None,
}

/// A media engine with the codec table ([`codec::CODECS`]: Opus, VP8 and H.264, in that order),
/// `feedback` as asked, and the RFC 6464 audio-level header extension. The server and the load
/// generator both build theirs here, from the one table.
///
/// # Errors
/// [`TransportError::WebRtc`] if webrtc-rs refuses a registration.
pub fn media_engine(feedback: Feedback) -> Result<MediaEngine, TransportError> {
    let full = feedback == Feedback::Full;
    let mut m = MediaEngine::default();
    for spec in codec::CODECS {
        let kind = match spec.kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        };
        let rtcp_feedback = spec
            .rtcp_feedback
            .iter()
            .filter(|_| full)
            .map(|(t, p)| RTCPFeedback { typ: (*t).into(), parameter: (*p).into() })
            .collect();
        let rtp_codec = RTCRtpCodec { rtcp_feedback, ..rtp_codec(spec) };
        m.register_codec(RTCRtpCodecParameters { rtp_codec, payload_type: spec.payload_type }, kind)
            .map_err(rtc_err)?;
        if let Some(rtx) = spec.rtx_payload_type.filter(|_| full) {
            let rtp_codec = RTCRtpCodec {
                mime_type: codec::RTX_MIME.into(),
                clock_rate: spec.clock_rate,
                channels: 0,
                sdp_fmtp_line: format!("apt={}", spec.payload_type),
                rtcp_feedback: vec![],
            };
            m.register_codec(RTCRtpCodecParameters { rtp_codec, payload_type: rtx }, kind).map_err(rtc_err)?;
        }
    }
    // Video gets MID (with RID and repaired RID) from webrtc-rs's default interceptors; audio's
    // MID is for RFC 8843 §9.2 demultiplexing by clients that write no (or a wrong) `a=ssrc`.
    for uri in [codec::extmap::AUDIO_LEVEL, codec::extmap::MID] {
        let ext = rtc::rtp_transceiver::rtp_sender::RTCRtpHeaderExtensionCapability { uri: uri.into() };
        m.register_header_extension(ext, RtpCodecKind::Audio, None).map_err(rtc_err)?;
    }
    Ok(m)
}

struct Handler {
    counters: Arc<SessionCounters>,
    events: Arc<dyn SessionEvents>,
    gather_tx: mpsc::Sender<()>,
    state_tx: watch::Sender<RTCPeerConnectionState>,
    pli_interval: Duration,
    runtime: tokio::runtime::Handle,
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
        self.events.on_state(state);
    }

    async fn on_data_channel(&self, channel: Arc<dyn webrtc::data_channel::DataChannel>) {
        self.events.on_data_channel(channel);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let ssrc = track.ssrcs().await.first().copied().unwrap_or(0);
        let kind = track.kind().await;
        let codec = track.codec(ssrc).await;
        let (mime, payload_type) = codec.map(|c| (c.mime_type.to_ascii_lowercase(), 0u8)).unwrap_or_default();
        let video_codec =
            [VideoCodec::Vp8, VideoCodec::H264].into_iter().find(|c| c.spec().mime.eq_ignore_ascii_case(&mime));
        let kind = match kind {
            RtpCodecKind::Video => match video_codec {
                Some(c) => RemoteKind::Video(c),
                None => RemoteKind::Unsupported(mime),
            },
            RtpCodecKind::Audio if codec::OPUS.mime.eq_ignore_ascii_case(&mime) => RemoteKind::Audio,
            _ => RemoteKind::Unsupported(mime),
        };
        let _ = payload_type;
        self.events.on_remote_track(RemoteTrack {
            track,
            kind,
            ssrc,
            pli: PliSettings { interval: self.pli_interval, counters: self.counters.clone() },
            runtime: self.runtime.clone(),
        });
    }
}

/// The kind and codec of a remote track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteKind {
    /// Video Tessera decodes.
    Video(VideoCodec),
    /// Opus audio.
    Audio,
    /// Anything else (ignored), with its MIME type.
    Unsupported(String),
}

/// `--pli-interval-ms` and where PLIs sent to the participant are counted.
struct PliSettings {
    interval: Duration,
    counters: Arc<SessionCounters>,
}

/// A track a participant publishes.
pub struct RemoteTrack {
    track: Arc<dyn TrackRemote>,
    /// What it carries.
    pub kind: RemoteKind,
    /// Its SSRC.
    pub ssrc: u32,
    pli: PliSettings,
    runtime: tokio::runtime::Handle,
}

impl RemoteTrack {
    /// The next RTP packet, or `None` once the track has ended.
    pub async fn next_rtp(&self) -> Option<rtc::rtp::Packet> {
        loop {
            match self.track.poll().await? {
                TrackRemoteEvent::OnRtpPacket(p) => return Some(p),
                TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => return None,
                _ => {}
            }
        }
    }

    /// A handle that asks the publisher for a keyframe (PLI, RFC 4585 §6.3.1), at most once per
    /// `--pli-interval-ms`; callable from any thread. Each handle keeps its own rate limit.
    pub fn keyframe_requester(&self) -> Arc<dyn Fn() + Send + Sync> {
        let counters = self.pli.counters.clone();
        pli_requester(self.track.clone(), self.ssrc, self.pli.interval, self.runtime.clone(), move || {
            counters.plis_sent.fetch_add(1, Ordering::Relaxed);
        })
    }
}

/// A handle that asks the sender of `track` (media SSRC `ssrc`) for a keyframe with a PLI
/// (RFC 4585 §6.3.1), at most once per `interval`, written from `runtime`; `on_sent` runs for
/// each PLI sent. Callable from any thread (a GStreamer streaming thread, typically).
pub fn pli_requester(
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
    interval: Duration,
    runtime: tokio::runtime::Handle,
    on_sent: impl Fn() + Send + Sync + 'static,
) -> Arc<dyn Fn() + Send + Sync> {
    let last = Mutex::new(None::<Instant>);
    Arc::new(move || {
        {
            let mut last = last.lock().unwrap();
            if last.is_some_and(|t| t.elapsed() < interval) {
                return;
            }
            *last = Some(Instant::now());
        }
        on_sent();
        let track = track.clone();
        runtime.spawn(async move {
            let _ = track.write_rtcp(vec![Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc })]).await;
        });
    })
}

/// A track Tessera sends on (the composite or the mix) with its negotiated payload type.
pub struct LocalTrack {
    track: Arc<TrackLocalStaticRTP>,
    sender: Arc<dyn webrtc::rtp_transceiver::RtpSender>,
    /// The SSRC Tessera chose for this receiver.
    pub ssrc: u32,
    payload_type: AtomicU16,
    mime: String,
    counters: Arc<SessionCounters>,
}

impl LocalTrack {
    async fn add(
        pc: &Arc<dyn PeerConnection>,
        id: &str,
        kind: RtpCodecKind,
        codec: RTCRtpCodec,
        counters: Arc<SessionCounters>,
    ) -> Result<Arc<Self>, TransportError> {
        let ssrc = crate::ids::random_ssrc();
        let mime = codec.mime_type.clone();
        let label = match kind {
            RtpCodecKind::Audio => "mix",
            _ => "composite",
        };
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            format!("tessera-{id}"),
            format!("{label}-{id}"),
            label.to_string(),
            kind,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                active: true,
                codec,
                ..Default::default()
            }],
        )));
        let sender = pc.add_track(track.clone()).await.map_err(rtc_err)?;
        Ok(Arc::new(Self { track, sender, ssrc, payload_type: AtomicU16::new(0), mime, counters }))
    }

    async fn resolve_payload_type(&self) {
        if let Ok(p) = self.sender.get_parameters().await
            && let Some(c) =
                p.rtp_parameters.codecs.iter().find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(&self.mime))
        {
            self.payload_type.store(c.payload_type as u16, Ordering::Relaxed);
        }
    }

    /// The negotiated payload type for this receiver.
    pub fn payload_type(&self) -> u8 {
        self.payload_type.load(Ordering::Relaxed) as u8
    }

    /// Sends one RTP packet (SSRC and payload type must already be this track's).
    ///
    /// # Errors
    /// When the track is not bound (before DTLS completes, or after the connection closed).
    pub async fn write(&self, p: rtc::rtp::Packet) -> Result<(), TransportError> {
        self.track.write_rtp(p).await.map_err(rtc_err)
    }

    /// Waits for the next keyframe request (PLI or FIR) from this receiver, counting it in
    /// [`SessionCounters::keyframe_requests_received`]; `None` once the track is unbound.
    pub async fn keyframe_request(&self) -> Option<()> {
        loop {
            match self.track.poll().await? {
                TrackLocalEvent::OnRtcpPacket(pkts) if pkts.iter().any(|p| rtcp::is_keyframe_request(p.as_ref())) => {
                    self.counters.keyframe_requests_received.fetch_add(1, Ordering::Relaxed);
                    return Some(());
                }
                _ => {}
            }
        }
    }
}

impl ReceiverTrack for LocalTrack {
    fn ssrc(&self) -> u32 {
        self.ssrc
    }

    fn payload_type(&self) -> u8 {
        LocalTrack::payload_type(self)
    }

    async fn write(&self, packet: rtc::rtp::Packet) -> bool {
        LocalTrack::write(self, packet).await.is_ok()
    }

    async fn keyframe_request(&self) -> Option<()> {
        LocalTrack::keyframe_request(self).await
    }
}

/// One participant's peer connection and the tracks Tessera sends on it.
pub struct Session {
    pc: Arc<dyn PeerConnection>,
    /// The composite track, when the participant receives video.
    pub video: Option<Arc<LocalTrack>>,
    /// The mix track, when the participant receives audio.
    pub audio: Option<Arc<LocalTrack>>,
    state: watch::Receiver<RTCPeerConnectionState>,
    /// RTCP counters.
    pub counters: Arc<SessionCounters>,
    /// GCC's estimate of the bandwidth toward this participant, when it receives video.
    pub bandwidth: Option<Arc<bwe::Estimate>>,
}

impl Session {
    /// Waits until the connection is `Connected`; `false` if it failed or closed first.
    pub async fn connected(&self) -> bool {
        self.wait_connected().await
    }

    /// A future that resolves like [`Session::connected`] and owns what it needs (to hand to a
    /// spawned task).
    pub fn wait_connected(&self) -> impl std::future::Future<Output = bool> + Send + 'static {
        let mut rx = self.state.clone();
        async move {
            loop {
                match *rx.borrow_and_update() {
                    RTCPeerConnectionState::Connected => return true,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => return false,
                    _ => {}
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        }
    }

    /// Closes the peer connection (idempotent).
    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}
