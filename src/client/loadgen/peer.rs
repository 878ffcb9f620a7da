//! A WebRTC peer joined to a Tessera room: join (offer, POST, answer, connect, publish), wait on
//! what arrives (frames, tones, events), statistics, leave.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use rtc::ice::network_type::NetworkType;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::sync::{mpsc, watch};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, RTCConfigurationBuilder, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

use super::http::http_auth;
use super::publish::{
    Decorate, forward_layer_keyframe_requests, keep_only_video_codec, local_track, local_track_layers, publish,
    publish_with, start_generator,
};
use super::receive::{Handler, Received};
use super::{
    Frame, IcePath, LoadgenError, PeerOpts, ReceiveStats, Via, VideoSource, analysis, layer_rid, marker, netcap, talk,
    w,
};

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
    /// The lossy relays its media goes through ([`PeerOpts::link`]); they stop when dropped.
    _relays: Vec<super::lossy::Relay>,
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

/// An offer SDP (receive-only video and audio, loopback host candidates, gathering complete) from a
/// peer connection that is closed again at once: a client that asks to join and then never answers
/// a connectivity check. For tests of what the server does with joins that never connect.
///
/// # Errors
/// [`LoadgenError`] when webrtc-rs cannot build the connection or the offer.
pub async fn offer_only() -> Result<String, LoadgenError> {
    let mut me = crate::transport::media_engine(crate::transport::Feedback::None).map_err(w)?;
    let registry =
        crate::transport::interceptors(&mut me, crate::transport::NackTiming::WebrtcRsDefault, None).map_err(w)?;
    let (gather_tx, mut gather_rx) = mpsc::channel(1);
    let (state_tx, _state_rx) = watch::channel(RTCPeerConnectionState::New);
    let (tick_tx, _tick) = watch::channel(0u64);
    let handler = Arc::new(Handler {
        gather_tx,
        state_tx,
        received: Arc::new(Received { count_only: true, ..Default::default() }),
        tick_tx: Arc::new(tick_tx),
        pipelines: Arc::new(Mutex::new(vec![])),
    });
    let settings = SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled);
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_setting_engine(settings.build())
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .build()
        .await
        .map_err(w)?;
    let init = || Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() });
    pc.add_transceiver_from_kind(RtpCodecKind::Video, init()).await.map_err(w)?;
    pc.add_transceiver_from_kind(RtpCodecKind::Audio, init()).await.map_err(w)?;
    let offer = pc.create_offer(None).await.map_err(w)?;
    pc.set_local_description(offer).await.map_err(w)?;
    let _ = tokio::time::timeout(Duration::from_secs(5), gather_rx.recv()).await;
    let sdp = pc.local_description().await.ok_or_else(|| w("no local description"))?.sdp;
    let _ = pc.close().await;
    Ok(sdp)
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
        let feedback = if opts.rtx { crate::transport::Feedback::Full } else { crate::transport::Feedback::None };
        let mut me = crate::transport::media_engine(feedback).map_err(w)?;
        // Behind a lossy relay (below SRTP) retransmissions heal the loss: NACK as browsers do.
        let nack = match opts.link {
            Some(_) => crate::transport::NackTiming::Prompt,
            None => crate::transport::NackTiming::WebrtcRsDefault,
        };
        let registry = crate::transport::interceptors(&mut me, nack, None)
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
        let jitter_ms = if opts.link.is_some() { super::receive::LOSSY_JITTER_MS } else { super::receive::JITTER_MS };
        let received =
            Arc::new(Received { keep_pixels, count_only: !opts.decode, probe, jitter_ms, ..Default::default() });
        let pipelines = Arc::new(Mutex::new(vec![]));
        let handler_tick = Arc::new(tick_tx);
        let handler = Arc::new(Handler {
            gather_tx,
            state_tx,
            received: received.clone(),
            tick_tx: handler_tick.clone(),
            pipelines: pipelines.clone(),
        });
        let settings = SettingEngineBuilder::new().with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled);
        let builder = PeerConnectionBuilder::new()
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_handler(handler);
        let builder = match &opts.ice {
            IcePath::Loopback => {
                builder.with_setting_engine(settings.build()).with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            }
            IcePath::TcpOnly => builder
                .with_setting_engine(settings.with_network_types(vec![NetworkType::Tcp4, NetworkType::Tcp6]).build())
                .with_tcp_addrs(vec!["127.0.0.1:0".to_string()])
                .with_udp_addrs(Vec::<String>::new()),
            IcePath::Servers(urls) => {
                let servers = urls.iter().map(|u| crate::transport::parse_ice_server(u)).collect();
                builder
                    .with_configuration(RTCConfigurationBuilder::new().with_ice_servers(servers).build())
                    .with_setting_engine(settings.build())
                    .with_udp_addrs(vec!["0.0.0.0:0".to_string()])
            }
        };
        let pc = builder.build().await.map_err(w)?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let seed = crate::ids::random_u32();
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
            let t = match &opts.video {
                VideoSource::SimulcastFiles(_) | VideoSource::SimulcastColour(_) => local_track_layers(
                    RtpCodecKind::Video,
                    crate::codec::VP8.mime,
                    &layer_ssrcs(&opts.video, video_ssrc),
                ),
                _ => local_track(RtpCodecKind::Video, crate::codec::VP8.mime, video_ssrc),
            };
            pc.add_transceiver_from_track(t.clone(), init(true)).await.map_err(w)?;
            video_track = Some(t);
        } else if opts.receive {
            pc.add_transceiver_from_kind(RtpCodecKind::Video, init(false)).await.map_err(w)?;
        }
        if opts.tone_hz.is_some() || opts.talk.is_some() {
            let t = local_track(RtpCodecKind::Audio, crate::codec::OPUS.mime, audio_ssrc);
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
        } else if let Some(first) = opts.video_codecs.first() {
            sdp = super::publish::prefer_video_codec(&sdp, first);
        }
        if let Some(edit) = opts.offer_edit {
            sdp = edit(sdp);
        }
        // Percent-encode the name for the query string (RFC 3986 unreserved characters stay).
        let name: String = opts
            .name
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let source = opts.source.map(|s| format!("&source={s}")).unwrap_or_default();
        let path = match opts.via {
            Via::Participant => format!("/v1/rooms/{room}/participants?name={name}{source}"),
            Via::Whip => format!("/whip/{room}?name={name}"),
            Via::Whep => format!("/whep/{room}?name={name}"),
        };
        let posted_at = Instant::now();
        let sdp_sent = sdp.clone();
        let resp = http_auth(
            "POST",
            &format!("{base}{path}"),
            Some("application/sdp"),
            sdp.into_bytes(),
            opts.token.as_deref(),
        )
        .await?;
        if resp.status != 201 || resp.content_type.as_deref() != Some("application/sdp") {
            return Err(LoadgenError::Refused { status: resp.status, reason: resp.body });
        }
        let location = resp.location.ok_or_else(|| LoadgenError::Http("201 without Location".into()))?;
        let id = location.rsplit('/').next().unwrap_or_default().to_string();
        let level_ext = crate::codec::extmap_id(&resp.body, "audio", crate::codec::extmap::AUDIO_LEVEL);
        if opts.talk.is_some()
            && level_ext != crate::codec::extmap_id(&sdp_sent, "audio", crate::codec::extmap::AUDIO_LEVEL)
        {
            tracing::warn!(offer = ?crate::codec::extmap_id(&sdp_sent, "audio", crate::codec::extmap::AUDIO_LEVEL), answer = ?level_ext, "audio-level extension ids differ");
        }
        let mut answer_sdp = resp.body;
        // A bad network: each of the server's UDP ports is reached through a lossy relay.
        let mut relays = vec![];
        if let (Some(spec), IcePath::Loopback) = (opts.link, &opts.ice) {
            for port in super::lossy::udp_host_ports(&answer_sdp) {
                let seed = u64::from(crate::ids::random_u32()) << 32 | u64::from(crate::ids::random_u32());
                let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let relay = super::lossy::Relay::start(to, spec, seed).await.map_err(w)?;
                relays.push((port, relay));
            }
            answer_sdp = super::lossy::redirect_candidates(&answer_sdp, |p| {
                relays.iter().find(|(q, _)| *q == p).map(|(_, r)| r.addr.port())
            });
        }
        pc.set_remote_description(RTCSessionDescription::answer(answer_sdp.clone()).map_err(w)?).await.map_err(w)?;
        if opts.ice == IcePath::TcpOnly {
            // webrtc-rs dials a passive TCP candidate only when it is added as a trickled one
            // (browsers dial those of the SDP too).
            for line in answer_sdp.lines().filter(|l| l.contains(" tcp ") && l.ends_with("tcptype passive")) {
                let candidate = line.trim_start_matches("a=").to_string();
                let init = webrtc::peer_connection::RTCIceCandidateInit { candidate, ..Default::default() };
                pc.add_ice_candidate(init).await.map_err(w)?;
            }
        }
        // Through an impaired link a lost DTLS flight is resent after 1, 2, 4, 8 s (RFC 6347
        // §4.2.4.1): wait as long as the server does (twice its peer timeout, 20 s by default).
        let wait = if opts.link.is_some_and(|l| l.loss > 0.0) { 20 } else { 10 };
        tokio::time::timeout(Duration::from_secs(wait), async {
            loop {
                if *state_rx.borrow_and_update() == RTCPeerConnectionState::Connected {
                    return Ok(());
                }
                if state_rx.changed().await.is_err() {
                    return Err(LoadgenError::ConnectTimeout(wait));
                }
            }
        })
        .await
        .map_err(|_| LoadgenError::ConnectTimeout(wait))??;
        if let (Some(t), true) =
            (&video_track, matches!(opts.video, VideoSource::SimulcastFiles(_) | VideoSource::SimulcastColour(_)))
        {
            publish_simulcast(&opts.video, &sdp_sent, &answer_sdp, video_ssrc, t.clone(), &pipelines)?;
        } else if let Some(t) = video_track {
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
                VideoSource::None | VideoSource::SimulcastFiles(_) | VideoSource::SimulcastColour(_) => unreachable!(),
            };
            let sync = !matches!(opts.video, VideoSource::Flash | VideoSource::Marker);
            let desc = format!(
                "{src} ! rtpvp8pay pt=96 ssrc={video_ssrc} mtu=1200 picture-id-mode=15-bit ! appsink name=sink sync={sync}"
            );
            publish(&desc, t, &pipelines)?;
        }
        let flash_start = Instant::now() + Duration::from_millis(50);
        if opts.video == VideoSource::Flash {
            start_generator(&pipelines, true, flash_start);
        }
        if opts.video == VideoSource::Marker
            && let Some(src) = pipelines
                .lock()
                .unwrap()
                .last()
                .and_then(|p| p.by_name("gen"))
                .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
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
        Ok(Peer {
            opts,
            location,
            id,
            posted_at,
            base: base.to_string(),
            pc,
            received,
            tick,
            pipelines,
            channel,
            talk,
            _relays: relays.into_iter().map(|(_, r)| r).collect(),
        })
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
    pub async fn wait_event(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
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
        let r =
            http_auth("DELETE", &format!("{}{}", self.base, self.location), None, vec![], self.opts.token.as_deref())
                .await?;
        let _ = self.pc.close().await;
        Ok(r.status)
    }
}

