//! Admission control: what a node's rooms cost, in one unit, and whether it takes one more join
//! or room. Pure: the registry ([`super::Rooms`]) counts what runs and asks; nothing here reads a
//! clock or a socket.
//!
//! **The unit** is one 1280x720 30 fps video decode on the CPU (`1.0`). On the 2-core AMD EPYC of
//! the README's benchmarks that is ~0.065 of a core (9 publishers of 640x360 VP8 decode and scale
//! into the canvas in 0.14-0.16 cores), so a core holds about [`UNITS_PER_CORE`] units. The other
//! costs are scaled from the same runs (README, "Performance"):
//!
//! | what | cost | measured |
//! |---|---|---|
//! | a publisher's video decode, `w`x`h` at `fps` | `w·h·fps / (1280·720·30)` ([`decode`]) | 640x360: 0.25 |
//! | an encoder branch on the CPU (VP8/H.264), `w`x`h` at `fps` | 2.5 × the pixel rate ([`encode`]) | 1280x720: 0.16-0.18 core |
//! | an encoder branch on a GPU backend (`nvenc`, `vaapi`) | 0.3 × the CPU cost | upload, download, the session |
//! | a receiver (SRTP fan-out of the composite and the mix) | [`RECEIVER`] = 0.05 | 50 WHEP viewers: +0.23 core |
//! | a publisher's audio (jitter buffer, decode when among the loudest) | [`AUDIO_PUBLISHER`] = 0.02 | 84 listeners: +0.27 core with fan-out |
//! | a running room (mixer tick, room clock, composite copy) | [`ROOM_BASE`] = 0.2 | ~0.01-0.03 core |
//! | an idle room (nobody in it: no thread runs) | 0 | |
//!
//! Check against the benchmark rooms: 9 publishers into 1280x720 → 2.25 + 2.5 + 0.5 + 0.18 + 0.2
//! = 5.6 units ≈ 0.37 cores (measured 0.43); 4 publishers + 50 WHEP viewers → 6.5 units ≈ 0.43
//! cores (measured 0.48). A publisher whose decoded size is not known yet (no frame, no simulcast
//! layer) is counted at [`DEFAULT_PUBLISHER_SIZE`], a camera's usual layer for a grid tile.
//!
//! `--max-load` defaults to [`default_max_load`]: [`UNITS_PER_CORE`] × cores × [`HEADROOM`], 24 on
//! 2 cores, leaving a fifth of the CPU for the transport's bursts (keyframes to many receivers,
//! joins). Size it from a load test on your nodes: `tessera_load` is this sum.

use std::fmt;
use std::time::Duration;

/// Units one core carries: 1 / 0.065 core per 720p30 decode, rounded.
pub const UNITS_PER_CORE: f64 = 15.0;
/// Share of the cores the default `--max-load` hands out.
pub const HEADROOM: f64 = 0.8;
/// Pixel rate of one unit: 1280 x 720 at 30 fps, pixels per second.
const UNIT_PIXEL_RATE: f64 = 1280.0 * 720.0 * 30.0;
/// An encoder branch on the CPU costs this many decodes of the same pixel rate.
pub const CPU_ENCODE_FACTOR: f64 = 2.5;
/// A GPU encoder branch (`nvenc`, `vaapi`) costs this share of the CPU one: the upload, the
/// download of the bitstream and the session; the encode runs on the GPU.
pub const GPU_ENCODE_SHARE: f64 = 0.3;
/// One receiver: SRTP fan-out of frames encoded once, and of the mix.
pub const RECEIVER: f64 = 0.05;
/// One publisher's audio: its jitter buffer and, when among the loudest, a decode and an encode.
pub const AUDIO_PUBLISHER: f64 = 0.02;
/// A room with someone in it: the 20 ms mixer tick, the room clock, the composite copy.
pub const ROOM_BASE: f64 = 0.2;
/// Decoded size assumed for a publisher whose size is not known yet, pixels (a camera's simulcast
/// layer for a grid tile).
pub const DEFAULT_PUBLISHER_SIZE: (u32, u32) = (640, 360);
/// `Retry-After` of a refusal because the node is full, seconds: load falls as people leave, and
/// a readiness probe (every 5 s in `deploy/k8s`) moves new rooms to other nodes meanwhile.
pub const RETRY_FULL: Duration = Duration::from_secs(5);
/// `Retry-After` of a refusal because the node drains: by then the load balancer has taken it out
/// of rotation (readiness 503), so a retry reaches another node.
pub const RETRY_DRAINING: Duration = Duration::from_secs(5);
/// `Retry-After` when no UDP port of `--udp-ports` is free: a join that never connects gives its
/// port back after `--peer-timeout-ms` (10 s by default).
pub const RETRY_NO_PORT: Duration = Duration::from_secs(10);

