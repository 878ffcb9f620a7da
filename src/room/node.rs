//! The node's side of the registry: its load (the rooms' [`admission`] costs summed, plus the
//! joins under way), readiness, the reservations that keep two joins from taking the same last
//! unit, and draining. The state is [`Rooms`]' (`limits`, `draining`, `pending`, `removed`,
//! `finishing`); the decisions are [`admission`]'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::admission::{EncoderKind, JoinAsk, NodeLoad, Refusal, RoomLoad};
use super::{Room, RoomError, Rooms};
use crate::codec::VideoCodec;
use crate::transport::SessionPlan;

/// Joins admitted whose participant is not in its room yet: their cost, and what they start —
/// an encoder branch (room, codec), a room's base — so that joins at once into a new room count
/// its encoder and base once, not once each.
#[derive(Debug, Default)]
pub(super) struct PendingJoins {
    load: f64,
    encoders: HashMap<(String, VideoCodec), usize>,
    starts: HashMap<String, usize>,
}

/// A join's admitted cost, counted in the node's load until dropped (by then the participant is
/// in its room, or the join failed).
pub(super) struct Reservation<'a> {
    rooms: &'a Rooms,
    cost: f64,
    room: String,
    encoder: Option<VideoCodec>,
    starts: bool,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut p = self.rooms.pending.lock().unwrap();
        p.load = (p.load - self.cost).max(0.0);
        if let Some(codec) = self.encoder {
            release(&mut p.encoders, (self.room.clone(), codec));
        }
        if self.starts {
            release(&mut p.starts, self.room.clone());
        }
    }
}

/// Counts one user of `key` less, forgetting it at none.
fn release<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = m.get_mut(&key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(&key);
        }
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
        let load: f64 = rooms.values().map(|r| r.load().cost()).sum::<f64>() + self.pending.lock().unwrap().load;
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

    /// Admits a join with `plan` into room `name` (`room`: it, `None` when the join makes it)
    /// against the limits, counting its cost as pending until the returned reservation drops.
    /// `rooms` is the locked registry, so two joins cannot both take the last unit or room.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub(super) fn reserve_join(
        &self,
        rooms: &HashMap<String, Arc<Room>>,
        name: &str,
        room: Option<&Room>,
        plan: &SessionPlan,
    ) -> Result<Reservation<'_>, Refusal> {
        let node = self.node_load(rooms);
        let format = room.map_or(self.deps.format, |r| r.video.format());
        let running = room.map(|r| r.video.encoder_branches()).unwrap_or_default();
        let mut pending = self.pending.lock().unwrap();
        // The branch of its codec, unless it runs or a join under way starts it.
        let encoder = plan.receive_video.filter(|c| {
            !running.iter().any(|(rc, _, _)| rc == c) && !pending.encoders.contains_key(&(name.to_string(), *c))
        });
        let starts = room.is_none_or(|r| !r.load().active) && !pending.starts.contains_key(name);
        let ask = JoinAsk {
            publish_video: plan.publish_video,
            publish_audio: plan.publish_audio,
            receives: plan.receive_audio || plan.receive_video.is_some(),
            new_encoder: encoder.map(|_| (format.width, format.height)),
            starts_room: starts,
            new_room: room.is_none(),
            fps: format.fps,
            kind: EncoderKind::of_backend(self.deps.backends.backend()),
        };
        let cost = ask.cost();
        self.limits.admit(node, cost, ask.new_room)?;
        pending.load += cost;
        if let Some(codec) = encoder {
            *pending.encoders.entry((name.to_string(), codec)).or_default() += 1;
        }
        if starts {
            *pending.starts.entry(name.to_string()).or_default() += 1;
        }
        Ok(Reservation { rooms: self, cost, room: name.to_string(), encoder, starts })
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

    /// Returns once a room leaves the registry (one that leaves before this is awaited is missed:
    /// callers also poll, as the cluster's lease keeper does).
    pub async fn room_removed(&self) {
        self.removed.notified().await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::admission::Limits;
    use crate::room::{RoomDeps, Rooms};

    fn rooms(max_load: f64) -> Rooms {
        let cfg = crate::config::Config { udp_port: 0, tcp_port: 0, ..crate::config::Config::default() };
        let deps = RoomDeps {
            transport: crate::transport::Transport::new(&cfg).unwrap(),
            backends: crate::pipelines::Backends::new("cpu", None),
            format: crate::media::tiers::OutputFormat { width: 1280, height: 720, fps: 30, kbps: 1500 },
            audio_kbps: 32,
            jitter_ms: 50,
            recordings_dir: std::env::temp_dir(),
            storage: None,
            webhooks: Default::default(),
        };
        Rooms::with_limits(deps, Limits { max_load, max_rooms: None, max_participants_per_room: None })
    }

    const PUBLISHER: SessionPlan = SessionPlan {
        publish_video: true,
        publish_audio: true,
        receive_video: Some(VideoCodec::Vp8),
        codec_choice: None,
        receive_audio: true,
        audio_level_ext: None,
    };

    #[tokio::test]
    async fn joins_at_once_into_a_new_room_count_its_encoder_and_base_once() {
        let reg = rooms(4.0);
        let none = HashMap::new();
        // The first: its decode, audio, fan-out, the VP8 branch and the room's base.
        let first = reg.reserve_join(&none, "r", None, &PUBLISHER).unwrap();
        assert!((reg.load() - 3.02).abs() < 1e-9, "{}", reg.load());
        // The second, before the first is in: the branch and the base are counted already.
        let second = reg.reserve_join(&none, "r", None, &PUBLISHER).unwrap();
        assert!((reg.load() - 3.34).abs() < 1e-9, "{}", reg.load());
        // Another room starts its own branch: past 4 units.
        let other = reg.reserve_join(&none, "s", None, &PUBLISHER);
        assert!(matches!(other, Err(Refusal::Full { .. })), "{:?}", other.err());
        drop((first, second));
        assert_eq!(reg.load(), 0.0);
        let p = reg.pending.lock().unwrap();
        assert!(p.encoders.is_empty() && p.starts.is_empty(), "{p:?}");
    }

    #[tokio::test]
    async fn a_draining_registry_refuses_and_says_so() {
        let reg = rooms(100.0);
        assert!(reg.readiness().ready);
        assert!(reg.start_drain());
        assert!(!reg.start_drain(), "once");
        let r = reg.readiness();
        assert!(!r.ready && r.draining);
        assert_eq!(r.reason.as_deref(), Some("this node is draining: it takes no new rooms or joins"));
        let none = HashMap::new();
        assert!(matches!(reg.reserve_join(&none, "r", None, &PUBLISHER), Err(Refusal::Draining)));
        assert!(reg.wait_empty(tokio::time::Instant::now()).await, "no rooms: drained at once");
    }
}
