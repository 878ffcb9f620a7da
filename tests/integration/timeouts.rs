//! Connections that go silent end on their own (RFC 7675 consent): a client killed without a
//! `DELETE` is removed once nothing has been heard from it for `--peer-timeout-ms`, and so is a
//! join whose client never connects.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera::config::Config;

use crate::common::{self, PeerOpts};

const TIMEOUT_MS: u64 = 4000;

/// Whether room `room` lists a participant named `name`.
async fn present(addr: std::net::SocketAddr, room: &str, name: &str) -> bool {
    let r = common::room_json(addr, room).await;
    r["participants"].as_array().is_some_and(|ps| ps.iter().any(|p| p["name"] == name))
}

/// How long after `since` participant `name` leaves room `room` (polled every 100 ms, up to 30 s).
async fn gone_after(addr: std::net::SocketAddr, room: &str, name: &str, since: Instant) -> Duration {
    while present(addr, room, name).await {
        assert!(since.elapsed() < Duration::from_secs(30), "{name} still listed after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_client_and_a_client_that_never_connects_are_removed_after_the_timeout() {
    let _serial = common::serial().await;
    let srv = common::server_with(Config { peer_timeout_ms: TIMEOUT_MS, ..Config::default() }).await;
    let _keep = common::join(srv.addr, "silent", PeerOpts::publisher("keeper", (10, 10, 10), 400.0)).await;

    // A viewer in another process, killed (SIGKILL: no DELETE, no DTLS close).
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["loadgen", "--url", &format!("http://{}", srv.addr), "--room", "silent", "--publishers", "0"])
        .args(["--viewers", "1", "--viewers-count-only", "--duration", "60"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tessera loadgen");
    let t0 = Instant::now();
    while !present(srv.addr, "silent", "viewer0").await {
        assert!(t0.elapsed() < Duration::from_secs(20), "the viewer never joined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let it connect and run a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    child.kill().unwrap();
    let _ = child.wait();
    let killed = Instant::now();
    let after = gone_after(srv.addr, "silent", "viewer0", killed).await;
    let budget = Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(3);
    assert!(after >= Duration::from_millis(TIMEOUT_MS / 2), "removed after {after:?}: sooner than the timeout");
    assert!(after <= budget, "removed {after:?} after the kill, timeout {TIMEOUT_MS} ms");

    // A join whose client never completes ICE: its offer is answered, nothing more happens.
    let posted = Instant::now();
    let offer = tessera::client::loadgen::offer_only().await.expect("an offer");
    let r = common::http(
        "POST",
        format!("http://{}/whep/silent?name=ghost", srv.addr),
        Some("application/sdp"),
        offer.into_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(present(srv.addr, "silent", "ghost").await);
    let after = gone_after(srv.addr, "silent", "ghost", posted).await;
    assert!(after <= budget, "a join that never connected stayed {after:?}");
    assert!(present(srv.addr, "silent", "keeper").await, "the connected participant stays");
}
