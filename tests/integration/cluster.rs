//! Several nodes through a real `redis-server`: two `tessera serve` processes share rooms. A room
//! runs on one node (its owner); joins, WHEP and admin calls through the other node are proxied
//! there; after the owner dies, a rejoin through the survivor makes the room again there within
//! the lease TTL; new rooms are placed by load.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tessera::client::loadgen::Peer;

use crate::common::{self, PeerOpts, close, tone_db};

/// Lease TTL of the test nodes: short, so that a dead owner's rooms move quickly.
const TTL: Duration = Duration::from_secs(3);

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `redis-server` on a free loopback port, without persistence; returns it and its URL.
async fn redis_server() -> (Proc, String) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("redis-server (Debian package redis-server) is installed");
    let url = format!("redis://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "redis-server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (Proc(child), url)
}

/// A node: `tessera serve --redis` named `name` on a free loopback port.
struct Node {
    name: &'static str,
    base: String,
    proc: Proc,
}

async fn node(name: &'static str, redis: &str) -> Node {
    node_with(name, redis, &[]).await
}

/// A node with `extra` flags.
async fn node_with(name: &'static str, redis: &str, extra: &[&str]) -> Node {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--udp-ports", "0", "--media-ip", "127.0.0.1"])
        .args(["--redis", redis, "--node-name", name, "--lease-ttl", &format!("{}s", TTL.as_secs())])
        .args(["--drain-timeout", "0s"])
        .args(extra)
        .env("RUST_LOG", "warn,tessera::cluster=info,tessera::signaling::forward=info")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tessera binary");
    let base = format!("http://127.0.0.1:{port}");
    common::wait_healthy(&base, &format!("node {name}")).await;
    Node { name, base, proc: Proc(child) }
}

/// A Redis connection for the test's own look at leases and heartbeats.
fn redis_get(url: &str, key: &str) -> Option<String> {
    let mut c = redis::Client::open(url).unwrap().get_connection().unwrap();
    redis::cmd("GET").arg(key).query(&mut c).unwrap()
}

