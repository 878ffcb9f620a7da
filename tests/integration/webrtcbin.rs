//! GStreamer's `webrtcbin` (1.22) as a Tessera client, driven from Python GI by
//! `tests/webrtcbin/peer.py`: a WHIP publisher and a WHEP viewer with `bundle-policy=max-bundle`,
//! whose second m-section is `m=audio 0` + `a=bundle-only` (RFC 8843), and publishers whose offer
//! declares an SSRC other than the one the payloader sends, or none (webrtcbin 1.22 does both at
//! times): RFC 8843 §9.2 routes such RTP by MID, then payload type.
//!
//! webrtcbin offers only non-loopback host candidates, so these servers bind media to 0.0.0.0
//! (they announce the machine's addresses and 127.0.0.1; the webrtc-rs test peers use the
//! latter). Needs `python3-gi`, `gir1.2-gst-plugins-bad-1.0` and `gstreamer1.0-nice`: the tests
//! fail, rather than skip, without them. The interpreter is `TESSERA_TEST_PYTHON`, else
//! `/usr/bin/python3` (the system one, which has `gi`), else `python3`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tessera::config::Config;
use tessera::server::Server;

use crate::common::{self, Peer, PeerOpts, close, tone_db};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webrtcbin/peer.py");

/// A server like `common::server()`, but with media bound to 0.0.0.0 so that webrtcbin's
/// non-loopback host candidates can reach it.
async fn server() -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,tessera=info".into()),
        )
        .with_test_writer()
        .try_init();
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        udp_port: 0,
        tcp_port: 0,
        media_ip: Some("0.0.0.0".parse().unwrap()),
        ..Config::default()
    };
    Server::start(cfg).await.expect("server starts")
}

fn python() -> String {
    if let Ok(p) = std::env::var("TESSERA_TEST_PYTHON") {
        return p;
    }
    if std::path::Path::new("/usr/bin/python3").exists() { "/usr/bin/python3".into() } else { "python3".into() }
}

/// One `peer.py` process. Its JSON lines arrive on a channel from a blocking reader thread; its
/// stderr is kept (the last lines) for failure messages. Killed on drop.
struct GstPeer {
    label: String,
    child: Child,
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Drop for GstPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GstPeer {
    /// Starts `peer.py --url http://{addr} --room {room} {args}`.
    fn spawn(label: &str, addr: SocketAddr, room: &str, args: &[&str]) -> GstPeer {
        let mut child = Command::new(python())
            .arg(SCRIPT)
            .args(["--url", &format!("http://{addr}"), "--room", room])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} {SCRIPT}: {e}", python()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v =
                    serde_json::from_str(&line).unwrap_or_else(|_| serde_json::json!({"event": "raw", "line": line}));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (pipe, keep) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut k = keep.lock().unwrap();
                if k.len() == 40 {
                    k.pop_front();
                }
                k.push_back(line);
            }
        });
        GstPeer { label: label.into(), child, rx, seen: vec![], stderr }
    }

    /// Panics with what the process said: its exit status, its last events and its stderr tail.
    fn fail(&mut self, why: &str) -> ! {
        std::thread::sleep(Duration::from_millis(200)); // let the stderr reader catch up
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("exited with {s}"),
            _ => "still running".into(),
        };
        let events: Vec<String> = self.seen.iter().rev().take(8).rev().map(Value::to_string).collect();
        let stderr: Vec<String> = self.stderr.lock().unwrap().iter().cloned().collect();
        panic!(
            "webrtcbin peer {}: {why} ({status})\n-- last events:\n{}\n-- stderr tail:\n{}",
            self.label,
            events.join("\n"),
            stderr.join("\n")
        );
    }

    /// The first event (already seen or still to come, within `timeout`) that satisfies `pred`.
    /// An `error` event, the process ending or the timeout fails the test.
    async fn wait(&mut self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(v)) => {
                    self.seen.push(v.clone());
                    if v["event"] == "error" {
                        self.fail(&format!("reported an error while waiting for {what}: {v}"));
                    }
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(None) => self.fail(&format!("ended before {what}")),
                Err(_) => self.fail(&format!("no {what} within {timeout:?}")),
            }
        }
    }

    async fn event(&mut self, name: &str, timeout: Duration) -> Value {
        self.wait(name, timeout, |v| v["event"] == name).await
    }

    /// Waits for the answer and for the peer connection to connect; returns the participant id.
    async fn connected(&mut self) -> String {
        let answer = self.event("answer", Duration::from_secs(15)).await;
        self.event("connected", Duration::from_secs(15)).await;
        let loc = answer["location"].as_str().expect("answer with a Location").to_string();
        loc.rsplit('/').next().unwrap().to_string()
    }

    /// SIGTERM: the script DELETEs its Location and exits; returns the DELETE's status.
    async fn leave(&mut self) -> u64 {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let ev = self.event("deleted", Duration::from_secs(10)).await;
        ev["status"].as_u64().unwrap_or(0)
    }
}

