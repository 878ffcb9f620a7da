//! Where a new room goes: a pure choice among the nodes' published heartbeats.
//!
//! The rule: among the nodes that are ready (not full, not draining: what `/readyz` says), the one
//! with the lowest load as a share of its own `--max-load`, then the fewest rooms (idle rooms made
//! by `PUT` cost no load, but a node that holds more of them is likelier to get busy), then the
//! node that was asked (no proxy hop), then by name so every node decides the same way.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

/// One node as its heartbeat (`node:{name}` in Redis, JSON) describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name (`--node-name`).
    pub node: String,
    /// How other nodes reach its HTTP listener (`--advertise-url`), without a trailing `/`.
    pub url: String,
    /// Takes new rooms and joins ([`crate::room::Readiness::ready`]).
    pub ready: bool,
    /// Its rooms' summed admission cost and the joins under way, units (1.0 = one 720p30 decode).
    pub load: f64,
    /// Its `--max-load`, units.
    pub max_load: f64,
    /// Rooms it runs or has a lease on, idle ones included.
    pub rooms: usize,
    /// Participants in all its rooms.
    pub participants: usize,
}

impl NodeInfo {
    /// Load as a share of the node's own cap (0.0 = idle, 1.0 = full); a cap of 0 reads as full.
    pub fn load_share(&self) -> f64 {
        if self.max_load > 0.0 { self.load / self.max_load } else { f64::INFINITY }
    }
}

/// The node a new room goes to, among `nodes` (the live ones: their heartbeats have not expired),
/// with `asked` the node that received the request; `None` when no node is ready (then the asked
/// node answers the request itself, and its admission refuses it with `503`).
pub fn place<'a>(nodes: &'a [NodeInfo], asked: &str) -> Option<&'a NodeInfo> {
    nodes.iter().filter(|n| n.ready).min_by(|a, b| {
        a.load_share()
            .partial_cmp(&b.load_share())
            .unwrap_or(Ordering::Equal)
            .then(a.rooms.cmp(&b.rooms))
            .then((a.node != asked).cmp(&(b.node != asked)))
            .then(a.node.cmp(&b.node))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, load: f64, rooms: usize) -> NodeInfo {
        NodeInfo {
            node: name.into(),
            url: format!("http://{name}:8080"),
            ready: true,
            load,
            max_load: 24.0,
            rooms,
            participants: 0,
        }
    }

    #[test]
    fn the_least_loaded_share_wins_whatever_the_room_count() {
        let mut small = node("small", 5.0, 1);
        small.max_load = 10.0; // half full
        let nodes = [small, node("big", 6.0, 9)]; // a quarter full
        assert_eq!(place(&nodes, "small").unwrap().node, "big");
    }

    #[test]
    fn on_equal_load_the_fewest_rooms_then_the_asked_node_then_the_name() {
        let nodes = [node("a", 0.0, 2), node("b", 0.0, 1)];
        assert_eq!(place(&nodes, "a").unwrap().node, "b");
        let nodes = [node("a", 0.0, 1), node("b", 0.0, 1)];
        assert_eq!(place(&nodes, "b").unwrap().node, "b", "no hop when it makes no difference");
        assert_eq!(place(&nodes, "c").unwrap().node, "a");
    }

    #[test]
    fn nodes_that_are_not_ready_get_nothing() {
        let mut full = node("a", 0.0, 0);
        full.ready = false;
        assert_eq!(place(std::slice::from_ref(&full), "a"), None);
        let nodes = [full, node("b", 20.0, 30)];
        assert_eq!(place(&nodes, "a").unwrap().node, "b");
    }

    #[test]
    fn six_rooms_made_one_after_another_alternate_between_two_idle_nodes() {
        let mut nodes = vec![node("a", 0.0, 0), node("b", 0.0, 0)];
        let mut placed = vec![];
        for i in 0..6 {
            let asked = if i % 2 == 0 { "a" } else { "b" };
            let to = place(&nodes, asked).unwrap().node.clone();
            nodes.iter_mut().find(|n| n.node == to).unwrap().rooms += 1;
            placed.push(to);
        }
        assert_eq!(nodes.iter().map(|n| n.rooms).collect::<Vec<_>>(), [3, 3], "{placed:?}");
    }
}
