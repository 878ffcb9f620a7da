//! The API views of a room and its participants: what `GET /v1/rooms/{room}` answers.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::participant::LayersView;
use super::{DEFAULT_MAX_VISIBLE, JoinKind, Room, Source};
use crate::codec::{CodecChoice, VideoCodec};
use crate::media::layout::{LayoutSpec, Placement, Rect};
use crate::media::tiers::{OutputFormat, Tier};

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
    /// Why that codec: `offer_order` (the first of the offer's codecs Tessera encodes, RFC 3264
    /// §6.1) or `only_common` (the only one it encodes).
    pub video_codec_choice: Option<CodecChoice>,
    /// The output tier it receives (`full`, `half`, `quarter`), chosen from its bandwidth estimate.
    pub video_tier: Option<Tier>,
    /// The picture size of that tier, e.g. `[640, 360]`.
    pub video_size: Option<(u32, u32)>,
    /// GCC's estimate of the bandwidth toward it (TWCC feedback), kbit/s; `null` before feedback.
    pub bandwidth_kbps: Option<u64>,
    /// GCC's smoothed fraction of the packets sent to it that it reported lost (0..=1); `None`
    /// before feedback. For `/metrics` only (not in the room JSON).
    #[serde(skip)]
    pub loss_ratio: Option<f64>,
    /// Seconds since it joined.
    pub joined_s: f64,
    /// PLIs Tessera sent to this publisher (rate-limited by `--pli-interval-ms`).
    pub plis_sent: u64,
    /// Keyframe requests (PLI/FIR) this receiver sent about the composite.
    pub keyframe_requests: u64,
    /// Composite packets resent on this receiver's NACKs (RFC 4585 §6.2.1), from the encoder
    /// branch's shared history.
    pub retransmissions: u64,
    /// Composite packets this receiver NACKed that the history no longer held.
    pub nacks_unanswered: u64,
    /// Streams it publishes whose SSRC its offer declared wrongly or not at all, declared by
    /// Tessera from their MID extension or payload type (RFC 8843 §9.2).
    pub streams_redeclared: u64,
    /// Streams it sends that no m-section claims: dropped (and logged once each).
    pub streams_unmapped: u64,
    /// Its simulcast layers (RFC 8853) and the one decoded for its tile; `null` without simulcast.
    pub simulcast: Option<LayersView>,
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
    /// The backend that encodes it: `--backend`'s, or `cpu` after a fallback (`tessera doctor`).
    pub backend: String,
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
    pub rect: Option<Rect>,
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
    pub placements: Vec<Placement>,
    /// Composite frames produced so far.
    pub frames_out: u64,
    /// Decoded input frames that could not be drawn (not I420, or unreadable).
    pub frames_dropped: u64,
    /// Composite frames not encoded because nothing in them changed (sent once a second instead).
    pub frames_unchanged: u64,
    /// GPU encoders replaced by the next candidate (`cpu` in the end) after failing.
    pub encoder_fallbacks: u64,
    /// The backend compositing the room: `cpu` (the CPU canvas) or the backend whose `composite`
    /// fragment runs (`nvenc`: `cudacompositor`, `vaapi`: `vacompositor`).
    pub compositor: String,
    /// Times a composite fragment failed (at start or while running) and the CPU canvas took over.
    pub compositor_fallbacks: u64,
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
    /// Publishers' audio packets that arrived after their turn in the jitter buffer: dropped.
    pub audio_packets_late: u64,
    /// Publishers' audio packets dropped to catch up after a burst (over 120 ms buffered).
    pub audio_packets_overflow: u64,
    /// Audio frames concealed (Opus PLC) because a publisher's packet was missing at its tick.
    pub audio_frames_concealed: u64,
    /// Missing audio frames decoded from the next packet's Opus in-band FEC instead of concealed.
    pub audio_frames_fec_recovered: u64,
    /// Mixer ticks that started over 20 ms late (its thread was starved of CPU).
    pub audio_late_ticks: u64,
    /// PLIs sent to this room's publishers since it started.
    pub plis_sent_total: u64,
    /// Keyframe requests received from this room's receivers since it started.
    pub keyframe_requests_total: u64,
    /// Seconds since the room started.
    pub age_s: f64,
}

