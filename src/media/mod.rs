//! Media: the GStreamer and Opus work of a room. Ingest (publisher RTP → decoded frames), the
//! compositor and its encoders, the audio mix-minus, and the fan-out of encoded packets.

pub mod audio;
pub mod canvas;
pub mod compositor;
pub mod fanout;
pub mod ingest;
pub mod tiers;
