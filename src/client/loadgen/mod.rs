//! A WebRTC peer for load generation and tests: joins a room over HTTP like any client, publishes
//! a solid colour (VP8 encoded by GStreamer), a replayed VP8 WebM file, a latency marker, or
//! nothing, plus an Opus sine tone or pre-encoded talk turns ([`talk`]), and decodes what it
//! receives so callers can check pixels, tones, frame rate, freezes, audio gaps and glass-to-glass
//! latency ([`marker`]). `tessera loadgen` runs many of them against a server.
//!
//! Files: [`peer`] (joining, waiting on what arrives, leaving), [`publish`] (what a peer sends),
//! [`receive`] (decoding and counting what it receives), [`http`] (the blocking HTTP client),
//! [`analysis`], [`marker`], [`talk`], [`netcap`] (pixels and tones, the latency marker, speech
//! turns, a downlink cap), [`cli`] (`tessera loadgen`).

pub mod analysis;
pub mod cli;
pub mod http;
pub mod lossy;
pub mod marker;
pub mod netcap;
pub mod peer;
pub mod publish;
pub mod receive;
pub mod talk;

use std::path::PathBuf;
use std::time::Duration;

pub use analysis::{Frame, Rgb};
pub use http::{HTTP_TIMEOUT, HttpResponse, http, http_auth};
pub use peer::{Peer, offer_only};
pub use talk::TalkTurn;

/// A gap between two decoded frames longer than this counts as a freeze.
pub const FREEZE: Duration = Duration::from_millis(200);
/// A gap between two received audio packets longer than this counts as an audio gap.
pub const AUDIO_GAP: Duration = Duration::from_millis(100);

/// Why a peer could not join.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// The server answered the offer with an error status.
    #[error("join refused: HTTP {status}: {reason}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Body text.
        reason: String,
    },
    /// HTTP failed.
    #[error("http: {0}")]
    Http(String),
    /// The WebRTC stack failed.
    #[error("webrtc: {0}")]
    WebRtc(String),
    /// ICE/DTLS did not connect within this many seconds (10, or 20 through an impaired link).
    #[error("not connected within {0} s")]
    ConnectTimeout(u64),
    /// A GStreamer pipeline failed.
    #[error("gstreamer: {0}")]
    Gst(String),
}

pub(crate) fn w(e: impl std::fmt::Display) -> LoadgenError {
    LoadgenError::WebRtc(e.to_string())
}

/// Which endpoint a peer joins through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `POST /v1/rooms/{room}/participants`.
    Participant,
    /// `POST /whip/{room}`.
    Whip,
    /// `POST /whep/{room}`.
    Whep,
}

/// What a peer publishes as video.
#[derive(Debug, Clone, PartialEq)]
pub enum VideoSource {
    /// Nothing.
    None,
    /// A solid colour, 640x360 at 30 fps, VP8 encoded live (`videotestsrc pattern=solid-color`).
    Colour(Rgb),
    /// A VP8 WebM file replayed in real time and looped (no encode: cheap for the client).
    File(PathBuf),
    /// A sync marker: white for the first [`FLASH_MS`] of every second, black otherwise, and the
    /// audio (whatever `tone_hz`) a 3 kHz beep exactly then, silence otherwise — both from one
    /// clock, so a receiver or a recording can measure audio/video skew.
    Flash,
    /// Random noise (`videotestsrc pattern=snow`), 640x360 at 30 fps, VP8 at 800 kbit/s: a picture
    /// no encoder can compress, so the composite uses its full bitrate (for bandwidth tests).
    Noise,
    /// The latency marker: 640x360 at 30 fps, each frame showing its 16-bit counter as black and
    /// white blocks ([`marker`]), VP8 encoded live; the send time of each counter is remembered so
    /// a receiver with [`PeerOpts::latency_probe`] can measure latency.
    Marker,
    /// Simulcast (RFC 8853): replayed VP8 files of one picture at several sizes, smallest first,
    /// each sent as its own layer (rids `q`, `h`, `f`, … in that order).
    SimulcastFiles(Vec<PathBuf>),
    /// Simulcast of a solid colour encoded live at 160x90, 320x180 and 640x360 (rids `q`, `h`,
    /// `f`).
    SimulcastColour(Rgb),
}

/// The rid of simulcast layer `i` (smallest first): `q`, `h`, `f`, then `l3`, `l4`, ….
pub fn layer_rid(i: usize) -> String {
    ["q", "h", "f"].get(i).map_or_else(|| format!("l{i}"), |r| r.to_string())
}

/// Length of the [`VideoSource::Flash`] flash and beep, ms (every 1000 ms).
pub const FLASH_MS: u64 = 200;
/// Frequency of the [`VideoSource::Flash`] beep, Hz.
pub const FLASH_HZ: f64 = 3000.0;