/// Where the room's encoders run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// Software encoders (`cpu` backend).
    Cpu,
    /// A GPU backend (`nvenc`, `vaapi`).
    Gpu,
}

impl EncoderKind {
    /// The kind of backend folder `backend` (`cpu`, `nvenc`, `vaapi`, ...): anything but `cpu` is
    /// a GPU.
    pub fn of_backend(backend: &str) -> Self {
        if backend == "cpu" { EncoderKind::Cpu } else { EncoderKind::Gpu }
    }
}

/// Cost of decoding `w`x`h` at `fps` on the CPU, units.
pub fn decode(w: u32, h: u32, fps: u32) -> f64 {
    f64::from(w) * f64::from(h) * f64::from(fps) / UNIT_PIXEL_RATE
}

/// Cost of one encoder branch of `w`x`h` at `fps` on `kind`, units.
pub fn encode(w: u32, h: u32, fps: u32, kind: EncoderKind) -> f64 {
    let cpu = CPU_ENCODE_FACTOR * decode(w, h, fps);
    match kind {
        EncoderKind::Cpu => cpu,
        EncoderKind::Gpu => cpu * GPU_ENCODE_SHARE,
    }
}

/// The default `--max-load` for `cores` CPU cores: [`UNITS_PER_CORE`] × cores × [`HEADROOM`].
pub fn default_max_load(cores: usize) -> f64 {
    UNITS_PER_CORE * cores.max(1) as f64 * HEADROOM
}

/// What one room runs, as the cost model counts it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoomLoad {
    /// Composite frame rate (the decodes are counted at it too: a tile shows at most that).
    pub fps: u32,
    /// Decoded size of each video publisher, pixels (`None`: not known yet).
    pub video_publishers: Vec<Option<(u32, u32)>>,
    /// Publishers of audio.
    pub audio_publishers: usize,
    /// Participants receiving the composite or the mix.
    pub receivers: usize,
    /// Size of each running encoder branch, pixels.
    pub encoders: Vec<(u32, u32)>,
    /// Where the encoders run.
    pub kind: Option<EncoderKind>,
    /// Someone is in the room or an output runs (its clock and mixer tick).
    pub active: bool,
}

impl RoomLoad {
    /// The room's cost, units: 0 for an idle room, else the table of the module docs summed.
    pub fn cost(&self) -> f64 {
        if !self.active {
            return 0.0;
        }
        let kind = self.kind.unwrap_or(EncoderKind::Cpu);
        let (dw, dh) = DEFAULT_PUBLISHER_SIZE;
        let decodes: f64 = self
            .video_publishers
            .iter()
            .map(|s| s.map_or(decode(dw, dh, self.fps), |(w, h)| decode(w, h, self.fps)))
            .sum();
        let encodes: f64 = self.encoders.iter().map(|&(w, h)| encode(w, h, self.fps, kind)).sum();
        ROOM_BASE
            + decodes
            + encodes
            + RECEIVER * self.receivers as f64
            + AUDIO_PUBLISHER * self.audio_publishers as f64
    }
}

/// What a join asks of the node, from its offer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JoinAsk {
    /// It sends video to decode.
    pub publish_video: bool,
    /// It sends audio to mix.
    pub publish_audio: bool,
    /// It receives the composite or the mix.
    pub receives: bool,
    /// The encoder branch it needs, `(w, h)`, when the room runs none for its codec yet.
    pub new_encoder: Option<(u32, u32)>,
    /// The room does not run yet (or is idle): its base cost starts.
    pub starts_room: bool,
    /// The room does not exist yet.
    pub new_room: bool,
    /// Composite frame rate of the room.
    pub fps: u32,
    /// Where the encoders run.
    pub kind: EncoderKind,
}

impl JoinAsk {
    /// What the join adds to the node's load, units (publishers counted at
    /// [`DEFAULT_PUBLISHER_SIZE`]).
    pub fn cost(&self) -> f64 {
        let (dw, dh) = DEFAULT_PUBLISHER_SIZE;
        let mut c = 0.0;
        if self.publish_video {
            c += decode(dw, dh, self.fps);
        }
        if self.publish_audio {
            c += AUDIO_PUBLISHER;
        }
        if self.receives {
            c += RECEIVER;
        }
        if let Some((w, h)) = self.new_encoder {
            c += encode(w, h, self.fps, self.kind);
        }
        if self.starts_room {
            c += ROOM_BASE;
        }
        c
    }
}