/// The `(rid, ssrc)` of each simulcast layer of `video` (smallest first), from `base`.
fn layer_ssrcs(video: &VideoSource, base: u32) -> Vec<(String, u32)> {
    let n = match video {
        VideoSource::SimulcastFiles(files) => files.len(),
        _ => 3,
    };
    (0..n).map(|i| (layer_rid(i), base.wrapping_add(2 * i as u32) | 1)).collect()
}

/// Publishes each simulcast layer of `video` as its own pipeline on `track`, every packet
/// carrying the MID and RID header extensions (RFC 8852: how the server tells the layers apart;
/// webrtc-rs does not add them), with ids negotiated in `answer` and the MID of `offer`'s video
/// section; a PLI forces a keyframe on the layer it names.
fn publish_simulcast(
    video: &VideoSource,
    offer: &str,
    answer: &str,
    base: u32,
    track: std::sync::Arc<webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP>,
    pipelines: &Arc<Mutex<Vec<gst::Pipeline>>>,
) -> Result<(), LoadgenError> {
    let mid_ext = crate::codec::extmap_id(answer, "video", crate::codec::extmap::MID);
    let rid_ext = crate::codec::extmap_id(answer, "video", crate::codec::extmap::RID);
    let mid = offer
        .split("m=video")
        .nth(1)
        .and_then(|v| v.lines().find_map(|l| l.strip_prefix("a=mid:")))
        .map(|m| bytes::Bytes::from(m.trim().to_string()))
        .unwrap_or_default();
    let mut encoders = vec![];
    for (i, (rid, ssrc)) in layer_ssrcs(video, base).into_iter().enumerate() {
        let src = match video {
            VideoSource::SimulcastFiles(files) => {
                format!("filesrc location=\"{}\" ! matroskademux", files[i].display())
            }
            VideoSource::SimulcastColour((r, g, b)) => {
                let (w, h) = (160 << i, 90 << i);
                format!(
                    "videotestsrc is-live=true pattern=solid-color foreground-color=0xff{r:02x}{g:02x}{b:02x} \
                     ! video/x-raw,format=I420,width={w},height={h},framerate=30/1 \
                     ! vp8enc name=enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate={} threads=1 keyframe-mode=disabled",
                    100_000 << i
                )
            }
            _ => unreachable!(),
        };
        let sync = true;
        let desc = format!(
            "{src} ! rtpvp8pay pt=96 ssrc={ssrc} mtu=1200 picture-id-mode=15-bit ! appsink name=sink sync={sync}"
        );
        let (mid, rid_bytes) = (mid.clone(), bytes::Bytes::from(rid.clone()));
        let decorate: Decorate = Arc::new(move |p: &mut rtc::rtp::Packet| {
            if let Some(id) = mid_ext {
                let _ = p.header.set_extension(id, mid.clone());
            }
            if let Some(id) = rid_ext {
                let _ = p.header.set_extension(id, rid_bytes.clone());
            }
        });
        if let Some(pad) = publish_with(&desc, track.clone(), pipelines, Some(decorate), false)? {
            encoders.push((ssrc, pad));
        }
    }
    forward_layer_keyframe_requests(track, encoders);
    Ok(())
}
