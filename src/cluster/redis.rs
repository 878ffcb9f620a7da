//! The room directory on Redis (`--redis URL`): room leases, node heartbeats, placement.
//!
//! State: the leases this node took (`held`, one lock) and whether Redis answered last time. One
//! keeper task per node renews the leases of every room it runs, releases those of rooms that
//! ended and publishes the heartbeat, every third of the TTL and whenever a room leaves the
//! registry. Every Redis call has a deadline (a third of the TTL, at most 1 s); a failed one is
//! logged, counted (`tessera_cluster_redis_errors_total`) and treated as "no other node": the
//! request is served here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Value};

use super::lease::{self, Held};
use super::placement::{self, NodeInfo};
use super::{Ask, ClusterStats, RoomDirectory, Route};
use crate::room::Rooms;

/// The directory of one node of several, sharing rooms through Redis.
pub struct RedisDirectory {
    node: String,
    url: String,
    ttl: Duration,
    /// Deadline of one Redis call.
    op_timeout: Duration,
    conn: ConnectionManager,
    rooms: Arc<Rooms>,
    held: Mutex<HashMap<String, Held>>,
    /// Whether the last Redis call failed (failures are logged when this flips).
    down: AtomicBool,
    stats: ClusterStats,
}

impl RedisDirectory {
    /// The directory of node `node`, reachable at `url` (no trailing `/`), over the Redis at
    /// `redis_url`, with leases and heartbeats of `ttl`. Connects lazily: a node starts (and serves
    /// alone) while Redis is unreachable. Start its keeper with [`RedisDirectory::spawn_keeper`].
    ///
    /// # Errors
    /// A Redis URL that does not parse.
    pub fn new(node: &str, url: &str, redis_url: &str, ttl: Duration, rooms: Arc<Rooms>) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis_url).map_err(|e| anyhow::anyhow!("--redis: {e}"))?;
        let op_timeout = (ttl / 3).min(Duration::from_secs(1));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout))
            .set_number_of_retries(1)
            .set_max_delay(op_timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            node: node.to_string(),
            url: url.to_string(),
            ttl,
            op_timeout,
            conn,
            rooms,
            held: Mutex::default(),
            down: AtomicBool::new(false),
            stats: ClusterStats::default(),
        })
    }

    /// Runs the keeper until the directory is dropped: a tick every third of the TTL, and one
    /// whenever a room leaves the registry (so its lease is released at once).
    pub fn spawn_keeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let (period, rooms) = (self.ttl / 3, self.rooms.clone());
        tokio::spawn(async move {
            loop {
                let Some(dir) = weak.upgrade() else { return };
                dir.tick().await;
                drop(dir);
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = rooms.room_removed() => {}
                }
            }
        })
    }

    /// One keeper round: renew, release, heartbeat.
    async fn tick(&self) {
        let running: Vec<String> = self.rooms.all().iter().map(|r| r.name().to_string()).collect();
        let plan = lease::plan(&running, &mut self.held.lock().unwrap(), Instant::now(), self.ttl);
        let ttl_ms = self.ttl_ms();
        if !plan.renew.is_empty() {
            let mut pipe = redis::pipe();
            for room in &plan.renew {
                pipe.cmd("EVAL").arg(lease::RENEW).arg(1).arg(lease::room_key(room)).arg(&self.node).arg(ttl_ms);
            }
            if let Some(results) = self.call_pipe::<Vec<Value>>(&pipe, "renewing leases").await {
                for (room, v) in plan.renew.iter().zip(results) {
                    self.renewed(room, &v);
                }
            }
        }
        for room in &plan.release {
            let cmd = eval(lease::RELEASE, &lease::room_key(room), &[&self.node]);
            if self.call::<i64>(&cmd, "releasing a lease", Some(room)).await.is_some() {
                self.held.lock().unwrap().remove(room);
                tracing::info!(room = %room, "lease released");
            }
        }
        self.publish().await;
    }

    /// Notes the result of renewing room `room`'s lease.
    fn renewed(&self, room: &str, v: &Value) {
        let taken_again = matches!(v, Value::Int(2));
        if matches!(v, Value::Int(1) | Value::Int(2)) {
            let mut held = self.held.lock().unwrap();
            let h = held.entry(room.to_string()).or_insert(Held { claimed: Instant::now(), seen: true });
            h.seen = true;
            if taken_again {
                tracing::info!(room, "took the lease of a room running here (it had none)");
            }
            return;
        }
        let owner = String::from_redis_value(v.clone()).unwrap_or_else(|_| format!("{v:?}"));
        ClusterStats::count(&self.stats.lease_conflicts);
        tracing::error!(
            room,
            owner = %owner,
            "the room runs here but node {owner} holds its lease: requests go there; end one of the two"
        );
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// This node's heartbeat as of now.
    fn me(&self) -> NodeInfo {
        let r = self.rooms.readiness();
        let running: Vec<String> = self.rooms.all().iter().map(|r| r.name().to_string()).collect();
        let held = self.held.lock().unwrap();
        let leased_only = held.keys().filter(|k| !running.contains(k)).count();
        self.stats.leases.store(held.len() as u64, Ordering::Relaxed);
        NodeInfo {
            node: self.node.clone(),
            url: self.url.clone(),
            ready: r.ready,
            load: r.load,
            max_load: r.max_load,
            rooms: running.len() + leased_only,
            participants: r.participants,
        }
    }

    /// Node `node`'s heartbeat, if it is live.
    async fn node_info(&self, node: &str) -> Option<NodeInfo> {
        let cmd = redis::Cmd::get(lease::node_key(node));
        let json: Option<String> = self.call(&cmd, "reading a heartbeat", None).await?;
        serde_json::from_str(&json?).ok()
    }

    /// Takes room `room`'s lease for this node: `Ok(())`, or `Err(owner)` when another node has it.
    async fn claim(&self, room: &str) -> Result<(), Option<String>> {
        let key = lease::room_key(room);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(&self.node).arg("NX").arg("PX").arg(self.ttl_ms());
        let Some(ok) = self.call::<Option<String>>(&set, "taking a lease", Some(room)).await else {
            return Ok(()); // Redis unreachable: serve it here; the keeper takes the lease later.
        };
        if ok.is_some() {
            let h = Held { claimed: Instant::now(), seen: false };
            self.held.lock().unwrap().insert(room.to_string(), h);
            tracing::info!(room, "lease taken");
            return Ok(());
        }
        let owner: Option<String> = self.call(&redis::Cmd::get(&key), "reading a lease", Some(room)).await.flatten();
        match owner {
            Some(o) if o == self.node => Ok(()),
            o => Err(o),
        }
    }

    /// Runs `cmd` against Redis within the deadline; `None` (logged, counted) if it failed.
    async fn call<T: FromRedisValue>(&self, cmd: &redis::Cmd, what: &str, room: Option<&str>) -> Option<T> {
        let mut conn = self.conn.clone();
        let res = tokio::time::timeout(self.op_timeout, cmd.query_async::<T>(&mut conn)).await;
        self.outcome(res.map_err(|_| "timed out".to_string()).and_then(|r| r.map_err(|e| e.to_string())), what, room)
    }

    /// Runs `pipe` against Redis within the deadline; `None` (logged, counted) if it failed.
    async fn call_pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline, what: &str) -> Option<T> {
        let mut conn = self.conn.clone();
        let res = tokio::time::timeout(self.op_timeout, pipe.query_async::<T>(&mut conn)).await;
        self.outcome(res.map_err(|_| "timed out".to_string()).and_then(|r| r.map_err(|e| e.to_string())), what, None)
    }

    fn outcome<T>(&self, res: Result<T, String>, what: &str, room: Option<&str>) -> Option<T> {
        match res {
            Ok(v) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: rooms are shared with the other nodes");
                }
                Some(v)
            }
            Err(e) => {
                ClusterStats::count(&self.stats.redis_errors);
                let room = room.unwrap_or("-");
                if self.down.swap(true, Ordering::Relaxed) {
                    tracing::debug!(room, "Redis: {what}: {e}");
                } else {
                    tracing::warn!(room, "Redis unreachable ({what}: {e}): serving every request on this node");
                }
                None
            }
        }
    }
}

