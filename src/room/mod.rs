//! Rooms and participants: join, leave, and the wiring between a participant's transport session
//! and the room's media (its tile and audio source in, the composite and mix out).
//!
//! A [`Room`] is self-contained — its own compositor pipeline, mixer thread and participants — so
//! rooms can later be spread across machines behind a shared registry without touching this code.

pub mod layout;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use rtc::shared::marshal::Marshal;
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tracing::Instrument;
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::media::audio::{AudioError, AudioMixer};
use crate::media::compositor::{OutputFormat, RoomVideo, VideoError};
use crate::media::fanout::{RtpRewriter, VideoCodec};
use crate::media::ingest::VideoIngest;
use crate::pipelines::Backends;
use crate::transport::{RemoteKind, RemoteTrack, Session, SessionEvents, SessionPlan, Transport, TransportError};

/// How a participant joined (shown in the room JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinKind {
    /// `POST /v1/rooms/{room}/participants`.
    Participant,
    /// `POST /whip/{room}` (RFC 9725 ingest).
    Whip,
    /// `POST /whep/{room}` (viewer).
    Whep,
}

/// Errors of joining a room.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RoomError {
    /// The transport refused the offer or could not build a connection.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The room's video could not be built or subscribed to.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// The room's mixer could not start.
    #[error(transparent)]
    Audio(#[from] AudioError),
}

/// What every room shares: transport settings and media settings.
pub struct RoomDeps {
    /// Builds peer connections.
    pub transport: Transport,
    /// Encoder/decoder fragments.
    pub backends: Backends,
    /// Composite format.
    pub format: OutputFormat,
    /// Opus mix bitrate, kbit/s.
    pub audio_kbps: u32,
    /// Inbound video jitter buffer, ms.
    pub jitter_ms: u32,
}

/// Every room of this server, by name. The first join creates a room; the last leave ends it.
pub struct Rooms {
    deps: Arc<RoomDeps>,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

impl Rooms {
    /// An empty registry.
    pub fn new(deps: RoomDeps) -> Self {
        Self { deps: Arc::new(deps), rooms: Mutex::new(HashMap::new()) }
    }

    /// The shared settings.
    pub fn deps(&self) -> &RoomDeps {
        &self.deps
    }

    /// A room by name.
    pub fn get(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.lock().unwrap().get(name).cloned()
    }

    /// Names of every room.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.rooms.lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    /// Joins room `room` (creating it) with an SDP `offer`; returns the participant id and the answer.
    ///
    /// # Errors
    /// [`RoomError`] when the room's media cannot start or the transport refuses the offer; then no
    /// participant is created and an otherwise empty new room is ended again.
    pub async fn join(
        self: &Arc<Self>,
        room: &str,
        name: &str,
        kind: JoinKind,
        offer: &str,
        plan: SessionPlan,
    ) -> Result<(String, String), RoomError> {
        let r = {
            let mut rooms = self.rooms.lock().unwrap();
            match rooms.get(room) {
                Some(r) => r.clone(),
                None => {
                    let r = Room::new(room, self.deps.clone(), Arc::downgrade(self))?;
                    rooms.insert(room.to_string(), r.clone());
                    tracing::info!(room, "room created");
                    r
                }
            }
        };
        let res = r.join(name, kind, offer, plan).await;
        if res.is_err() {
            self.end_if_empty(&r);
        }
        res
    }

    /// Removes participant `id` from room `room`. Returns `false` if either is unknown.
    pub async fn leave(&self, room: &str, id: &str) -> bool {
        let Some(r) = self.get(room) else { return false };
        let ok = r.leave(id).await;
        self.end_if_empty(&r);
        ok
    }