/// Waits until every node in `names` has published a heartbeat.
async fn wait_heartbeats(url: &str, names: &[&str]) {
    let deadline = Instant::now() + TTL * 2;
    while !names.iter().all(|n| redis_get(url, &format!("node:{n}")).is_some()) {
        assert!(Instant::now() < deadline, "heartbeats of {names:?} did not appear");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get_json(url: String) -> serde_json::Value {
    let r = common::http("GET", url, None, vec![]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_one_room_on_its_owner_and_a_survivor_takes_it_over() {
    let _serial = common::serial().await;
    let (_redis, url) = redis_server().await;
    let (a, b) = (node("a", &url).await, node("b", &url).await);
    wait_heartbeats(&url, &["a", "b"]).await;

    // The first join, through a, makes the room on the node placement picks: its owner.
    let red = (220, 40, 40);
    let green = (40, 200, 60);
    let p1 = Peer::join(&a.base, "shared", PeerOpts::publisher("p1", red, 500.0), true).await.expect("p1 joins via a");
    let owner_name = redis_get(&url, "room:shared").expect("a lease on the room");
    let (owner, other) = if owner_name == a.name { (a, b) } else { (b, a) };
    eprintln!("room shared runs on {owner_name}; the other node is {}", other.name);
    // The second join goes through the other node and lands in the same room.
    let p2 = Peer::join(&other.base, "shared", PeerOpts::publisher("p2", green, 900.0), true).await.expect("p2 joins");
    let room = get_json(format!("{}/v1/rooms/shared", other.base)).await;
    assert_eq!(room["node"], owner.name, "{room}");
    assert_eq!(room["participants"].as_array().unwrap().len(), 2, "{room}");

    // One composite: each sees both colours, and hears the other's tone (mix-minus).
    let both = |f: &common::Frame| {
        f.width == 1280 && close(f.colour_at(320, 360, 40), red, 45) && close(f.colour_at(960, 360, 40), green, 45)
    };
    for p in [&p1, &p2] {
        let f = p.wait_frame(Duration::from_secs(20), both).await;
        assert!(f.is_some(), "{} does not see both tiles in one composite", p.opts.name);
    }
    for (p, hears) in [(&p1, 900.0), (&p2, 500.0)] {
        p.audio_window(24000, Duration::from_secs(10)).await;
        let s = p.audio_window(24000, Duration::from_secs(10)).await;
        assert!(tone_db(&s, hears) > -30.0, "{} hears {hears} Hz at {:.1} dB", p.opts.name, tone_db(&s, hears));
    }

    // A WHEP viewer through the other node sees and hears the room.
    let viewer = Peer::join(&other.base, "shared", PeerOpts::viewer("viewer"), true).await.expect("viewer joins");
    assert!(viewer.wait_frame(Duration::from_secs(20), both).await.is_some(), "the viewer does not see the room");
    viewer.audio_window(24000, Duration::from_secs(10)).await;
    let s = viewer.audio_window(24000, Duration::from_secs(10)).await;
    assert!(tone_db(&s, 500.0) > -30.0 && tone_db(&s, 900.0) > -30.0, "the viewer does not hear both tones");

    // An admin call through the other node acts on the room: p1's audio is muted.
    let mute = format!("{}/v1/rooms/shared/participants/{}/mute", other.base, p1.id);
    let r = common::http("PUT", mute, Some("application/json"), json!({"audio": true}).to_string().into_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    viewer.audio_window(24000, Duration::from_secs(10)).await;
    let s = viewer.audio_window(24000, Duration::from_secs(10)).await;
    assert!(tone_db(&s, 500.0) < -45.0, "muted through the other node, still heard: {:.1} dB", tone_db(&s, 500.0));
    let layout = format!("{}/v1/rooms/shared/layout", other.base);
    let body = json!({"layout": "pinned", "participant": p2.id}).to_string().into_bytes();
    let r = common::http("PUT", layout, Some("application/json"), body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let at_owner = get_json(format!("{}/v1/rooms/shared/layout", owner.base)).await;
    assert_eq!(at_owner["layout"], "pinned", "{at_owner}");

    // Every node lists every room with the node that runs it; the metrics say who forwarded.
    for n in [&owner, &other] {
        let list = get_json(format!("{}/v1/rooms", n.base)).await;
        let rooms = list["rooms"].as_array().unwrap();
        assert_eq!(rooms.len(), 1, "{list}");
        assert_eq!(rooms[0]["node"], owner.name, "{list}");
    }
    let metrics = common::http("GET", format!("{}/metrics", other.base), None, vec![]).await.body;
    let forwarded = format!("tessera_cluster_forwarded_total{{node=\"{}\"}}", other.name);
    let n: u64 = metrics.lines().find_map(|l| l.strip_prefix(&forwarded)).unwrap().trim().parse().unwrap();
    assert!(n >= 5, "forwarded {n} requests: two joins, a GET, the mute and the layout");

    // The owner dies: its lease expires and a rejoin through the survivor makes the room there.
    drop((p1, p2, viewer));
    let mut owner = owner;
    let _ = owner.proc.0.kill();
    let _ = owner.proc.0.wait();
    let killed = Instant::now();
    let rejoined = loop {
        match Peer::join(&other.base, "shared", PeerOpts::publisher("p3", red, 500.0), true).await {
            Ok(p) => break p,
            Err(e) => {
                assert!(killed.elapsed() < TTL * 3, "no rejoin {:?} after the owner died: {e}", killed.elapsed());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let took = killed.elapsed();
    eprintln!("the room came back on {} {took:?} after its owner died (lease TTL {TTL:?})", other.name);
    assert!(took < TTL + Duration::from_secs(2), "took {took:?} with a lease TTL of {TTL:?}");
    assert_eq!(redis_get(&url, "room:shared").as_deref(), Some(other.name));
    let room = get_json(format!("{}/v1/rooms/shared", other.base)).await;
    assert_eq!(room["node"], other.name, "{room}");
    assert_eq!(room["participants"].as_array().unwrap().len(), 1, "{room}");
    let alone = |f: &common::Frame| close(f.colour_at(640, 360, 40), red, 45);
    assert!(rejoined.wait_frame(Duration::from_secs(20), alone).await.is_some(), "the new room sends no composite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_rooms_are_placed_by_load() {
    let _serial = common::serial().await;
    let (_redis, url) = redis_server().await;
    let nodes = [node("a", &url).await, node("b", &url).await];
    wait_heartbeats(&url, &["a", "b"]).await;

    // Six idle rooms (no load) asked of a and b in turn: the fewest rooms wins, 3 and 3.
    for i in 0..6 {
        let via = &nodes[i % 2];
        let r = common::http("PUT", format!("{}/v1/rooms/idle{i}", via.base), None, vec![]).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let by_node = |list: &serde_json::Value| {
        let mut m = BTreeMap::<String, Vec<String>>::new();
        for r in list["rooms"].as_array().unwrap() {
            m.entry(r["node"].as_str().unwrap().into()).or_default().push(r["room"].as_str().unwrap().into());
        }
        m
    };
    let placed = by_node(&get_json(format!("{}/v1/rooms", nodes[0].base)).await);
    eprintln!("six idle rooms: {placed:?}");
    assert_eq!(placed.values().map(Vec::len).collect::<Vec<_>>(), [3, 3], "{placed:?}");
    for (n, rooms) in &placed {
        for r in rooms {
            assert_eq!(redis_get(&url, &format!("room:{r}")).as_deref(), Some(n.as_str()), "lease of {r}");
        }
    }

    // A publisher loads one node; the next new rooms, through either node, go to the other.
    let busy_room = placed["a"][0].clone();
    let mut o = PeerOpts::publisher("load", (220, 40, 40), 500.0);
    o.receive = false;
    let _load = Peer::join(&nodes[1].base, &busy_room, o, false).await.expect("the publisher joins");
    let deadline = Instant::now() + TTL * 2;
    loop {
        let hb: serde_json::Value = serde_json::from_str(&redis_get(&url, "node:a").unwrap()).unwrap();
        if hb["load"].as_f64().unwrap() > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "a's heartbeat shows no load: {hb}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, via) in nodes.iter().enumerate() {
        let r = common::http("PUT", format!("{}/v1/rooms/after{i}", via.base), None, vec![]).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let room: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(room["node"], "b", "a new room went to the loaded node: {room}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_redis_is_down_serves_alone_and_counts_it() {
    let _serial = common::serial().await;
    // Nothing listens there: every Redis call fails.
    let solo = node("solo", &format!("redis://127.0.0.1:{}", free_port())).await;
    let r = common::http("PUT", format!("{}/v1/rooms/alone", solo.base), None, vec![]).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let list = get_json(format!("{}/v1/rooms", solo.base)).await;
    assert_eq!(list["rooms"][0]["node"], "solo", "{list}");
    let metrics = common::http("GET", format!("{}/metrics", solo.base), None, vec![]).await.body;
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tessera_cluster_redis_errors_total{node=\"solo\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(errors > 0, "Redis failures are not counted:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_travel_with_proxied_calls_and_the_owner_checks_them() {
    use tessera::signaling::auth::{Auth, Grants};
    let _serial = common::serial().await;
    const SECRET: &str = "cluster-secret-0123456789";
    let (_redis, url) = redis_server().await;
    let a = node_with("a", &url, &["--api-secret", SECRET]).await;
    let b = node_with("b", &url, &["--api-secret", SECRET]).await;
    wait_heartbeats(&url, &["a", "b"]).await;
    let auth = Auth::new(Some(SECRET));
    let hour = Duration::from_secs(3600);
    let admin = auth.mint("*", "ops", None, Grants { publish: false, subscribe: false, admin: true }, hour);
    let member = auth.mint("locked", "ann", None, Grants { publish: true, subscribe: true, admin: false }, hour);
    let call = |method: &'static str, url: String, token: Option<String>| async move {
        common::http_auth(method, url, None, vec![], token.as_deref()).await
    };
    // Made through a, then read through both: the room lives on one node, the token goes along.
    let r = call("PUT", format!("{}/v1/rooms/locked", a.base), Some(admin.clone())).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let owner = redis_get(&url, "room:locked").unwrap();
    for n in [&a, &b] {
        let r = call("GET", format!("{}/v1/rooms/locked", n.base), Some(member.clone())).await;
        assert_eq!(r.status, 200, "through {}: {}", n.name, r.body);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["node"], owner.as_str());
        let r = call("GET", format!("{}/v1/rooms/locked", n.base), None).await;
        assert_eq!(r.status, 401, "through {} without a token: {}", n.name, r.body);
        let r = call("DELETE", format!("{}/v1/rooms/locked", n.base), Some(member.clone())).await;
        assert_eq!(r.status, 403, "a member ends the room through {}: {}", n.name, r.body);
        let r = call("GET", format!("{}/v1/rooms", n.base), Some(admin.clone())).await;
        assert!(r.status == 200 && r.body.contains("\"locked\""), "list through {}: {}", n.name, r.body);
    }
    // The admin ends it through the node that does not run it; the lease goes with it.
    let other = if owner == a.name { &b } else { &a };
    let r = call("DELETE", format!("{}/v1/rooms/locked", other.base), Some(admin.clone())).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let deadline = Instant::now() + TTL;
    while redis_get(&url, "room:locked").is_some() {
        assert!(Instant::now() < deadline, "the lease outlived its room");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a join (a `POST` of a one-line offer, which the room refuses) for `room` to `base` from
/// the loopback address `from`, with `token` and `extra` headers; returns the status.
async fn join_from(from: [u8; 4], base: &str, room: &str, token: &str, extra: &[(&str, &str)]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let to: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(std::net::IpAddr::from(from), 0)).unwrap();
    let mut s = socket.connect(to).await.unwrap();
    let body = "v=0\r\n";
    let mut req = format!(
        "POST /v1/rooms/{room}/participants HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = vec![];
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await.expect("an answer").unwrap();
    let text = String::from_utf8_lossy(&got);
    text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_counts_forwarded_joins_against_each_client_not_the_forwarding_node() {
    use tessera::signaling::auth::{Auth, Grants};
    let _serial = common::serial().await;
    const SECRET: &str = "cluster-secret-0123456789";
    let (_redis, url) = redis_server().await;
    let flags = ["--api-secret", SECRET, "--joins-per-minute-per-ip", "2"];
    let a = node_with("a", &url, &flags).await;
    let b = node_with("b", &url, &flags).await;
    wait_heartbeats(&url, &["a", "b"]).await;
    let auth = Auth::new(Some(SECRET));
    let hour = Duration::from_secs(3600);
    let admin = auth.mint("*", "ops", None, Grants { publish: false, subscribe: false, admin: true }, hour);
    let member = auth.mint("limited", "ann", None, Grants { publish: true, subscribe: true, admin: false }, hour);
    let r = common::http_auth("PUT", format!("{}/v1/rooms/limited", a.base), None, vec![], Some(&admin)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let owner_name = redis_get(&url, "room:limited").unwrap();
    let (owner, other) = if owner_name == a.name { (&a, &b) } else { (&b, &a) };
    // Three clients, three joins through the node that does not run the room: the owner counts
    // each client once (the forwarding node's own address would have reached its limit of 2).
    for last in [2, 3, 4] {
        let status = join_from([127, 0, 0, last], &other.base, "limited", &member, &[]).await;
        assert_eq!(status, 400, "client 127.0.0.{last} through {}: its bad offer is refused, not the join", other.name);
    }
    // A client that forges the forwarding headers straight at the owner counts as itself.
    let forged = [("X-Tessera-Forwarded", "x"), ("X-Tessera-Client", "forged")];
    let mut statuses = vec![];
    for _ in 0..3 {
        statuses.push(join_from([127, 0, 0, 5], &owner.base, "limited", &member, &forged).await);
    }
    assert_eq!(statuses, [400, 400, 429], "forged headers straight at {}", owner.name);
}
