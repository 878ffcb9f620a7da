//! Admission control and drain: a full node answers `503` with `Retry-After` before it makes
//! anything, and says so on `/readyz`; a node at its room or participant caps refuses what would
//! pass them; `SIGTERM` on the real binary drains a running room, finalizes its recording and
//! exits 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde_json::json;
use tessera::config::Config;

use crate::common::{self, PeerOpts};

/// One answer, with the header a refusal must carry.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

/// Sends `method` to `url` with an optional `(content type, body)`; keeps `Retry-After`.
async fn send(method: &'static str, url: String, body: Option<(&'static str, Vec<u8>)>) -> Answer {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        let resp = match (method, body) {
            ("GET", _) => agent.get(&url).call(),
            ("DELETE", _) => agent.delete(&url).call(),
            ("POST", Some((ct, b))) => agent.post(&url).header("content-type", ct).send(&b[..]),
            ("POST", None) => agent.post(&url).send_empty(),
            ("PUT", Some((ct, b))) => agent.put(&url).header("content-type", ct).send(&b[..]),
            ("PUT", None) => agent.put(&url).send_empty(),
            (m, _) => panic!("method {m}"),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Answer { status: resp.status().as_u16(), retry_after, body }
    })
    .await
    .unwrap()
}

/// `GET /readyz`: the status and the JSON body.
async fn readyz(addr: SocketAddr) -> (u16, serde_json::Value) {
    let a = send("GET", format!("http://{addr}/readyz"), None).await;
    (a.status, serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("readyz JSON {e}: {}", a.body)))
}

/// The names of the node's rooms.
async fn room_names(addr: SocketAddr) -> Vec<String> {
    let a = send("GET", format!("http://{addr}/v1/rooms"), None).await;
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    v["rooms"].as_array().unwrap().iter().map(|r| r["room"].as_str().unwrap().to_string()).collect()
}

/// Posts a complete offer (from a peer that never connects) to `path`: receive-only, or
/// send-only for WHIP.
async fn offer_to(addr: SocketAddr, path: &str) -> Answer {
    let mut offer = tessera::client::loadgen::offer_only().await.expect("an offer");
    if path.starts_with("/whip/") {
        offer = offer.replace("a=recvonly", "a=sendonly");
    }
    send("POST", format!("http://{addr}{path}"), Some(("application/sdp", offer.into_bytes()))).await
}

