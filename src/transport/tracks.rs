//! The tracks of a session: what a participant publishes ([`RemoteTrack`], with its PLI sender),
//! what Tessera sends it on ([`LocalTrack`], the send loops' `ReceiverTrack`), and the session
//! that holds them ([`Session`]).

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, RTCPeerConnectionState};

use super::{SessionCounters, TransportError, bwe, rtc_err, rtcp};
use crate::codec::VideoCodec;
use crate::media::downstream::ReceiverTrack;
use crate::media::retransmit::{History, SentMap};

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
pub(super) struct PliSettings {
    pub(super) interval: Duration,
    pub(super) counters: Arc<SessionCounters>,
}

/// A track a participant publishes.
pub struct RemoteTrack {
    pub(super) track: Arc<dyn TrackRemote>,
    /// What it carries.
    pub kind: RemoteKind,
    /// Its SSRC.
    pub ssrc: u32,
    pub(super) pli: PliSettings,
    pub(super) runtime: tokio::runtime::Handle,
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

    /// The next RTP packet or simulcast layer of the track; `None` once it has ended. A simulcast
    /// track (RFC 8853 `a=rid` layers) announces each layer when its first packet arrives, and
    /// delivers every layer's packets interleaved (tell them apart by SSRC).
    pub async fn next(&self) -> Option<Inbound> {
        loop {
            match self.track.poll().await? {
                TrackRemoteEvent::OnRtpPacket(p) => return Some(Inbound::Rtp(p)),
                TrackRemoteEvent::OnOpen(init) => {
                    if let Some(rid) = init.rid.filter(|r| !r.is_empty()) {
                        return Some(Inbound::Layer { ssrc: init.ssrc, rid });
                    }
                }
                TrackRemoteEvent::OnEnded | TrackRemoteEvent::OnError => return None,
                _ => {}
            }
        }
    }

    /// A handle that asks the publisher for a keyframe (PLI, RFC 4585 §6.3.1), at most once per
    /// `--pli-interval-ms`; callable from any thread. Each handle keeps its own rate limit.
    pub fn keyframe_requester(&self) -> Arc<dyn Fn() + Send + Sync> {
        self.keyframe_requester_for(self.ssrc)
    }

    /// [`RemoteTrack::keyframe_requester`] asking for the stream whose SSRC `ssrc` holds at each
    /// call (the simulcast layer forwarded now).
    pub fn keyframe_requester_following(&self, ssrc: Arc<AtomicU32>) -> Arc<dyn Fn() + Send + Sync> {
        let counters = self.pli.counters.clone();
        pli_requester_following(self.track.clone(), ssrc, self.pli.interval, self.runtime.clone(), move || {
            counters.plis_sent.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// [`RemoteTrack::keyframe_requester`] for the stream `ssrc` of this track (a simulcast
    /// layer).
    pub fn keyframe_requester_for(&self, ssrc: u32) -> Arc<dyn Fn() + Send + Sync> {
        let counters = self.pli.counters.clone();
        pli_requester(self.track.clone(), ssrc, self.pli.interval, self.runtime.clone(), move || {
            counters.plis_sent.fetch_add(1, Ordering::Relaxed);
        })
    }
}

/// What a remote track delivers.
#[derive(Debug)]
pub enum Inbound {
    /// An RTP packet.
    Rtp(rtc::rtp::Packet),
    /// A simulcast layer started: its SSRC and RTP stream id (`a=rid`).
    Layer {
        /// The layer's SSRC.
        ssrc: u32,
        /// Its rid.
        rid: String,
    },
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
    pli_requester_following(track, Arc::new(AtomicU32::new(ssrc)), interval, runtime, on_sent)
}

/// [`pli_requester`] whose media SSRC is read at each call from `ssrc` (the simulcast layer
/// forwarded now).
pub fn pli_requester_following(
    track: Arc<dyn TrackRemote>,
    ssrc: Arc<AtomicU32>,
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
        let ssrc = ssrc.load(Ordering::Relaxed);
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
    /// Where the composite's NACKs are answered from ([`super::nack::SharedNackResponder`]).
    sent: Option<Arc<SentMap>>,
}

impl LocalTrack {
    pub(super) async fn add(
        pc: &Arc<dyn PeerConnection>,
        id: &str,
        kind: RtpCodecKind,
        codec: RTCRtpCodec,
        counters: Arc<SessionCounters>,
        sent: Option<Arc<SentMap>>,
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
        Ok(Arc::new(Self { track, sender, ssrc, payload_type: AtomicU16::new(0), mime, counters, sent }))
    }

    pub(super) async fn resolve_payload_type(&self) {
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

    fn sent_from(&self, first_seq: u16, seq_offset: u16, history: Arc<History>) {
        if let Some(sent) = &self.sent {
            sent.begin(first_seq, seq_offset, history);
        }
    }
}

/// One participant's peer connection and the tracks Tessera sends on it.
pub struct Session {
    pub(super) pc: Arc<dyn PeerConnection>,
    /// The composite track, when the participant receives video.
    pub video: Option<Arc<LocalTrack>>,
    /// The mix track, when the participant receives audio.
    pub audio: Option<Arc<LocalTrack>>,
    pub(super) state: watch::Receiver<RTCPeerConnectionState>,
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
