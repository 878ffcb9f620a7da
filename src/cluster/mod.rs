//! Rooms spread over several nodes: the room directory seam. Each room runs whole on one node
//! (its owner); the directory says, for a request that names a room, whether this node serves it
//! or which node to hand it to.
//!
//! Two implementations, chosen at start-up: [`Alone`] (no `--redis`: one node, every room here,
//! no cost at all) and [`redis::RedisDirectory`] (`--redis URL`): a node that creates a room takes
//! a lease on it (`SET room:{name} {node} NX PX ttl`, [`lease`]), renews it while the room runs and
//! releases it when the room ends; every node publishes a heartbeat (`node:{name}`, JSON
//! [`NodeInfo`], same TTL) with its URL and load; a new room goes to the least-loaded ready node
//! ([`placement`]). A node that dies loses its leases when they expire, and its rooms come back
//! wherever the next join lands. Redis unreachable: the node logs it, counts it and serves every
//! request itself (it keeps working alone).
//!
//! It sits between `signaling` (which forwards requests as it says) and `room` (whose load and
//! rooms it publishes).

pub mod lease;
pub mod placement;
pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use placement::NodeInfo;

/// What a request that names a room asks of the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// The request makes the room when it does not exist (a join, WHIP, WHEP, `PUT` of the room).
    pub creates: bool,
    /// Another node forwarded it here (`X-Tessera-Forwarded`): it is never forwarded again.
    pub forwarded: bool,
}

/// Where a request runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Here. `claimed`: this node took the room's lease for it (it creates the room), so the
    /// heartbeat is published again once the request is done, for the next placement to see.
    Local {
        /// This node took the lease just now.
        claimed: bool,
    },
    /// On that node: proxy the request there.
    Forward(NodeInfo),
    /// Nowhere now: `503` with `reason` and `Retry-After` (the owner died and its lease has not
    /// expired yet, or another node just took the room a forwarded request was to create).
    Unavailable {
        /// One line for the client.
        reason: String,
        /// When to try again.
        retry_after: Duration,
    },
}

/// What the directory counted, for `/metrics` (`tessera_cluster_*`).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Redis calls that failed or timed out.
    pub redis_errors: AtomicU64,
    /// Requests proxied to the node that owns (or was placed) their room.
    pub forwarded: AtomicU64,
    /// Proxied requests whose node did not answer.
    pub forward_failures: AtomicU64,
    /// Renewals that found the lease of a room running here held by another node.
    pub lease_conflicts: AtomicU64,
    /// Leases this node holds now.
    pub leases: AtomicU64,
    /// Live nodes at the last heartbeat, this one included.
    pub nodes: AtomicU64,
}

impl ClusterStats {
    /// Adds one to `counter`.
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The seam: where requests for a room run. Implementations: [`Alone`], [`redis::RedisDirectory`].
#[async_trait::async_trait]
pub trait RoomDirectory: Send + Sync {
    /// This node's name (`--node-name`).
    fn node(&self) -> &str;

    /// Whether other nodes exist at all (`false`: every request is served here, ask nothing).
    fn clustered(&self) -> bool;

    /// Where a request that names `room`, which this node does not run, goes. Errors of the
    /// registry are logged and counted, and answered [`Route::Local`].
    async fn route(&self, room: &str, ask: Ask) -> Route;

    /// The live nodes, this one included (with its load as of now); empty when alone.
    async fn nodes(&self) -> Vec<NodeInfo>;

    /// Publishes this node's heartbeat now (after it created a room, so the next placement
    /// counts it).
    async fn publish(&self);

    /// What was counted.
    fn stats(&self) -> &ClusterStats;

    /// Releases this node's leases and heartbeat (on shutdown, after its rooms ended).
    async fn close(&self);
}

/// One node alone: every room is here.
pub struct Alone {
    node: String,
    stats: ClusterStats,
}

impl Alone {
    /// The directory of node `node` alone.
    pub fn new(node: &str) -> Self {
        Self { node: node.to_string(), stats: ClusterStats::default() }
    }
}

#[async_trait::async_trait]
impl RoomDirectory for Alone {
    fn node(&self) -> &str {
        &self.node
    }

    fn clustered(&self) -> bool {
        false
    }

    async fn route(&self, _room: &str, _ask: Ask) -> Route {
        Route::Local { claimed: false }
    }

    async fn nodes(&self) -> Vec<NodeInfo> {
        vec![]
    }

    async fn publish(&self) {}

    fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    async fn close(&self) {}
}