    fn end_if_empty(&self, r: &Arc<Room>) {
        let mut rooms = self.rooms.lock().unwrap();
        if r.is_empty() && rooms.get(&r.name).is_some_and(|x| Arc::ptr_eq(x, r)) {
            rooms.remove(&r.name);
            r.video.stop();
            tracing::info!(room = %r.name, "room ended");
        }
    }
}

/// One room: participants, its compositor and its mixer.
pub struct Room {
    name: String,
    deps: Arc<RoomDeps>,
    registry: Weak<Rooms>,
    video: RoomVideo,
    audio: AudioMixer,
    participants: Mutex<Vec<Arc<Participant>>>,
    next_id: AtomicU64,
}

struct Participant {
    id: String,
    name: String,
    kind: JoinKind,
    plan: SessionPlan,
    session: Session,
    joined: Instant,
    publishing_video: AtomicBool,
    publishing_audio: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A participant as the rooms API shows it.
#[derive(Debug, Serialize)]
pub struct ParticipantInfo {
    /// Participant id (the last segment of its `Location`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// How it joined.
    pub kind: JoinKind,
    /// What it publishes now (a track has arrived).
    pub publishes: Media,
    /// Whether it receives the composite and the mix.
    pub receives: Media,
    /// The codec it receives the composite in.
    pub video_codec: Option<VideoCodec>,
    /// Seconds since it joined.
    pub joined_s: f64,
    /// PLIs Tessera sent to this publisher (rate-limited by `--pli-interval-ms`).
    pub plis_sent: u64,
    /// Keyframe requests (PLI/FIR) this receiver sent about the composite.
    pub keyframe_requests: u64,
}

/// Audio/video flags.
#[derive(Debug, Serialize)]
pub struct Media {
    /// Audio.
    pub audio: bool,
    /// Video.
    pub video: bool,
}

/// A tile of the composite, in output pixels.
#[derive(Debug, Serialize)]
pub struct TileInfo {
    /// Whose video it is.
    pub participant: String,
    /// Where it is drawn (letterboxed), absent until the first frame arrives.
    pub rect: Option<layout::Rect>,
}

/// The room as `GET /v1/rooms/{room}` shows it.
#[derive(Debug, Serialize)]
pub struct RoomInfo {
    /// Room name.
    pub room: String,
    /// Participants in join order.
    pub participants: Vec<ParticipantInfo>,
    /// Composite format.
    pub output: OutputFormat,
    /// Layout name.
    pub layout: &'static str,
    /// Tiles in grid order.
    pub tiles: Vec<TileInfo>,
    /// Composite frames produced so far.
    pub frames_out: u64,
    /// Keyframes forced on the room's encoders (coalesced: receivers joining together share one).
    pub keyframes_forced: u64,
    /// Opus encodes in the last 20 ms tick (≤ talkers + 1).
    pub audio_encodes_last_tick: u64,
}

impl Room {
    fn new(name: &str, deps: Arc<RoomDeps>, registry: Weak<Rooms>) -> Result<Arc<Self>, RoomError> {
        let video = RoomVideo::new(name, deps.format, deps.backends.clone(), layout::Layout::Grid, 16)?;
        let audio = AudioMixer::start(name, deps.audio_kbps)?;
        Ok(Arc::new(Self {
            name: name.to_string(),
            deps,
            registry,
            video,
            audio,
            participants: Mutex::new(vec![]),
            next_id: AtomicU64::new(1),
        }))
    }

    /// Room name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The room's compositor.
    pub fn video(&self) -> &RoomVideo {
        &self.video
    }

    /// The room's mixer.
    pub fn audio(&self) -> &AudioMixer {
        &self.audio
    }

    fn is_empty(&self) -> bool {
        self.participants.lock().unwrap().is_empty()
    }

    fn participant(&self, id: &str) -> Option<Arc<Participant>> {
        self.participants.lock().unwrap().iter().find(|p| p.id == id).cloned()
    }

    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let salt = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        format!("p{n}-{:06x}", salt & 0xff_ffff)
    }

