//! One participant's wiring: its session with the transport, its tile, and the tasks that carry
//! its media in (published video to the tile's decoder, published audio to the mixer) and out
//! (the send loops of `media::downstream`, started by the room at join).
//!
//! The transport reports tracks and data channels as they arrive; those that arrive before the
//! participant is in the room (the answer is still on its way back) wait in the
//! [`SessionHandler`]'s queue until [`SessionHandler::ready`].

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use rtc::shared::marshal::Marshal;
use tokio::task::JoinHandle;
use tracing::Instrument;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::RTCPeerConnectionState;

use super::events::Who;
use super::{JoinKind, Room, Source};
use crate::codec::{VideoCodec, is_keyframe_start, vp8_keyframe_size};
use crate::media::downstream::VideoStatus;
use crate::media::ingest::{FrameAssembler, VideoIngest};
use crate::media::simulcast::{Arrival, LayerSwitch, Verdict};
use crate::media::tiers::Tier;
use crate::media::video::VideoInput;
use crate::transport::{Inbound, RemoteKind, RemoteTrack, Session, SessionEvents, SessionPlan};

/// A participant of a room.
pub(super) struct Participant {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) identity: Option<String>,
    pub(super) kind: JoinKind,
    pub(super) source: Source,
    pub(super) plan: SessionPlan,
    pub(super) session: Session,
    pub(super) joined: Instant,
    pub(super) publishing_video: AtomicBool,
    pub(super) publishing_audio: AtomicBool,
    pub(super) muted_audio: AtomicBool,
    pub(super) muted_video: AtomicBool,
    /// The tile, until the video track arrives and takes it.
    tile: Mutex<Option<VideoInput>>,
    /// Its media tasks (aborted when it leaves).
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The output tier its video sender is on.
    pub(super) video_status: Arc<VideoStatus>,
    /// Its simulcast layers and the one decoded, when it publishes simulcast.
    pub(super) layers: Mutex<Option<LayersView>>,
    /// Its data channel, when it opened one: its own `left` goes there before it is closed.
    pub(super) channel: Mutex<Option<Arc<dyn DataChannel>>>,
}

/// A simulcast publisher's layers as the room JSON shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayersView {
    /// The layers' RTP stream ids (`a=rid`), in arrival order.
    pub rids: Vec<String>,
    /// The layer decoded now (`null` before its first keyframe).
    pub decoded: Option<String>,
    /// Its picture size, pixels, when known.
    pub size: Option<(u32, u32)>,
}

impl Participant {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: String,
        name: String,
        identity: Option<String>,
        kind: JoinKind,
        source: Source,
        plan: SessionPlan,
        session: Session,
        tile: Option<VideoInput>,
    ) -> Self {
        Self {
            id,
            name,
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
            video_status: Arc::default(),
            layers: Mutex::new(None),
            channel: Mutex::new(None),
        }
    }

    fn set_layers(&self, layers: &LayerSwitch) {
        let current = layers.current();
        *self.layers.lock().unwrap() = Some(LayersView {
            rids: layers.layers().iter().map(|l| l.rid.clone()).collect(),
            decoded: current.map(|l| l.rid.clone()),
            size: current.and_then(|l| l.size),
        });
    }

    pub(super) fn tier(&self) -> Option<Tier> {
        self.video_status.tier()
    }

    pub(super) fn who(&self) -> Who {
        Who { id: self.id.clone(), name: self.name.clone() }
    }

    pub(super) fn member(&self) -> super::events::Member {
        super::events::Member {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind.as_str().into(),
            source: self.source.as_str().into(),
            muted: super::events::Muted {
                audio: self.muted_audio.load(Ordering::Relaxed),
                video: self.muted_video.load(Ordering::Relaxed),
            },
        }
    }
}

/// Transport events of one participant's session.
pub(super) struct SessionHandler {
    room: Weak<Room>,
    id: String,
    listens: bool,
    pending: Mutex<Option<Vec<Pending>>>,
}

enum Pending {
    Track(RemoteTrack),
    Channel(Arc<dyn DataChannel>),
}

impl SessionHandler {
    /// The handler of participant `id` of `room`; `listens`: it receives the mix (so its own
    /// audio needs mix-minus).
    pub(super) fn new(room: &Arc<Room>, id: &str, listens: bool) -> Arc<Self> {
        Arc::new(Self { room: Arc::downgrade(room), id: id.to_string(), listens, pending: Mutex::new(Some(vec![])) })
    }

