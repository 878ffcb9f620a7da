//! Live egress, received and decoded for every kind: HLS (segments on disk), RTMP (nginx with the
//! RTMP module as the server, `rtmp2src` as the player) and SRT (`srt-live-transmit` from Debian's
//! `srt-tools` as the listener). Each stream starts at an IDR with SPS/PPS in band and carries
//! them again at every forced keyframe; an egress says `streaming` only once the far end has
//! taken media.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use serde_json::json;
use tessera::config::Config;

use crate::common::{self, PeerOpts, close};

/// The segments the playlist lists, once it lists at least `n`.
async fn segments(dir: &std::path::Path, n: usize, timeout: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = std::fs::read_to_string(dir.join("playlist.m3u8")).unwrap_or_default();
        let segs: Vec<PathBuf> = list.lines().filter(|l| l.ends_with(".ts")).map(|l| dir.join(l)).collect();
        if segs.len() >= n || Instant::now() > deadline {
            assert!(list.starts_with("#EXTM3U") || segs.is_empty(), "not an HLS playlist: {list}");
            return segs;
        }
        // The muxer writes a segment every 2 s; nothing to wait on but the file system.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// NAL unit types (`nal_unit_type`, ITU-T H.264 §7.4.1) in an Annex B access unit.
fn nal_types(au: &[u8]) -> Vec<u8> {
    let mut types = vec![];
    let mut i = 0;
    while i + 3 < au.len() {
        if au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 {
            types.push(au[i + 3] & 0x1f);
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}

const SPS: u8 = 7;
const PPS: u8 = 8;
const IDR: u8 = 5;

/// The NAL types of every H.264 access unit of an MPEG-TS file, in order, as GStreamer's
/// `tsdemux ! h264parse` splits them.
fn ts_access_units(path: &std::path::Path) -> Vec<Vec<u8>> {
    let desc = format!(
        "filesrc location=\"{}\" ! tsdemux ! h264parse ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=s sync=false",
        path.display()
    );
    let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let s = p.by_name("s").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut aus = vec![];
    while let Some(sample) = s.try_pull_sample(gst::ClockTime::from_seconds(5)) {
        aus.push(nal_types(&sample.buffer().unwrap().map_readable().unwrap()));
    }
    p.set_state(gst::State::Null).unwrap();
    aus
}

/// Frames `avdec_h264` decodes from an MPEG-TS file.
fn ts_decoded_frames(path: &std::path::Path) -> usize {
    let desc = format!(
        "filesrc location=\"{}\" ! tsdemux ! h264parse ! avdec_h264 ! appsink name=s sync=false",
        path.display()
    );
    let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let s = p.by_name("s").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let mut n = 0;
    while s.try_pull_sample(gst::ClockTime::from_seconds(5)).is_some() {
        n += 1;
    }
    p.set_state(gst::State::Null).unwrap();
    n
}

/// Asserts that `aus` starts with an IDR access unit carrying SPS and PPS, that every IDR
/// carries them, and that there are at least `idrs` IDRs (the start and forced keyframes).
fn assert_keyframes_in_band(aus: &[Vec<u8>], idrs: usize, what: &str) {
    assert!(!aus.is_empty(), "{what}: no H.264 access units");
    let first = &aus[0];
    assert!(
        first.contains(&IDR) && first.contains(&SPS) && first.contains(&PPS),
        "{what}: the first access unit is {first:?}, not SPS+PPS+IDR (types 7, 8, 5)"
    );
    let with_idr: Vec<&Vec<u8>> = aus.iter().filter(|au| au.contains(&IDR)).collect();
    assert!(with_idr.len() >= idrs, "{what}: {} IDRs in {} access units", with_idr.len(), aus.len());
    for au in &with_idr {
        assert!(au.contains(&SPS) && au.contains(&PPS), "{what}: an IDR without SPS/PPS: {au:?}");
    }
}

fn decode_segment(path: &std::path::Path) -> common::Frame {
    let desc = format!(
        "filesrc location=\"{}\" ! tsdemux ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=RGB ! appsink name=s sync=false",
        path.display()
    );
    let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let s = p.by_name("s").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    let sample = s.try_pull_sample(gst::ClockTime::from_seconds(10)).expect("a frame in the segment");
    p.set_state(gst::State::Null).unwrap();
    common::Frame::from_sample(&sample).expect("an RGB frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_egress_writes_a_playlist_and_segments() {
    let _serial = common::serial().await;
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("egress");
    let _ = std::fs::remove_dir_all(&root);
    let srv = common::server_with(Config { recordings_dir: root.clone(), ..Config::default() }).await;
    let a = srv.addr;
    let mut o = PeerOpts::publisher("red", (220, 40, 40), 500.0);
    o.receive = false;
    let _red = common::join(a, "live", o).await;
    let mut o = PeerOpts::publisher("blue", (40, 60, 220), 800.0);
    o.receive = false;
    o.data_channel = true;
    let blue = common::join(a, "live", o).await;
    // Events reach a data channel from when it opened (the welcome tells the state before that).
    blue.wait_event(Duration::from_secs(10), |e| e["type"] == "welcome").await.expect("welcome");
    let url = format!("http://{a}/v1/rooms/live/egress");
    let r = common::http(
        "POST",
        url.clone(),
        Some("application/json"),
        json!({"url": "http://example.org/x"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = common::http(
        "POST",
        url.clone(),
        Some("application/json"),
        json!({"hls": "../escape"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r =
        common::http("POST", url.clone(), Some("application/json"), json!({"hls": "show"}).to_string().into_bytes())
            .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string();
    // Not streaming before a segment is on disk.
    assert_eq!(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["state"], "connecting", "{}", r.body);
    let segs = segments(&root.join("show"), 2, Duration::from_secs(30)).await;
    let ev = blue
        .wait_event(Duration::from_secs(5), |e| {
            e["type"] == "recording_state" && e["id"] == id.as_str() && e["state"] == "streaming"
        })
        .await;
    if ev.is_none() {
        let list = common::http("GET", url.clone(), None, vec![]).await.body;
        panic!("no streaming event: {:?}\negress: {list}", blue.events());
    }
    if segs.len() < 2 {
        let list = common::http("GET", url.clone(), None, vec![]).await.body;
        panic!("playlist lists {} segments; egress: {list}", segs.len());
    }
    assert!(segs.iter().all(|s| std::fs::metadata(s).map(|m| m.len() > 1000).unwrap_or(false)), "empty segments");
    // Each segment starts at a keyframe with SPS/PPS in band, and decodes.
    for (i, seg) in segs.iter().enumerate() {
        assert_keyframes_in_band(&ts_access_units(seg), 1, &format!("HLS segment {i}"));
        let n = ts_decoded_frames(seg);
        assert!(n > 20, "HLS segment {i} decodes to {n} frames");
    }
    let f = decode_segment(&segs[1]);
    common::save(&f, "egress-hls");
    assert_eq!((f.width, f.height), (1280, 720));
    assert!(close(f.colour_at(320, 360, 30), (220, 40, 40), 50), "left tile {:?}", f.colour_at(320, 360, 30));
    assert!(close(f.colour_at(960, 360, 30), (40, 60, 220), 50), "right tile {:?}", f.colour_at(960, 360, 30));

    let list: serde_json::Value =
        serde_json::from_str(&common::http("GET", url.clone(), None, vec![]).await.body).unwrap();
    assert_eq!(list["egress"][0]["state"], "streaming");
    let r = common::http("DELETE", format!("{url}/{id}"), None, vec![]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["state"], "stopped");
}

/// An nginx with the RTMP module on a free loopback port, stopped on drop.
struct Nginx {
    child: std::process::Child,
}

impl Nginx {
    fn start(dir: PathBuf, port: u16) -> Nginx {
        std::fs::create_dir_all(&dir).unwrap();
        let module = ["/usr/lib/nginx/modules/ngx_rtmp_module.so", "/usr/share/nginx/modules/ngx_rtmp_module.so"]
            .into_iter()
            .find(|m| std::path::Path::new(m).exists())
            .expect("nginx RTMP module missing: apt-get install nginx libnginx-mod-rtmp (scripts/setup.sh --test)");
        let conf = format!(
            "load_module {module};\ndaemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\nrtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; record off; wait_key on; wait_video on; }} }} }}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = std::process::Command::new("nginx")
            .args(["-p", dir.to_str().unwrap(), "-c", dir.join("nginx.conf").to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx libnginx-mod-rtmp)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nginx did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Nginx { child }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays `url` and returns the first decoded frame that satisfies `want` (or the last one seen
/// within 15 s).
fn play_rtmp(url: &str, want: impl Fn(&common::Frame) -> bool) -> Option<common::Frame> {
    let desc = format!(
        "rtmp2src location=\"{url}\" timeout=10 ! flvdemux name=d d.video ! queue ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=RGB ! appsink name=s sync=false"
    );
    let p = gst::parse::launch(&desc).ok()?.downcast::<gst::Pipeline>().ok()?;
    let s = p.by_name("s")?.downcast::<gstreamer_app::AppSink>().ok()?;
    p.set_state(gst::State::Playing).ok()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut frame = None;
    while Instant::now() < deadline {
        let Some(sample) = s.try_pull_sample(gst::ClockTime::from_seconds(5)) else { break };
        let Some(f) = common::Frame::from_sample(&sample) else { break };
        let done = want(&f);
        frame = Some(f);
        if done {
            break;
        }
    }
    let _ = p.set_state(gst::State::Null);
    frame
}

/// The NAL types of the first `n` H.264 access units a player of `url` receives (within 15 s),
/// and how many of them `avdec_h264` decoded.
fn rtmp_access_units(url: &str, n: usize) -> (Vec<Vec<u8>>, usize) {
    let desc = format!(
        "rtmp2src location=\"{url}\" timeout=10 ! flvdemux name=d d.video ! queue ! h264parse \
         ! video/x-h264,stream-format=byte-stream,alignment=au ! tee name=t \
         t. ! queue ! appsink name=s sync=false t. ! queue ! avdec_h264 ! appsink name=f sync=false"
    );
    let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
    let s = p.by_name("s").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    let f = p.by_name("f").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    let decoded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let d = decoded.clone();
    f.set_callbacks(
        gstreamer_app::AppSinkCallbacks::builder()
            .new_sample(move |f| {
                let _ = f.pull_sample();
                d.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    p.set_state(gst::State::Playing).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut aus = vec![];
    while aus.len() < n && Instant::now() < deadline {
        let Some(sample) = s.try_pull_sample(gst::ClockTime::from_seconds(5)) else { break };
        aus.push(nal_types(&sample.buffer().unwrap().map_readable().unwrap()));
    }
    p.set_state(gst::State::Null).unwrap();
    (aus, decoded.load(std::sync::atomic::Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmp_egress_is_received_and_reconnects() {
    let _serial = common::serial().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nginx-rtmp");
    let nginx = Nginx::start(dir.clone(), port);
    let srv = common::server().await;
    let a = srv.addr;
    let mut o = PeerOpts::publisher("green", (40, 200, 60), 600.0);
    o.receive = false;
    o.data_channel = true;
    let green = common::join(a, "rtmp", o).await;
    green.wait_event(Duration::from_secs(10), |e| e["type"] == "welcome").await.expect("welcome");
    let rtmp = format!("rtmp://127.0.0.1:{port}/live/room");
    let r = common::http(
        "POST",
        format!("http://{a}/v1/rooms/rtmp/egress"),
        Some("application/json"),
        json!({"url": rtmp}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string();
    // `streaming` once nginx answered the handshake, `connect` and `publish`.
    let streaming = green
        .wait_event(Duration::from_secs(15), |e| {
            e["type"] == "recording_state" && e["id"] == id.as_str() && e["state"] == "streaming"
        })
        .await;
    assert!(streaming.is_some(), "no streaming event: {:?}", green.events());
    let url = rtmp.clone();
    let green_centre = |f: &common::Frame| close(f.colour_at(640, 360, 40), (40, 200, 60), 50);
    let f = tokio::task::spawn_blocking(move || play_rtmp(&url, green_centre))
        .await
        .unwrap()
        .expect("the RTMP stream decodes");
    common::save(&f, "egress-rtmp");
    // 3 s of the stream: it starts at SPS+PPS+IDR, repeats them at the forced keyframes, decodes.
    let url = rtmp.clone();
    let (aus, decoded) = tokio::task::spawn_blocking(move || rtmp_access_units(&url, 90)).await.unwrap();
    eprintln!(
        "RTMP: {} access units, {} IDRs, {decoded} decoded",
        aus.len(),
        aus.iter().filter(|a| a.contains(&IDR)).count()
    );
    assert_keyframes_in_band(&aus, 1, "RTMP");
    assert!(aus.len() >= 90 && decoded > 60, "RTMP: {} access units, {decoded} decoded", aus.len());
    assert_eq!((f.width, f.height), (1280, 720));
    assert!(close(f.colour_at(640, 360, 40), (40, 200, 60), 50), "centre {:?}", f.colour_at(640, 360, 40));

    // The far end drops: the egress says so and comes back when the server does.
    drop(nginx);
    green
        .wait_event(Duration::from_secs(15), |e| {
            e["type"] == "recording_state" && e["id"] == id.as_str() && e["state"] == "reconnecting"
        })
        .await
        .expect("reconnecting event");
    let _nginx = Nginx::start(dir, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list: serde_json::Value = serde_json::from_str(
            &common::http("GET", format!("http://{a}/v1/rooms/rtmp/egress"), None, vec![]).await.body,
        )
        .unwrap();
        if list["egress"][0]["state"] == "streaming" && list["egress"][0]["connects"].as_u64().unwrap() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "not reconnected: {list}");
        green
            .wait_event(Duration::from_secs(2), |e| {
                e["type"] == "recording_state" && e["state"] == "streaming" && e["ts"].as_u64() > Some(0)
            })
            .await;
    }
    let url = rtmp.clone();
    let f = tokio::task::spawn_blocking(move || play_rtmp(&url, green_centre))
        .await
        .unwrap()
        .expect("the RTMP stream decodes after reconnecting");
    assert!(close(f.colour_at(640, 360, 40), (40, 200, 60), 50));
}

/// `srt-live-transmit` (Debian `srt-tools`) as an SRT listener on `port`, writing the MPEG-TS it
/// receives to `out`; killed on drop.
struct SrtListener {
    child: std::process::Child,
}

impl SrtListener {
    fn start(port: u16, out: &std::path::Path) -> SrtListener {
        let file = std::fs::File::create(out).unwrap();
        let child = std::process::Command::new("srt-live-transmit")
            .args([&format!("srt://:{port}?mode=listener"), "file://con"])
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("srt-live-transmit (apt-get install srt-tools; scripts/setup.sh --test)");
        SrtListener { child }
    }
}

impl Drop for SrtListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SRT egress to a listener that is not there yet says `connecting`, then `reconnecting` with
/// the reason — never `streaming`; once `srt-live-transmit` listens it streams, and what it
/// received starts with SPS+PPS+IDR, has them at every forced keyframe, and decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_egress_is_received_and_decodes() {
    let _serial = common::serial().await;
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("egress-srt.ts");
    let _ = std::fs::remove_file(&out);
    let srv = common::server().await;
    let a = srv.addr;
    let mut o = PeerOpts::publisher("red", (220, 40, 40), 500.0);
    o.receive = false;
    let _red = common::join(a, "srt", o).await;
    let mut o = PeerOpts::publisher("blue", (40, 60, 220), 800.0);
    o.receive = false;
    o.data_channel = true;
    let blue = common::join(a, "srt", o).await;
    blue.wait_event(Duration::from_secs(10), |e| e["type"] == "welcome").await.expect("welcome");
    let url = format!("http://{a}/v1/rooms/srt/egress");
    let r = common::http(
        "POST",
        url.clone(),
        Some("application/json"),
        json!({"url": format!("srt://127.0.0.1:{port}")}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let info: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(info["state"], "connecting", "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    let state = |s: &'static str| {
        let id = id.clone();
        move |e: &serde_json::Value| e["type"] == "recording_state" && e["id"] == id.as_str() && e["state"] == s
    };
    // Nobody listens: the caller's connection fails.
    let ev = blue.wait_event(Duration::from_secs(15), state("reconnecting")).await;
    let ev = ev.unwrap_or_else(|| panic!("no reconnecting event: {:?}", blue.events()));
    assert!(ev["reason"].as_str().is_some_and(|r| !r.is_empty()), "a reason: {ev}");
    assert!(
        blue.events().iter().all(|e| !state("streaming")(e)),
        "streaming with nobody listening: {:?}",
        blue.events()
    );

    let listener = SrtListener::start(port, &out);
    let ev = blue.wait_event(Duration::from_secs(20), state("streaming")).await;
    if ev.is_none() {
        let list = common::http("GET", url.clone(), None, vec![]).await.body;
        panic!("no streaming event: {:?}\negress: {list}", blue.events());
    }
    // 4 s of stream: at least one keyframe forced (every 2 s) after the first. The listener writes
    // as it receives; there is no event to wait on but the file's growth.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut last, mut grown) = (0, Instant::now());
    while grown.elapsed() < Duration::from_secs(4) || last == 0 {
        assert!(Instant::now() < deadline, "the listener received {last} bytes");
        let len = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        if len > 0 && last == 0 {
            grown = Instant::now();
        }
        last = len;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(listener);
    let path = out.clone();
    let aus = tokio::task::spawn_blocking(move || ts_access_units(&path)).await.unwrap();
    eprintln!("SRT: {} access units, {} IDRs", aus.len(), aus.iter().filter(|au| au.contains(&IDR)).count());
    assert_keyframes_in_band(&aus, 2, "SRT");
    let path = out.clone();
    let frames = tokio::task::spawn_blocking(move || ts_decoded_frames(&path)).await.unwrap();
    assert!(frames > 60, "the SRT stream decodes to {frames} frames");
    let r = common::http("DELETE", format!("{url}/{id}"), None, vec![]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}
