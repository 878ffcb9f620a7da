//! Room events: what happens in a room, as JSON on every participant's data channel, and the
//! data-channel protocol itself: a `welcome` first, then every event; chat and self-mute in.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use super::Room;
use crate::ids::now_ms;
use crate::media::layout::LayoutSpec;

/// Largest chat message, characters.
pub const CHAT_MAX_CHARS: usize = 1000;
/// Chat messages one participant may send per second (a burst of this many, refilled per second).
pub const CHAT_PER_SECOND: f64 = 5.0;

/// A participant as events name it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Who {
    /// Participant id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// A participant as `welcome` lists it: who, how it joined, and its mutes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// Participant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// `participant`, `whip` or `whep`.
    pub kind: String,
    /// `camera` or `screen`.
    pub source: String,
    /// Muted audio and video.
    pub muted: Muted,
}

/// Mute flags of a participant.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Muted {
    /// Audio muted.
    pub audio: bool,
    /// Video muted.
    pub video: bool,
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
        /// Everyone in the room, join order, with how they joined and their mutes.
        participants: Vec<Member>,
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
        /// `participant`, `whip` or `whep`.
        kind: String,
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
        /// `recording` or `egress`.
        kind: String,
        /// `recording`, `stopped`, `failed`, `connecting`, `streaming`, `reconnecting`.
        state: String,
        /// Why, for `failed` and `reconnecting` (the error, with the OS error where there is one).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
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

/// A token bucket: `rate` messages per second, bursts of `rate`. Pure: callers pass `now`.
#[derive(Debug)]
pub struct RateLimit {
    tokens: f64,
    rate: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket at `now`.
    pub fn new(rate: f64, now: Instant) -> Self {
        Self { tokens: rate, rate, last: now }
    }

    /// Takes one token at `now`, if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        self.tokens = (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
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
    // Control characters go first: a text of only those (`"\u{7f}"`) is empty, not an empty
    // message broadcast to the room.
    let kept: String = text.chars().filter(|c| !c.is_control() || *c == '\n').collect();
    let t = kept.trim();
    if t.is_empty() {
        return Err("empty chat message".into());
    }
    if t.chars().count() > CHAT_MAX_CHARS {
        return Err(format!("chat message longer than {CHAT_MAX_CHARS} characters"));
    }
    Ok(t.to_string())
}

/// One participant's data channel: room events out (a `welcome` first), chat and self-mute in.
/// Refused messages get an `error` event back (not broadcast) and a log line.
pub(super) async fn data_channel(room: Arc<Room>, me: Who, dc: Arc<dyn DataChannel>) {
    let mut events = room.subscribe_events();
    let mut limit = RateLimit::new(CHAT_PER_SECOND, Instant::now());
    let mut open = false;
    let send = |e: &RoomEvent| serde_json::to_string(e).unwrap_or_default();
    let welcome = || {
        let participants = room.participants.lock().unwrap().iter().map(|x| x.member()).collect();
        let speaker = room.video.speaker().and_then(|id| room.who(&id));
        RoomEvent::Welcome { ts: now_ms(), you: me.clone(), participants, layout: room.layout().into(), speaker }
    };
    // The channel may already be open when it is announced.
    if matches!(dc.ready_state().await, Ok(webrtc::data_channel::RTCDataChannelState::Open)) {
        open = true;
        let _ = dc.send_text(&send(&welcome())).await;
    }
    loop {
        tokio::select! {
            ev = dc.poll() => match ev {
                Some(DataChannelEvent::OnOpen) => {
                    if !open {
                        open = true;
                        let _ = dc.send_text(&send(&welcome())).await;
                    }
                }
                Some(DataChannelEvent::OnMessage(m)) => {
                    if let Some(reason) = handle_message(&room, &me, &m.data, &mut limit) {
                        tracing::info!(%reason, "data channel message refused");
                        let _ = dc.send_text(&send(&RoomEvent::Error { ts: now_ms(), reason })).await;
                    }
                }
                Some(DataChannelEvent::OnClose) | None => break,
                Some(_) => {}
            },
            e = events.recv() => match e {
                Ok(e) => {
                    if open {
                        let _ = dc.send_text(&send(&e)).await;
                    }
                }
                Err(RecvError::Lagged(n)) => tracing::warn!(skipped = n, "data channel fell behind; events dropped"),
                Err(RecvError::Closed) => break,
            },
        }
    }
}

/// Acts on one message from participant `me`; returns the reason when it is refused.
fn handle_message(room: &Room, me: &Who, data: &[u8], limit: &mut RateLimit) -> Option<String> {
    match serde_json::from_slice::<ClientMessage>(data) {
        Ok(ClientMessage::Chat { text }) => {
            if !limit.allow(Instant::now()) {
                return Some(format!("chat rate limit: at most {CHAT_PER_SECOND} messages per second"));
            }
            match check_chat(&text) {
                Ok(text) => {
                    room.emit(RoomEvent::Chat { ts: now_ms(), from: me.clone(), text });
                    None
                }
                Err(e) => Some(e),
            }
        }
        Ok(ClientMessage::Mute { audio, video }) => {
            room.mute(&me.id, audio, video, "self").err().map(|e| e.to_string())
        }
        Err(e) => Some(format!("unknown message: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let e = RoomEvent::Chat { ts: 5, from: Who { id: "p1".into(), name: "a".into() }, text: "hi".into() };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"chat","ts":5,"from":{"id":"p1","name":"a"},"text":"hi"}"#
        );
        let m: ClientMessage = serde_json::from_str(r#"{"type":"mute","audio":true}"#).unwrap();
        assert_eq!(m, ClientMessage::Mute { audio: Some(true), video: None });
    }

    #[test]
    fn chat_limits() {
        assert!(check_chat("  ").is_err());
        assert!(check_chat(&"x".repeat(1001)).is_err());
        assert_eq!(check_chat(" hi\u{7}\n").unwrap(), "hi");
        // Found by tests/fuzz.rs: only control characters made an empty message.
        assert!(check_chat("\u{7f}").is_err() && check_chat("\u{1b}\u{0} \n").is_err());
        let t0 = Instant::now();
        let mut r = RateLimit::new(5.0, t0);
        assert_eq!((0..10).filter(|_| r.allow(t0)).count(), 5);
        assert!(!r.allow(t0 + std::time::Duration::from_millis(100)), "half a token after 100 ms");
        assert!(r.allow(t0 + std::time::Duration::from_millis(200)), "a whole one after 200 ms");
    }
}
