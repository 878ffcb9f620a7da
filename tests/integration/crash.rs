//! Recordings survive the server: SIGKILL leaves a file that decodes to within 2 s of the kill;
//! SIGTERM finalizes it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde_json::json;

use crate::common::{self, PeerOpts};

/// A `tessera serve` process on a free loopback port, killed on drop.
struct ServerProcess {
    child: Child,
    base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_server(dir: &Path) -> ServerProcess {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--udp-ports", "0", "--media-ip", "127.0.0.1"])
        .arg("--recordings-dir")
        .arg(dir)
        // SIGTERM drains first; with no drain time the rooms end at once, as a stop after the
        // drain timeout does (`admission` tests a drain that waits for the room).
        .args(["--drain-timeout", "0s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tessera binary");
    let base = format!("http://127.0.0.1:{port}");
    common::wait_healthy(&base, "server").await;
    ServerProcess { child, base }
}

/// Timestamp of the last video frame that decodes, and how many decoded.
fn last_decodable(path: &Path) -> (Duration, u64) {
    let desc =
        format!("filesrc location=\"{}\" ! decodebin caps=video/x-raw ! fakesink name=s sync=false", path.display());
    let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let last = std::sync::Arc::new(std::sync::Mutex::new((gst::ClockTime::ZERO, 0u64)));
    let l = last.clone();
    p.by_name("s").unwrap().static_pad("sink").unwrap().add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
            let mut g = l.lock().unwrap();
            g.0 = g.0.max(pts);
            g.1 += 1;
        }
        gst::PadProbeReturn::Ok
    });
    p.set_state(gst::State::Playing).unwrap();
    let bus = p.bus().unwrap();
    let _ = bus.timed_pop_filtered(gst::ClockTime::from_seconds(30), &[gst::MessageType::Eos, gst::MessageType::Error]);
    p.set_state(gst::State::Null).unwrap();
    let (t, n) = *last.lock().unwrap();
    (Duration::from_nanos(t.nseconds()), n)
}

async fn record_then(signal: &str, format: &str) -> (PathBuf, Duration, Duration) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("crash-{signal}-{format}"));
    let _ = std::fs::remove_dir_all(&dir);
    let srv = spawn_server(&dir).await;
    let mut peers = vec![];
    for (i, c) in [(220, 40, 40), (40, 60, 220)].into_iter().enumerate() {
        let mut o = PeerOpts::publisher(&format!("k{i}"), c, 500.0 + 300.0 * i as f64);
        o.receive = false;
        peers.push(tessera::client::loadgen::Peer::join(&srv.base, "crash", o, false).await.unwrap());
    }
    let r = tessera::client::loadgen::http(
        "POST",
        &format!("{}/v1/rooms/crash/recordings", srv.base),
        Some("application/json"),
        json!({"format": format}).to_string().into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let file = PathBuf::from(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["file"].as_str().unwrap());
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pid = srv.child.id().to_string();
    let killed_after = started.elapsed();
    assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    let mut srv = srv;
    let _ = tokio::task::spawn_blocking(move || {
        let _ = srv.child.wait();
        srv
    })
    .await;
    let (last, frames) = last_decodable(&file);
    eprintln!("{signal} {format}: killed after {killed_after:?}; decodes to {last:?} ({frames} frames)");
    (file, killed_after, last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_leaves_a_playable_recording() {
    let _serial = common::serial().await;
    for format in ["mkv", "mp4"] {
        let (_, killed_after, last) = record_then("-KILL", format).await;
        assert!(
            last + Duration::from_secs(2) >= killed_after,
            "{format}: decodes only to {last:?} of {killed_after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finalizes_the_recording() {
    let _serial = common::serial().await;
    let (file, killed_after, last) = record_then("-TERM", "webm").await;
    assert!(last + Duration::from_secs(1) >= killed_after, "decodes only to {last:?} of {killed_after:?}");
    // Finalized: the container knows its duration.
    let d = gstreamer_pbutils::Discoverer::new(gst::ClockTime::from_seconds(15)).unwrap();
    let info = d.discover_uri(&format!("file://{}", file.canonicalize().unwrap().display())).unwrap();
    let dur = info.duration().unwrap().seconds();
    assert!((5..=7).contains(&dur), "duration {dur} s");
}
