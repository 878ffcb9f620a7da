//! The room's side of the webhooks ([`crate::outputs::webhook`]): which room events a backend
//! hears, and with what. Every room event passes [`Room::hook`] on its way to the event bus;
//! `room_started` and `room_finished` come from the registry, `recording_finished` of an uploaded
//! recording from its upload (once the object is in the store, with its URL).

use serde_json::{Map, Value, json};

use super::Room;
use super::events::RoomEvent;

impl Room {
    /// Sends the webhook for room event `e`, when `e` is one webhooks carry:
    /// `participant_joined` / `participant_left` (`participant`), `recording_started` /
    /// `recording_finished` (`recording`, the recordings API's JSON) and `egress_{state}`
    /// (`egress`: `id`, `state`, `reason`).
    pub(super) fn hook(&self, e: &RoomEvent) {
        if !self.deps.webhooks.enabled() {
            return;
        }
        let mut f = Map::new();
        let event = match e {
            RoomEvent::Joined { participant, source, kind, .. } => {
                let p = json!({"id": participant.id, "name": participant.name, "source": source, "kind": kind});
                f.insert("participant".into(), p);
                "participant_joined".to_string()
            }
            RoomEvent::Left { participant, reason, .. } => {
                let p = json!({"id": participant.id, "name": participant.name, "reason": reason});
                f.insert("participant".into(), p);
                "participant_left".to_string()
            }
            RoomEvent::RecordingState { id, kind, state, reason, .. } if kind == "egress" => {
                let target = self.egresses().into_iter().find(|x| &x.id == id).map(|x| x.target);
                f.insert("egress".into(), json!({"id": id, "state": state, "reason": reason, "target": target}));
                format!("egress_{state}")
            }
            RoomEvent::RecordingState { id, state, .. } => {
                let Some(info) = self.recording_info(id) else { return };
                let event = match state.as_str() {
                    "recording" => "recording_started",
                    // An uploaded recording is finished once its object is in the store.
                    _ if info.upload.is_some() => return,
                    _ => "recording_finished",
                };
                f.insert("recording".into(), serde_json::to_value(info).unwrap_or(Value::Null));
                event.to_string()
            }
            _ => return,
        };
        self.deps.webhooks.send(&event, &self.name, f);
    }

    /// Sends webhook `event` (`room_started`, `room_finished`) for this room.
    pub(super) fn hook_room(&self, event: &str) {
        self.deps.webhooks.send(event, &self.name, Map::new());
    }
}