/// The offer's section of `kind`, as `peer.py` describes it.
fn section(offer: &Value, kind: &str) -> Value {
    offer["sections"].as_array().unwrap().iter().find(|s| s["kind"] == kind).cloned().unwrap_or(Value::Null)
}

/// Asserts the webrtcbin offer is the max-bundle shape under test: the first section carries the
/// transport, the second (if any) is `m=… 0` + `a=bundle-only`.
fn assert_max_bundle(offer: &Value, kinds: &[&str]) {
    let s = offer["sections"].as_array().unwrap();
    let got: Vec<&str> = s.iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(got, kinds, "offer sections: {offer}");
    assert!(s[0]["port"].as_u64() != Some(0) && s[0]["candidates"].as_u64() > Some(0), "first section: {}", s[0]);
    for later in &s[1..] {
        assert!(later["port"] == 0 && later["bundle_only"] == true, "not a bundle-only section: {later}");
    }
}

/// The room JSON's participant `id`.
async fn participant(addr: SocketAddr, room: &str, id: &str) -> Value {
    let room = common::room_json(addr, room).await;
    room["participants"].as_array().and_then(|ps| ps.iter().find(|p| p["id"] == id).cloned()).unwrap_or(Value::Null)
}

/// Polls the room JSON (up to `timeout`) until participant `id` satisfies `pred`; returns its
/// last state either way.
async fn participant_until(
    addr: SocketAddr,
    room: &str,
    id: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let p = participant(addr, room, id).await;
        if pred(&p) || tokio::time::Instant::now() >= deadline {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Listens in half-second windows (up to `timeout`) until `freq` is louder than -30 dB; returns
/// the loudest level heard and a description of every window, for failure messages.
async fn hear(peer: &Peer, freq: f64, timeout: Duration) -> (f64, String) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut best = -180.0f64;
    let mut levels = vec![];
    while tokio::time::Instant::now() < deadline {
        let s = peer.audio_window(24000, Duration::from_secs(5)).await;
        let l = tone_db(&s, freq);
        levels.push(format!("{l:.0}"));
        best = best.max(l);
        if best > -30.0 {
            break;
        }
    }
    let st = peer.stats();
    let about = format!(
        "{} Hz per 0.5 s window: [{}] dB; {} received {} audio packets, {} gaps > 100 ms",
        freq,
        levels.join(", "),
        peer.opts.name,
        st.audio_packets,
        st.audio_gaps
    );
    (best, about)
}

/// The room's audio figures, for failure messages.
async fn room_audio(addr: SocketAddr, room: &str) -> String {
    let r = common::room_json(addr, room).await;
    format!(
        "room: audio_decodes_last_tick {}, audio_encodes_last_tick {}, active_speaker {}, packets late {} \
         overflow {}, frames concealed {}, late ticks {}",
        r["audio_decodes_last_tick"],
        r["audio_encodes_last_tick"],
        r["active_speaker"],
        r["audio_packets_late"],
        r["audio_packets_overflow"],
        r["audio_frames_concealed"],
        r["audio_late_ticks"]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_bundle_webrtcbin_publisher_is_seen_and_heard() {
    let _serial = common::serial().await;
    let srv = server().await;
    let room = "wb-pub";
    let mut gst = GstPeer::spawn(
        "publisher",
        srv.addr,
        room,
        &["--name", "gst", "--colour", "230,160,30", "--tone", "660", "--duration", "60"],
    );
    let offer = gst.event("offer", Duration::from_secs(15)).await;
    assert_max_bundle(&offer, &["video", "audio"]);
    let id = gst.connected().await;
    // Joins second: the webrtcbin publisher is the grid's left tile, this one the right.
    let ear = common::join(srv.addr, room, PeerOpts::publisher("ear", (40, 200, 60), 400.0)).await;
    let both = |f: &common::Frame| {
        close(f.colour_at(320, 360, 40), (230, 160, 30), 45) && close(f.colour_at(960, 360, 40), (40, 200, 60), 45)
    };
    let f = ear.wait_frame(Duration::from_secs(20), both).await.expect("the test peer decodes the composite");
    assert!(
        both(&f),
        "grid shows {:?} (webrtcbin) and {:?} (ear)",
        f.colour_at(320, 360, 40),
        f.colour_at(960, 360, 40)
    );
    let (level, heard) = hear(&ear, 660.0, Duration::from_secs(10)).await;
    assert!(
        level > -30.0,
        "the webrtcbin publisher's 660 Hz is not in the mix: {heard}; {}; publisher {}",
        room_audio(srv.addr, room).await,
        participant(srv.addr, room, &id).await
    );
    let p = participant(srv.addr, room, &id).await;
    assert_eq!(p["kind"], "whip", "{p}");
    assert_eq!(p["publishes"], serde_json::json!({"audio": true, "video": true}), "{p}");
    assert_eq!(p["receives"], serde_json::json!({"audio": false, "video": false}), "{p}");
    // A clean WHIP leave: DELETE on the Location.
    assert_eq!(gst.leave().await, 204);
    assert_eq!(participant(srv.addr, room, &id).await, Value::Null, "still listed after DELETE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_bundle_webrtcbin_whep_viewer_hears_and_sees_the_room() {
    let _serial = common::serial().await;
    let srv = server().await;
    let room = "wb-whep";
    let _a = common::join(srv.addr, room, PeerOpts::publisher("a", (220, 40, 40), 500.0)).await;
    let _b = common::join(srv.addr, room, PeerOpts::publisher("b", (40, 200, 60), 900.0)).await;
    let mut v = GstPeer::spawn(
        "viewer",
        srv.addr,
        room,
        &["--role", "viewer", "--tones", "500,900,1300", "--points", "320,360;960,360", "--duration", "60"],
    );
    let offer = v.event("offer", Duration::from_secs(15)).await;
    assert_max_bundle(&offer, &["video", "audio"]);
    assert!(offer["sections"].as_array().unwrap().iter().all(|s| s["direction"] == "recvonly"), "{offer}");
    let id = v.connected().await;
    let good = |s: &Value| {
        let tone = |f: &str| s["tones"][f].as_f64().unwrap_or(-180.0);
        let colour = |p: &str| {
            let c = &s["colours"][p];
            c.as_array()
                .map(|c| (c[0].as_u64().unwrap() as u8, c[1].as_u64().unwrap() as u8, c[2].as_u64().unwrap() as u8))
        };
        s["event"] == "stats"
            && s["frames"].as_u64().unwrap_or(0) >= 30
            && s["size"] == serde_json::json!([1280, 720])
            && tone("500") > -30.0
            && tone("900") > -30.0
            && colour("320,360").is_some_and(|c| close(c, (220, 40, 40), 45))
            && colour("960,360").is_some_and(|c| close(c, (40, 200, 60), 45))
    };
    let s = v.wait("stats with both tones, both colours and 30 frames", Duration::from_secs(25), good).await;
    // The measure can tell a tone that is absent.
    let absent = s["tones"]["1300"].as_f64().unwrap();
    assert!(absent < -50.0, "1300 Hz (nobody's tone) measured at {absent:.1} dB: {s}");
    let p = participant(srv.addr, room, &id).await;
    assert_eq!(p["kind"], "whep", "{p}");
    assert_eq!(p["receives"], serde_json::json!({"audio": true, "video": true}), "{p}");
    assert_eq!(p["publishes"], serde_json::json!({"audio": false, "video": false}), "{p}");
    assert_eq!(p["video_codec"], "vp8", "{p}");
    // And it keeps coming: a later second, 20 frames on, with both tones again.
    let frames = s["frames"].as_u64().unwrap();
    let again = move |e: &Value| e["frames"].as_u64() > Some(frames + 20) && good(e);
    v.wait("a later second with both tones and colours", Duration::from_secs(10), again).await;
    assert_eq!(v.leave().await, 204);
}

/// A webrtcbin publisher whose posted offer has `--ssrc-mode mode`: its payloader sends SSRCs
/// the offer does not declare. It must still be mixed (and, with video, shown).
async fn publisher_with_undeclared_ssrc(mode: &str, room: &str, video: bool) {
    let _serial = common::serial().await;
    let srv = server().await;
    let colour = (230, 200, 40);
    let mut args =
        vec!["--name", "gst", "--colour", "230,200,40", "--tone", "660", "--ssrc-mode", mode, "--duration", "60"];
    if !video {
        args.push("--audio-only");
    }
    let mut gst = GstPeer::spawn(&format!("publisher --ssrc-mode {mode}"), srv.addr, room, &args);
    let offer = gst.event("offer", Duration::from_secs(15)).await;
    let kinds: &[&str] = if video { &["video", "audio"] } else { &["audio"] };
    assert_max_bundle(&offer, kinds);
    // The premise: what the payloaders send is not what the offer declares.
    for kind in kinds {
        let sent = gst
            .wait(&format!("the {kind} RTP SSRC"), Duration::from_secs(15), |e| {
                e["event"] == "rtp_ssrc" && e["kind"] == *kind
            })
            .await;
        let declared = section(&offer, kind)["ssrcs"].clone();
        let declared = declared.as_array().unwrap();
        match mode {
            "none" => assert!(declared.is_empty(), "{kind} still declares {declared:?}"),
            _ => assert!(
                !declared.is_empty() && !declared.contains(&sent["ssrc"]),
                "{kind} declares {declared:?}, sends {}",
                sent["ssrc"]
            ),
        }
    }
    let id = gst.connected().await;
    let viewer = common::join(srv.addr, room, PeerOpts::viewer("viewer")).await;
    let (level, heard) = hear(&viewer, 660.0, Duration::from_secs(12)).await;
    let frame = if video {
        viewer
            .wait_frame(Duration::from_secs(8), |f| close(f.colour_at(640, 360, 60), colour, 45))
            .await
            .map(|f| f.colour_at(640, 360, 60))
    } else {
        None
    };
    let p = participant_until(srv.addr, room, &id, Duration::from_secs(2), |p| {
        p["publishes"]["audio"] == true && (!video || p["publishes"]["video"] == true)
    })
    .await;
    let seen = format!(
        "{heard}; composite centre {frame:?} (want {colour:?}); publishes {}; {}",
        p["publishes"],
        room_audio(srv.addr, room).await
    );
    assert!(level > -30.0, "the publisher's audio is not mixed: {seen}");
    assert_eq!(p["publishes"]["audio"], true, "{seen}");
    if video {
        assert!(frame.is_some_and(|c| close(c, colour, 45)), "the publisher's video is not shown: {seen}");
        assert_eq!(p["publishes"]["video"], true, "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtcbin_publisher_with_a_wrong_a_ssrc_is_mixed_audio_only() {
    publisher_with_undeclared_ssrc("wrong", "wb-wrong-a", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtcbin_publisher_with_a_wrong_a_ssrc_is_mixed_and_shown() {
    publisher_with_undeclared_ssrc("wrong", "wb-wrong-av", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtcbin_publisher_without_a_ssrc_is_mixed_and_shown() {
    publisher_with_undeclared_ssrc("none", "wb-none-av", true).await;
}