    async fn join(
        self: &Arc<Self>,
        name: &str,
        kind: JoinKind,
        offer: &str,
        plan: SessionPlan,
    ) -> Result<(String, String), RoomError> {
        let id = self.new_id();
        let span = tracing::info_span!("participant", room = %self.name, participant = %id);
        let events = Arc::new(Events {
            room: Arc::downgrade(self),
            id: id.clone(),
            listens: plan.receive_audio,
            pending: Mutex::new(Some(vec![])),
        });
        // Subscribe before answering so a failure leaves nothing behind.
        let video_rx = match plan.receive_video {
            Some(codec) => Some(self.video.subscribe(codec)?),
            None => None,
        };
        let (session, answer) =
            self.deps.transport.answer(&id, offer, plan, events.clone()).instrument(span.clone()).await?;
        let p = Arc::new(Participant {
            id: id.clone(),
            name: name.to_string(),
            kind,
            plan,
            session,
            joined: Instant::now(),
            publishing_video: AtomicBool::new(false),
            publishing_audio: AtomicBool::new(false),
            tasks: Mutex::new(vec![]),
        });
        let mut tasks = vec![];
        if let (Some(track), Some(mut rx), Some(codec)) = (p.session.video.clone(), video_rx, plan.receive_video) {
            let (video, p2) = (self.video.clone(), p.clone());
            tasks.push(tokio::spawn(
                async move {
                    if !p2.session.connected().await {
                        return;
                    }
                    let mut rw = RtpRewriter::new(track.ssrc, track.payload_type(), (track.ssrc >> 16) as u16);
                    video.request_keyframe(codec);
                    let mut keyframe_requests = true;
                    loop {
                        tokio::select! {
                            r = rx.recv() => match r {
                                Ok(pkt) => {
                                    if let Some(out) = rw.rewrite(&pkt) {
                                        let _ = track.write(out).await;
                                    }
                                }
                                Err(RecvError::Lagged(n)) => {
                                    tracing::debug!(skipped = n, "receiver fell behind; waiting for a keyframe");
                                    rw.resync();
                                    video.request_keyframe(codec);
                                }
                                Err(RecvError::Closed) => break,
                            },
                            k = track.keyframe_request(), if keyframe_requests => match k {
                                Some(()) => {
                                    p2.session.counters.keyframe_requests_received.fetch_add(1, Ordering::Relaxed);
                                    video.request_keyframe(codec);
                                }
                                None => keyframe_requests = false,
                            },
                        }
                    }
                }
                .instrument(span.clone()),
            ));
        }
        if let Some(track) = p.session.audio.clone() {
            let (mut rx, p2) = (self.audio.subscribe(), p.clone());
            tasks.push(tokio::spawn(
                async move {
                    if !p2.session.connected().await {
                        return;
                    }
                    let mut seq: u16 = (track.ssrc >> 8) as u16;
                    let ts_base = track.ssrc.rotate_left(7);
                    loop {
                        match rx.recv().await {
                            Ok(f) => {
                                let payload = f.for_participant(&p2.id).clone();
                                if payload.is_empty() {
                                    continue;
                                }
                                let mut pkt = rtc::rtp::Packet::default();
                                pkt.header.version = 2;
                                pkt.header.payload_type = track.payload_type();
                                pkt.header.sequence_number = seq;
                                pkt.header.timestamp = ts_base.wrapping_add((f.tick as u32).wrapping_mul(960));
                                pkt.header.ssrc = track.ssrc;
                                pkt.payload = payload;
                                seq = seq.wrapping_add(1);
                                let _ = track.write(pkt).await;
                            }
                            Err(RecvError::Lagged(_)) => {}
                            Err(RecvError::Closed) => break,
                        }
                    }
                }
                .instrument(span.clone()),
            ));
        }
        *p.tasks.lock().unwrap() = tasks;
        self.participants.lock().unwrap().push(p);
        span.in_scope(|| tracing::info!(name, ?kind, ?plan, "joined"));
        events.ready();
        Ok((id, answer))
    }

    async fn leave(&self, id: &str) -> bool {
        let p = {
            let mut ps = self.participants.lock().unwrap();
            let Some(i) = ps.iter().position(|p| p.id == id) else { return false };
            ps.remove(i)
        };
        for t in p.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
        self.video.remove_input(id);
        self.audio.remove_source(id);
        p.session.close().await;
        tracing::info!(room = %self.name, participant = id, "left");
        true
    }

    /// The room as the API shows it.
    pub fn info(&self) -> RoomInfo {
        let participants = self
            .participants
            .lock()
            .unwrap()
            .iter()
            .map(|p| ParticipantInfo {
                id: p.id.clone(),
                name: p.name.clone(),
                kind: p.kind,
                publishes: Media {
                    audio: p.publishing_audio.load(Ordering::Relaxed),
                    video: p.publishing_video.load(Ordering::Relaxed),
                },
                receives: Media { audio: p.plan.receive_audio, video: p.plan.receive_video.is_some() },
                video_codec: p.plan.receive_video,
                joined_s: p.joined.elapsed().as_secs_f64(),
                plis_sent: p.session.counters.plis_sent.load(Ordering::Relaxed),
                keyframe_requests: p.session.counters.keyframe_requests_received.load(Ordering::Relaxed),
            })
            .collect();
        RoomInfo {
            room: self.name.clone(),
            participants,
            output: self.video.format(),
            layout: "grid",
            tiles: self.video.tiles().into_iter().map(|(participant, rect)| TileInfo { participant, rect }).collect(),
            frames_out: self.video.stats().frames_out.load(Ordering::Relaxed),
            keyframes_forced: self.video.stats().keyframes_forced.load(Ordering::Relaxed),
            audio_encodes_last_tick: self.audio.stats().encodes_last_tick.load(Ordering::Relaxed),
        }
    }

