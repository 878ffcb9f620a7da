//! Client code: programs that talk to a Tessera server over HTTP and WebRTC like any other
//! client — the load generator (also the integration tests' peer) and `tessera record`. Server
//! code never imports from here.

pub mod loadgen;
pub mod record;