/// Asserts `a` is a `503` refusal with a `Retry-After` of whole seconds and a one-line reason
/// containing `why`.
fn assert_refused(a: &Answer, what: &str, why: &str) {
    assert_eq!(a.status, 503, "{what}: {}", a.body);
    let secs: u64 = a.retry_after.as_deref().unwrap_or_else(|| panic!("{what}: no Retry-After")).parse().unwrap();
    assert!(secs >= 1, "{what}: Retry-After {secs}");
    assert!(a.body.contains(why), "{what}: reason {:?} lacks {why:?}", a.body);
    assert_eq!(a.body.trim_end().lines().count(), 1, "{what}: one line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_refuses_joins_and_rooms_with_503_before_making_anything() {
    let _serial = common::serial().await;
    // Not even one viewer fits.
    let srv = common::server_with(Config { max_load: Some(0.01), ..Config::default() }).await;
    let a = srv.addr;
    let (status, r) = readyz(a).await;
    assert_eq!(status, 503, "{r}");
    assert_eq!(r["ready"], false);
    assert_eq!(r["draining"], false);
    assert_eq!(r["max_load"], 0.01);
    assert!(r["reason"].as_str().unwrap().contains("full"), "{r}");

    for path in ["/v1/rooms/full/participants", "/whip/full", "/whep/full"] {
        assert_refused(&offer_to(a, path).await, path, "this node is full");
    }
    let put = send("PUT", format!("http://{a}/v1/rooms/full2"), None).await;
    assert_refused(&put, "PUT room", "this node is full");
    assert!(room_names(a).await.is_empty(), "no room was made");
    assert_eq!(srv.rooms.load(), 0.0, "nothing is counted");
    // Nothing was allocated: no peer connection was made, so none is listed anywhere.
    let metrics = send("GET", format!("http://{a}/metrics"), None).await.body;
    let line = |name: &str| metrics.lines().find(|l| l.starts_with(name)).unwrap_or_default().to_string();
    assert!(line("tessera_rooms").ends_with(" 0"), "{}", line("tessera_rooms"));
    assert!(line("tessera_max_load").ends_with(" 0.01"), "{}", line("tessera_max_load"));
    assert!(line("tessera_load").ends_with(" 0"), "{}", line("tessera_load"));
    assert!(line("tessera_draining").ends_with(" 0"), "{}", line("tessera_draining"));
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_and_participant_caps_refuse_what_would_pass_them() {
    let _serial = common::serial().await;
    let cfg = Config { max_rooms: Some(1), max_participants_per_room: Some(1), ..Config::default() };
    let srv = common::server_with(cfg).await;
    let a = srv.addr;
    assert_eq!(readyz(a).await.0, 200);
    let put = send("PUT", format!("http://{a}/v1/rooms/one"), None).await;
    assert_eq!(put.status, 201, "{}", put.body);
    // An idle room costs no load, but it is a room.
    assert_eq!(srv.rooms.load(), 0.0);
    let (status, r) = readyz(a).await;
    assert_eq!((status, r["rooms"].as_u64()), (503, Some(1)), "{r}");
    assert!(r["reason"].as_str().unwrap().contains("1 rooms, max 1"), "{r}");

    let put = send("PUT", format!("http://{a}/v1/rooms/two"), None).await;
    assert_refused(&put, "a second room by PUT", "1 rooms, max 1");
    assert_refused(&offer_to(a, "/v1/rooms/two/participants").await, "a second room by a join", "max 1");
    assert_eq!(room_names(a).await, ["one"]);

    // The room there takes its one participant, then is full: 409, the room's state, not the node's.
    let first = offer_to(a, "/v1/rooms/one/participants").await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert!(srv.rooms.load() > 0.0, "a running room costs load");
    let second = offer_to(a, "/whep/one").await;
    assert_eq!(second.status, 409, "{}", second.body);
    assert_eq!(second.body.trim(), "room is full (1 participants)");
    assert_eq!(common::room_json(a, "one").await["participants"].as_array().unwrap().len(), 1);

    let gone = send("DELETE", format!("http://{a}/v1/rooms/one"), None).await;
    assert_eq!(gone.status, 204);
    assert_eq!(readyz(a).await.0, 200, "room for a room again");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_port_range_answers_503_with_retry_after_and_an_unconnected_join_gives_its_port_back() {
    let _serial = common::serial().await;
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let timeout_ms = 2000;
    let cfg = Config {
        udp_ports: Some(tessera::config::PortRange { low: port, high: port }),
        peer_timeout_ms: timeout_ms,
        ..Config::default()
    };
    let srv = common::server_with(cfg).await;
    let a = srv.addr;
    let first = offer_to(a, "/whep/ports").await;
    assert_eq!(first.status, 201, "{}", first.body);
    let taken = Instant::now();
    let full = offer_to(a, "/whep/ports").await;
    assert_refused(&full, "a join past the port range", "no free UDP port");
    assert_eq!(full.retry_after.as_deref(), Some("10"));
    // The first never connects: it is removed after the peer timeout and its port comes back.
    loop {
        let again = offer_to(a, "/whep/ports").await;
        if again.status == 201 {
            break;
        }
        assert_eq!(again.status, 503, "{}", again.body);
        assert!(taken.elapsed() < Duration::from_secs(10), "the port did not come back within 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let back = taken.elapsed();
    eprintln!("port back {back:?} after the unconnected join (peer timeout {timeout_ms} ms)");
    assert!(back >= Duration::from_millis(timeout_ms / 2), "back after {back:?}: before the timeout");
    srv.shutdown().await;
}

/// Threads of this process whose name starts with `prefix` (Linux truncates names to 15 bytes).
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with(prefix))
        .count()
}

/// Polls (up to 10 s) until `what` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_nobody_is_in_runs_no_thread_until_someone_joins() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let a = srv.addr;
    // The room's own threads: its mixer and its pipeline's bus watch (the clock and placeholder
    // threads have no room in their names, and go with them).
    let ours = || threads_named("mix-idlr") + threads_named("bus-idlr");
    let put = send("PUT", format!("http://{a}/v1/rooms/idlr"), None).await;
    assert_eq!(put.status, 201, "{}", put.body);
    assert_eq!(ours(), 0, "an empty room made by PUT starts no thread");
    assert_eq!(common::room_json(a, "idlr").await["frames_out"], 0, "and no clock");

    let joined = offer_to(a, "/v1/rooms/idlr/participants").await;
    assert_eq!(joined.status, 201, "{}", joined.body);
    until("the room's threads start with its first join", || ours() == 2).await;
    let t0 = Instant::now();
    while common::room_json(a, "idlr").await["frames_out"].as_u64().unwrap() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "the clock never ticked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The last one leaves: the room stays (made by PUT), idle again.
    let gone = send("DELETE", format!("http://{a}{}", newest_participant(a, "idlr").await), None).await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    until("the room's threads end when it empties", || ours() == 0).await;
    assert_eq!(room_names(a).await, ["idlr"]);
    let frames = common::room_json(a, "idlr").await["frames_out"].as_u64().unwrap();

    // And wakes again for the next join.
    let again = offer_to(a, "/v1/rooms/idlr/participants").await;
    assert_eq!(again.status, 201, "{}", again.body);
    until("the room's threads start again", || ours() == 2).await;
    let t0 = Instant::now();
    while common::room_json(a, "idlr").await["frames_out"].as_u64().unwrap() <= frames {
        assert!(t0.elapsed() < Duration::from_secs(10), "the clock did not tick again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    srv.shutdown().await;
}

/// The path of the newest participant of `room` (what its join's `Location` said).
async fn newest_participant(addr: SocketAddr, room: &str) -> String {
    let r = common::room_json(addr, room).await;
    let id = r["participants"].as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    format!("/v1/rooms/{room}/participants/{id}")
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `tessera serve` as a child process on a free port with `args`; waits until `/healthz` answers.
async fn spawn_server(args: &[&str]) -> (Child, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--listen", &addr.to_string(), "--udp-port", "0", "--tcp-port", "0"])
        .args(["--media-ip", "127.0.0.1"])
        .args(args)
        .env("RUST_LOG", "info,webrtc=warn,rtc=warn,webrtc_ice=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tessera serve");
    let t0 = Instant::now();
    while common::http_ok(&format!("http://{addr}/healthz")).await != Some(200) {
        assert!(t0.elapsed() < Duration::from_secs(30), "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, addr)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap();
    assert!(ok.success(), "kill -{sig}");
}

/// Waits up to `limit` for `child` to exit; its status.
async fn exited(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/readyz` until it says draining (up to 10 s).
async fn wait_draining(addr: SocketAddr) {
    let t0 = Instant::now();
    loop {
        let (status, r) = readyz(addr).await;
        if r["draining"] == true {
            assert_eq!(status, 503, "{r}");
            assert_eq!(r["ready"], false);
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "not draining: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Decodes `path` to the end: its duration, and whether the decode reached EOS without an error.
fn decode_to_eos(path: &Path) -> (Duration, bool) {
    gst::init().unwrap();
    let desc = format!("filesrc location=\"{}\" ! decodebin ! fakesink sync=false", path.display());
    let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let eos = loop {
        let Some(m) = bus.timed_pop(gst::ClockTime::from_seconds(20)) else { break false };
        match m.view() {
            gst::MessageView::Eos(_) => break true,
            gst::MessageView::Error(e) => {
                eprintln!("{}: {}", path.display(), e.error());
                break false;
            }
            _ => {}
        }
    };
    let dur = p.query_duration::<gst::ClockTime>().map_or(Duration::ZERO, |d| Duration::from_nanos(d.nseconds()));
    p.set_state(gst::State::Null).unwrap();
    (dur, eos)
}

/// A fresh folder for a test's recordings.
fn recordings_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_running_room_finalizes_its_recording_and_exits_0() {
    let _serial = common::serial().await;
    let dir = recordings_dir("drain-recordings");
    let (mut child, a) = spawn_server(&["--recordings-dir", dir.to_str().unwrap(), "--drain-timeout", "60s"]).await;
    let peer = common::join(a, "meeting", PeerOpts::publisher("alice", (200, 40, 40), 440.0)).await;
    let rec = send(
        "POST",
        format!("http://{a}/v1/rooms/meeting/recordings"),
        Some(("application/json", json!({"format": "mp4"}).to_string().into_bytes())),
    )
    .await;
    assert_eq!(rec.status, 201, "{}", rec.body);
    let file = PathBuf::from(serde_json::from_str::<serde_json::Value>(&rec.body).unwrap()["file"].as_str().unwrap());
    assert!(peer.wait_frames(60, Duration::from_secs(20)).await, "the room runs");

    signal(&child, "TERM");
    wait_draining(a).await;
    // Refused, with nothing made: a new room, and a join of the running one.
    assert_refused(&offer_to(a, "/v1/rooms/other/participants").await, "join while draining", "draining");
    assert_refused(&offer_to(a, "/whep/meeting").await, "WHEP while draining", "draining");
    let put = send("PUT", format!("http://{a}/v1/rooms/later"), None).await;
    assert_refused(&put, "PUT while draining", "draining");
    // The room runs on for its participant.
    assert_eq!(room_names(a).await, ["meeting"]);
    let f0 = peer.frames();
    assert!(peer.wait_frames(f0 + 15, Duration::from_secs(10)).await, "the room still sends frames while draining");
    assert!(child.try_wait().unwrap().is_none(), "the server waits for the room");

    assert_eq!(peer.leave().await.unwrap(), 204);
    let status = exited(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
    let (dur, eos) = decode_to_eos(&file);
    assert!(eos, "{} decodes to the end", file.display());
    assert!(dur >= Duration::from_secs(1), "{}: duration {dur:?}", file.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_command_waits_and_the_drain_timeout_ends_rooms_that_stay() {
    let _serial = common::serial().await;
    let secret = "drain-test-secret";
    let (mut child, a) = spawn_server(&["--api-secret", secret, "--drain-timeout", "2s"]).await;
    let auth = tessera::signaling::auth::Auth::new(Some(secret));
    let grants = tessera::signaling::auth::Grants { publish: true, subscribe: true, admin: false };
    let mut opts = PeerOpts::publisher("bob", (40, 40, 200), 660.0);
    opts.token = Some(auth.mint("stay", "bob", None, grants, Duration::from_secs(600)));
    let peer = common::join(a, "stay", opts).await;
    assert!(peer.wait_frames(10, Duration::from_secs(20)).await, "the room runs");

    // Without the secret the drain is refused (401), and nothing changes.
    let drain = |args: &[&str], secret: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
        c.args(["drain", "--url", &format!("http://{a}")]).args(args).env_remove("TESSERA_API_SECRET");
        c.env_remove("TESSERA_DRAIN_TIMEOUT");
        if let Some(s) = secret {
            c.env("TESSERA_API_SECRET", s);
        }
        c.output().expect("tessera drain")
    };
    let refused = tokio::task::block_in_place(|| drain(&[], None));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"), "{refused:?}");
    assert_eq!(readyz(a).await.0, 200);

    let ok = tokio::task::block_in_place(|| drain(&[], Some(secret)));
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("draining; 1 rooms, 1 participants"), "{ok:?}");
    wait_draining(a).await;
    // The room stays: --wait gives up after its timeout.
    let waited = tokio::task::block_in_place(|| drain(&["--wait", "--timeout", "1s"], Some(secret)));
    assert!(!waited.status.success(), "{waited:?}");
    assert!(String::from_utf8_lossy(&waited.stderr).contains("1 rooms still running"), "{waited:?}");
    assert!(child.try_wait().unwrap().is_none(), "a drain over HTTP does not stop the process");

    // SIGTERM: the participant stays, so the 2 s drain timeout ends the room, then the process.
    let t0 = Instant::now();
    signal(&child, "TERM");
    let status = exited(&mut child, Duration::from_secs(30)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(t0.elapsed() >= Duration::from_secs(2), "exited after {:?}, before the drain timeout", t0.elapsed());
    drop(peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once() {
    let _serial = common::serial().await;
    let (mut child, a) = spawn_server(&["--drain-timeout", "600s"]).await;
    let peer = common::join(a, "busy", PeerOpts::publisher("carol", (40, 200, 40), 550.0)).await;
    assert!(peer.wait_frames(5, Duration::from_secs(20)).await);
    signal(&child, "TERM");
    wait_draining(a).await;
    assert!(child.try_wait().unwrap().is_none(), "the first signal drains");
    signal(&child, "INT");
    let status = exited(&mut child, Duration::from_secs(10)).await;
    assert!(!status.success(), "a stop at once is not a clean exit: {status:?}");
}
