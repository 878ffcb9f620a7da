//! Composite recordings: a file with the grid and the full mix, probed and decoded with GStreamer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_pbutils as pbutils;
use serde_json::json;
use tessera::config::Config;

use crate::common::{self, PeerOpts, close, tone_db};

const COLOURS: [(u8, u8, u8); 3] = [(220, 40, 40), (40, 200, 60), (40, 60, 220)];
const TONES: [f64; 3] = [400.0, 700.0, 1100.0];

/// Decodes the video frame at `at` and 1 s of audio from `at` (48 kHz mono) from `path`.
fn decode_at(path: &Path, at: Duration) -> (common::Frame, Vec<i16>) {
    let launch = |kind: &str, tail: &str| {
        let desc = format!(
            "filesrc location=\"{}\" ! decodebin caps={kind}/x-raw ! {tail} ! appsink name=s sync=false",
            path.display()
        );
        let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
        let s = p.by_name("s").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
        (p, s)
    };
    // Video: seek to `at`, take one frame.
    let (p, v) = launch("video", "videoconvert ! video/x-raw,format=RGB");
    p.set_state(gst::State::Paused).unwrap();
    let _ = p.state(gst::ClockTime::from_seconds(10));
    p.seek_simple(
        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        gst::ClockTime::from_nseconds(at.as_nanos() as u64),
    )
    .unwrap();
    let _ = p.state(gst::ClockTime::from_seconds(10));
    p.set_state(gst::State::Playing).unwrap();
    let s = v.try_pull_sample(gst::ClockTime::from_seconds(10)).expect("a video frame");
    p.set_state(gst::State::Null).unwrap();
    let frame = common::Frame::from_sample(&s).expect("an RGB frame");
    // Audio: decode from the start, keep [at, at + 1 s).
    let (p, a) = launch("audio", "audioconvert ! audioresample ! audio/x-raw,format=S16LE,rate=48000,channels=1");
    p.set_state(gst::State::Playing).unwrap();
    let from = (at.as_secs_f64() * 48000.0) as usize;
    let mut audio = vec![];
    while audio.len() < from + 48000 {
        let Some(s) = a.try_pull_sample(gst::ClockTime::from_seconds(5)) else { break };
        let m = s.buffer().unwrap().map_readable().unwrap();
        audio.extend(m.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])));
    }
    p.set_state(gst::State::Null).unwrap();
    let audio = audio.get(from..(from + 48000).min(audio.len())).unwrap_or_default().to_vec();
    (frame, audio)
}

fn discover(path: &Path) -> pbutils::DiscovererInfo {
    let d = pbutils::Discoverer::new(gst::ClockTime::from_seconds(15)).unwrap();
    d.discover_uri(&format!("file://{}", path.canonicalize().unwrap().display())).unwrap()
}