/// The node's caps (`--max-load`, `--max-rooms`, `--max-participants-per-room`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most load, units.
    pub max_load: f64,
    /// Most rooms (idle ones included); `None`: no cap.
    pub max_rooms: Option<usize>,
    /// Most participants in one room (a room's own `max_participants` may be lower); `None`: no cap.
    pub max_participants_per_room: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { max_load: default_max_load(cores), max_rooms: None, max_participants_per_room: None }
    }
}

/// The node now: what the registry counts when asked.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodeLoad {
    /// Sum of the rooms' costs and of the joins admitted but not yet in a room, units.
    pub load: f64,
    /// Rooms in the registry, idle ones included.
    pub rooms: usize,
    /// The node drains: it takes no new room or join.
    pub draining: bool,
}

/// Why the node refuses a join or a room: answered `503` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The node drains (SIGTERM, `POST /v1/drain`).
    #[error("this node is draining: it takes no new rooms or joins")]
    Draining,
    /// The join or room would take the load past `--max-load`.
    #[error("this node is full: load {load:.2} + {cost:.2} would pass max load {max:.2}")]
    Full {
        /// Load now, units.
        load: f64,
        /// What was asked, units.
        cost: f64,
        /// `--max-load`.
        max: f64,
    },
    /// A new room past `--max-rooms`.
    #[error("this node is full: {rooms} rooms, max {max}")]
    TooManyRooms {
        /// Rooms now.
        rooms: usize,
        /// `--max-rooms`.
        max: usize,
    },
}

impl Refusal {
    /// How long a client should wait before trying again (the `Retry-After` header).
    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::Draining => RETRY_DRAINING,
            Refusal::Full { .. } | Refusal::TooManyRooms { .. } => RETRY_FULL,
        }
    }
}

/// The cheapest thing a node may be asked for (a viewer of a running encoder branch): a node
/// that cannot take it is full, and not ready.
pub const CHEAPEST_JOIN: f64 = RECEIVER;

impl Limits {
    /// Whether the node takes something costing `cost` units (`new_room`: it makes a room).
    ///
    /// # Errors
    /// [`Refusal::Draining`] while draining, [`Refusal::TooManyRooms`] for a new room at
    /// `max_rooms`, [`Refusal::Full`] when `load + cost` passes `max_load`.
    pub fn admit(&self, node: NodeLoad, cost: f64, new_room: bool) -> Result<(), Refusal> {
        if node.draining {
            return Err(Refusal::Draining);
        }
        if new_room && let Some(max) = self.max_rooms.filter(|&m| node.rooms >= m) {
            return Err(Refusal::TooManyRooms { rooms: node.rooms, max });
        }
        if node.load + cost > self.max_load + 1e-9 {
            return Err(Refusal::Full { load: node.load, cost, max: self.max_load });
        }
        Ok(())
    }

    /// Readiness (`GET /readyz`): whether the node takes a new room with one viewer's worth of
    /// load ([`CHEAPEST_JOIN`]).
    ///
    /// # Errors
    /// The [`Refusal`] that such a request would get.
    pub fn ready(&self, node: NodeLoad) -> Result<(), Refusal> {
        self.admit(node, CHEAPEST_JOIN, true)
    }

