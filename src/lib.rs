//! Tessera: a WebRTC MCU. Participants join a room over one peer connection each; Tessera decodes
//! what they publish, composites a video grid and mixes audio (mix-minus: everyone but yourself),
//! encodes the grid once per room per codec, and sends every participant one video and one audio.
//!
//! The data path is the module order: [`signaling`] (HTTP offer/answer, WHIP, WHEP) →
//! [`transport`] (webrtc-rs peer connections) → [`room`] (participants, join/leave, layout) →
//! [`media`] (GStreamer decode, compositor, encoders, audio mix-minus, fan-out). Encoder and
//! decoder backends come from [`pipelines`] text fragments.
#![deny(missing_docs)]

pub mod config;
pub mod loadgen;
pub mod media;
pub mod outputs;
pub mod pipelines;
pub mod room;
pub mod server;
pub mod signaling;
pub mod transport;