/// `EVAL script 1 key args…`.
fn eval(script: &str, key: &str, args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd("EVAL");
    c.arg(script).arg(1).arg(key);
    for a in args {
        c.arg(*a);
    }
    c
}

#[async_trait::async_trait]
impl RoomDirectory for RedisDirectory {
    fn node(&self) -> &str {
        &self.node
    }

    fn clustered(&self) -> bool {
        true
    }

    async fn route(&self, room: &str, ask: Ask) -> Route {
        let key = lease::room_key(room);
        let Some(owner) = self.call::<Option<String>>(&redis::Cmd::get(&key), "reading a lease", Some(room)).await
        else {
            return Route::Local { claimed: false };
        };
        let owner = match owner {
            Some(o) if o == self.node => return Route::Local { claimed: false },
            Some(o) => o,
            None if !ask.creates => return Route::Local { claimed: false },
            None => {
                if !ask.forwarded {
                    let nodes = self.nodes().await;
                    if let Some(n) = placement::place(&nodes, &self.node)
                        && n.node != self.node
                    {
                        tracing::info!(room, to = %n.node, load = n.load, rooms = n.rooms, "new room placed");
                        return Route::Forward(n.clone());
                    }
                }
                match self.claim(room).await {
                    Ok(()) => return Route::Local { claimed: true },
                    Err(None) => return Route::Local { claimed: false }, // expired meanwhile: rare
                    Err(Some(o)) => o,
                }
            }
        };
        if ask.forwarded {
            if !ask.creates {
                return Route::Local { claimed: false };
            }
            let reason = format!("room {room:?} was just made on node {owner}: try again");
            return Route::Unavailable { reason, retry_after: Duration::from_secs(1) };
        }
        match self.node_info(&owner).await {
            Some(n) => Route::Forward(n),
            None => {
                let pttl = self.call::<i64>(&redis::cmd("PTTL").arg(&key).clone(), "reading a lease", Some(room)).await;
                let left = Duration::from_millis(pttl.unwrap_or(0).max(0) as u64);
                let reason = format!(
                    "room {room:?} ran on node {owner}, which stopped answering; it moves to another node once its lease ends (within {:.1} s)",
                    left.as_secs_f64()
                );
                Route::Unavailable { reason, retry_after: left.max(Duration::from_secs(1)) }
            }
        }
    }

