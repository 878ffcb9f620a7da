//! Recordings to an S3-compatible store — a real `moto_server` started by the test — and signed
//! webhooks to a receiver inside the test: a 10 s recording goes up in parts while it records
//! (their concatenation already plays), lands whole once stopped, downloads through the API and
//! plays (probed); the receiver gets every event with a valid HMAC-SHA256 signature, and
//! `recording_finished` names the object's URL.
//!
//! `moto_server` is found at `$TESSERA_MOTO_SERVER`, in the venv `scripts/setup.sh --test` makes
//! (`${XDG_CACHE_HOME:-~/.cache}/tessera-test-venv/bin`), or on `PATH`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_pbutils as pbutils;
use serde_json::{Value, json};
use tessera::config::{Config, StoreConfig};
use tessera::outputs::storage::ObjectStorage;
use tessera::outputs::webhook::{SIGNATURE_HEADER, verify};
use tessera::signaling::auth::{Auth, Grants};

use crate::common::{self, PeerOpts, http_auth};

const SECRET: &str = "webhook-and-token-secret-42";
const BUCKET: &str = "tessera-rec";

/// The `moto_server` executable.
fn moto_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TESSERA_MOTO_SERVER") {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache"));
    let venv = cache.join("tessera-test-venv/bin/moto_server");
    if venv.exists() { venv } else { PathBuf::from("moto_server") }
}

