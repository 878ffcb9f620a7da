//! Media: the GStreamer and Opus work of a room. Ingest (publisher RTP → decoded frames), the
//! room's video (tiles, the compositor seam, encoders, the room clock), the audio mix-minus, the
//! fan-out of encoded packets and the send loops toward each receiver.

pub mod audio;
pub mod bus;
pub mod canvas;
pub mod downstream;
pub mod fallback;
pub mod fanout;
pub mod gpu_context;
pub mod ingest;
pub mod jitter_target;
pub mod layout;
pub mod retransmit;
pub mod simulcast;
pub mod tiers;
pub mod video;