impl Room {
    /// The room as the API shows it.
    pub fn info(&self) -> RoomInfo {
        let format = self.video.format();
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
                muted: Media {
                    audio: p.muted_audio.load(Ordering::Relaxed),
                    video: p.muted_video.load(Ordering::Relaxed),
                },
                video_codec: p.plan.receive_video,
                video_codec_choice: p.plan.codec_choice,
                video_tier: p.tier(),
                video_size: p.tier().map(|t| t.size(format)),
                bandwidth_kbps: p.session.bandwidth.as_ref().and_then(|b| b.bps()).map(|b| (b / 1000.0) as u64),
                // Below 1e-9: no loss (the estimate stores a zero loss as the smallest f64).
                loss_ratio: p
                    .session
                    .bandwidth
                    .as_ref()
                    .filter(|b| b.bps().is_some())
                    .map(|b| b.loss())
                    .map(|l| if l < 1e-9 { 0.0 } else { l }),
                joined_s: p.joined.elapsed().as_secs_f64(),
                plis_sent: p.session.counters.plis_sent.load(Ordering::Relaxed),
                keyframe_requests: p.session.counters.keyframe_requests_received.load(Ordering::Relaxed),
                retransmissions: p.session.counters.retransmissions.load(Ordering::Relaxed),
                nacks_unanswered: p.session.counters.nacks_unanswered.load(Ordering::Relaxed),
                streams_redeclared: p.session.counters.redeclared_streams.load(Ordering::Relaxed),
                streams_unmapped: p.session.counters.unmapped_streams.load(Ordering::Relaxed),
                simulcast: p.layers.lock().unwrap().clone(),
            })
            .collect();
        let stats = self.video.stats();
        let options = self.options.lock().unwrap().clone();
        let plis_now: u64 = participants.iter().map(|p| p.plis_sent).sum();
        let requests_now: u64 = participants.iter().map(|p| p.keyframe_requests).sum();
        let backends = self.video.encoder_backends();
        let encoder_branches = self
            .video
            .encoder_branches()
            .into_iter()
            .map(|(codec, tier, receivers)| EncoderInfo {
                codec,
                tier,
                size: tier.size(format),
                kbps: tier.kbps(format),
                receivers,
                backend: backends
                    .iter()
                    .find(|(c, t, _)| (*c, *t) == (codec, tier))
                    .map_or_else(String::new, |(_, _, b)| b.clone()),
            })
            .collect();
        let audio = self.audio.stats();
        RoomInfo {
            room: self.name.clone(),
            participants,
            output: format,
            layout: self.video.layout().into(),
            active_speaker: self.video.speaker(),
            max_visible: options.max_visible.unwrap_or(DEFAULT_MAX_VISIBLE),
            max_participants: options.max_participants,
            tiles: self.video.tiles().into_iter().map(|(participant, rect)| TileInfo { participant, rect }).collect(),
            placements: self.video.placements(),
            frames_out: stats.frames_out.load(Ordering::Relaxed),
            frames_dropped: stats.frames_dropped.load(Ordering::Relaxed),
            frames_unchanged: stats.frames_unchanged.load(Ordering::Relaxed),
            encoder_fallbacks: stats.fallbacks.load(Ordering::Relaxed),
            compositor: self.video.compositor_backend(),
            compositor_fallbacks: stats.compositor_fallbacks.load(Ordering::Relaxed),
            keyframes_forced: stats.keyframes_forced.load(Ordering::Relaxed),
            encoders: self.video.encoders(),
            encoder_branches,
            audio_encodes_last_tick: audio.encodes_last_tick.load(Ordering::Relaxed),
            audio_decodes_last_tick: audio.decodes_last_tick.load(Ordering::Relaxed),
            audio_packets_late: audio.packets_late.load(Ordering::Relaxed),
            audio_packets_overflow: audio.packets_overflow.load(Ordering::Relaxed),
            audio_frames_concealed: audio.frames_concealed.load(Ordering::Relaxed),
            audio_frames_fec_recovered: audio.frames_fec_recovered.load(Ordering::Relaxed),
            audio_late_ticks: audio.late_ticks.load(Ordering::Relaxed),
            plis_sent_total: self.departed.0.load(Ordering::Relaxed) + plis_now,
            keyframe_requests_total: self.departed.1.load(Ordering::Relaxed) + requests_now,
            age_s: self.created.elapsed().as_secs_f64(),
        }
    }
}
