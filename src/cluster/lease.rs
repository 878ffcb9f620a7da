//! Room leases: which a node renews and which it releases, decided from what it runs and what it
//! holds (pure, `now` passed in), and the Redis scripts that renew and release only a node's own
//! lease (compare-and-set: a lease another node took after this one's expired is left alone).
//!
//! A lease is `room:{name}` = the owner's node name, set with `SET … NX PX ttl` when a node
//! creates the room, renewed every third of the TTL while the room runs, deleted when it ends.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The Redis key of room `room`'s lease.
pub fn room_key(room: &str) -> String {
    format!("room:{room}")
}

/// The Redis key of node `node`'s heartbeat.
pub fn node_key(node: &str) -> String {
    format!("node:{node}")
}

/// `KEYS[1]` a lease, `ARGV[1]` this node, `ARGV[2]` the TTL in ms. Extends this node's lease;
/// takes it again when it is gone (Redis restarted, or it expired while Redis was unreachable).
/// Returns 1 (renewed), 2 (taken again) or the name of the node that holds it now.
pub const RENEW: &str = r"
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
elseif not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return v";

/// `KEYS[1]` a lease, `ARGV[1]` this node. Deletes the lease if this node holds it; returns 1 if
/// it did, 0 if not.
pub const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// A lease this node took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// When it was taken (a room is in the registry within milliseconds of that).
    pub claimed: Instant,
    /// Whether its room has been seen running here since.
    pub seen: bool,
}

/// What one keeper tick does with the leases.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Rooms whose lease is renewed (every room this node runs).
    pub renew: BTreeSet<String>,
    /// Rooms whose lease is released: held, not running here, and either seen running before (it
    /// ended) or taken longer than `grace` ago (its first join failed).
    pub release: BTreeSet<String>,
}

/// The tick's plan for `running` (this node's rooms now) and `held` (the leases it took), at
/// `now`; marks as seen the held leases whose room runs.
pub fn plan(running: &[String], held: &mut HashMap<String, Held>, now: Instant, grace: Duration) -> Plan {
    let renew: BTreeSet<String> = running.iter().cloned().collect();
    for (room, h) in held.iter_mut() {
        h.seen |= renew.contains(room);
    }
    let release = held
        .iter()
        .filter(|(room, h)| !renew.contains(*room) && (h.seen || now.duration_since(h.claimed) > grace))
        .map(|(room, _)| room.clone())
        .collect();
    Plan { renew, release }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn running_rooms_are_renewed_and_ended_ones_released_at_once() {
        let t0 = Instant::now();
        let mut held = HashMap::from([("a".to_string(), Held { claimed: t0, seen: false })]);
        let p = plan(&["a".into()], &mut held, t0 + Duration::from_millis(10), GRACE);
        assert_eq!(p.renew, BTreeSet::from(["a".to_string()]));
        assert!(p.release.is_empty());
        assert!(held["a"].seen);
        // It ended: released on the next tick, well within the grace.
        let p = plan(&[], &mut held, t0 + Duration::from_millis(20), GRACE);
        assert_eq!(p.release, BTreeSet::from(["a".to_string()]));
    }

    #[test]
    fn a_lease_whose_room_is_not_up_yet_is_kept_for_the_grace() {
        let t0 = Instant::now();
        let mut held = HashMap::from([("new".to_string(), Held { claimed: t0, seen: false })]);
        assert!(plan(&[], &mut held, t0 + Duration::from_secs(1), GRACE).release.is_empty(), "its join is under way");
        let p = plan(&[], &mut held, t0 + GRACE + Duration::from_secs(1), GRACE);
        assert_eq!(p.release, BTreeSet::from(["new".to_string()]), "its join failed: nobody runs it");
    }

    #[test]
    fn a_room_running_without_a_lease_is_renewed_which_takes_the_lease() {
        // Created while Redis was unreachable: the renew script sets the missing lease.
        let mut held = HashMap::new();
        let p = plan(&["solo".into()], &mut held, Instant::now(), GRACE);
        assert_eq!(p.renew, BTreeSet::from(["solo".to_string()]));
        assert!(RENEW.contains("'SET', KEYS[1], ARGV[1], 'PX', ARGV[2]"));
    }

    #[test]
    fn keys_are_the_documented_ones() {
        assert_eq!(room_key("r1"), "room:r1");
        assert_eq!(node_key("a"), "node:a");
    }
}