    fn on_remote_track(self: &Arc<Self>, id: &str, listens: bool, track: RemoteTrack) {
        let Some(p) = self.participant(id) else { return };
        let span = tracing::info_span!("participant", room = %self.name, participant = %id);
        let room = self.clone();
        let owner = p.clone();
        let handle = match track.kind.clone() {
            RemoteKind::Video(codec) if p.plan.publish_video => {
                let tile = match self.video.add_input(id, &p.name, false) {
                    Ok(t) => t,
                    Err(e) => {
                        span.in_scope(|| tracing::error!("cannot add a tile: {e}"));
                        return;
                    }
                };
                tokio::spawn(
                    async move {
                        // The payload type is the publisher's; learn it from the first packet.
                        let Some(first) = track.next_rtp().await else { return };
                        let requester = track.keyframe_requester();
                        let ingest = match VideoIngest::start(
                            &format!("{}-{}", room.name, p.id),
                            codec,
                            first.header.payload_type,
                            room.deps.jitter_ms,
                            &room.deps.backends,
                            tile,
                            requester.clone(),
                        ) {
                            Ok(i) => i,
                            Err(e) => {
                                tracing::error!("cannot decode video: {e}");
                                return;
                            }
                        };
                        p.publishing_video.store(true, Ordering::Relaxed);
                        requester();
                        tracing::info!(?codec, "publishing video");
                        let mut next = Some(first);
                        while let Some(pkt) = match next.take() {
                            Some(p) => Some(p),
                            None => track.next_rtp().await,
                        } {
                            if let Ok(bytes) = pkt.marshal() {
                                ingest.push_rtp(bytes.freeze());
                            }
                        }
                        // `ingest` drops here (or when the task is aborted on leave): its pipeline stops.
                    }
                    .instrument(span),
                )
            }
            RemoteKind::Audio if p.plan.publish_audio => {
                self.audio.add_source(id, listens);
                p.publishing_audio.store(true, Ordering::Relaxed);
                span.in_scope(|| tracing::info!("publishing audio"));
                tokio::spawn(
                    async move {
                        while let Some(pkt) = track.next_rtp().await {
                            room.audio.push(&p.id, pkt.header.sequence_number, pkt.payload);
                        }
                    }
                    .instrument(span),
                )
            }
            RemoteKind::Unsupported(mime) => {
                span.in_scope(|| tracing::warn!(%mime, "ignoring a track Tessera cannot decode"));
                return;
            }
            _ => return,
        };
        owner.tasks.lock().unwrap().push(handle);
    }
}

/// Transport events of one participant. Tracks that arrive before the participant is in the room
/// (the answer is still on its way back) wait in `pending` until [`Events::ready`].
struct Events {
    room: Weak<Room>,
    id: String,
    listens: bool,
    pending: Mutex<Option<Vec<RemoteTrack>>>,
}

impl Events {
    fn ready(&self) {
        let pending = self.pending.lock().unwrap().take().unwrap_or_default();
        if let Some(room) = self.room.upgrade() {
            for t in pending {
                room.on_remote_track(&self.id, self.listens, t);
            }
        }
    }
}

impl SessionEvents for Events {
    fn on_remote_track(&self, track: RemoteTrack) {
        {
            let mut pending = self.pending.lock().unwrap();
            if let Some(v) = pending.as_mut() {
                v.push(track);
                return;
            }
        }
        if let Some(room) = self.room.upgrade() {
            room.on_remote_track(&self.id, self.listens, track);
        }
    }
    fn on_state(&self, state: RTCPeerConnectionState) {
        tracing::debug!(participant = %self.id, %state, "connection state");
        if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)
            && let Some(room) = self.room.upgrade()
        {
            let id = self.id.clone();
            tokio::spawn(async move {
                if let Some(reg) = room.registry.upgrade() {
                    if reg.leave(&room.name, &id).await {
                        tracing::info!(room = %room.name, participant = %id, %state, "removed after connection ended");
                    }
                }
            });
        }
    }
}
