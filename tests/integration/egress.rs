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
    let info = gstreamer_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let map = sample.buffer().unwrap().map_readable().unwrap();
    let (w, h, stride) = (info.width(), info.height(), info.stride()[0] as usize);
    let mut rgb = vec![];
    for row in 0..h as usize {
        rgb.extend_from_slice(&map[row * stride..row * stride + w as usize * 3]);
    }
    drop(map);
    p.set_state(gst::State::Null).unwrap();
    common::Frame { width: w, height: h, rgb: std::sync::Arc::new(rgb) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_egress_writes_a_playlist_and_segments() {
    let _serial = common::serial();
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
    let url = format!("http://{a}/v1/rooms/live/egress");
    let r = common::http("POST", url.clone(), Some("application/json"), json!({"url": "http://example.org/x"}).to_string().into_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = common::http("POST", url.clone(), Some("application/json"), json!({"hls": "../escape"}).to_string().into_bytes()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = common::http("POST", url.clone(), Some("application/json"), json!({"hls": "show"}).to_string().into_bytes()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string();
    let ev = blue.wait_event(Duration::from_secs(5), |e| e["type"] == "recording_state" && e["id"] == id.as_str() && e["state"] == "streaming").await;
    assert!(ev.is_some(), "no streaming event: {:?}", blue.events());

    let segs = segments(&root.join("show"), 2, Duration::from_secs(15)).await;
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

    let list: serde_json::Value = serde_json::from_str(&common::http("GET", url.clone(), None, vec![]).await.body).unwrap();
    assert_eq!(list["egress"][0]["state"], "streaming");
    let r = common::http("DELETE", format!("{url}/{id}"), None, vec![]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["state"], "stopped");
}