async fn record(dir: PathBuf, format: &str) {
    let srv = common::server_with(Config { recordings_dir: dir.clone(), ..Config::default() }).await;
    let a = srv.addr;
    let mut peers = vec![];
    for (i, (c, f)) in COLOURS.iter().zip(TONES).enumerate() {
        let mut o = PeerOpts::publisher(&format!("r{i}"), *c, f);
        o.receive = i == 0; // one receiver is the clock of the test
        peers.push(common::join(a, &format!("rec-{format}"), o).await);
    }
    let base = format!("http://{a}/v1/rooms/rec-{format}/recordings");
    let r = common::http(
        "POST",
        base.clone(),
        Some("application/json"),
        json!({"format": format}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let rec: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let id = rec["id"].as_str().unwrap().to_string();
    let file = PathBuf::from(rec["file"].as_str().unwrap());
    assert!(file.starts_with(&dir), "{file:?} not under {dir:?}");
    // 10 s of media.
    let (f0, t0) = (peers[0].frames(), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let fps = (peers[0].frames() - f0) as f64 / t0.elapsed().as_secs_f64();
    eprintln!("{format}: receiver decoded {fps:.1} fps while recording");
    assert!(fps > 15.0, "the room stalled: {fps:.1} fps");
    let r = common::http("DELETE", format!("{base}/{id}"), None, vec![]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let info: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(info["state"], "stopped");
    let list: serde_json::Value =
        serde_json::from_str(&common::http("GET", base.clone(), None, vec![]).await.body).unwrap();
    assert_eq!(list["recordings"][0]["id"], id.as_str());
    assert!(list["recordings"][0]["size_bytes"].as_u64().unwrap() > 10_000);

    let d = discover(&file);
    let dur = d.duration().unwrap().mseconds() as f64 / 1000.0;
    assert!((9.0..=11.0).contains(&dur), "{format}: duration {dur} s");
    let v = d.video_streams();
    assert_eq!(v.len(), 1, "{format}: one video stream");
    assert_eq!((v[0].width(), v[0].height()), (1280, 720));
    assert_eq!(d.audio_streams().len(), 1, "{format}: one audio stream");

    let (f, audio) = decode_at(&file, Duration::from_secs(5));
    common::save(&f, &format!("recording-{format}"));
    for (c, (x, y)) in COLOURS.iter().zip([(320, 180), (960, 180), (320, 540)]) {
        assert!(
            close(f.colour_at(x, y, 30), *c, 45),
            "{format}: {:?} at {x},{y}, expected {c:?}",
            f.colour_at(x, y, 30)
        );
    }
    assert_eq!(audio.len(), 48000, "{format}: 1 s of audio at 5 s");
    for t in TONES {
        assert!(tone_db(&audio, t) > -35.0, "{format}: tone {t} Hz at {:.1} dB", tone_db(&audio, t));
    }

    // Download with a range request.
    let r = common::http("GET", format!("{base}/{id}/file"), None, vec![]).await;
    assert_eq!(r.status, 200);
    let url = format!("{base}/{id}/file");
    let whole = r.body.len();
    let get_range = |range: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
            let mut resp = agent.get(&url).header("range", range).call().unwrap();
            (resp.status().as_u16(), resp.body_mut().read_to_vec().unwrap().len())
        })
    };
    assert_eq!(get_range("bytes=0-99").await.unwrap(), (206, 100));
    // A Range that does not parse is ignored (RFC 9110 §14.2): the whole file.
    for bad in ["items=0-5", "bytes=abc"] {
        let (status, len) = get_range(bad).await.unwrap();
        assert_eq!(status, 200, "Range: {bad}");
        assert!(len + 100_000 >= whole, "Range: {bad}: {len} of {whole} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webm_recording_holds_the_grid_and_the_mix() {
    let _serial = common::serial().await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recordings-webm");
    let _ = std::fs::remove_dir_all(&dir);
    record(dir, "webm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mp4_recording_holds_the_grid_and_the_mix() {
    let _serial = common::serial().await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recordings-mp4");
    let _ = std::fs::remove_dir_all(&dir);
    record(dir, "mp4").await;
}

/// Onsets (ms) of a signal sampled as `(time_ms, on)` pairs: times where it turns on.
fn onsets(samples: &[(f64, bool)]) -> Vec<f64> {
    samples.windows(2).filter(|w| !w[0].1 && w[1].1).map(|w| w[1].0).collect()
}

/// Every frame's (ms, bright centre) and every 5 ms audio window's (ms, beep on) of a file.
/// `(time s, on)` changes of one track.
type Timeline = Vec<(f64, bool)>;

fn flash_timeline(path: &Path) -> (Timeline, Timeline) {
    let run = |kind: &str, tail: &str| {
        let desc = format!(
            "filesrc location=\"{}\" ! decodebin caps={kind}/x-raw ! {tail} ! appsink name=s sync=false",
            path.display()
        );
        let p = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
        let s = p.by_name("s").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
        p.set_state(gst::State::Playing).unwrap();
        let mut out = vec![];
        while let Some(sample) = s.try_pull_sample(gst::ClockTime::from_seconds(5)) {
            let buf = sample.buffer().unwrap();
            let pts = buf.pts().unwrap().nseconds() as f64 / 1e6;
            out.push((pts, buf.map_readable().unwrap().to_vec()));
        }
        p.set_state(gst::State::Null).unwrap();
        out
    };
    // Video as 1280x720 GRAY8: the centre's brightness.
    let video = run("video", "videoconvert ! videoscale ! video/x-raw,format=GRAY8,width=64,height=36")
        .into_iter()
        .map(|(t, d)| (t, d[18 * 64 + 32] > 128))
        .collect();
    let mut audio = vec![];
    for (t, d) in run("audio", "audioconvert ! audioresample ! audio/x-raw,format=S16LE,rate=48000,channels=1") {
        let s: Vec<i16> = d.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
        for (i, w) in s.chunks(240).enumerate() {
            audio.push((t + i as f64 * 5.0, tone_db(w, tessera::client::loadgen::FLASH_HZ) > -30.0));
        }
    }
    (video, audio)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_keeps_audio_and_video_in_sync() {
    let _serial = common::serial().await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recordings-sync");
    let _ = std::fs::remove_dir_all(&dir);
    let srv = common::server_with(Config { recordings_dir: dir, ..Config::default() }).await;
    let a = srv.addr;
    let mut o = PeerOpts::publisher("flash", (0, 0, 0), 0.0);
    o.video = tessera::client::loadgen::VideoSource::Flash;
    o.receive = false;
    let _flash = common::join(a, "sync", o).await;
    let mut viewer = PeerOpts::viewer("clock");
    viewer.decode = false;
    let viewer = common::join(a, "sync", viewer).await;
    let base = format!("http://{a}/v1/rooms/sync/recordings");
    let r = common::http(
        "POST",
        base.clone(),
        Some("application/json"),
        json!({"format": "webm"}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let rec: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let id = rec["id"].as_str().unwrap();
    // 8 s of media, counted in composite frames the viewer receives.
    let n = viewer.frames();
    assert!(viewer.wait_frames(n + 240, Duration::from_secs(15)).await);
    let r = common::http("DELETE", format!("{base}/{id}"), None, vec![]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (video, audio) = flash_timeline(Path::new(rec["file"].as_str().unwrap()));
    let (v, au) = (onsets(&video), onsets(&audio));
    assert!(v.len() >= 5 && au.len() >= 5, "flashes {v:?} beeps {au:?}");
    let mut skews: Vec<f64> = v
        .iter()
        .filter_map(|t| au.iter().map(|a| a - t).min_by(|x, y| x.abs().total_cmp(&y.abs())))
        .filter(|s| s.abs() < 500.0)
        .collect();
    skews.sort_by(f64::total_cmp);
    let median = skews[skews.len() / 2];
    eprintln!("audio - video onset skew: median {median:.0} ms over {} flashes: {skews:?}", skews.len());
    assert!(median.abs() <= 40.0, "audio/video skew {median:.0} ms: {skews:?}");
}

/// A FIFO standing in for a disk that first stalls, then fails. The test reads it (the disk
/// takes writes), stops reading (writes block once the 64 KiB pipe buffer is full: a stalled or
/// full disk that never answers), then closes it (every write fails at once with `EPIPE`, as
/// writes to a dead disk fail with `EIO`/`ENOSPC`).
///
/// Why a FIFO and not a small tmpfs or a loop-mounted filesystem: it needs no root, no `mount`
/// and no loop device (CI containers commonly forbid `mount`), it is a plain kernel object on any
/// Debian machine (`mkfifo` from coreutils), and the test decides when the disk stalls and when
/// it fails instead of guessing how many bytes the encoder will have written by then.
struct FailingDisk {
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
    close: std::sync::mpsc::Sender<()>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl FailingDisk {
    fn new(path: &Path) -> FailingDisk {
        use std::io::Read;
        use std::sync::atomic::Ordering;
        let ok = std::process::Command::new("mkfifo").arg(path).status().expect("mkfifo (coreutils)");
        assert!(ok.success(), "mkfifo {path:?}");
        // Read and write: opening never blocks, and the reader never sees end-of-file between the
        // server's opens of the file.
        let mut fifo = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
        let (read, stall) = (std::sync::Arc::default(), std::sync::Arc::default());
        let (close, closed) = std::sync::mpsc::channel::<()>();
        let (r, s): (std::sync::Arc<std::sync::atomic::AtomicU64>, std::sync::Arc<std::sync::atomic::AtomicBool>) =
            (std::sync::Arc::clone(&read), std::sync::Arc::clone(&stall));
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s.load(Ordering::Relaxed) {
                match fifo.read(&mut buf) {
                    Ok(n) => r.fetch_add(n as u64, Ordering::Relaxed),
                    Err(_) => break,
                };
            }
            // Stalled: hold the FIFO open, read nothing, until told to fail.
            let _ = closed.recv();
            drop(fifo);
        });
        FailingDisk { read, stall, close, reader: Some(reader) }
    }

    fn bytes_read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops reading: the next read ends the reader's loop once data arrives.
    fn stall(&self) {
        self.stall.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Closes the last reader: writes fail with `EPIPE` from now on.
    fn fail(&mut self) {
        self.stall();
        let _ = self.close.send(());
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        self.fail();
    }
}

/// A receiver gets at least `n` more frames within `n / 30 + 10` s, and the room's `frames_out` advances
/// by about as many; panics with `what` otherwise.
async fn room_keeps_going(a: std::net::SocketAddr, room: &str, receiver: &common::Peer, n: u64, what: &str) {
    let out0 = common::room_json(a, room).await["frames_out"].as_u64().unwrap();
    let f0 = receiver.frames();
    assert!(
        receiver.wait_frames(f0 + n, Duration::from_secs(n / 30 + 10)).await,
        "{what}: the receiver got {} frames, wanted {n}",
        receiver.frames() - f0
    );
    let out1 = common::room_json(a, room).await["frames_out"].as_u64().unwrap();
    // The receiver's first frames may have been made before `out0` was read.
    assert!(out1 >= out0 + n * 9 / 10, "{what}: frames_out went {out0} -> {out1}");
    eprintln!("{what}: frames_out {out0} -> {out1}, receiver +{}", receiver.frames() - f0);
}

/// A recording whose disk stalls and then fails: while its writes are blocked the room's encoder
/// keeps going (the recording is its own pipeline, fed through a tap that drops), and once they
/// fail the recording ends `failed` with the OS error, in its JSON and in a `recording_state`
/// event; the room, its receivers and another recording keep going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_fails_the_recording_not_the_room() {
    let _serial = common::serial().await;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recordings-fail");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut disk = FailingDisk::new(&dir.join("doomed.webm"));
    let srv = common::server_with(Config { recordings_dir: dir.clone(), ..Config::default() }).await;
    let a = srv.addr;
    let _red = common::join(a, "disk", PeerOpts::publisher("red", COLOURS[0], TONES[0])).await;
    let mut o = PeerOpts::publisher("green", COLOURS[1], TONES[1]);
    o.data_channel = true;
    o.decode = false;
    let green = common::join(a, "disk", o).await;
    green.wait_event(Duration::from_secs(10), |e| e["type"] == "welcome").await.expect("welcome");
    let base = format!("http://{a}/v1/rooms/disk/recordings");
    let post = |body: serde_json::Value| {
        common::http("POST", base.clone(), Some("application/json"), body.to_string().into_bytes())
    };
    let r = post(json!({"format": "webm", "file": "kept"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let kept = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string();
    let r = post(json!({"format": "webm", "file": "doomed"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let doomed = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["id"].as_str().unwrap().to_string();

    // The disk takes writes for a while (the WebM header and the first clusters).
    room_keeps_going(a, "disk", &green, 60, "writing").await;
    assert!(disk.bytes_read() > 1000, "the recording wrote {} bytes", disk.bytes_read());
    // Stalled: writes block in the kernel. Before recordings had their own pipeline, the room's
    // encoder stopped here once the pipe and the recording's 3 s queue in the room pipeline were
    // full: this receiver got 124 frames in the 30 s it waited for 600 (measured on 80b9312).
    disk.stall();
    room_keeps_going(a, "disk", &green, 300, "disk stalled").await;
    let list: serde_json::Value =
        serde_json::from_str(&common::http("GET", base.clone(), None, vec![]).await.body).unwrap();
    assert!(list["recordings"].as_array().unwrap().iter().all(|r| r["state"] == "recording"), "{list}");

    // Failed: the blocked write and every later one return EPIPE.
    disk.fail();
    let ev = green
        .wait_event(Duration::from_secs(10), |e| {
            e["type"] == "recording_state" && e["id"] == doomed.as_str() && e["state"] == "failed"
        })
        .await
        .unwrap_or_else(|| panic!("no failed event: {:?}", green.events()));
    let reason = ev["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("Broken pipe"), "the event names the OS error: {ev}");
    let r = common::http("GET", format!("{base}/{doomed}"), None, vec![]).await;
    let info: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(info["state"], "failed", "{info}");
    assert!(info["error"].as_str().unwrap_or_default().contains("Broken pipe"), "{info}");
    room_keeps_going(a, "disk", &green, 90, "disk failed").await;

    // The other recording kept going and finalizes.
    let r = common::http("DELETE", format!("{base}/{kept}"), None, vec![]).await;
    let info: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(info["state"], "stopped", "{info}");
    let d = discover(Path::new(info["file"].as_str().unwrap()));
    let dur = d.duration().unwrap().mseconds() as f64 / 1000.0;
    assert!(dur > 8.0, "the other recording holds {dur} s");
    assert_eq!(d.video_streams().len(), 1);
    // Stopping the failed one changes nothing.
    let r = common::http("DELETE", format!("{base}/{doomed}"), None, vec![]).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["state"], "failed", "{}", r.body);
}
