//! Room events: what happens in a room, as JSON on every participant's data channel, plus the
//! chat messages participants send each other through the server.

use serde::{Deserialize, Serialize};

use super::layout::LayoutSpec;

/// Largest chat message, characters.
pub const CHAT_MAX_CHARS: usize = 1000;
/// Chat messages one participant may send per second (a burst of this many, refilled per second).
pub const CHAT_PER_SECOND: f64 = 5.0;

/// Milliseconds since the Unix epoch, server time.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A participant as events name it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Who {
    /// Participant id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// One room event. JSON: `{"type": "joined", "ts": 1700000000000, "participant": {...}}` and so on,
/// `ts` in ms since the Unix epoch (server time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RoomEvent {
    /// Sent first on a new data channel: who is here.
    Welcome {
        /// Server time, ms.
        ts: u64,
        /// The receiving participant.
        you: Who,
        /// Everyone in the room, join order.
        participants: Vec<Who>,
        /// Current layout.
        layout: LayoutSpec,
        /// Active speaker.
        speaker: Option<Who>,
    },
    /// Someone joined.
    Joined {
        /// Server time, ms.
        ts: u64,
        /// Who.
        participant: Who,
        /// `camera` or `screen`.
        source: String,
    },
    /// Someone left.
    Left {
        /// Server time, ms.
        ts: u64,
        /// Who.
        participant: Who,
        /// `left`, `kicked`, `disconnected`, `room ended`.
        reason: String,
    },
    /// The active speaker changed.
    ActiveSpeaker {
        /// Server time, ms.
        ts: u64,
        /// The new speaker.
        participant: Option<Who>,
    },
    /// The layout changed.
    LayoutChanged {
        /// Server time, ms.
        ts: u64,
        /// The new layout.
        layout: LayoutSpec,
    },
    /// A participant's audio or video was muted or unmuted.
    MuteChanged {
        /// Server time, ms.
        ts: u64,
        /// Who.
        participant: Who,
        /// Audio muted.
        audio: bool,
        /// Video muted.
        video: bool,
        /// `self` or `server`.
        by: String,
    },
    /// A recording or egress changed state.
    RecordingState {
        /// Server time, ms.
        ts: u64,
        /// Recording or egress id.
        id: String,
        /// `recording`, `stopped`, `failed`, `reconnecting`.
        state: String,
    },
    /// A chat message, relayed by the server.
    Chat {
        /// Server time, ms.
        ts: u64,
        /// Sender.
        from: Who,
        /// Text, at most [`CHAT_MAX_CHARS`] characters.
        text: String,
    },
    /// An answer to a bad message from this participant (not broadcast).
    Error {
        /// Server time, ms.
        ts: u64,
        /// What was wrong.
        reason: String,
    },
}

/// What a participant may send on its data channel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// A chat message for the room.
    Chat {
        /// Text.
        text: String,
    },
    /// The participant muted or unmuted itself.
    Mute {
        /// Audio muted (absent: unchanged).
        audio: Option<bool>,
        /// Video muted (absent: unchanged).
        video: Option<bool>,
    },
}

/// A token bucket: `rate` messages per second, bursts of `rate`.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    rate: f64,
    last: std::time::Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(rate: f64) -> Self {
        Self { tokens: rate, rate, last: std::time::Instant::now() }
    }

    /// Takes one token if there is one.
    pub fn allow(&mut self) -> bool {
        let now = std::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Checks a chat text: trimmed, 1..=[`CHAT_MAX_CHARS`] characters, no control characters but newlines.
pub fn check_chat(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty chat message".into());
    }
    if t.chars().count() > CHAT_MAX_CHARS {
        return Err(format!("chat message longer than {CHAT_MAX_CHARS} characters"));
    }
    Ok(t.chars().filter(|c| !c.is_control() || *c == '\n').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let e = RoomEvent::Chat { ts: 5, from: Who { id: "p1".into(), name: "a".into() }, text: "hi".into() };
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"type":"chat","ts":5,"from":{"id":"p1","name":"a"},"text":"hi"}"#);
        let m: ClientMessage = serde_json::from_str(r#"{"type":"mute","audio":true}"#).unwrap();
        assert_eq!(m, ClientMessage::Mute { audio: Some(true), video: None });
    }

    #[test]
    fn chat_limits() {
        assert!(check_chat("  ").is_err());
        assert!(check_chat(&"x".repeat(1001)).is_err());
        assert_eq!(check_chat(" hi\u{7}\n").unwrap(), "hi");
        let mut r = RateLimit::new(5.0);
        assert_eq!((0..10).filter(|_| r.allow()).count(), 5);
    }
}
