//! Transport: webrtc-rs peer connections, one per participant, answering its offer (non-trickle:
//! the answer carries every candidate), exposing the remote tracks as RTP streams and the local
//! tracks Tessera sends the composite and mix on ([`tracks`]).
//!
//! Media goes through one shared UDP port and one ICE-TCP port for every connection ([`mux`]),
//! or, with `--udp-ports`, one socket per connection from a range. The answer's candidates are
//! Tessera's own ([`answer`]): the shared ports at each announced address.

/// The pass-through half of an interceptor's `Protocol<TaggedPacket, TaggedPacket, ()>`
/// implementation over two `VecDeque<TaggedPacket>` fields, `read` and `write`: the associated
/// types (`Time` is `Instant`), and `poll_read`, `handle_write` and `poll_write` queueing packets
/// unchanged. Put it inside the `impl Protocol<..>` block.
macro_rules! queued_passthrough {
    () => {
        type Rout = rtc::interceptor::TaggedPacket;
        type Wout = rtc::interceptor::TaggedPacket;
        type Eout = ();
        type Error = rtc::shared::error::Error;
        type Time = std::time::Instant;

        fn poll_read(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
            self.read.pop_front()
        }

        fn handle_write(&mut self, msg: rtc::interceptor::TaggedPacket) -> Result<(), rtc::shared::error::Error> {
            self.write.push_back(msg);
            Ok(())
        }

        fn poll_write(&mut self) -> Option<rtc::interceptor::TaggedPacket> {
            self.write.pop_front()
        }
    };
}
pub(crate) use queued_passthrough;

pub mod answer;
pub mod bwe;
pub mod demux;
pub mod mux;
pub mod nack;
pub mod offer;
pub mod rtcp;
pub mod stun;
pub mod tracks;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

use crate::codec::{self, CodecChoice, CodecSpec, MediaKind, VideoCodec};
use crate::config::{Config, PortRange};
use answer::HostCandidate;
use tracks::PliSettings;
pub use tracks::{Inbound, LocalTrack, RemoteKind, RemoteTrack, Session, pli_requester};

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
    /// A shared media port could not be bound at start.
    #[error("media port: {0}")]
    Bind(String),
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
    /// Composite packets resent on this participant's NACKs ([`nack::SharedNackResponder`]).
    pub retransmissions: AtomicU64,
    /// Composite packets this participant NACKed that were no longer kept (or never sent).
    pub nacks_unanswered: AtomicU64,
    /// Inbound RTP streams whose SSRC the offer did not declare and no m-section claims (by MID
    /// extension or payload type): dropped.
    pub unmapped_streams: AtomicU64,
    /// Inbound RTP streams whose SSRC the offer declared wrongly or not at all, found by MID
    /// extension or payload type and declared after the fact (RFC 8843 §9.2).
    pub redeclared_streams: AtomicU64,
}

/// Where the connections' media goes.
enum MediaPorts {
    /// One UDP port (and one ICE-TCP port) for every connection, announced at these candidates.
    Shared { mux: mux::Mux, announce: Vec<HostCandidate> },
    /// One UDP socket per connection, from a range (port 0: an ephemeral one each).
    Range { bind_ip: IpAddr, range: PortRange, next: AtomicU16, public: Vec<IpAddr> },
}

/// Shared by every session: settings and the media ports.
pub struct Transport {
    media: MediaPorts,
    /// ICE-lite (RFC 8445 §2.5): answer checks, never send them.
    lite: bool,
    /// ICE disconnected / failed timeouts and keepalive interval.
    ice_timeouts: (Duration, Duration, Duration),
    /// How long a session may take to connect (ICE, then DTLS) before it is given up.
    connect_deadline: Duration,
    ice_servers: Vec<RTCIceServer>,
    pli_interval: Duration,
    /// Where a receiver's bandwidth estimate starts, bits/s (above the largest tier's need, so a
    /// receiver starts on the full tier and only feedback moves it).
    initial_estimate_bps: f64,
}

