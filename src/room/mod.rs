//! Rooms and participants: join, leave, layout, mute, active speaker and events, and the wiring
//! between a participant's transport session and the room's media (its tile and audio source in,
//! the composite and mix out).
//!
//! A [`Room`] is self-contained — its own compositor pipeline, mixer thread, participants and
//! event bus — so rooms can later be spread across machines behind a shared registry without
//! touching this code.

pub mod events;
pub mod layout;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use rtc::shared::marshal::Marshal;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tracing::Instrument;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::media::audio::speaker::SpeakerUpdate;
use crate::media::audio::{AudioError, AudioMixer};
use crate::media::compositor::{OutputFormat, RoomVideo, VideoError, VideoInput};
use crate::media::fanout::{RtpRewriter, VideoCodec, starts_keyframe};
use crate::media::tiers::{BandwidthSample, Tier, TierSelector};
use crate::media::ingest::VideoIngest;
use crate::outputs::egress::{Egress, EgressError, EgressInfo};
use crate::outputs::recording::{Format, Recording, RecordingError, RecordingInfo};
use crate::pipelines::Backends;
use crate::transport::{RemoteKind, RemoteTrack, Session, SessionEvents, SessionPlan, Transport, TransportError};
use events::{ClientMessage, RateLimit, RoomEvent, Who, check_chat, now_ms};
use layout::{Layout, LayoutSpec};

/// Events buffered per room for slow data channels.
const EVENTS_CAPACITY: usize = 256;
/// Default cap of visible tiles.
pub const DEFAULT_MAX_VISIBLE: usize = 16;

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

/// What a publisher's video is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A camera (or any ordinary video).
    #[default]
    Camera,
    /// A screen share: shown large by the `presentation` layout.
    Screen,
}

/// Room settings, given by `PUT /v1/rooms/{room}`; unset fields take the server's defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomOptions {
    /// Most participants at once (viewers included); further joins get 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<usize>,
    /// Composite width, pixels (even, 64..=3840).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Composite height, pixels (even, 64..=2160).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Composite frame rate, 1..=60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
    /// Composite bitrate, kbit/s (100..=20000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kbps: Option<u32>,
    /// Layout name (`grid`, `speaker`, `1+7`, `presentation`, ...); `pinned` and `custom` are set
    /// with `PUT /v1/rooms/{room}/layout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// Most tiles shown at once (default 16); past it the most recent speakers are shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_visible: Option<usize>,
    /// Record automatically from the first join, in this format (`mp4`, `webm`, `mkv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_record: Option<crate::outputs::recording::Format>,
}

impl RoomOptions {
    fn check(&self) -> Result<(), String> {
        if self.max_visible == Some(0) || self.max_visible.is_some_and(|v| v > 100) {
            return Err("max_visible must be 1..=100".into());
        }
        if self.max_participants == Some(0) {
            return Err("max_participants must be at least 1".into());
        }
        Ok(())
    }

    fn format(&self, default: OutputFormat) -> Result<OutputFormat, String> {
        let f = OutputFormat {
            width: self.width.unwrap_or(default.width),
            height: self.height.unwrap_or(default.height),
            fps: self.fps.unwrap_or(default.fps),
            kbps: self.kbps.unwrap_or(default.kbps),
        };
        if !(64..=3840).contains(&f.width) || !(64..=2160).contains(&f.height) || !f.width.is_multiple_of(2) || !f.height.is_multiple_of(2) {
            return Err(format!("output {}x{}: need even sizes within 64x64..3840x2160", f.width, f.height));
        }
        if !(1..=60).contains(&f.fps) || !(100..=20000).contains(&f.kbps) {
            return Err("fps must be 1..=60 and kbps 100..=20000".into());
        }
        Ok(f)
    }

    fn parsed_layout(&self) -> Result<Option<Layout>, String> {
        self.layout
            .as_ref()
            .map(|l| Layout::try_from(LayoutSpec { layout: l.clone(), participant: None, tiles: None }))
            .transpose()
    }
}

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
    /// The token's identity, when tokens are in use.
    pub identity: Option<String>,
}

