//! Outputs of a room beyond its participants: recordings of the composite and the full mix, and
//! live egress. Each is a pipeline of its own, fed through a [`tap::Tap`] on the room's encoded
//! video, so an output that is slow or fails never stalls the room; a recording costs a mux, not
//! an encode, when the container takes the room's codec. Around them: where recordings are
//! stored ([`storage`], [`upload`]: the local folder and an S3 object store) and the node's
//! [`webhook`]s, which tell a backend what happened.

pub mod egress;
pub mod recording;
pub mod storage;
pub mod tap;
pub mod upload;
pub mod webhook;

use std::time::Duration;

/// The wait before try `attempt + 1` (`attempt` from 1) when the first retry waits `first`:
/// `first`, `2 × first`, `4 × first`, ... (capped at 2^10 × `first`).
pub fn backoff(first: Duration, attempt: u32) -> Duration {
    first * 2u32.pow(attempt.saturating_sub(1).min(10))
}
