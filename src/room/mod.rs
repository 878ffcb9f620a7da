//! Rooms and participants: the registry of this node's rooms and each room's lifecycle — join,
//! leave, layout, mute, active speaker — wiring a participant's transport session to the room's
//! media (its tile and audio source in, the composite and mix out).
//!
//! A [`Room`] is self-contained — its own video pipeline, mixer thread, participants and event
//! bus — so rooms can be spread across machines behind a shared registry without touching it.
//! Around it: [`participant`] (one participant's wiring), [`info`] (the API views), [`events`]
//! (room events and the data-channel protocol), [`outputs`] (recordings and egress), [`idle`]
//! (a room nobody is in runs no thread), [`admission`] (the cost model and caps, pure) and
//! [`node`] (the registry's load, readiness and drain).

pub mod admission;
pub mod events;
mod hooks;
mod idle;
pub mod info;
mod kinds;
mod node;
mod options;
mod outputs;
mod participant;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tokio::sync::broadcast;
use tracing::Instrument;

use crate::media::audio::speaker::SpeakerUpdate;
use crate::media::audio::{AudioError, AudioMixer};
use crate::media::downstream::audio::send_audio;
use crate::media::downstream::video::send_video;
use crate::media::downstream::{BandwidthSource, VideoStatus};
use crate::media::layout::Layout;
use crate::media::tiers::OutputFormat;
use crate::media::video::{RoomVideo, VideoError};
use crate::outputs::egress::EgressError;
use crate::outputs::recording::RecordingError;
use crate::pipelines::Backends;
use crate::transport::{Rejected, SessionPlan, Transport, TransportError};
use admission::{Limits, Refusal};
use events::{RoomEvent, Who};
pub use info::{EncoderInfo, Media, ParticipantInfo, RoomInfo, TileInfo};
pub use kinds::{JoinKind, Source};
pub use node::Readiness;
pub use options::RoomOptions;
use outputs::RoomOutputs;
pub use outputs::RoomRecording;
pub use participant::LayersView;
use participant::{Participant, SessionHandler};

/// Events buffered per room for slow data channels.
const EVENTS_CAPACITY: usize = 256;
/// Default cap of visible tiles.
pub const DEFAULT_MAX_VISIBLE: usize = 16;

