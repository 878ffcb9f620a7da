//! The node's side of the registry: its load (the rooms' [`admission`] costs summed, plus the
//! joins under way), readiness, the reservations that keep two joins from taking the same last
//! unit, and draining. The state is [`Rooms`]' (`limits`, `draining`, `pending`, `removed`,
//! `finishing`); the decisions are [`admission`]'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::admission::{NodeLoad, Refusal, RoomLoad};
use super::{EncoderKind, Room, RoomError, Rooms};

/// A join's admitted cost, counted in the node's load until dropped (by then the participant is
/// in its room, or the join failed).
pub(super) struct Reservation<'a> {
    rooms: &'a Rooms,
    cost: f64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut p = self.rooms.pending.lock().unwrap();
        *p = (*p - self.cost).max(0.0);
    }
}

/// The node's admission state, as `GET /readyz` and `/metrics` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Takes new rooms and joins.
    pub ready: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// Draining (SIGTERM or `POST /v1/drain`).
    pub draining: bool,
    /// The rooms' summed cost and the joins under way, admission units (1.0 = one 720p30 decode).
    pub load: f64,
    /// `--max-load`, units.
    pub max_load: f64,
    /// Rooms, idle ones included.
    pub rooms: usize,
    /// `--max-rooms`.
    pub max_rooms: Option<usize>,
    /// Participants in every room.
    pub participants: usize,
    /// `--max-participants-per-room`.
    pub max_participants_per_room: Option<usize>,
}

impl Rooms {
    /// The node's load now, with `rooms` the locked registry.
    pub(super) fn node_load(&self, rooms: &HashMap<String, Arc<Room>>) -> NodeLoad {
        let load: f64 = rooms.values().map(|r| r.load().cost()).sum::<f64>() + *self.pending.lock().unwrap();
        NodeLoad { load, rooms: rooms.len(), draining: self.draining.load(Ordering::SeqCst) }
    }

    /// The node's load now: the rooms' summed cost and the joins under way, units.
    pub fn load(&self) -> f64 {
        self.node_load(&self.rooms.lock().unwrap()).load
    }

    /// Whether the node takes new rooms and joins, and what it carries.
    pub fn readiness(&self) -> Readiness {
        let (node, participants) = {
            let rooms = self.rooms.lock().unwrap();
            (self.node_load(&rooms), rooms.values().map(|r| r.len()).sum())
        };
        let verdict = self.limits.ready(node);
        Readiness {
            ready: verdict.is_ok(),
            reason: verdict.err().map(|r| r.to_string()),
            draining: node.draining,
            load: node.load,
            max_load: self.limits.max_load,
            rooms: node.rooms,
            max_rooms: self.limits.max_rooms,
            participants,
            max_participants_per_room: self.limits.max_participants_per_room,
        }
    }

    /// Admits `cost` units (a new room when `new_room`) against the limits, counting it as
    /// pending until the returned reservation drops. `rooms` is the locked registry, so two joins
    /// cannot both take the last room.
    pub(super) fn reserve(
        &self,
        rooms: &HashMap<String, Arc<Room>>,
        cost: f64,
        new_room: bool,
    ) -> Result<Reservation<'_>, Refusal> {
        let node = self.node_load(rooms);
        self.limits.admit(node, cost, new_room)?;
        *self.pending.lock().unwrap() += cost;
        Ok(Reservation { rooms: self, cost })
    }

    /// Whether the node drains.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Starts draining: no new rooms or joins from now on (`503`), and each room ends once its
    /// last participant leaves — rooms made by `PUT` too, and those empty now at once. Returns
    /// `false` if the node was draining already.
    pub fn start_drain(&self) -> bool {
        if self.draining.swap(true, Ordering::SeqCst) {
            return false;
        }
        tracing::info!(rooms = self.len(), "draining: no new rooms or joins");
        for r in self.all() {
            self.end_if_empty(&r);
        }
        true
    }

    /// Waits until the registry holds no rooms, or until `deadline`. Returns whether it is empty.
    pub async fn wait_empty(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let removed = self.removed.notified();
            tokio::pin!(removed);
            removed.as_mut().enable();
            if self.is_empty() {
                return true;
            }
            tokio::select! {
                _ = &mut removed => {}
                _ = tokio::time::sleep_until(deadline) => return self.is_empty(),
            }
        }
    }

    /// Ends every room (participants leave with `reason`), finalizes every recording, and waits
    /// for rooms that ended before to finish finalizing theirs (at most `wait` for those).
    pub async fn end_all(&self, reason: &str, wait: Duration) {
        for r in self.all() {
            self.end_with(&r.name, reason).await;
        }
        let finishing: Vec<_> = self.finishing.lock().unwrap().drain(..).collect();
        let all = async {
            for f in finishing {
                let _ = f.await;
            }
        };
        if tokio::time::timeout(wait, all).await.is_err() {
            tracing::warn!("recordings still finalizing after {wait:?}");
        }
    }
}

impl Room {
    /// The participant cap: the room's `max_participants` or the node's
    /// `--max-participants-per-room`, the lower one.
    pub(super) fn participant_cap(&self) -> Option<usize> {
        let own = self.options.lock().unwrap().max_participants;
        match self.registry.upgrade() {
            Some(reg) => reg.limits.participant_cap(own),
            None => own,
        }
    }

    /// Refuses one more participant when the room is at its cap.
    ///
    /// # Errors
    /// [`RoomError::Full`] with the cap.
    pub(super) fn check_cap(&self) -> Result<(), RoomError> {
        match self.participant_cap() {
            Some(max) if self.len() >= max => Err(RoomError::Full(max)),
            _ => Ok(()),
        }
    }

    /// What this room runs now, for the cost model ([`admission`]).
    pub fn load(&self) -> RoomLoad {
        let format = self.video.format();
        let (video_publishers, audio_publishers, receivers, people) = {
            let ps = self.participants.lock().unwrap();
            let video: Vec<Option<(u32, u32)>> = ps
                .iter()
                .filter(|p| p.plan.publish_video)
                .map(|p| p.layers.lock().unwrap().as_ref().and_then(|l| l.size))
                .collect();
            let audio = ps.iter().filter(|p| p.plan.publish_audio).count();
            let receivers = ps.iter().filter(|p| p.plan.receive_audio || p.plan.receive_video.is_some()).count();
            (video, audio, receivers, ps.len())
        };
        RoomLoad {
            fps: format.fps,
            video_publishers,
            audio_publishers,
            receivers,
            encoders: self.video.encoder_branches().into_iter().map(|(_, tier, _)| tier.size(format)).collect(),
            kind: Some(EncoderKind::of_backend(self.deps.backends.backend())),
            active: people > 0 || self.outputs.running(),
        }
    }
}