/// How a peer's ICE reaches the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IcePath {
    /// UDP from a loopback socket: the server on the same machine (the default).
    #[default]
    Loopback,
    /// ICE-TCP only (RFC 6544, active), as a client on a network that blocks UDP.
    TcpOnly,
    /// UDP from every interface, with these STUN/TURN servers (`turn:user:pass@host:port`, as
    /// `--ice-server`): e.g. a client that reaches the server only through a TURN relay.
    Servers(Vec<String>),
}

/// What a peer does.
#[derive(Debug, Clone)]
pub struct PeerOpts {
    /// Display name.
    pub name: String,
    /// Video it publishes.
    pub video: VideoSource,
    /// Publishes an Opus sine tone of this frequency, Hz.
    pub tone_hz: Option<f64>,
    /// Amplitude of the tone, 0..=1 (default 0.25, about -15 dBFS).
    pub tone_volume: f64,
    /// Opens a data channel (`tessera`) for room events and chat.
    pub data_channel: bool,
    /// Access token sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// `camera` (default) or `screen`: joins with `?source=`.
    pub source: Option<&'static str>,
    /// Decode what it receives (default); `false` only counts frames and packets.
    pub decode: bool,
    /// Receives the composite and the mix.
    pub receive: bool,
    /// Video codecs offered (MIME types); the default offers VP8 and H264.
    pub video_codecs: Vec<&'static str>,
    /// Endpoint.
    pub via: Via,
    /// Frames between periodic keyframes of a [`VideoSource::Colour`] encode; 0 (the default)
    /// sends keyframes only when the server asks (PLI/FIR), as browsers do.
    pub keyframe_interval: u32,
    /// Caps what it receives to this many bits/s (0 = no cap; changeable while running): a slow
    /// downlink, see [`netcap`].
    pub rate_cap: Option<netcap::Cap>,
    /// Reaches the server through a relay that drops and delays datagrams in both directions (a
    /// bad network, see [`lossy`]; loopback ICE only);
    /// `None` (the default) is a clean link.
    pub link: Option<lossy::LinkSpec>,
    /// Publishes pre-encoded speech-like Opus in talk turns (one shared ticker for the whole
    /// process, RFC 6464 audio levels) instead of a GStreamer-encoded `tone_hz` sine; `None` (the
    /// default) keeps the tone.
    pub talk: Option<TalkTurn>,
    /// Reads the latency marker of a [`VideoSource::Marker`] publisher in the decoded composite
    /// (needs `decode`; the room must use the grid layout): [`ReceiveStats`] gets latency figures.
    pub latency_probe: bool,
    /// How its ICE reaches the server.
    pub ice: IcePath,
    /// Edits the offer's text before it is posted (to play a client that writes odd SDP, e.g. a
    /// wrong `a=ssrc`); `None` posts it as made.
    pub offer_edit: Option<fn(String) -> String>,
    /// Offers RTX (RFC 4588) and each codec's RTCP feedback, as browsers do, so retransmissions
    /// come on an RTX stream; `false` (the default) offers the codecs alone.
    pub rtx: bool,
}

impl PeerOpts {
    /// A sendrecv participant publishing a solid `colour` and a `tone_hz` sine.
    pub fn publisher(name: &str, colour: Rgb, tone_hz: f64) -> Self {
        Self {
            name: name.into(),
            video: VideoSource::Colour(colour),
            tone_hz: Some(tone_hz),
            receive: true,
            video_codecs: vec![crate::codec::VP8.mime, crate::codec::H264.mime],
            via: Via::Participant,
            keyframe_interval: 0,
            rate_cap: None,
            link: None,
            tone_volume: 0.25,
            data_channel: false,
            token: None,
            source: None,
            decode: true,
            talk: None,
            latency_probe: false,
            offer_edit: None,
            ice: IcePath::Loopback,
            rtx: false,
        }
    }

    /// A recvonly WHEP viewer: a publisher that publishes nothing.
    pub fn viewer(name: &str) -> Self {
        Self { video: VideoSource::None, tone_hz: None, via: Via::Whep, ..Self::publisher(name, (0, 0, 0), 0.0) }
    }
}

/// Receive statistics of one peer.
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    /// Composite frames decoded.
    pub frames: u64,
    /// Gaps longer than [`FREEZE`] between decoded frames.
    pub freezes: u64,
    /// Longest gap between frames, ms.
    pub max_gap_ms: u64,
    /// Audio samples decoded (48 kHz).
    pub audio_samples: u64,
    /// POST → first decoded composite frame, ms.
    pub join_ms: Option<u64>,
    /// Audio RTP packets received (20 ms each), decoded or only counted.
    pub audio_packets: u64,
    /// Gaps longer than [`AUDIO_GAP`] between received audio packets.
    pub audio_gaps: u64,
    /// Latency samples (one per marker frame read), with [`PeerOpts::latency_probe`].
    pub latency_samples: u64,
    /// Median latency, ms: marker frame pushed to the publisher's encoder → decoded here in the
    /// composite (client encode + network + the server's jitter buffer, decode, composite and
    /// encode + network + client jitter buffer and decode).
    pub latency_ms_median: Option<f64>,
    /// 95th percentile of the same, ms.
    pub latency_ms_p95: Option<f64>,
}