    /// The participant cap of a room whose own `max_participants` is `room_cap`: the lower one.
    pub fn participant_cap(&self, room_cap: Option<usize>) -> Option<usize> {
        match (room_cap, self.max_participants_per_room) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "max load {:.1}", self.max_load)?;
        if let Some(r) = self.max_rooms {
            write!(f, ", max rooms {r}")?;
        }
        if let Some(p) = self.max_participants_per_room {
            write!(f, ", max participants per room {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn units_scale_with_the_pixel_rate_and_the_backend() {
        assert!(close(decode(1280, 720, 30), 1.0));
        assert!(close(decode(640, 360, 30), 0.25));
        assert!(close(decode(1280, 720, 15), 0.5));
        assert!(close(encode(1280, 720, 30, EncoderKind::Cpu), 2.5));
        assert!(close(encode(1280, 720, 30, EncoderKind::Gpu), 0.75));
        assert_eq!(EncoderKind::of_backend("cpu"), EncoderKind::Cpu);
        assert_eq!(EncoderKind::of_backend("nvenc"), EncoderKind::Gpu);
        assert!(close(default_max_load(2), 24.0));
        assert!(close(default_max_load(0), 12.0), "at least one core");
    }

    #[test]
    fn a_room_costs_what_it_runs_and_nothing_when_idle() {
        let nine = RoomLoad {
            fps: 30,
            video_publishers: vec![None; 9],
            audio_publishers: 9,
            receivers: 10,
            encoders: vec![(1280, 720)],
            kind: Some(EncoderKind::Cpu),
            active: true,
        };
        // 2.25 decodes + 2.5 encode + 0.5 fan-out + 0.18 audio + 0.2 base.
        assert!(close(nine.cost(), 5.63), "{}", nine.cost());
        // ≈ 0.37 cores at UNITS_PER_CORE, against 0.43 measured.
        assert!((nine.cost() / UNITS_PER_CORE - 0.43).abs() < 0.1);
        let known = RoomLoad { video_publishers: vec![Some((1280, 720))], ..nine.clone() };
        assert!(known.cost() < nine.cost() && close(known.cost() - nine.cost(), 1.0 - 9.0 * 0.25));
        assert_eq!(RoomLoad { active: false, ..nine }.cost(), 0.0);
    }

    #[test]
    fn a_join_costs_its_decode_its_fan_out_and_what_it_starts() {
        let viewer = JoinAsk {
            publish_video: false,
            publish_audio: false,
            receives: true,
            new_encoder: None,
            starts_room: false,
            new_room: false,
            fps: 30,
            kind: EncoderKind::Cpu,
        };
        assert!(close(viewer.cost(), RECEIVER));
        let first = JoinAsk {
            publish_video: true,
            publish_audio: true,
            new_encoder: Some((1280, 720)),
            starts_room: true,
            new_room: true,
            ..viewer
        };
        assert!(close(first.cost(), 0.25 + 0.02 + 0.05 + 2.5 + 0.2));
        let on_gpu = JoinAsk { kind: EncoderKind::Gpu, ..first };
        assert!(close(first.cost() - on_gpu.cost(), 2.5 - 0.75));
    }

    #[test]
    fn full_and_draining_nodes_refuse_with_a_reason_and_a_retry_time() {
        let limits = Limits { max_load: 10.0, max_rooms: Some(2), max_participants_per_room: Some(50) };
        let node = NodeLoad { load: 9.0, rooms: 1, draining: false };
        assert_eq!(limits.admit(node, 1.0, true), Ok(()), "exactly at the max is fine");
        let full = limits.admit(node, 1.5, false).unwrap_err();
        assert!(matches!(full, Refusal::Full { .. }));
        assert_eq!(full.to_string(), "this node is full: load 9.00 + 1.50 would pass max load 10.00");
        assert_eq!(full.retry_after(), RETRY_FULL);
        let two = NodeLoad { rooms: 2, ..node };
        assert_eq!(limits.admit(two, 0.1, true), Err(Refusal::TooManyRooms { rooms: 2, max: 2 }));
        assert_eq!(limits.admit(two, 0.1, false), Ok(()), "a join of an existing room is no new room");
        let draining = NodeLoad { draining: true, ..NodeLoad::default() };
        assert_eq!(limits.admit(draining, 0.0, false), Err(Refusal::Draining));
        assert!(Refusal::Draining.retry_after() > Duration::ZERO);
    }

    #[test]
    fn readiness_is_room_for_one_more_viewer_of_a_new_room() {
        let limits = Limits { max_load: 1.0, max_rooms: Some(3), max_participants_per_room: None };
        assert!(limits.ready(NodeLoad::default()).is_ok());
        assert!(limits.ready(NodeLoad { load: 0.99, ..NodeLoad::default() }).is_err());
        assert!(limits.ready(NodeLoad { rooms: 3, ..NodeLoad::default() }).is_err());
        let tiny = Limits { max_load: 0.01, ..limits };
        assert!(tiny.ready(NodeLoad::default()).is_err(), "a node that fits no one is not ready");
    }

    #[test]
    fn the_lower_participant_cap_wins() {
        let limits = Limits { max_load: 1.0, max_rooms: None, max_participants_per_room: Some(10) };
        assert_eq!(limits.participant_cap(None), Some(10));
        assert_eq!(limits.participant_cap(Some(4)), Some(4));
        assert_eq!(limits.participant_cap(Some(40)), Some(10));
        assert_eq!(Limits { max_participants_per_room: None, ..limits }.participant_cap(None), None);
    }
}
