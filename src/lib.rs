//! Tessera: a WebRTC MCU. Participants join a room over one peer connection each; Tessera decodes
//! what they publish, composites a video grid and mixes audio (mix-minus: everyone but yourself),
//! encodes the grid once per room per codec, and sends every participant one video and one audio.
//!
//! Layers, each importing only from the ones below it: [`signaling`] (HTTP offer/answer, WHIP,
//! WHEP, the rooms API) → [`room`] (the registry, participants, join/leave, events) →
//! [`transport`] (webrtc-rs peer connections) and [`outputs`] (recordings, egress) → [`media`]
//! (decode, layout, the compositor seam, encoders, audio mix-minus, fan-out, send loops) →
//! [`pipelines`] (encoder/decoder fragments) and [`config`]. [`codec`] (the codec table) and
//! [`ids`] are vocabulary every layer uses. [`cluster`] (the room directory: one node alone, or
//! several sharing rooms through Redis) sits between [`signaling`] and [`room`]. [`client`] (load generator, `tessera record`) talks to
//! a server like any client; no server code imports it.
#![deny(missing_docs)]

pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod doctor;
pub mod ids;
pub mod media;
pub mod outputs;
pub mod pipelines;
pub mod room;
pub mod server;
pub mod signaling;
pub mod transport;