/// A `moto_server` on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    async fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(moto_bin())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{:?}: {e} (scripts/setup.sh --test installs moto)", moto_bin()));
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while common::http_ok(&format!("{endpoint}/moto-api/")).await.is_none() {
            assert!(Instant::now() < deadline, "moto_server did not answer on {endpoint} within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Moto { child, endpoint }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every webhook the receiver got: (signature header, body).
type Got = Arc<Mutex<Vec<(Option<String>, Vec<u8>)>>>;

/// A webhook receiver on a free loopback port: `(its URL, what it got)`.
async fn receiver() -> (String, Got) {
    let got: Got = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: axum::http::HeaderMap, body: axum::body::Bytes| async move {
            let sig = h.get(SIGNATURE_HEADER).and_then(|s| s.to_str().ok()).map(str::to_string);
            g.lock().unwrap().push((sig, body.to_vec()));
            axum::http::StatusCode::NO_CONTENT
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// Every event received, after checking its signature.
fn events(got: &Got) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(sig, body)| {
            let v: Value = serde_json::from_slice(body).unwrap();
            let sig = sig.as_deref().unwrap_or_else(|| panic!("unsigned webhook {v}"));
            assert!(verify(SECRET.as_bytes(), body, sig), "bad signature {sig} on {v}");
            v
        })
        .collect()
}

/// Waits until the receiver has an event matching `want`.
async fn wait_event(got: &Got, within: Duration, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        if let Some(e) = events(got).into_iter().find(&want) {
            return e;
        }
        assert!(Instant::now() < deadline, "no such webhook within {within:?}; got {:?}", events(got));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET url` with a bearer token and an optional `Range`: (status, headers' Content-Range, body).
async fn get_bytes(url: String, token: String, range: Option<&'static str>) -> (u16, Option<String>, Vec<u8>) {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        let mut req = agent.get(&url).header("authorization", &format!("Bearer {token}"));
        if let Some(r) = range {
            req = req.header("range", r);
        }
        let mut resp = req.call().unwrap();
        let cr = resp.headers().get("content-range").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap();
        (resp.status().as_u16(), cr, body)
    })
    .await
    .unwrap()
}

/// Duration (s), video streams (width, height) and audio streams of `path`.
fn probe(path: &Path) -> (f64, Vec<(u32, u32)>, usize) {
    let d = pbutils::Discoverer::new(gst::ClockTime::from_seconds(15)).unwrap();
    let info = d.discover_uri(&format!("file://{}", path.canonicalize().unwrap().display())).unwrap();
    let dur = info.duration().map_or(0.0, |d| d.mseconds() as f64 / 1000.0);
    let video = info.video_streams().iter().map(|v| (v.width(), v.height())).collect();
    (dur, video, info.audio_streams().len())
}

/// Seconds of video decoded from `path` (the last frame's time): what a player gets from a file
/// with no duration in its header (as a crash leaves it).
fn decoded_seconds(path: &Path) -> f64 {
    use gst::prelude::*;
    let desc =
        format!("filesrc location=\"{}\" ! decodebin caps=video/x-raw ! appsink name=s sync=false", path.display());
    let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let s = p.by_name("s").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut last = 0.0f64;
    while let Some(sample) = s.try_pull_sample(gst::ClockTime::from_seconds(5)) {
        if let Some(pts) = sample.buffer().and_then(|b| b.pts()) {
            last = last.max(pts.nseconds() as f64 / 1e9);
        }
    }
    p.set_state(gst::State::Null).unwrap();
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_lands_in_the_object_store_and_the_webhooks_tell_of_it() {
    let _serial = common::serial().await;
    gst::init().unwrap();
    let moto = Moto::start().await;
    // The bucket, made through the S3 API (CreateBucket: PUT /BUCKET).
    let url = format!("{}/{BUCKET}", moto.endpoint);
    let status = tokio::task::spawn_blocking(move || ureq::put(&url).send_empty().map(|r| r.status().as_u16()))
        .await
        .unwrap()
        .expect("CreateBucket");
    assert_eq!(status, 200);
    let (hook_url, got) = receiver().await;
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recordings-s3");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let store = StoreConfig {
        url: Some(format!("s3://{BUCKET}/meetings")),
        endpoint: Some(moto.endpoint.clone()),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
    };
    let cfg = Config {
        api_secret: Some(SECRET.into()),
        recordings_dir: tmp.join("local"),
        store: store.clone(),
        webhooks: vec![hook_url],
        ..Config::default()
    };
    let srv = common::server_with(cfg).await;
    let a = srv.addr;
    let auth = Auth::new(Some(SECRET));
    let hour = Duration::from_secs(3600);
    let admin = auth.mint("s3", "ops", None, Grants { publish: false, subscribe: false, admin: true }, hour);
    let mut peers = vec![];
    for (i, (c, f)) in [((220, 40, 40), 400.0), ((40, 200, 60), 700.0)].into_iter().enumerate() {
        let mut o = PeerOpts::publisher(&format!("p{i}"), c, f);
        o.receive = i == 0;
        o.token = Some(auth.mint(
            "s3",
            &format!("p{i}"),
            None,
            Grants { publish: true, subscribe: true, admin: false },
            hour,
        ));
        peers.push(common::join(a, "s3", o).await);
    }
    let base = format!("http://{a}/v1/rooms/s3/recordings");
    let body = json!({"format": "webm"}).to_string().into_bytes();
    let r = http_auth("POST", base.clone(), Some("application/json"), body, Some(&admin)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let rec: Value = serde_json::from_str(&r.body).unwrap();
    let id = rec["id"].as_str().unwrap().to_string();
    let object_url = format!("s3://{BUCKET}/meetings/s3/{id}/s3-{id}.webm");
    assert_eq!(rec["url"], object_url.as_str(), "{rec}");
    assert_eq!(rec["upload"]["state"], "uploading", "{rec}");
    let started = Instant::now();

    // While it records: parts in the store, and together they already play (what a node lost
    // now would leave).
    let storage = ObjectStorage::new(&store).unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let listed = storage.list_room("s3").await.unwrap();
    let partial = listed.iter().find(|r| r.id == id).unwrap_or_else(|| panic!("no parts of {id}: {listed:?}"));
    assert_eq!(partial.state, "partial");
    assert!(partial.parts >= 1, "{partial:?}");
    let mut joined = vec![];
    for k in &partial.keys {
        joined.extend_from_slice(&storage.get(k, None).await.unwrap().bytes().await.unwrap());
    }
    let parts_file = tmp.join("parts.webm");
    std::fs::write(&parts_file, &joined).unwrap();
    let (_, video, audio) = probe(&parts_file);
    let secs = decoded_seconds(&parts_file);
    eprintln!("{} parts while recording: {} bytes, {secs:.1} s decoded", partial.parts, joined.len());
    assert!(secs >= 2.0 && video == [(1280, 720)] && audio == 1, "parts: {secs} s, {video:?}, {audio} audio");

    // Another node on the same store (as if this one were gone) lists the recording as
    // `partial` and downloads its parts as one file.
    let other = common::server_with(Config {
        api_secret: Some(SECRET.into()),
        recordings_dir: tmp.join("other"),
        store: store.clone(),
        ..Config::default()
    })
    .await;
    let other_base = format!("http://{}/v1/rooms/s3/recordings", other.addr);
    let r = http_auth("GET", other_base.clone(), None, vec![], Some(&admin)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (&list["recordings"][0]["id"], &list["recordings"][0]["state"]),
        (&json!(id), &json!("partial")),
        "{list}"
    );
    let (status, _, from_other) = get_bytes(format!("{other_base}/{id}/file"), admin.clone(), None).await;
    assert_eq!(status, 200);
    assert!(
        from_other.starts_with(&joined) && !joined.is_empty(),
        "{} bytes vs the parts' {}",
        from_other.len(),
        joined.len()
    );
    other.shutdown().await;

    // 10 s in all, then stop: the whole file goes up, the parts and the local file go.
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    let r = http_auth("DELETE", format!("{base}/{id}"), None, vec![], Some(&admin)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let local = PathBuf::from(serde_json::from_str::<Value>(&r.body).unwrap()["file"].as_str().unwrap());
    let t0 = Instant::now();
    let info = loop {
        let r = http_auth("GET", format!("{base}/{id}"), None, vec![], Some(&admin)).await;
        let info: Value = serde_json::from_str(&r.body).unwrap();
        if info["upload"]["state"] != "uploading" {
            break info;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "upload still running: {info}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("uploaded {:.1} s after the stop: {info}", t0.elapsed().as_secs_f64());
    assert_eq!(info["upload"]["state"], "uploaded", "{info}");
    assert!(!local.exists(), "the local file {local:?} stays after the upload");
    let listed = storage.list_room("s3").await.unwrap();
    let done = listed.iter().find(|r| r.id == id).unwrap();
    assert_eq!((done.state, done.parts, done.url.as_str()), ("uploaded", 0, object_url.as_str()), "{done:?}");

    // Downloaded through the API (from the store: the local file is gone), it plays 10 s.
    let (status, _, body) = get_bytes(format!("{base}/{id}/file"), admin.clone(), None).await;
    assert_eq!(status, 200);
    assert_eq!(body.len() as u64, info["size_bytes"].as_u64().unwrap());
    let downloaded = tmp.join("downloaded.webm");
    std::fs::write(&downloaded, &body).unwrap();
    let (dur, video, audio) = probe(&downloaded);
    eprintln!("downloaded {} bytes: {dur:.2} s, video {video:?}, {audio} audio", body.len());
    assert!((9.0..=11.0).contains(&dur), "duration {dur} s");
    assert_eq!((video.as_slice(), audio), ([(1280, 720)].as_slice(), 1));
    let (status, range, part) = get_bytes(format!("{base}/{id}/file"), admin.clone(), Some("bytes=100-199")).await;
    assert_eq!((status, part.as_slice()), (206, &body[100..200]));
    assert_eq!(range.as_deref(), Some(format!("bytes 100-199/{}", body.len()).as_str()));

    // The webhooks, all signed: the room, its participants, and the recording with its URL.
    let fin = wait_event(&got, Duration::from_secs(10), |e| e["event"] == "recording_finished").await;
    assert_eq!(fin["recording"]["url"], object_url.as_str(), "{fin}");
    assert_eq!(
        (&fin["recording"]["state"], &fin["recording"]["upload"]["state"]),
        (&json!("stopped"), &json!("uploaded"))
    );
    assert_eq!((&fin["room"], &fin["recording"]["id"]), (&json!("s3"), &json!(id)));
    let names: Vec<String> = events(&got).iter().map(|e| e["event"].as_str().unwrap().to_string()).collect();
    for want in ["room_started", "participant_joined", "recording_started"] {
        assert!(names.iter().any(|n| n == want), "no {want} in {names:?}");
    }
    assert_eq!(names.iter().filter(|n| *n == "participant_joined").count(), 2, "{names:?}");

    // The room ends when they leave; its recordings are still listed and downloadable, from the store.
    for p in &peers {
        let _ = p.leave().await;
    }
    wait_event(&got, Duration::from_secs(15), |e| e["event"] == "room_finished").await;
    let names: Vec<String> = events(&got).iter().map(|e| e["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.iter().filter(|n| *n == "participant_left").count(), 2, "{names:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_auth("GET", format!("http://{a}/v1/rooms/s3"), None, vec![], Some(&admin)).await.status != 404 {
        assert!(Instant::now() < deadline, "the room did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http_auth("GET", base.clone(), None, vec![], Some(&admin)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(list["recordings"][0]["id"], id.as_str(), "{list}");
    assert_eq!(list["recordings"][0]["state"], "uploaded", "{list}");
    let (status, _, again) = get_bytes(format!("{base}/{id}/file"), admin.clone(), None).await;
    assert_eq!((status, again.len()), (200, body.len()));
    srv.shutdown().await;
}

/// The store is down: the room and its recording go on, the failed parts are counted, `DELETE`
/// answers at once, and after its tries the upload ends `failed` — the local file stays, and
/// `recording_finished` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_fails_the_upload_not_the_room() {
    let _serial = common::serial().await;
    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (hook_url, got) = receiver().await;
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recordings-s3-down");
    let _ = std::fs::remove_dir_all(&tmp);
    let cfg = Config {
        api_secret: Some(SECRET.into()),
        recordings_dir: tmp.clone(),
        store: StoreConfig {
            url: Some(format!("s3://{BUCKET}/x")),
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
        },
        webhooks: vec![hook_url],
        ..Config::default()
    };
    let srv = common::server_with(cfg).await;
    let a = srv.addr;
    let auth = Auth::new(Some(SECRET));
    let hour = Duration::from_secs(3600);
    let admin = auth.mint("down", "ops", None, Grants { publish: false, subscribe: false, admin: true }, hour);
    let mut o = PeerOpts::publisher("p", (220, 40, 40), 400.0);
    o.token = Some(auth.mint("down", "p", None, Grants { publish: true, subscribe: true, admin: false }, hour));
    let peer = common::join(a, "down", o).await;
    let base = format!("http://{a}/v1/rooms/down/recordings");
    let body = json!({"format": "mkv"}).to_string().into_bytes();
    let r = http_auth("POST", base.clone(), Some("application/json"), body, Some(&admin)).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = serde_json::from_str::<Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string();

    // The first part's upload fails while the receiver keeps getting the room.
    let f0 = peer.frames();
    assert!(peer.wait_frames(f0 + 240, Duration::from_secs(20)).await, "the room stalled");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = http_auth("GET", format!("http://{a}/metrics"), None, vec![], None).await.body;
        if m.lines().any(|l| {
            l.starts_with("tessera_recording_uploads_total{") && l.contains("part_failed") && !l.ends_with(" 0")
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no failed part counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t0 = Instant::now();
    let r = http_auth("DELETE", format!("{base}/{id}"), None, vec![], Some(&admin)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(t0.elapsed() < Duration::from_secs(6), "DELETE waited {:?} on the upload", t0.elapsed());
    let info: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!((&info["state"], &info["upload"]["state"]), (&json!("stopped"), &json!("uploading")), "{info}");
    let f1 = peer.frames();
    assert!(peer.wait_frames(f1 + 60, Duration::from_secs(10)).await, "the room stalled after the stop");

    // Every try fails (about 40 s): `failed`, the local file stays, and the webhook says so.
    let fin = wait_event(&got, Duration::from_secs(90), |e| e["event"] == "recording_finished").await;
    assert_eq!(fin["recording"]["upload"]["state"], "failed", "{fin}");
    assert!(fin["recording"]["upload"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{fin}");
    let local = PathBuf::from(fin["recording"]["file"].as_str().unwrap());
    assert!(std::fs::metadata(&local).is_ok_and(|m| m.len() > 10_000), "{local:?} must stay");
    eprintln!("upload failed {:.0} s after the stop: {}", t0.elapsed().as_secs_f64(), fin["recording"]["upload"]);
    srv.shutdown().await;
}