/// Errors of the room engine, each with the reason a client is told.
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
    /// The room has `max_participants` already.
    #[error("room is full ({0} participants)")]
    Full(usize),
    /// Bad room options or layout.
    #[error("{0}")]
    Invalid(String),
    /// A setting that cannot change while the room runs.
    #[error("{0}")]
    Conflict(String),
    /// No such participant.
    #[error("participant {0:?} not found")]
    NoParticipant(String),
    /// A recording could not start.
    #[error(transparent)]
    Recording(#[from] RecordingError),
    /// No such recording.
    #[error("recording {0:?} not found")]
    NoRecording(String),
    /// An egress could not start.
    #[error(transparent)]
    Egress(#[from] EgressError),
    /// The node is full or draining (`503` with `Retry-After`); nothing was allocated.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// What every room shares: transport settings and media defaults.
pub struct RoomDeps {
    /// Builds peer connections.
    pub transport: Transport,
    /// Encoder/decoder fragments.
    pub backends: Backends,
    /// Default composite format.
    pub format: OutputFormat,
    /// Opus mix bitrate, kbit/s.
    pub audio_kbps: u32,
    /// Inbound video jitter buffer, ms.
    pub jitter_ms: u32,
    /// Folder recordings are written to.
    pub recordings_dir: std::path::PathBuf,
    /// The object store recordings are uploaded to (`--recordings-url`).
    pub storage: Option<Arc<crate::outputs::storage::ObjectStorage>>,
    /// Where room events are POSTed (`--webhook`).
    pub webhooks: crate::outputs::webhook::Webhooks,
}

/// A join request, decided by signaling.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Display name.
    pub name: String,
    /// Endpoint used.
    pub kind: JoinKind,
    /// Camera or screen share.
    pub source: Source,
    /// The SDP offer.
    pub offer: String,
    /// What the session sends and receives.
    pub plan: SessionPlan,
    /// Sections of the offer the answer rejects.
    pub rejected: Vec<Rejected>,
    /// The token's identity, when tokens are in use.
    pub identity: Option<String>,
}

/// Every room of this server, by name. The first join creates a room (unless created with
/// options by `PUT`); the last leave ends a room that was created by a join.
///
/// It also admits: every join and new room is checked against the node's [`Limits`] with the
/// rooms' summed [`RoomLoad::cost`] before anything is made, and refused while the node drains.
pub struct Rooms {
    deps: Arc<RoomDeps>,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    limits: Limits,
    /// No new rooms or joins; rooms end when they empty (`PUT` rooms too).
    draining: AtomicBool,
    /// Cost of the joins admitted whose participant is not in its room yet, units.
    pending: Mutex<node::PendingJoins>,
    /// Woken whenever a room leaves the registry.
    removed: tokio::sync::Notify,
    /// Rooms that left the registry and are still finalizing their recordings.
    finishing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Rooms {
    /// An empty registry with the default [`Limits`] (the load cap from the cores, no other cap).
    pub fn new(deps: RoomDeps) -> Self {
        Self::with_limits(deps, Limits::default())
    }

    /// An empty registry that admits within `limits`.
    pub fn with_limits(deps: RoomDeps, limits: Limits) -> Self {
        Self {
            deps: Arc::new(deps),
            rooms: Mutex::new(HashMap::new()),
            limits,
            draining: AtomicBool::new(false),
            pending: Mutex::default(),
            removed: tokio::sync::Notify::new(),
            finishing: Mutex::new(vec![]),
        }
    }

    /// The shared settings.
    pub fn deps(&self) -> &RoomDeps {
        &self.deps
    }

    /// The node's caps.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A room by name.
    pub fn get(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.lock().unwrap().get(name).cloned()
    }

    /// Every room, by name.
    pub fn all(&self) -> Vec<Arc<Room>> {
        let mut v: Vec<Arc<Room>> = self.rooms.lock().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Number of rooms (idle ones included).
    pub fn len(&self) -> usize {
        self.rooms.lock().unwrap().len()
    }

    /// No rooms.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates room `name` with `options`, or updates the settings that can change live (layout,
    /// visible-tile cap, participant cap) of an existing one. Returns the room and whether it
    /// was created. A room created this way stays until `DELETE`, even when empty, and runs
    /// nothing (no thread, no clock, no encoder) until someone joins.
    ///
    /// # Errors
    /// [`RoomError::Invalid`] for bad options, [`RoomError::Conflict`] for an output format change
    /// on a running room, [`RoomError::Refused`] for a new room on a full or draining node,
    /// media errors when the room cannot start.
    pub fn create_or_update(
        self: &Arc<Self>,
        name: &str,
        options: RoomOptions,
    ) -> Result<(Arc<Room>, bool), RoomError> {
        options.check().map_err(RoomError::Invalid)?;
        let layout = options.parsed_layout().map_err(RoomError::Invalid)?;
        let mut rooms = self.rooms.lock().unwrap();
        if let Some(r) = rooms.get(name).cloned() {
            drop(rooms);
            let cur = r.video.format();
            options.format(cur).map_err(RoomError::Invalid)?;
            if options.changes_format(cur) {
                return Err(RoomError::Conflict("the output format cannot change while the room runs".into()));
            }
            r.update(options, layout);
            return Ok((r, false));
        }
        let format = options.format(self.deps.format).map_err(RoomError::Invalid)?;
        // An idle room costs no load, but it is a room (--max-rooms), and a full node makes none:
        // it must take at least the room's first viewer.
        self.limits.admit(self.node_load(&rooms), admission::CHEAPEST_JOIN, true)?;
        let r = Room::new(
            name,
            self.deps.clone(),
            Arc::downgrade(self),
            format,
            layout.unwrap_or(Layout::Grid),
            options,
            true,
        )?;
        rooms.insert(name.to_string(), r.clone());
        tracing::info!(room = name, "room created by the API");
        Ok((r, true))
    }

    /// Joins room `room` (creating it with the defaults); returns the participant id and the answer.
    ///
    /// # Errors
    /// [`RoomError::Refused`] when the node is full or draining, [`RoomError::Full`] when the
    /// room is: both before anything is made. Otherwise [`RoomError`] when the room's media
    /// cannot start or the transport refuses the offer; then no participant is created and an
    /// otherwise empty new room is ended again.
    pub async fn join(self: &Arc<Self>, room: &str, req: JoinRequest) -> Result<(String, String), RoomError> {
        let (r, _reserved) = {
            let mut rooms = self.rooms.lock().unwrap();
            let existing = rooms.get(room).cloned();
            if let Some(r) = &existing {
                r.check_cap()?;
            }
            let reserved = self.reserve_join(&rooms, room, existing.as_deref(), &req.plan)?;
            let r = match existing {
                Some(r) => r,
                None => {
                    let (deps, reg) = (self.deps.clone(), Arc::downgrade(self));
                    let r = Room::new(room, deps, reg, self.deps.format, Layout::Grid, RoomOptions::default(), false)?;
                    rooms.insert(room.to_string(), r.clone());
                    tracing::info!(room, "room created");
                    r
                }
            };
            (r, reserved)
        };
        let res = r.join(req).await;
        if res.is_err() {
            self.end_if_empty(&r);
        }
        res
    }

    /// Removes participant `id` from room `room` with `reason` (`left`, `kicked`, ...). Returns
    /// `false` if either is unknown.
    pub async fn leave(&self, room: &str, id: &str, reason: &str) -> bool {
        let Some(r) = self.get(room) else { return false };
        let ok = r.leave(id, reason).await;
        self.end_if_empty(&r);
        ok
    }

    /// Ends room `room`: every participant leaves (reason `room ended`) and its media stops.
    pub async fn end(&self, room: &str) -> bool {
        self.end_with(room, "room ended").await
    }

    /// Ends room `room`, its participants leaving with `reason`; its recordings are finalized
    /// before this returns.
    async fn end_with(&self, room: &str, reason: &str) -> bool {
        let Some(r) = self.rooms.lock().unwrap().remove(room) else { return false };
        self.removed.notify_waiters();
        r.stop_recordings().await;
        let ids: Vec<String> = r.participants.lock().unwrap().iter().map(|p| p.id.clone()).collect();
        for id in ids {
            r.leave(&id, reason).await;
        }
        r.video.stop();
        r.hook_room("room_finished");
        tracing::info!(room, reason, "room ended");
        true
    }

    fn end_if_empty(&self, r: &Arc<Room>) {
        let mut rooms = self.rooms.lock().unwrap();
        let stays = r.persistent && !self.draining.load(Ordering::SeqCst);
        if r.is_empty() && stays {
            // A room made by `PUT` stays, idle.
            let room = r.clone();
            tokio::task::spawn_blocking(move || room.park_if_idle());
            return;
        }
        if r.is_empty() && !stays && rooms.get(&r.name).is_some_and(|x| Arc::ptr_eq(x, r)) {
            rooms.remove(&r.name);
            drop(rooms);
            self.removed.notify_waiters();
            // Finalize recordings before the pipeline stops; a drain waits for it.
            let room = r.clone();
            let finishing = tokio::spawn(async move {
                room.stop_recordings().await;
                room.video.stop();
                room.hook_room("room_finished");
            });
            let mut f = self.finishing.lock().unwrap();
            f.retain(|h| !h.is_finished());
            f.push(finishing);
            tracing::info!(room = %r.name, "room ended");
        }
    }
}

/// One room: participants, its video, its mixer and its event bus.
pub struct Room {
    name: String,
    deps: Arc<RoomDeps>,
    registry: Weak<Rooms>,
    video: RoomVideo,
    audio: AudioMixer,
    participants: Mutex<Vec<Arc<Participant>>>,
    options: Mutex<RoomOptions>,
    events: broadcast::Sender<Arc<RoomEvent>>,
    next_id: AtomicU64,
    /// Created by `PUT`: stays when empty.
    persistent: bool,
    created: Instant,
    /// PLIs sent and keyframe requests received by participants who left (totals stay monotonic).
    departed: (AtomicU64, AtomicU64),
    outputs: RoomOutputs,
    /// Joins and outputs setting up with the media awake: it does not park meanwhile. The lock
    /// orders waking and parking.
    media_users: Mutex<usize>,
}

impl Room {
    fn new(
        name: &str,
        deps: Arc<RoomDeps>,
        registry: Weak<Rooms>,
        format: OutputFormat,
        layout: Layout,
        options: RoomOptions,
        persistent: bool,
    ) -> Result<Arc<Self>, RoomError> {
        let cap = options.max_visible.unwrap_or(DEFAULT_MAX_VISIBLE).max(1);
        // Nothing runs until someone joins (or an output starts): see `Room::wake`.
        let video = RoomVideo::new_idle(name, format, deps.backends.clone(), layout, cap)?;
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        // The mixer calls back into the room; the room exists only after the mixer started.
        let slot: Arc<std::sync::OnceLock<Weak<Room>>> = Arc::default();
        let s = slot.clone();
        let on_speaker: crate::media::audio::SpeakerListener = Arc::new(move |u: &SpeakerUpdate, tick: u64| {
            if let Some(room) = s.get().and_then(Weak::upgrade) {
                room.on_speaker(u, tick);
            }
        });
        let config = crate::media::audio::MixerConfig::new(deps.audio_kbps);
        let audio = AudioMixer::idle(name, config, Some(on_speaker))?;
        let room = Arc::new(Self {
            name: name.to_string(),
            deps,
            registry,
            video,
            audio,
            participants: Mutex::new(vec![]),
            options: Mutex::new(options),
            events,
            next_id: AtomicU64::new(1),
            persistent,
            created: Instant::now(),
            departed: Default::default(),
            outputs: RoomOutputs::default(),
            media_users: Mutex::new(0),
        });
        let _ = slot.set(Arc::downgrade(&room));
        room.hook_room("room_started");
        Ok(room)
    }

    /// Room name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The room's video.
    pub fn video(&self) -> &RoomVideo {
        &self.video
    }

    /// The room's mixer.
    pub fn audio(&self) -> &AudioMixer {
        &self.audio
    }

    /// Events of this room (what data channels carry).
    pub fn subscribe_events(&self) -> broadcast::Receiver<Arc<RoomEvent>> {
        self.events.subscribe()
    }

    /// Number of participants.
    pub fn len(&self) -> usize {
        self.participants.lock().unwrap().len()
    }

    /// No participants.
    pub fn is_empty(&self) -> bool {
        self.participants.lock().unwrap().is_empty()
    }

    fn emit(&self, e: RoomEvent) {
        self.hook(&e);
        let _ = self.events.send(Arc::new(e));
    }

    fn participant(&self, id: &str) -> Option<Arc<Participant>> {
        self.participants.lock().unwrap().iter().find(|p| p.id == id).cloned()
    }

    /// The token identity participant `id` joined with: `None` if unknown, `Some(None)` when it
    /// joined without a token.
    pub fn identity_of(&self, id: &str) -> Option<Option<String>> {
        self.participant(id).map(|p| p.identity.clone())
    }

    fn who(&self, id: &str) -> Option<Who> {
        self.participant(id).map(|p| p.who())
    }

    /// A new id with prefix `prefix`: a per-room counter and a random suffix (`p3-a41c07`).
    fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}{n}-{:06x}", crate::ids::random_u32() & 0xff_ffff)
    }

    fn update(&self, options: RoomOptions, layout: Option<Layout>) {
        if let Some(l) = layout {
            self.set_layout(l);
        }
        let mut o = self.options.lock().unwrap();
        if options.max_participants.is_some() {
            o.max_participants = options.max_participants;
        }
        if let Some(cap) = options.max_visible {
            o.max_visible = Some(cap);
            self.video.set_max_visible(cap.max(1));
        }
    }

    /// Sets the layout and tells everyone. A `pinned` layout naming nobody here is refused.
    ///
    /// # Errors
    /// [`RoomError::NoParticipant`] for a pinned layout naming an unknown participant.
    pub fn try_set_layout(&self, layout: Layout) -> Result<(), RoomError> {
        if let Layout::Pinned { participant } = &layout
            && self.participant(participant).is_none()
        {
            return Err(RoomError::NoParticipant(participant.clone()));
        }
        self.set_layout(layout);
        Ok(())
    }

    fn set_layout(&self, layout: Layout) {
        self.video.set_layout(layout.clone());
        self.emit(RoomEvent::LayoutChanged { ts: crate::ids::now_ms(), layout: layout.into() });
    }

    /// The current layout.
    pub fn layout(&self) -> Layout {
        self.video.layout()
    }

    /// Mutes or unmutes a participant's audio and/or video (`None`: unchanged). A muted audio
    /// source is left out of every mix; a muted video shows the placeholder.
    ///
    /// # Errors
    /// [`RoomError::NoParticipant`] for an unknown id.
    pub fn mute(&self, id: &str, audio: Option<bool>, video: Option<bool>, by: &str) -> Result<(), RoomError> {
        let p = self.participant(id).ok_or_else(|| RoomError::NoParticipant(id.into()))?;
        if let Some(a) = audio {
            p.muted_audio.store(a, Ordering::Relaxed);
            self.audio.set_muted(id, a);
        }
        if let Some(v) = video {
            p.muted_video.store(v, Ordering::Relaxed);
        }
        let (a, v) = (p.muted_audio.load(Ordering::Relaxed), p.muted_video.load(Ordering::Relaxed));
        self.video.set_muted(id, a, v);
        self.emit(RoomEvent::MuteChanged {
            ts: crate::ids::now_ms(),
            participant: p.who(),
            audio: a,
            video: v,
            by: by.into(),
        });
        tracing::info!(room = %self.name, participant = id, audio = a, video = v, by, "mute");
        Ok(())
    }

    fn on_speaker(&self, u: &SpeakerUpdate, tick: u64) {
        let before = self.video.speaker();
        self.video.set_speaking(u.speaker.as_deref(), &u.talking, tick);
        if before != u.speaker {
            let who = u.speaker.as_deref().and_then(|id| self.who(id));
            self.emit(RoomEvent::ActiveSpeaker { ts: crate::ids::now_ms(), participant: who });
        }
    }

    async fn join(self: &Arc<Self>, req: JoinRequest) -> Result<(String, String), RoomError> {
        self.check_cap()?;
        let _media = self.wake()?;
        let JoinRequest { name, kind, source, offer, plan, rejected, identity } = req;
        let id = self.new_id("p");
        let span = tracing::info_span!("participant", room = %self.name, participant = %id);
        let handler = SessionHandler::new(self, &id, plan.receive_audio);
        // Subscribe before answering so a failure leaves nothing behind.
        let video_rx = match plan.receive_video {
            Some(codec) => Some(self.video.subscribe(codec)?),
            None => None,
        };
        let (session, answer) =
            self.deps.transport.answer(&id, &offer, plan, &rejected, handler.clone()).instrument(span.clone()).await?;
        // Publishers get a tile now: a placeholder until (unless) video arrives.
        let tile = if plan.publish_video || plan.publish_audio {
            // Rendering the tile's label and placeholder blocks for 5-35 ms: not on a worker
            // that drives other participants' transport (100 joins stalled their media).
            let (video, tid, tname) = (self.video.clone(), id.clone(), name.clone());
            let added =
                tokio::task::spawn_blocking(move || video.add_input(&tid, &tname, source == Source::Screen)).await;
            match added {
                Ok(Ok(t)) => Some(t),
                Ok(Err(e)) => {
                    session.close().await;
                    return Err(e.into());
                }
                Err(e) => {
                    session.close().await;
                    return Err(VideoError::Gst(format!("adding the tile: {e}")).into());
                }
            }
        } else {
            None
        };
        let p = Arc::new(Participant::new(id.clone(), name.clone(), identity, kind, source, plan, session, tile));
        let mut tasks = vec![];
        if let (Some(track), Some(rx), Some(codec)) = (p.session.video.clone(), video_rx, plan.receive_video) {
            let bandwidth = p.session.bandwidth.clone().map(|b| b as Arc<dyn BandwidthSource>);
            let (status, connected): (Arc<VideoStatus>, _) = (p.video_status.clone(), p.session.wait_connected());
            let send = send_video(self.video.clone(), track, rx, codec, bandwidth, status, connected);
            tasks.push(tokio::spawn(send.instrument(span.clone())));
        }
        if let Some(track) = p.session.audio.clone() {
            let send = send_audio(self.audio.subscribe(), id.clone(), track, p.session.wait_connected());
            tasks.push(tokio::spawn(send.instrument(span.clone())));
        }
        tasks.push(tokio::spawn(self.connect_watchdog(&id, p.session.wait_connected()).instrument(span.clone())));
        *p.tasks.lock().unwrap() = tasks;
        let first = {
            let mut ps = self.participants.lock().unwrap();
            ps.push(p.clone());
            ps.len() == 1
        };
        span.in_scope(|| tracing::info!(name, ?kind, ?source, ?plan, "joined"));
        let auto = self.options.lock().unwrap().auto_record;
        if let (true, Some(format)) = (first, auto)
            && !self.outputs.recording_any()
            && let Err(e) = self.start_recording(format, None)
        {
            tracing::error!(room = %self.name, "automatic recording failed: {e}");
        }
        let (source, kind) = (source.as_str().into(), kind.as_str().into());
        self.emit(RoomEvent::Joined { ts: crate::ids::now_ms(), participant: p.who(), source, kind });
        handler.ready();
        Ok((id, answer))
    }

    /// Removes participant `id` if its session is not connected within the transport's
    /// [`crate::transport::Transport::connect_deadline`] (a client that never finished ICE or
    /// DTLS), so it holds no port, tile or load. The removal runs on a task of its own: `leave`
    /// awaits this watchdog's task.
    fn connect_watchdog(
        self: &Arc<Self>,
        id: &str,
        connected: impl std::future::Future<Output = bool> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (room, id, deadline) = (Arc::downgrade(self), id.to_string(), self.deps.transport.connect_deadline());
        async move {
            if tokio::time::timeout(deadline, connected).await.is_ok() {
                return;
            }
            let Some(room) = room.upgrade() else { return };
            tracing::warn!(deadline_s = deadline.as_secs(), "not connected in time: removing the participant");
            tokio::spawn(async move {
                if let Some(reg) = room.registry.upgrade() {
                    reg.leave(&room.name, &id, "not connected").await;
                }
            });
        }
    }

    async fn leave(&self, id: &str, reason: &str) -> bool {
        let p = {
            let mut ps = self.participants.lock().unwrap();
            let Some(i) = ps.iter().position(|p| p.id == id) else { return false };
            ps.remove(i)
        };
        let left = RoomEvent::Left { ts: crate::ids::now_ms(), participant: p.who(), reason: reason.into() };
        // Its own `left` (a kick, the room's end) reaches it before its channel goes.
        let channel = p.channel.lock().unwrap().take();
        if let Some(dc) = channel {
            let text = serde_json::to_string(&left).unwrap_or_default();
            let _ = tokio::time::timeout(std::time::Duration::from_millis(500), dc.send_text(&text)).await;
        }
        let tasks: Vec<_> = p.tasks.lock().unwrap().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        // Once its senders are gone, a smaller output tier it alone watched can stop.
        for t in tasks {
            let _ = t.await;
        }
        self.video.release_idle_tiers();
        self.video.remove_input(id);
        self.audio.remove_source(id);
        self.departed.0.fetch_add(p.session.counters.plis_sent.load(Ordering::Relaxed), Ordering::Relaxed);
        self.departed
            .1
            .fetch_add(p.session.counters.keyframe_requests_received.load(Ordering::Relaxed), Ordering::Relaxed);
        self.emit(left);
        p.session.close().await;
        tracing::info!(room = %self.name, participant = id, reason, "left");
        true
    }
}