/// The addresses host candidates are announced at: `--public-ip`; else the bound address; else,
/// for a wildcard bind, every interface's address of that family that a peer could use (not
/// loopback, unspecified or link-local), plus loopback when `loopback_too` (a local server) or
/// when there is no other.
pub fn announced_ips(public: &[IpAddr], bind: IpAddr, loopback_too: bool) -> Vec<IpAddr> {
    if !public.is_empty() {
        return public.to_vec();
    }
    if !bind.is_unspecified() {
        return vec![bind];
    }
    let link_local = |ip: &IpAddr| match ip {
        IpAddr::V4(v) => v.is_link_local(),
        IpAddr::V6(v) => (v.segments()[0] & 0xffc0) == 0xfe80,
    };
    let mut ips: Vec<IpAddr> = rtc::shared::ifaces::ifaces()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.addr.map(|a| a.ip()))
        .filter(|ip| ip.is_ipv4() == bind.is_ipv4() && !ip.is_loopback() && !ip.is_unspecified() && !link_local(ip))
        .collect();
    ips.dedup();
    if ips.is_empty() || loopback_too {
        ips.push(if bind.is_ipv4() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(Ipv6Addr::LOCALHOST) });
    }
    ips
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
    /// How long a session may take from its answer to `connected` (ICE and the DTLS handshake)
    /// before the room gives it up: twice `--peer-timeout-ms` (at least 10 s). ICE failure ends a
    /// session sooner; this also catches a DTLS handshake that failed after ICE connected, which
    /// leaves webrtc-rs's connection state at `connecting` for good.
    pub fn connect_deadline(&self) -> Duration {
        self.connect_deadline
    }

    /// Transport settings from the server configuration; binds the shared media ports (needs a
    /// tokio runtime).
    ///
    /// # Errors
    /// [`TransportError::Bind`] when a shared port cannot be bound (taken, no permission).
    pub fn new(cfg: &Config) -> Result<Self, TransportError> {
        let bind_ip = cfg.media_bind_ip();
        let media = match cfg.udp_ports {
            Some(range) => {
                MediaPorts::Range { bind_ip, range, next: AtomicU16::new(range.low), public: cfg.public_ips.clone() }
            }
            None => {
                let tcp = (!cfg.no_ice_tcp).then(|| SocketAddr::new(bind_ip, cfg.tcp_port));
                let mux = mux::Mux::bind(SocketAddr::new(bind_ip, cfg.udp_port), tcp)
                    .map_err(|e| TransportError::Bind(e.to_string()))?;
                let ips = announced_ips(&cfg.public_ips, bind_ip, cfg.listen.ip().is_loopback());
                let udp = mux.udp.local_addr().port();
                let mut announce: Vec<HostCandidate> =
                    ips.iter().map(|&ip| HostCandidate { ip, port: udp, tcp: false }).collect();
                if let Some(t) = &mux.tcp {
                    let port = t.local_addr().port();
                    announce.extend(ips.iter().map(|&ip| HostCandidate { ip, port, tcp: true }));
                }
                tracing::info!(udp = %mux.udp.local_addr(), tcp = ?mux.tcp.as_ref().map(|t| t.local_addr()), announce = ?ips, "shared media ports");
                MediaPorts::Shared { mux, announce }
            }
        };
        let half = Duration::from_millis(cfg.peer_timeout_ms / 2);
        let connect_deadline = Duration::from_millis(cfg.peer_timeout_ms).max(Duration::from_secs(5)) * 2;
        Ok(Self {
            connect_deadline,
            media,
            lite: cfg.ice_lite,
            // Consent (RFC 7675): the agent checks the selected pair every 2 s; with nothing heard
            // for half the timeout the connection is `disconnected`, for all of it `failed`, and
            // the participant is removed. An ICE-lite agent sends no checks and relies on the
            // client's (about every 5 s in browsers): it waits at least 8 + 7 s.
            ice_timeouts: if cfg.ice_lite {
                (half.max(Duration::from_secs(8)), half.max(Duration::from_secs(7)), Duration::from_secs(2))
            } else {
                (half, half, Duration::from_secs(2))
            },
            ice_servers: cfg.ice_servers.iter().map(|u| parse_ice_server(u)).collect(),
            pli_interval: Duration::from_millis(cfg.pli_interval_ms),
            initial_estimate_bps: cfg.video_kbps as f64 * 1000.0 * 2.5,
        })
    }

    /// The shared UDP port's address and counters, when media uses one.
    pub fn shared_udp(&self) -> Option<&mux::udp::UdpMux> {
        match &self.media {
            MediaPorts::Shared { mux, .. } => Some(&mux.udp),
            MediaPorts::Range { .. } => None,
        }
    }

    /// The shared ICE-TCP port's address, when there is one.
    pub fn shared_tcp_addr(&self) -> Option<SocketAddr> {
        match &self.media {
            MediaPorts::Shared { mux, .. } => mux.tcp.as_ref().map(|t| t.local_addr()),
            MediaPorts::Range { .. } => None,
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
        // A sending section that declares no SSRC gets a placeholder: webrtc-rs refuses it
        // otherwise, and the real one is declared from its first packet (`demux`). A section that
        // names no track gets a name: webrtc-rs tells remote tracks apart by it.
        let (offer, dropped) = offer::filter_candidates(offer);
        if dropped > 0 {
            tracing::info!(
                dropped,
                "remote candidates not checked (link-local, multicast, unspecified or unparseable)"
            );
        }
        let offer = demux::name_unnamed_tracks(&demux::declare_missing_ssrcs(&offer));
        let offer = RTCSessionDescription::offer(offer).map_err(|e| TransportError::Offer(e.to_string()))?;
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
        let demux_map = Arc::new(std::sync::Mutex::new(None));
        let (unbound_tx, unbound_rx) = mpsc::unbounded_channel();
        let watch = demux::SsrcWatch::new(demux_map.clone(), unbound_tx);
        let sent = Arc::new(crate::media::retransmit::SentMap::default());
        let responder = nack::SharedNackResponder::new(sent.clone(), counters.clone());
        let (pc, bandwidth) = self.build(handler, plan.receive_video.is_some(), watch, responder).await?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let offer_text = offer.sdp.clone();
        let result = async {
            pc.set_remote_description(offer).await.map_err(|e| TransportError::Offer(e.to_string()))?;
            let video = match plan.receive_video {
                Some(codec) => Some(
                    LocalTrack::add(
                        &pc,
                        id,
                        RtpCodecKind::Video,
                        rtp_codec(codec.spec()),
                        counters.clone(),
                        Some(sent),
                    )
                    .await?,
                ),
                None => None,
            };
            let audio = if plan.receive_audio {
                Some(
                    LocalTrack::add(&pc, id, RtpCodecKind::Audio, rtp_codec(&codec::OPUS), counters.clone(), None)
                        .await?,
                )
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
            let sdp = match &self.media {
                MediaPorts::Shared { announce, .. } => answer::replace_candidates(&sdp, announce),
                MediaPorts::Range { public, .. } => answer::publish_host_candidates(&sdp, public),
            };
            for t in video.iter().chain(audio.iter()) {
                t.resolve_payload_type().await;
            }
            *demux_map.lock().unwrap() = Some(demux::DemuxMap::new(&offer_text, &sdp));
            tokio::spawn(
                redeclare_streams(Arc::downgrade(&pc), offer_text.clone(), unbound_rx, counters.clone())
                    .instrument(tracing::Span::current()),
            );
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
        watch: demux::SsrcWatch,
        responder: nack::SharedNackResponder,
    ) -> Result<(impl PeerConnection + use<>, Option<Arc<bwe::Estimate>>), TransportError> {
        let mut media_engine = media_engine(Feedback::Full)?;
        let registry = interceptors(&mut media_engine, NackTiming::Prompt, Some(responder))?;
        let registry = registry
            .with(rtcp::SLOT.into(), rtcp::KeyframeRequestInterceptor::default())
            .with(demux::SLOT.into(), watch);
        let (registry, bandwidth) = if estimate {
            let (r, e) = bwe::configure(registry, &mut media_engine, self.initial_estimate_bps).map_err(rtc_err)?;
            (r, Some(e))
        } else {
            (registry, None)
        };
        // No mDNS: Tessera announces plain IPs, and joining the multicast group fails on hosts
        // without a multicast-capable interface (a loopback-only container).
        let (disconnected, failed, keepalive) = self.ice_timeouts;
        let settings = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_ice_timeouts(Some(disconnected), Some(failed), Some(keepalive))
            .with_lite(self.lite);
        let builder = PeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(handler);
        match &self.media {
            MediaPorts::Shared { mux, .. } => {
                // The shared port routes a client to this connection by the ufrag of its checks.
                let (ufrag, pwd) = mux::ice_credentials();
                let loopback = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
                let mut builder = builder
                    .with_runtime(mux.runtime(&ufrag))
                    .with_setting_engine(settings.with_ice_credentials(ufrag, pwd).build())
                    // No STUN/TURN for the server's own agent: their answers could not be routed
                    // back to one connection, and the server announces its addresses itself.
                    .with_configuration(RTCConfigurationBuilder::new().build())
                    .with_udp_addrs(vec![loopback]);
                if mux.tcp.is_some() {
                    builder = builder.with_tcp_addrs(vec![loopback]);
                }
                let pc = builder.build().await.map_err(rtc_err)?;
                Ok((pc, bandwidth))
            }
            MediaPorts::Range { bind_ip, range, next, .. } => {
                let port = if range.low == 0 {
                    0
                } else {
                    let p = next.fetch_add(1, Ordering::Relaxed);
                    if p < range.low || p > range.high {
                        next.store(range.low + 1, Ordering::Relaxed);
                        range.low
                    } else {
                        p
                    }
                };
                // An ICE-lite agent gathers nothing but host candidates (and refuses servers).
                let servers = if self.lite { vec![] } else { self.ice_servers.clone() };
                let config = RTCConfigurationBuilder::new().with_ice_servers(servers).build();
                let built = builder
                    .with_configuration(config)
                    .with_setting_engine(settings.build())
                    .with_udp_addrs(vec![SocketAddr::new(*bind_ip, port)])
                    .build()
                    .await;
                match built {
                    Ok(pc) => Ok((pc, bandwidth)),
                    Err(e) if range.low == 0 => Err(rtc_err(e)),
                    Err(e) => {
                        tracing::debug!(port, "bind failed: {e}");
                        Err(TransportError::NoPort(*range))
                    }
                }
            }
        }
    }
}

/// Declares the SSRCs of a publisher's streams that its offer got wrong (or left out), as
/// [`demux::SsrcWatch`] finds them: the offer with that section's `a=ssrc` corrected is applied
/// again, with a new answer set locally (the client's state does not change: same ICE, DTLS,
/// MIDs and codecs). Ends with the connection.
async fn redeclare_streams(
    pc: std::sync::Weak<dyn PeerConnection>,
    mut offer: String,
    mut unbound: mpsc::UnboundedReceiver<demux::Unbound>,
    counters: Arc<SessionCounters>,
) {
    while let Some(u) = unbound.recv().await {
        let Some(mid) = u.mid else {
            counters.unmapped_streams.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                ssrc = u.ssrc,
                payload_type = u.payload_type,
                "an RTP stream no m-section claims (no MID extension, an ambiguous payload type): dropped"
            );
            continue;
        };
        let Some(pc) = pc.upgrade() else { return };
        tracing::info!(ssrc = u.ssrc, %mid, payload_type = u.payload_type, "an RTP stream with an undeclared SSRC: declaring it for its m-section (RFC 8843 §9.2)");
        offer = demux::declare_ssrc(&offer, &mid, u.ssrc);
        let applied = async {
            let desc = RTCSessionDescription::offer(offer.clone()).map_err(rtc_err)?;
            pc.set_remote_description(desc).await.map_err(rtc_err)?;
            let answer = pc.create_answer(None).await.map_err(rtc_err)?;
            pc.set_local_description(answer).await.map_err(rtc_err)
        };
        match applied.await {
            Ok(()) => {
                counters.redeclared_streams.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(ssrc = u.ssrc, %mid, "could not declare the stream: {e}"),
        }
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

/// How often a receiver repeats its NACKs for what is still missing (RFC 4585 §6.2.1). webrtc-rs
/// defaults to 100 ms, which with a 50 ms jitter buffer (`--jitter-ms`) lets a retransmission
/// arrive only after the frame was given up; browsers ask within a few ms of seeing the gap.
pub const NACK_INTERVAL: Duration = Duration::from_millis(20);
/// NACKs for one missing packet at most (webrtc-rs: unlimited): with [`NACK_INTERVAL`], asking
/// for 100 ms, after which the packet is too late for the jitter buffer anyway; unlimited NACKs
/// every 20 ms make a congested downlink carry a retransmission storm.
pub const MAX_NACKS_PER_PACKET: u16 = 5;

/// How a receiver NACKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NackTiming {
    /// Every [`NACK_INTERVAL`], [`MAX_NACKS_PER_PACKET`] times at most: the server.
    Prompt,
    /// webrtc-rs's default (every 100 ms, no limit): the load generator's peers on loopback or
    /// behind a rate cap, whose drops happen above SRTP, so a retransmission would be refused as
    /// a replay and only add load.
    WebrtcRsDefault,
}

/// webrtc-rs's default interceptors (`register_default_interceptors`: NACK generator and
/// responder, simulcast header extensions, TWCC receiver, sender and receiver reports) with the
/// NACK generator asking every [`NACK_INTERVAL`], [`MAX_NACKS_PER_PACKET`] times at most, for the
/// server and the load generator alike. `responder`: answer NACKs from the encoder branches'
/// shared history (the server) instead of webrtc-rs's per-stream send buffer (1024 packets per
/// stream; the load generator's publishers).
///
/// # Errors
/// [`TransportError::WebRtc`] if the media engine refuses a header extension.
pub fn interceptors(
    media_engine: &mut MediaEngine,
    nack: NackTiming,
    responder: Option<nack::SharedNackResponder>,
) -> Result<Registry, TransportError> {
    use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder, Slot};
    use rtc::peer_connection::configuration::interceptor_registry as defaults;
    for parameter in ["", "pli"] {
        let fb = RTCPFeedback { typ: "nack".into(), parameter: parameter.into() };
        media_engine.register_feedback(fb, RtpCodecKind::Video);
    }
    let generator = match nack {
        NackTiming::Prompt => {
            NackGeneratorBuilder::new().with_interval(NACK_INTERVAL).with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
        }
        NackTiming::WebrtcRsDefault => NackGeneratorBuilder::new(),
    };
    let registry = match responder {
        Some(shared) => Registry::new().with(Slot::NackResponder, shared),
        None => Registry::new().with(Slot::NackResponder, NackResponderBuilder::new().build()),
    };
    let registry = registry.with(Slot::NackGenerator, generator.build());
    defaults::configure_simulcast_extension_headers(media_engine).map_err(rtc_err)?;
    let registry = defaults::configure_twcc_receiver_only(registry, media_engine).map_err(rtc_err)?;
    Ok(defaults::configure_rtcp_reports(registry))
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
