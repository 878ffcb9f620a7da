//! Integration tests: real webrtc-rs peers over loopback against an in-process Tessera, real
//! GStreamer on both sides, and (in `browser`) real headless Chromium. One behaviour per module;
//! one test binary so the suite links once.

#[path = "../common/mod.rs"]
mod common;

mod admission;
mod bad_input;
mod browser;
mod cluster;
mod crash;
mod demux;
mod doctor;
mod edge;
mod egress;
mod events;
mod fallback;
mod firefox;
mod http_hygiene;
mod join_grid;
mod layouts;
mod leave;
mod loss;
mod memory;
mod metrics;
mod mix_minus;
mod mute;
mod object_storage;
mod recording;
mod simulcast;
mod speaker;
mod tiers;
mod timeouts;
mod tokens;
mod webrtcbin;
mod whep;
mod whip;