    /// The participant is in the room: delivers what waited, and from now on everything at once.
    pub(super) fn ready(&self) {
        let pending = self.pending.lock().unwrap().take().unwrap_or_default();
        for p in pending {
            self.dispatch(p);
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
        self.dispatch(p);
    }

    fn dispatch(&self, p: Pending) {
        let Some(room) = self.room.upgrade() else { return };
        match p {
            Pending::Track(t) => room.on_remote_track(&self.id, self.listens, t),
            Pending::Channel(c) => room.on_data_channel(&self.id, c),
        }
    }
}

impl SessionEvents for SessionHandler {
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

impl Room {
    fn on_remote_track(self: &Arc<Self>, id: &str, listens: bool, track: RemoteTrack) {
        let Some(p) = self.participant(id) else { return };
        let span = tracing::info_span!("participant", room = %self.name, participant = %id);
        let owner = p.clone();
        let handle = match track.kind.clone() {
            RemoteKind::Video(codec) if p.plan.publish_video => {
                let Some(tile) = p.tile.lock().unwrap().take() else { return };
                tokio::spawn(receive_video(self.clone(), p, track, tile, codec).instrument(span))
            }
            RemoteKind::Audio if p.plan.publish_audio => {
                self.audio.add_source(id, listens);
                if p.muted_audio.load(Ordering::Relaxed) {
                    self.audio.set_muted(id, true);
                }
                p.publishing_audio.store(true, Ordering::Relaxed);
                span.in_scope(|| tracing::info!("publishing audio"));
                tokio::spawn(receive_audio(self.clone(), p, track).instrument(span))
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
        let span = tracing::info_span!("participant", room = %self.name, participant = %id);
        *p.channel.lock().unwrap() = Some(dc.clone());
        let handle = tokio::spawn(super::events::data_channel(self.clone(), p.who(), dc).instrument(span));
        p.tasks.lock().unwrap().push(handle);
    }
}

/// How often a simulcast publisher's tile size is looked at (a layout change moves it to another
/// layer at that layer's next keyframe).
const LAYER_CHECK: std::time::Duration = std::time::Duration::from_millis(500);

/// Decodes a publisher's video into its tile; hidden tiles are not decoded. Of a simulcast
/// publisher only the layer that fits its tile is decoded ([`LayerSwitch`]).
async fn receive_video(room: Arc<Room>, p: Arc<Participant>, track: RemoteTrack, tile: VideoInput, codec: VideoCodec) {
    let mut layers = LayerSwitch::default();
    // The payload type is the publisher's; learn it from the first packet.
    let first = loop {
        match track.next().await {
            Some(Inbound::Layer { ssrc, rid }) => layers.add_layer(ssrc, &rid),
            Some(Inbound::Rtp(pkt)) => break pkt,
            None => return,
        }
    };
    // Keyframe requests (the decoder's, the layout's) go to the stream forwarded now.
    let forwarded = Arc::new(AtomicU32::new(first.header.ssrc));
    let requester = track.keyframe_requester_following(forwarded.clone());
    // Building and starting a pipeline blocks for milliseconds: not on a transport worker.
    let (label, pt, jitter_ms, backends, on_keyframe) = (
        format!("{}-{}", room.name, p.id),
        first.header.payload_type,
        room.deps.jitter_ms,
        room.deps.backends.clone(),
        requester.clone(),
    );
    let started = tokio::task::spawn_blocking(move || {
        VideoIngest::start(&label, codec, pt, jitter_ms, &backends, tile, on_keyframe)
    })
    .await;
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
    let mut frames = FrameAssembler::default();
    let mut next = Some(Inbound::Rtp(first));
    let mut check = tokio::time::interval(LAYER_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let inbound = match next.take() {
            Some(i) => i,
            None => tokio::select! {
                i = track.next() => match i {
                    Some(i) => i,
                    None => break,
                },
                _ = check.tick(), if layers.layers().len() > 1 => {
                    let width = room.video.placements().into_iter().find(|c| c.participant == p.id).map(|c| c.cell.w);
                    if let Some(ssrc) = layers.set_tile_width(width) {
                        tracing::debug!(ssrc, ?width, "asking a simulcast layer for a keyframe");
                        track.keyframe_requester_for(ssrc)();
                    }
                    continue;
                }
            },
        };
        let mut pkt = match inbound {
            Inbound::Layer { ssrc, rid } => {
                tracing::info!(ssrc, %rid, "simulcast layer");
                layers.add_layer(ssrc, &rid);
                p.set_layers(&layers);
                continue;
            }
            Inbound::Rtp(pkt) => pkt,
        };
        if layers.layers().len() > 1 {
            let h = &pkt.header;
            let keyframe = is_keyframe_start(codec, &pkt.payload);
            let size = (keyframe && codec == VideoCodec::Vp8).then(|| vp8_keyframe_size(&pkt.payload)).flatten();
            let before = layers.current().map(|l| l.ssrc);
            let arrival = Arrival {
                ssrc: h.ssrc,
                seq: h.sequence_number,
                ts: h.timestamp,
                bytes: pkt.payload.len(),
                keyframe,
                size,
            };
            let verdict = layers.on_packet(Instant::now(), arrival);
            let Verdict::Forward { ssrc, seq, ts } = verdict else { continue };
            if layers.current().map(|l| l.ssrc) != before {
                forwarded.store(pkt.header.ssrc, Ordering::Relaxed);
                p.set_layers(&layers);
                tracing::info!(rid = ?layers.current().map(|l| l.rid.clone()), "simulcast layer switched at its keyframe");
            }
            (pkt.header.ssrc, pkt.header.sequence_number, pkt.header.timestamp) = (ssrc, seq, ts);
        }
        let (ts, marker) = (pkt.header.timestamp, pkt.header.marker);
        if let Ok(bytes) = pkt.marshal() {
            frames.push(bytes.freeze(), ts, marker, |f| ingest.push_rtp_frame(f));
        }
    }
    // `ingest` drops here (or when the task is aborted on leave): its pipeline stops.
}

/// Hands a publisher's Opus packets, with their RFC 6464 level, to the room's mixer.
async fn receive_audio(room: Arc<Room>, p: Arc<Participant>, track: RemoteTrack) {
    let level_ext = p.plan.audio_level_ext;
    while let Some(pkt) = track.next_rtp().await {
        // RFC 6464: one byte, V bit + level in -dBov.
        let level = level_ext.and_then(|id| pkt.header.get_extension(id)).and_then(|b| b.first().map(|l| l & 0x7f));
        room.audio.push(&p.id, pkt.header.sequence_number, pkt.payload, level);
    }
}