    async fn nodes(&self) -> Vec<NodeInfo> {
        let me = self.me();
        let mut keys: Vec<String> = vec![];
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(lease::node_key("*")).arg("COUNT").arg(1000);
            let Some((next, page)) = self.call::<(u64, Vec<String>)>(&scan, "listing nodes", None).await else {
                return vec![me];
            };
            keys.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.retain(|k| *k != lease::node_key(&self.node));
        let mut nodes = vec![me];
        if keys.is_empty() {
            self.stats.nodes.store(1, Ordering::Relaxed);
            return nodes;
        }
        let mget = redis::Cmd::mget(&keys);
        let Some(values) = self.call::<Vec<Option<String>>>(&mget, "reading heartbeats", None).await else {
            return nodes;
        };
        nodes.extend(values.into_iter().flatten().filter_map(|json| serde_json::from_str::<NodeInfo>(&json).ok()));
        self.stats.nodes.store(nodes.len() as u64, Ordering::Relaxed);
        nodes
    }

    async fn publish(&self) {
        let me = self.me();
        let json = serde_json::to_string(&me).expect("a heartbeat serializes");
        let mut set = redis::cmd("SET");
        set.arg(lease::node_key(&self.node)).arg(json).arg("PX").arg(self.ttl_ms());
        let _ = self.call::<()>(&set, "publishing the heartbeat", None).await;
    }

    fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    async fn close(&self) {
        let rooms: Vec<String> = self.held.lock().unwrap().drain().map(|(k, _)| k).collect();
        for room in rooms {
            let cmd = eval(lease::RELEASE, &lease::room_key(&room), &[&self.node]);
            let _ = self.call::<i64>(&cmd, "releasing a lease", Some(&room)).await;
        }
        let _ = self.call::<i64>(&redis::Cmd::del(lease::node_key(&self.node)), "removing the heartbeat", None).await;
        self.stats.leases.store(0, Ordering::Relaxed);
    }
}
