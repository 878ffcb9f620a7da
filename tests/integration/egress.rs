//! Live egress: an HLS folder gets a valid playlist and segments that decode to the composite.

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
    let url = rtmp.clone();
    let green_centre = |f: &common::Frame| close(f.colour_at(640, 360, 40), (40, 200, 60), 50);
    let f = tokio::task::spawn_blocking(move || play_rtmp(&url, green_centre))
        .await
        .unwrap()
        .expect("the RTMP stream decodes");
    common::save(&f, "egress-rtmp");
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