/// Every room of this server, by name. The first join creates a room (unless created with
/// options by `PUT`); the last leave ends a room that was created by a join.
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

    /// Every room, by name.
    pub fn all(&self) -> Vec<Arc<Room>> {
        let mut v: Vec<Arc<Room>> = self.rooms.lock().unwrap().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates room `name` with `options`, or updates the settings that can change live (layout,
    /// visible-tile cap, participant cap) of an existing one. Returns the room and whether it
    /// was created. A room created this way stays until `DELETE`, even when empty.
    ///
    /// # Errors
    /// [`RoomError::Invalid`] for bad options, [`RoomError::Conflict`] for an output format change
    /// on a running room, media errors when the room cannot start.
    pub fn create_or_update(self: &Arc<Self>, name: &str, options: RoomOptions) -> Result<(Arc<Room>, bool), RoomError> {
        options.check().map_err(RoomError::Invalid)?;
        let layout = options.parsed_layout().map_err(RoomError::Invalid)?;
        let mut rooms = self.rooms.lock().unwrap();
        if let Some(r) = rooms.get(name).cloned() {
            drop(rooms);
            // Only the fields given are compared with the running format.
            let cur = r.video.format();
            options.format(cur).map_err(RoomError::Invalid)?;
            let differs = options.width.is_some_and(|v| v != cur.width)
                || options.height.is_some_and(|v| v != cur.height)
                || options.fps.is_some_and(|v| v != cur.fps)
                || options.kbps.is_some_and(|v| v != cur.kbps);
            if differs {
                return Err(RoomError::Conflict("the output format cannot change while the room runs".into()));
            }
            r.update(options, layout);
            return Ok((r, false));
        }
        let format = options.format(self.deps.format).map_err(RoomError::Invalid)?;
        let r = Room::new(name, self.deps.clone(), Arc::downgrade(self), format, layout.unwrap_or(Layout::Grid), options, true)?;
        rooms.insert(name.to_string(), r.clone());
        tracing::info!(room = name, "room created by the API");
        Ok((r, true))
    }

    /// Joins room `room` (creating it with the defaults); returns the participant id and the answer.
    ///
    /// # Errors
    /// [`RoomError`] when the room is full, its media cannot start or the transport refuses the
    /// offer; then no participant is created and an otherwise empty new room is ended again.
    pub async fn join(self: &Arc<Self>, room: &str, req: JoinRequest) -> Result<(String, String), RoomError> {
        let r = {
            let mut rooms = self.rooms.lock().unwrap();
            match rooms.get(room) {
                Some(r) => r.clone(),
                None => {
                    let r = Room::new(
                        room,
                        self.deps.clone(),
                        Arc::downgrade(self),
                        self.deps.format,
                        Layout::Grid,
                        RoomOptions::default(),
                        false,
                    )?;
                    rooms.insert(room.to_string(), r.clone());
                    tracing::info!(room, "room created");
                    r
                }
            }
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
        let Some(r) = self.rooms.lock().unwrap().remove(room) else { return false };
        r.stop_recordings().await;
        let ids: Vec<String> = r.participants.lock().unwrap().iter().map(|p| p.id.clone()).collect();
        for id in ids {
            r.leave(&id, "room ended").await;
        }
        r.video.stop();
        tracing::info!(room, "room ended by the API");
        true
    }

    fn end_if_empty(&self, r: &Arc<Room>) {
        let mut rooms = self.rooms.lock().unwrap();
        if r.is_empty() && !r.persistent && rooms.get(&r.name).is_some_and(|x| Arc::ptr_eq(x, r)) {
            rooms.remove(&r.name);
            // Finalize recordings before the pipeline stops.
            let room = r.clone();
            tokio::spawn(async move {
                room.stop_recordings().await;
                room.video.stop();
            });
            tracing::info!(room = %r.name, "room ended");
        }
    }
}

/// One room: participants, its compositor, its mixer and its event bus.
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
    recordings: Mutex<Vec<Arc<Recording>>>,
    egresses: Mutex<Vec<Arc<Egress>>>,
}

struct Participant {
    id: String,
    name: String,
    identity: Option<String>,
    kind: JoinKind,
    source: Source,
    plan: SessionPlan,
    session: Session,
    joined: Instant,
    publishing_video: AtomicBool,
    publishing_audio: AtomicBool,
    muted_audio: AtomicBool,
    muted_video: AtomicBool,
    /// The tile, until the video track arrives and takes it.
    tile: Mutex<Option<VideoInput>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The output tier it receives now (set by its video sender).
    tier: Mutex<Option<Tier>>,
}

impl Participant {
    fn tier(&self) -> Option<Tier> {
        *self.tier.lock().unwrap()
    }

    fn who(&self) -> Who {
        Who { id: self.id.clone(), name: self.name.clone() }
    }
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
    /// Camera or screen share.
    pub source: Source,
    /// What it publishes now (a track has arrived).
    pub publishes: Media,
    /// Whether it receives the composite and the mix.
    pub receives: Media,
    /// Muted (by itself or the server).
    pub muted: Media,
    /// The codec it receives the composite in.
    pub video_codec: Option<VideoCodec>,
    /// The output tier it receives (`full`, `half`, `quarter`), chosen from its bandwidth estimate.
    pub video_tier: Option<Tier>,
    /// The picture size of that tier, e.g. `[640, 360]`.
    pub video_size: Option<(u32, u32)>,
    /// GCC's estimate of the bandwidth toward it (TWCC feedback), kbit/s; `null` before feedback.
    pub bandwidth_kbps: Option<u64>,
    /// Seconds since it joined.
    pub joined_s: f64,
    /// PLIs Tessera sent to this publisher (rate-limited by `--pli-interval-ms`).
    pub plis_sent: u64,
    /// Keyframe requests (PLI/FIR) this receiver sent about the composite.
    pub keyframe_requests: u64,
}

/// One encoder branch of the room's composite.
#[derive(Debug, Serialize)]
pub struct EncoderInfo {
    /// Codec.
    pub codec: VideoCodec,
    /// Output tier.
    pub tier: Tier,
    /// Picture size, pixels.
    pub size: (u32, u32),
    /// Target bitrate, kbit/s.
    pub kbps: u32,
    /// Receivers on it (recordings and egress not counted).
    pub receivers: usize,
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
    /// Where the picture is drawn (letterboxed in its cell); `null` while not shown.
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
    /// Layout.
    pub layout: LayoutSpec,
    /// The active speaker's id.
    pub active_speaker: Option<String>,
    /// Most tiles shown at once.
    pub max_visible: usize,
    /// Most participants at once, if capped.
    pub max_participants: Option<usize>,
    /// Tiles in join order.
    pub tiles: Vec<TileInfo>,
    /// The layout's cells in drawing order.
    pub placements: Vec<layout::Placement>,
    /// Composite frames produced so far.
    pub frames_out: u64,
    /// Decoded input frames that could not be drawn (not I420, or unreadable).
    pub frames_dropped: u64,
    /// Composite frames not encoded because nothing in them changed (sent once a second instead).
    pub frames_unchanged: u64,
    /// Keyframes forced on the room's encoders (coalesced: receivers joining together share one).
    pub keyframes_forced: u64,
    /// Video encoder branches running (one per codec and output tier in use).
    pub encoders: usize,
    /// Those branches: codec, tier, picture size and how many receivers each has now.
    pub encoder_branches: Vec<EncoderInfo>,
    /// Opus encodes in the last 20 ms tick (≤ talkers + 1).
    pub audio_encodes_last_tick: u64,
    /// Opus decodes in the last 20 ms tick (≤ K loudest talkers + publishers without RFC 6464 levels).
    pub audio_decodes_last_tick: u64,
    /// PLIs sent to this room's publishers since it started.
    pub plis_sent_total: u64,
    /// Keyframe requests received from this room's receivers since it started.
    pub keyframe_requests_total: u64,
    /// Seconds since the room started.
    pub age_s: f64,
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
        let video = RoomVideo::new(name, format, deps.backends.clone(), layout, cap)?;
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        // The mixer calls back into the room; the room exists only after the mixer started.
        let slot: Arc<std::sync::OnceLock<Weak<Room>>> = Arc::default();
        let s = slot.clone();
        let on_speaker: crate::media::audio::SpeakerListener = Arc::new(move |u: &SpeakerUpdate, tick: u64| {
            if let Some(room) = s.get().and_then(Weak::upgrade) {
                room.on_speaker(u, tick);
            }
        });
        let audio = AudioMixer::start(name, deps.audio_kbps, Some(on_speaker))?;
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
            recordings: Mutex::new(vec![]),
            egresses: Mutex::new(vec![]),
        });
        let _ = slot.set(Arc::downgrade(&room));
        Ok(room)
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

    fn new_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let salt = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        format!("p{n}-{:06x}", salt & 0xff_ffff)
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
        self.emit(RoomEvent::LayoutChanged { ts: now_ms(), layout: layout.into() });
    }

    /// The current layout.
    pub fn layout(&self) -> Layout {
        self.video.layout()
    }

    /// Starts recording the composite and the full mix as `format` into `file` (a plain name under
    /// `--recordings-dir`, default `{room}-{id}.{ext}`).
    ///
    /// # Errors
    /// [`RoomError::Recording`] for a bad name or when the file or the branch cannot be made.
    pub fn start_recording(&self, format: Format, file: Option<&str>) -> Result<RecordingInfo, RoomError> {
        let id = format!("rec{}", self.new_id().trim_start_matches('p'));
        let path = crate::outputs::recording::file_path(&self.deps.recordings_dir, &self.name, &id, format, file)?;
        if self.recordings.lock().unwrap().iter().any(|r| r.is_recording() && r.path() == path) {
            return Err(RecordingError::BadName(format!("{} is being recorded already", path.display())).into());
        }
        let rec = Recording::start(&id, format, path, &self.video, &self.audio)?;
        let info = rec.info();
        self.recordings.lock().unwrap().push(rec);
        self.emit(RoomEvent::RecordingState { ts: now_ms(), id: id.clone(), state: "recording".into() });
        Ok(info)
    }

    /// Stops and finalizes recording `id`.
    ///
    /// # Errors
    /// [`RoomError::NoRecording`] for an unknown id.
    pub async fn stop_recording(&self, id: &str) -> Result<RecordingInfo, RoomError> {
        let rec = self.recording(id).ok_or_else(|| RoomError::NoRecording(id.into()))?;
        let was = rec.is_recording();
        let info = rec.stop().await;
        if was {
            let state = serde_json::to_value(info.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            self.emit(RoomEvent::RecordingState { ts: now_ms(), id: id.into(), state });
        }
        Ok(info)
    }

    /// Starts streaming the composite and the full mix to `url` (`rtmp://`, `rtmps://`,
    /// `srt://`) or into the HLS folder `hls` under `--recordings-dir`.
    ///
    /// # Errors
    /// [`RoomError::Egress`] for a bad target or when the room's H.264 encode cannot be tapped.
    pub fn start_egress(self: &Arc<Self>, url: Option<&str>, hls: Option<&str>) -> Result<EgressInfo, RoomError> {
        let target = crate::outputs::egress::target(url, hls, &self.deps.recordings_dir)?;
        let id = format!("eg{}", self.new_id().trim_start_matches('p'));
        let (w, i) = (Arc::downgrade(self), id.clone());
        let on_state: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(move |state: &str| {
            if let Some(room) = w.upgrade() {
                room.emit(RoomEvent::RecordingState { ts: now_ms(), id: i.clone(), state: state.into() });
            }
        });
        let e = Egress::start(&id, target, &self.video, &self.audio, on_state)?;
        let info = e.info();
        self.egresses.lock().unwrap().push(e);
        Ok(info)
    }

    /// Stops egress `id`.
    ///
    /// # Errors
    /// [`RoomError::NoRecording`] for an unknown id.
    pub async fn stop_egress(&self, id: &str) -> Result<EgressInfo, RoomError> {
        let e = {
            let mut v = self.egresses.lock().unwrap();
            let i = v.iter().position(|e| e.id() == id).ok_or_else(|| RoomError::NoRecording(id.into()))?;
            v.remove(i)
        };
        Ok(e.stop().await)
    }

    /// Every running egress.
    pub fn egresses(&self) -> Vec<EgressInfo> {
        self.egresses.lock().unwrap().iter().map(|e| e.info()).collect()
    }

    /// Finalizes every running recording and stops every egress (room end, server shutdown).
    pub async fn stop_recordings(&self) {
        let egress: Vec<Arc<Egress>> = self.egresses.lock().unwrap().drain(..).collect();
        for e in egress {
            e.stop().await;
        }
        let running: Vec<String> =
            self.recordings.lock().unwrap().iter().filter(|r| r.is_recording()).map(|r| r.id().to_string()).collect();
        for id in running {
            let _ = self.stop_recording(&id).await;
        }
    }

    /// A recording by id.
    pub fn recording(&self, id: &str) -> Option<Arc<Recording>> {
        self.recordings.lock().unwrap().iter().find(|r| r.id() == id).cloned()
    }

    /// Every recording of this room, oldest first.
    pub fn recordings(&self) -> Vec<RecordingInfo> {
        self.recordings.lock().unwrap().iter().map(|r| r.info()).collect()
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
        self.emit(RoomEvent::MuteChanged { ts: now_ms(), participant: p.who(), audio: a, video: v, by: by.into() });
        tracing::info!(room = %self.name, participant = id, audio = a, video = v, by, "mute");
        Ok(())
    }

    fn on_speaker(&self, u: &SpeakerUpdate, tick: u64) {
        let before = self.video.speaker();
        self.video.set_speaking(u.speaker.as_deref(), &u.talking, tick);
        if before != u.speaker {
            let who = u.speaker.as_deref().and_then(|id| self.who(id));
            self.emit(RoomEvent::ActiveSpeaker { ts: now_ms(), participant: who });
        }
    }

    async fn join(self: &Arc<Self>, req: JoinRequest) -> Result<(String, String), RoomError> {
        if let Some(max) = self.options.lock().unwrap().max_participants
            && self.len() >= max
        {
            return Err(RoomError::Full(max));
        }
        let JoinRequest { name, kind, source, offer, plan, identity } = req;
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
        let (session, answer) = self.deps.transport.answer(&id, &offer, plan, events.clone()).instrument(span.clone()).await?;
        // Publishers get a tile now: a placeholder until (unless) video arrives.
        let tile = if plan.publish_video || plan.publish_audio {
            // Rendering the tile's label and placeholder blocks for 5-35 ms: not on a worker
            // that drives other participants' transport (100 joins stalled their media).
            let (video, tid, tname) = (self.video.clone(), id.clone(), name.clone());
            let added = tokio::task::spawn_blocking(move || video.add_input(&tid, &tname, source == Source::Screen)).await;
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
        let p = Arc::new(Participant {
            id: id.clone(),
            name: name.clone(),
            identity,
            kind,
            source,
            plan,
            session,
            joined: Instant::now(),
            publishing_video: AtomicBool::new(false),
            publishing_audio: AtomicBool::new(false),
            muted_audio: AtomicBool::new(false),
            muted_video: AtomicBool::new(false),
            tile: Mutex::new(tile),
            tasks: Mutex::new(vec![]),
            tier: Mutex::new(None),
        });
        let mut tasks = vec![];
        if let (Some(track), Some(rx), Some(codec)) = (p.session.video.clone(), video_rx, plan.receive_video) {
            tasks.push(tokio::spawn(send_video(self.video.clone(), p.clone(), track, rx, codec).instrument(span.clone())));
        }
        if let Some(track) = p.session.audio.clone() {
            tasks.push(tokio::spawn(send_audio(self.audio.subscribe(), p.clone(), track).instrument(span.clone())));
        }
        *p.tasks.lock().unwrap() = tasks;
        let first = {
            let mut ps = self.participants.lock().unwrap();
            ps.push(p.clone());
            ps.len() == 1
        };
        span.in_scope(|| tracing::info!(name, ?kind, ?source, ?plan, "joined"));
        let auto = self.options.lock().unwrap().auto_record;
        if let (true, Some(format)) = (first, auto)
            && self.recordings.lock().unwrap().iter().all(|r| !r.is_recording())
            && let Err(e) = self.start_recording(format, None)
        {
            tracing::error!(room = %self.name, "automatic recording failed: {e}");
        }
        self.emit(RoomEvent::Joined {
            ts: now_ms(),
            participant: p.who(),
            source: if source == Source::Screen { "screen".into() } else { "camera".into() },
        });
        events.ready();
        Ok((id, answer))
    }

    async fn leave(&self, id: &str, reason: &str) -> bool {
        let p = {
            let mut ps = self.participants.lock().unwrap();
            let Some(i) = ps.iter().position(|p| p.id == id) else { return false };
            ps.remove(i)
        };
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
        self.departed.1.fetch_add(p.session.counters.keyframe_requests_received.load(Ordering::Relaxed), Ordering::Relaxed);
        self.emit(RoomEvent::Left { ts: now_ms(), participant: p.who(), reason: reason.into() });
        p.session.close().await;
        tracing::info!(room = %self.name, participant = id, reason, "left");
        true
    }

    /// The room as the API shows it.
    pub fn info(&self) -> RoomInfo {
        let participants: Vec<ParticipantInfo> = self
            .participants
            .lock()
            .unwrap()
            .iter()
            .map(|p| ParticipantInfo {
                id: p.id.clone(),
                name: p.name.clone(),
                kind: p.kind,
                source: p.source,
                publishes: Media {
                    audio: p.publishing_audio.load(Ordering::Relaxed),
                    video: p.publishing_video.load(Ordering::Relaxed),
                },
                receives: Media { audio: p.plan.receive_audio, video: p.plan.receive_video.is_some() },
                muted: Media { audio: p.muted_audio.load(Ordering::Relaxed), video: p.muted_video.load(Ordering::Relaxed) },
                video_codec: p.plan.receive_video,
                video_tier: p.tier(),
                video_size: p.tier().map(|t| t.size(self.video.format())),
                bandwidth_kbps: p.session.bandwidth.as_ref().and_then(|b| b.bps()).map(|b| (b / 1000.0) as u64),
                joined_s: p.joined.elapsed().as_secs_f64(),
                plis_sent: p.session.counters.plis_sent.load(Ordering::Relaxed),
                keyframe_requests: p.session.counters.keyframe_requests_received.load(Ordering::Relaxed),
            })
            .collect();
        let stats = self.video.stats();
        let options = self.options.lock().unwrap().clone();
        let plis_now: u64 = participants.iter().map(|p: &ParticipantInfo| p.plis_sent).sum();
        let requests_now: u64 = participants.iter().map(|p: &ParticipantInfo| p.keyframe_requests).sum();
        RoomInfo {
            room: self.name.clone(),
            participants,
            output: self.video.format(),
            layout: self.video.layout().into(),
            active_speaker: self.video.speaker(),
            max_visible: options.max_visible.unwrap_or(DEFAULT_MAX_VISIBLE),
            max_participants: options.max_participants,
            tiles: self.video.tiles().into_iter().map(|(participant, rect)| TileInfo { participant, rect }).collect(),
            placements: self.video.placements(),
            frames_out: stats.frames_out.load(Ordering::Relaxed),
            frames_dropped: stats.frames_dropped.load(Ordering::Relaxed),
            frames_unchanged: stats.frames_unchanged.load(Ordering::Relaxed),
            keyframes_forced: stats.keyframes_forced.load(Ordering::Relaxed),
            encoders: self.video.encoders(),
            encoder_branches: self
                .video
                .encoder_branches()
                .into_iter()
                .map(|(codec, tier, receivers)| EncoderInfo {
                    codec,
                    tier,
                    size: tier.size(self.video.format()),
                    kbps: tier.kbps(self.video.format()),
                    receivers,
                })
                .collect(),
            audio_encodes_last_tick: self.audio.stats().encodes_last_tick.load(Ordering::Relaxed),
            audio_decodes_last_tick: self.audio.stats().decodes_last_tick.load(Ordering::Relaxed),
            plis_sent_total: self.departed.0.load(Ordering::Relaxed) + plis_now,
            keyframe_requests_total: self.departed.1.load(Ordering::Relaxed) + requests_now,
            age_s: self.created.elapsed().as_secs_f64(),
        }
    }

    fn on_remote_track(self: &Arc<Self>, id: &str, listens: bool, track: RemoteTrack) {
        let Some(p) = self.participant(id) else { return };
        let span = tracing::info_span!("participant", room = %self.name, participant = %id);
        let room = self.clone();
        let owner = p.clone();
        let handle = match track.kind.clone() {
            RemoteKind::Video(codec) if p.plan.publish_video => {
                let Some(tile) = p.tile.lock().unwrap().take() else { return };
                tokio::spawn(receive_video(room, p, track, tile, codec).instrument(span))
            }
            RemoteKind::Audio if p.plan.publish_audio => {
                self.audio.add_source(id, listens);
                if p.muted_audio.load(Ordering::Relaxed) {
                    self.audio.set_muted(id, true);
                }
                p.publishing_audio.store(true, Ordering::Relaxed);
                span.in_scope(|| tracing::info!("publishing audio"));
                let level_ext = p.plan.audio_level_ext;
                tokio::spawn(
                    async move {
                        while let Some(pkt) = track.next_rtp().await {
                            // RFC 6464: one byte, V bit + level in -dBov.
                            let level = level_ext
                                .and_then(|id| pkt.header.get_extension(id))
                                .and_then(|b| b.first().map(|l| l & 0x7f));
                            room.audio.push(&p.id, pkt.header.sequence_number, pkt.payload, level);
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

    fn on_data_channel(self: &Arc<Self>, id: &str, dc: Arc<dyn DataChannel>) {
        let Some(p) = self.participant(id) else { return };
        let room = self.clone();
        let span = tracing::info_span!("participant", room = %self.name, participant = %id);
        let handle = tokio::spawn(async move { data_channel(room, p, dc).await }.instrument(span));
        if let Some(p) = self.participant(id) {
            p.tasks.lock().unwrap().push(handle);
        }
    }
}

/// Decodes a publisher's video into its tile; hidden tiles are not decoded.
async fn receive_video(room: Arc<Room>, p: Arc<Participant>, track: RemoteTrack, tile: VideoInput, codec: VideoCodec) {
    // The payload type is the publisher's; learn it from the first packet.
    let Some(first) = track.next_rtp().await else { return };
    let requester = track.keyframe_requester();
    // Building and starting a pipeline blocks for milliseconds: not on a transport worker.
    let (label, pt, jitter_ms, backends, on_keyframe) =
        (format!("{}-{}", room.name, p.id), first.header.payload_type, room.deps.jitter_ms, room.deps.backends.clone(), requester.clone());
    let started =
        tokio::task::spawn_blocking(move || VideoIngest::start(&label, codec, pt, jitter_ms, &backends, tile, on_keyframe)).await;
    let ingest = match started {
        Ok(Ok(i)) => i,
        Ok(Err(e)) => {
            tracing::error!("cannot decode video: {e}");
            return;
        }
        Err(e) => {
            tracing::error!("cannot decode video: {e}");
            return;
        }
    };
    p.publishing_video.store(true, Ordering::Relaxed);
    room.video.set_visibility_listener(&p.id, ingest.activity_switch(requester.clone()));
    requester();
    tracing::info!(?codec, "publishing video");
    // Packets go to the decoder a frame at a time: at the marker bit (RFC 3550 §5.1: the frame's
    // last packet), or when a packet of another frame (timestamp) shows the marker was lost.
    let mut frame: Vec<bytes::Bytes> = Vec::with_capacity(16);
    let mut frame_ts = first.header.timestamp;
    let mut next = Some(first);
    while let Some(pkt) = match next.take() {
        Some(p) => Some(p),
        None => track.next_rtp().await,
    } {
        if !frame.is_empty() && pkt.header.timestamp != frame_ts {
            ingest.push_rtp_frame(&mut frame);
        }
        frame_ts = pkt.header.timestamp;
        let marker = pkt.header.marker;
        if let Ok(bytes) = pkt.marshal() {
            frame.push(bytes.freeze());
        }
        if marker || frame.len() >= 64 {
            ingest.push_rtp_frame(&mut frame);
        }
    }
    // `ingest` drops here (or when the task is aborted on leave): its pipeline stops.
}

/// Sends the room's composite to one receiver: own SSRC, payload type and sequence numbers,
/// starting at a keyframe; PLI/FIR from the receiver ask the encoder for a keyframe. Every 500 ms
/// the receiver's bandwidth estimate (when the transport has one) picks its output tier
/// ([`TierSelector`]); a move subscribes to the new tier, keeps sending the old one until the new
/// one's keyframe, then switches there with no gap in sequence numbers or timestamps.
async fn send_video(
    video: RoomVideo,
    p: Arc<Participant>,
    track: Arc<crate::transport::LocalTrack>,
    mut rx: broadcast::Receiver<Arc<crate::media::fanout::OutFrame>>,
    codec: VideoCodec,
) {
    if !p.session.connected().await {
        return;
    }
    let mut rw = RtpRewriter::new(track.ssrc, track.payload_type(), (track.ssrc >> 16) as u16);
    let mut tier = Tier::Full;
    *p.tier.lock().unwrap() = Some(tier);
    let mut selector = TierSelector::new(video.format());
    // The tier being moved to, until its first keyframe arrives.
    let mut next: Option<(Tier, broadcast::Receiver<Arc<crate::media::fanout::OutFrame>>)> = None;
    video.request_keyframe_tier(codec, tier);
    let mut keyframe_requests = true;
    // Until this receiver has its keyframe, ask again every half second (a request can be lost,
    // e.g. sent while the encoder was still starting); the gate coalesces repeats.
    let mut retry = tokio::time::interval(std::time::Duration::from_millis(500));
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let estimate = p.session.bandwidth.clone();
    let mut bwe_tick = tokio::time::interval(std::time::Duration::from_millis(500));
    bwe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = retry.tick(), if !rw.is_started() || next.is_some() => {
                video.request_keyframe_tier(codec, next.as_ref().map_or(tier, |(t, _)| *t));
            }
            r = rx.recv() => match r {
                Ok(frame) => send_frame(&mut rw, &track, &frame).await,
                Err(RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "receiver fell behind; waiting for a keyframe");
                    rw.resync();
                    video.request_keyframe_tier(codec, tier);
                }
                Err(RecvError::Closed) => break,
            },
            r = async { next.as_mut().expect("guarded").1.recv().await }, if next.is_some() => match r {
                Ok(frame) if starts_keyframe(&frame) => {
                    let (t, new_rx) = next.take().expect("guarded");
                    tracing::info!(from = ?tier, to = ?t, "moved to another output tier at its keyframe");
                    rx = new_rx;
                    tier = t;
                    *p.tier.lock().unwrap() = Some(tier);
                    rw.resync();
                    send_frame(&mut rw, &track, &frame).await;
                    video.release_idle_tiers();
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => next = None,
            },
            _ = bwe_tick.tick(), if estimate.is_some() => {
                let e = estimate.as_ref().expect("guarded");
                let bps = e.bps().unwrap_or(0.0);
                let want = selector.update(BandwidthSample { bps, delay_bps: e.delay_based_bps().unwrap_or(bps), loss: e.loss() });
                let moving_to = next.as_ref().map(|(t, _)| *t);
                if want == tier && moving_to.is_some() {
                    next = None;
                    video.release_idle_tiers();
                } else if want != tier && moving_to != Some(want) {
                    tracing::info!(estimate_kbps = (bps / 1000.0) as u64, from = ?tier, to = ?want, "bandwidth estimate asks for another output tier");
                    match video.subscribe_tier(codec, want) {
                        Ok(new_rx) => {
                            next = Some((want, new_rx));
                            video.request_keyframe_tier(codec, want);
                        }
                        Err(e) => tracing::warn!("output tier {want:?} unavailable: {e}"),
                    }
                }
            },
            k = track.keyframe_request(), if keyframe_requests => match k {
                Some(()) => {
                    p.session.counters.keyframe_requests_received.fetch_add(1, Ordering::Relaxed);
                    video.request_keyframe_tier(codec, tier);
                }
                None => keyframe_requests = false,
            },
        }
    }
    drop(rx);
    drop(next);
    video.release_idle_tiers();
}

/// Packets of one frame a receiver's task sends before it lets others run: a keyframe (~30
/// packets at 1280x720) to 100 receivers is 3000 packets, which must not hold up their audio.
const PACKETS_PER_YIELD: usize = 8;

/// Sends one encoded frame to a receiver, rewritten for its track.
async fn send_frame(rw: &mut RtpRewriter, track: &crate::transport::LocalTrack, frame: &crate::media::fanout::OutFrame) {
    for (i, pkt) in frame.iter().enumerate() {
        if i > 0 && i % PACKETS_PER_YIELD == 0 {
            tokio::task::yield_now().await;
        }
        if let Some(out) = rw.rewrite(pkt) {
            let _ = track.write(out).await;
        }
    }
}

/// Sends the mix to one receiver: its mix-minus payload when it talks, else the shared one.
async fn send_audio(mut rx: broadcast::Receiver<Arc<crate::media::audio::MixFrame>>, p: Arc<Participant>, track: Arc<crate::transport::LocalTrack>) {
    if !p.session.connected().await {
        return;
    }
    let mut seq: u16 = (track.ssrc >> 8) as u16;
    let ts_base = track.ssrc.rotate_left(7);
    loop {
        match rx.recv().await {
            Ok(f) => {
                let payload = f.for_participant(&p.id).clone();
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

/// One participant's data channel: room events out (a `welcome` first), chat and self-mute in.
async fn data_channel(room: Arc<Room>, p: Arc<Participant>, dc: Arc<dyn DataChannel>) {
    let mut events = room.subscribe_events();
    let mut limit = RateLimit::new(events::CHAT_PER_SECOND);
    let mut open = false;
    let send = |e: &RoomEvent| serde_json::to_string(e).unwrap_or_default();
    let welcome = || {
        let participants = room.participants.lock().unwrap().iter().map(|x| x.who()).collect();
        let speaker = room.video.speaker().and_then(|id| room.who(&id));
        RoomEvent::Welcome { ts: now_ms(), you: p.who(), participants, layout: room.layout().into(), speaker }
    };
    // The channel may already be open when it is announced.
    if matches!(dc.ready_state().await, Ok(webrtc::data_channel::RTCDataChannelState::Open)) {
        open = true;
        let _ = dc.send_text(&send(&welcome())).await;
    }
    loop {
        tokio::select! {
            ev = dc.poll() => match ev {
                Some(DataChannelEvent::OnOpen) => {
                    if !open {
                        open = true;
                        let _ = dc.send_text(&send(&welcome())).await;
                    }
                }
                Some(DataChannelEvent::OnMessage(m)) => {
                    let reply = match serde_json::from_slice::<ClientMessage>(&m.data) {
                        Ok(ClientMessage::Chat { text }) => {
                            if !limit.allow() {
                                Some(format!("chat rate limit: at most {} messages per second", events::CHAT_PER_SECOND))
                            } else {
                                match check_chat(&text) {
                                    Ok(text) => {
                                        room.emit(RoomEvent::Chat { ts: now_ms(), from: p.who(), text });
                                        None
                                    }
                                    Err(e) => Some(e),
                                }
                            }
                        }
                        Ok(ClientMessage::Mute { audio, video }) => room.mute(&p.id, audio, video, "self").err().map(|e| e.to_string()),
                        Err(e) => Some(format!("unknown message: {e}")),
                    };
                    if let Some(reason) = reply {
                        tracing::info!(%reason, "data channel message refused");
                        let _ = dc.send_text(&send(&RoomEvent::Error { ts: now_ms(), reason })).await;
                    }
                }
                Some(DataChannelEvent::OnClose) | None => break,
                Some(_) => {}
            },
            e = events.recv() => match e {
                Ok(e) => {
                    if open {
                        let _ = dc.send_text(&send(&e)).await;
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(skipped = n, "data channel fell behind; events dropped"),
                Err(RecvError::Closed) => break,
            },
        }
    }
}

/// Transport events of one participant. Tracks and channels that arrive before the participant
/// is in the room (the answer is still on its way back) wait in `pending` until [`Events::ready`].
struct Events {
    room: Weak<Room>,
    id: String,
    listens: bool,
    pending: Mutex<Option<Vec<Pending>>>,
}

enum Pending {
    Track(RemoteTrack),
    Channel(Arc<dyn DataChannel>),
}

impl Events {
    fn ready(&self) {
        let pending = self.pending.lock().unwrap().take().unwrap_or_default();
        if let Some(room) = self.room.upgrade() {
            for p in pending {
                match p {
                    Pending::Track(t) => room.on_remote_track(&self.id, self.listens, t),
                    Pending::Channel(c) => room.on_data_channel(&self.id, c),
                }
            }
        }
    }

    fn deliver(&self, p: Pending) {
        {
            let mut pending = self.pending.lock().unwrap();
            if let Some(v) = pending.as_mut() {
                v.push(p);
                return;
            }
        }
        if let Some(room) = self.room.upgrade() {
            match p {
                Pending::Track(t) => room.on_remote_track(&self.id, self.listens, t),
                Pending::Channel(c) => room.on_data_channel(&self.id, c),
            }
        }
    }
}

impl SessionEvents for Events {
    fn on_remote_track(&self, track: RemoteTrack) {
        self.deliver(Pending::Track(track));
    }

    fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        self.deliver(Pending::Channel(channel));
    }

    fn on_state(&self, state: RTCPeerConnectionState) {
        tracing::debug!(participant = %self.id, %state, "connection state");
        if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed)
            && let Some(room) = self.room.upgrade()
        {
            let id = self.id.clone();
            tokio::spawn(async move {
                if let Some(reg) = room.registry.upgrade()
                    && reg.leave(&room.name, &id, "disconnected").await
                {
                    tracing::info!(room = %room.name, participant = %id, %state, "removed after connection ended");
                }
            });
        }
    }
}
