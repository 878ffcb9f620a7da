//! How a participant joined and what its video is: the names the room JSON and events use.

use serde::{Deserialize, Serialize};

/// How a participant joined (shown in the room JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinKind {
    /// `POST /v1/rooms/{room}/participants`.
    Participant,
    /// `POST /whip/{room}` (RFC 9725 ingest).
    Whip,
    /// `POST /whep/{room}` (viewer).
    Whep,
}

impl JoinKind {
    /// Its JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            JoinKind::Participant => "participant",
            JoinKind::Whip => "whip",
            JoinKind::Whep => "whep",
        }
    }
}

/// What a publisher's video is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A camera (or any ordinary video).
    #[default]
    Camera,
    /// A screen share: shown large by the `presentation` layout.
    Screen,
}

impl Source {
    /// Its JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Camera => "camera",
            Source::Screen => "screen",
        }
    }
}
