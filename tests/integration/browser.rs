//! End to end in a real browser: two headless Chromium pages (one WebDriver session, two tabs)
//! join one room through the embedded web client (`/?room=..&name=..&autojoin=1`, fake camera and
//! microphone) and each decodes the 1280x720 composite and receives the audio mix, as reported
//! by the page's own `window.tessera.stats` (from `getStats`). Then, over the room-events data
//! channel, a chat message from alice reaches both pages (`window.tessera.chat`), and alice's
//! switch to the speaker layout (`window.tessera.setLayout`, a `PUT …/layout`) reaches both pages
//! as a `layout_changed` event and shows in the room JSON.
//!
//! Chromium is driven through chromedriver's W3C WebDriver HTTP API with the blocking `ureq`
//! client (on blocking threads). `chromium` and `chromium-driver` must be installed: the test
//! fails, rather than skips, without them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ROOM: &str = "browser";
/// How long the in-page wait polls `window.tessera.stats` before giving up (ms); the session's
/// script timeout is a little longer so the page, not WebDriver, reports the timeout.
const PAGE_WAIT_MS: u64 = 25_000;
const SCRIPT_TIMEOUT_MS: u64 = 30_000;

/// A chromedriver process on a loopback port and, once created, its one Chromium session.
/// Dropping it (also while unwinding from a failed assertion) deletes the session, which quits
/// Chromium, then kills chromedriver's process group and removes the profile directory.
struct Driver {
    base: String,
    child: Child,
    session: Option<String>,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = request_blocking(&self.base, "DELETE", &format!("/session/{id}"), None, Duration::from_secs(10));
        }
        // chromedriver runs in its own process group (with Chromium under it, if it outlived
        // the session): end that group, then chromedriver itself.
        let _ =
            Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// One blocking WebDriver call: returns the response's `value`, or a description of the error.
fn request_blocking(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    timeout: Duration,
) -> Result<Value, String> {
    let agent =
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().new_agent();
    let url = format!("{base}{path}");
    let req = ureq::http::Request::builder().method(method).uri(&url);
    let resp = match body {
        Some(b) => agent.run(
            req.header("content-type", "application/json; charset=utf-8")
                .body(serde_json::to_vec(&b).unwrap())
                .unwrap(),
        ),
        None => agent.run(req.body(()).unwrap()),
    };
    let mut resp = resp.map_err(|e| format!("{method} {path}: {e}"))?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .map_err(|e| format!("{method} {path}: reading the response: {e}"))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{method} {path}: HTTP {status}, not JSON ({e}): {text:.500}"))?;
    let value = v.get("value").cloned().unwrap_or(Value::Null);
    if status >= 400 {
        let err = value["error"].as_str().unwrap_or("?");
        let msg = value["message"].as_str().unwrap_or("");
        return Err(format!("{method} {path}: HTTP {status} {err}: {msg:.1500}"));
    }
    Ok(value)
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits for `/status` to report ready.
    async fn start() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the browser test needs the Debian packages `chromium` and `chromium-driver` \
                 (apt-get install chromium chromium-driver)"
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let log = format!("{}/chromedriver.log", env!("CARGO_TARGET_TMPDIR"));
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}")).arg(format!("--log-path={log}")).stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {CHROMEDRIVER}: {e}"));
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let profile = std::env::temp_dir().join(format!("tessera-chromium-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&profile).unwrap();
        let mut d = Driver { base: format!("http://127.0.0.1:{port}"), child, session: None, profile };
        let started = Instant::now();
        loop {
            if let Ok(v) = d.call("GET", "/status", None).await
                && v["ready"] == true
            {
                break;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("chromedriver exited at start ({st}); see {log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "chromedriver not ready on port {port} after 15 s; see {log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }

    /// A WebDriver call on a blocking thread.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let (base, method, path) = (self.base.clone(), method.to_string(), path.to_string());
        let timeout = Duration::from_millis(SCRIPT_TIMEOUT_MS + 15_000);
        tokio::task::spawn_blocking(move || request_blocking(&base, &method, &path, body, timeout)).await.unwrap()
    }

    /// A call on the session (`/session/{id}{path}`) that must succeed.
    async fn s(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let id = self.session.as_ref().expect("session");
        self.call(method, &format!("/session/{id}{path}"), body).await.unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// Creates the one Chromium session: headless, fake camera and microphone (granted without
    /// a prompt), audio allowed to autoplay, nothing that phones home, a fresh profile.
    async fn new_session(&mut self) {
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--use-fake-device-for-media-stream".into(),
            "--use-fake-ui-for-media-stream".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--disable-quic".into(),
            // The server offers only 127.0.0.1 host candidates. Chromium by default gathers no
            // loopback candidates, so on a host whose only interface is `lo` it would have nothing
            // to pair with 127.0.0.1 and ICE would fail; with this flag it gathers 127.0.0.1 too.
            "--allow-loopback-in-peer-connection".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", self.profile.display()),
        ];
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                "goog:loggingPrefs": { "browser": "ALL" },
            }}
        });
        let v = self
            .call("POST", "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("creating the Chromium session: {e}"));
        self.session = Some(v["sessionId"].as_str().expect("sessionId").to_string());
        self.s("POST", "/timeouts", Some(json!({ "script": SCRIPT_TIMEOUT_MS, "pageLoad": 20_000 }))).await;
    }

    async fn switch_to(&self, handle: &str) {
        self.s("POST", "/window", Some(json!({ "handle": handle }))).await;
    }

    /// Runs an async script in the current window: the script's last argument is the callback.
    async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.s("POST", "/execute/async", Some(json!({ "script": script, "args": args }))).await
    }

    /// Saves the current window's screenshot as `path` (PNG).
    async fn screenshot(&self, path: &str) -> Result<(), String> {
        let id = self.session.as_ref().expect("session");
        let b64 = self.call("GET", &format!("/session/{id}/screenshot"), None).await?;
        let png = base64_decode(b64.as_str().ok_or("screenshot is not a string")?);
        std::fs::write(path, png).map_err(|e| format!("writing {path}: {e}"))
    }

    /// The browser console of the current window since the last call (best effort).
    async fn console(&self) -> String {
        let id = self.session.as_ref().expect("session");
        match self.call("POST", &format!("/session/{id}/se/log"), Some(json!({ "type": "browser" }))).await {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| format!("  {} {}", e["level"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n"),
            Ok(v) => format!("  {v}"),
            Err(e) => format!("  (no console log: {e})"),
        }
    }
}

/// Waits inside the page until the stats show decoding has moved past `after` frames (by at least
/// `rise` frames) at 1280x720 and more than `audio_after` audio packets arrived, or until the
/// deadline, or until the page reports an error. Returns `{ok, stats, state, error, status, statsText}`.
const WAIT_STATS: &str = r#"
const [after, rise, audioAfter, waitMs, done] = arguments;
const deadline = Date.now() + waitMs;
// The ICE pair in use, as "local -> remote" (addresses and candidate types).
const selectedPair = async (pc) => {
  if (!pc) return null;
  try {
    const rep = await pc.getStats();
    let pair = null;
    rep.forEach((r) => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = rep.get(r.selectedCandidatePairId); });
    if (!pair) rep.forEach((r) => { if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
    if (!pair) return 'none';
    const c = (id) => { const x = rep.get(id); return x ? x.candidateType + ' ' + x.protocol + ' ' + (x.address || x.ip) + ':' + x.port : '?'; };
    return c(pair.localCandidateId) + ' -> ' + c(pair.remoteCandidateId);
  } catch (e) { return 'getStats failed: ' + e; }
};
// Receive-side RTP counters, for telling "nothing arrived" from "arrived but not decodable".
const rtpIn = async (pc) => {
  if (!pc) return null;
  try {
    const rep = await pc.getStats();
    const out = {};
    rep.forEach((r) => {
      if (r.type !== 'inbound-rtp') return;
      const codec = r.codecId && rep.get(r.codecId);
      out[r.kind] = { ssrc: r.ssrc, mid: r.mid, codec: codec ? codec.mimeType : null, packetsReceived: r.packetsReceived,
                      packetsLost: r.packetsLost, bytesReceived: r.bytesReceived, framesReceived: r.framesReceived,
                      framesDecoded: r.framesDecoded, keyFramesDecoded: r.keyFramesDecoded, framesDropped: r.framesDropped,
                      pliCount: r.pliCount, firCount: r.firCount, nackCount: r.nackCount, decoder: r.decoderImplementation };
    });
    rep.forEach((r) => { if (r.type === 'transport') out.transport = { bytesReceived: r.bytesReceived, packetsReceived: r.packetsReceived, dtls: r.dtlsState }; });
    return out;
  } catch (e) { return 'getStats failed: ' + e; }
};
const snapshot = async (ok) => {
  const t = window.tessera || {};
  const el = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
  return { ok, stats: Object.assign({}, t.stats || {}), state: t.state || null, error: t.error || null,
           status: el('status'), statsText: el('stats'),
           participants: Array.from(document.querySelectorAll('#participants li')).map((li) => li.innerText.replace(/\s+/g, ' ')).join('; '),
           connection: t.pc ? t.pc.connectionState : null, ice: t.pc ? t.pc.iceConnectionState : null,
           pair: await selectedPair(t.pc), rtp: ok ? null : await rtpIn(t.pc),
           transceivers: ok || !t.pc ? null : t.pc.getTransceivers().map((x) => x.mid + ':' + x.currentDirection + ':' + (x.receiver.track && x.receiver.track.kind + '/' + x.receiver.track.readyState)).join(' ') };
};
const tick = () => {
  const t = window.tessera;
  const s = t && t.stats;
  const ok = !!s && s.framesDecoded >= after + rise && s.frameWidth === 1280 && s.frameHeight === 720
             && s.audioPackets > audioAfter;
  if (ok || Date.now() >= deadline || (t && t.state === 'error')) { snapshot(ok).then(done, (e) => done({ ok: false, error: String(e) })); return; }
  setTimeout(tick, 100);
};
tick();
"#;

/// Presses the page's Leave button and waits (in the page) for `tessera.state == 'left'`, which
/// the client sets after its DELETE of the participant resource returned.
const LEAVE: &str = r#"
const [waitMs, done] = arguments;
const deadline = Date.now() + waitMs;
document.getElementById('leave').click();
const tick = () => {
  const t = window.tessera;
  if (t.state === 'left' || Date.now() >= deadline) { done({ state: t.state, error: t.error, pc: !!t.pc }); return; }
  setTimeout(tick, 50);
};
tick();
"#;

/// Waits (in the page) for the room-events data channel to open, then sends a chat message with
/// `window.tessera.sendChat`. Returns `{sent, dc, state}`.
const SEND_CHAT: &str = r#"
const [text, waitMs, done] = arguments;
const deadline = Date.now() + waitMs;
const tick = () => {
  const t = window.tessera || {};
  const dc = t.dc ? t.dc.readyState : null;
  if (dc === 'open') { done({ sent: t.sendChat(text), dc, state: t.state }); return; }
  if (Date.now() >= deadline || t.state === 'error') { done({ sent: false, dc, state: t.state || null }); return; }
  setTimeout(tick, 50);
};
tick();
"#;

/// Waits (in the page) until `window.tessera.chat` holds a message `text` from `from` and the chat
/// panel shows it. Returns `{ok, chat, log, events, dc, state}`.
const WAIT_CHAT: &str = r#"
const [text, from, waitMs, done] = arguments;
const deadline = Date.now() + waitMs;
const tick = () => {
  const t = window.tessera || {};
  const chat = Array.isArray(t.chat) ? t.chat : [];
  const got = chat.some((c) => c && c.type === 'chat' && c.text === text && c.from && c.from.name === from);
  const log = (document.getElementById('chatlog') || {}).textContent || '';
  const ok = got && log.includes(text);
  if (ok || Date.now() >= deadline || t.state === 'error') {
    done({ ok, chat, log, events: (t.events || []).map((e) => e.type), dc: t.dc ? t.dc.readyState : null, state: t.state || null });
    return;
  }
  setTimeout(tick, 50);
};
tick();
"#;

/// Calls `window.tessera.setLayout(layout)` and returns `{status, notice}`.
const SET_LAYOUT: &str = r#"
const [layout, done] = arguments;
window.tessera.setLayout(layout).then(
  (status) => done({ status, notice: document.getElementById('notice').textContent }),
  (e) => done({ status: null, notice: 'setLayout threw: ' + e }));
"#;

/// Waits (in the page) until a `layout_changed` event to `name` has arrived, `window.tessera.layout`
/// is `name`, and the participant list names everyone in `names`, marking `me` as "(you)".
/// Returns `{ok, layout, changed, participants, events, state}`.
const WAIT_LAYOUT: &str = r#"
const [name, me, names, waitMs, done] = arguments;
const deadline = Date.now() + waitMs;
const tick = () => {
  const t = window.tessera || {};
  const changed = (t.events || []).some((e) => e.type === 'layout_changed' && e.layout && e.layout.layout === name);
  const participants = Array.from(document.querySelectorAll('#participants li')).map((li) => li.innerText.replace(/\s+/g, ' ').trim());
  const listed = names.every((n) => participants.some((p) => p.startsWith(n === me ? n + ' (you)' : n + ' ')));
  const ok = changed && !!t.layout && t.layout.layout === name && listed;
  if (ok || Date.now() >= deadline || t.state === 'error') {
    done({ ok, layout: t.layout || null, changed, participants, speaker: t.speaker || null,
           events: (t.events || []).map((e) => e.type), state: t.state || null });
    return;
  }
  setTimeout(tick, 50);
};
tick();
"#;

/// A page (tab) in the session.
struct Page {
    name: &'static str,
    handle: String,
}

/// Waits on `page` for the condition of [`WAIT_STATS`]; on failure, panics with the page's state,
/// status line, ICE pair, inbound RTP counters, last stats, console and the server's room counters.
async fn wait_stats(
    d: &Driver,
    srv: SocketAddr,
    page: &Page,
    after: u64,
    rise: u64,
    audio_after: u64,
    what: &str,
) -> Value {
    d.switch_to(&page.handle).await;
    let t = Instant::now();
    let r = d.execute_async(WAIT_STATS, json!([after, rise, audio_after, PAGE_WAIT_MS])).await;
    eprintln!("{}: {what} after {:?}: {} (ICE pair {})", page.name, t.elapsed(), r["stats"], r["pair"]);
    if r["ok"] != true {
        let shot = format!("{}/browser-{}.png", env!("CARGO_TARGET_TMPDIR"), page.name);
        let shot = match d.screenshot(&shot).await {
            Ok(()) => shot,
            Err(e) => format!("(none: {e})"),
        };
        // The server's side: frames_out not advancing means the room's compositor is stalled.
        let room = common::room_json(srv, ROOM).await;
        let room = format!(
            "frames_out {} audio_encodes_last_tick {} participants {}",
            room["frames_out"], room["audio_encodes_last_tick"], room["participants"]
        );
        panic!(
            "{}: {what}: not reached after {:?}\n  state: {} error: {}\n  status line: {}\n  pc: connection {} ice {} pair {}\n  transceivers: {}\n  inbound RTP: {}\n  last stats: {}\n  stats line: {}\n  participants: {}\n  server room: {room}\n  screenshot: {shot}\n  chromedriver log: {}/chromedriver.log\n  console:\n{}",
            page.name,
            t.elapsed(),
            r["state"],
            r["error"],
            r["status"],
            r["connection"],
            r["ice"],
            r["pair"],
            r["transceivers"],
            r["rtp"],
            r["stats"],
            r["statsText"],
            r["participants"],
            env!("CARGO_TARGET_TMPDIR"),
            d.console().await,
        );
    }
    r["stats"].clone()
}

/// Runs `script` (an async script whose result has `ok`) on `page`; on `ok != true` panics with
/// the result, a screenshot and the page's console.
async fn page_check(d: &Driver, page: &Page, script: &str, args: Value, what: &str) -> Value {
    d.switch_to(&page.handle).await;
    let t = Instant::now();
    let r = d.execute_async(script, args).await;
    eprintln!("{}: {what} after {:?}", page.name, t.elapsed());
    if r["ok"] != true {
        let shot = format!("{}/browser-{}-failed.png", env!("CARGO_TARGET_TMPDIR"), page.name);
        let shot = match d.screenshot(&shot).await {
            Ok(()) => shot,
            Err(e) => format!("(none: {e})"),
        };
        panic!(
            "{}: {what}: not reached after {:?}: {r}\n  screenshot: {shot}\n  console:\n{}",
            page.name,
            t.elapsed(),
            d.console().await
        );
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chromium_pages_decode_the_composite_and_hear_the_mix() {
    let _serial = common::serial().await;
    let started = Instant::now();
    let srv = common::server().await;
    let mut d = Driver::start().await;
    d.new_session().await;
    eprintln!("chromedriver and Chromium up in {:?}", started.elapsed());

    let url = |name: &str| format!("http://{}/?room={ROOM}&name={name}&autojoin=1", srv.addr);
    let alice = d.s("GET", "/window", None).await.as_str().unwrap().to_string();
    d.s("POST", "/url", Some(json!({ "url": url("alice") }))).await;
    let bob = d.s("POST", "/window/new", Some(json!({ "type": "tab" }))).await["handle"].as_str().unwrap().to_string();
    d.switch_to(&bob).await;
    d.s("POST", "/url", Some(json!({ "url": url("bob") }))).await;
    let pages = [Page { name: "alice", handle: alice }, Page { name: "bob", handle: bob }];

    // Each page decodes 1280x720 video and receives audio...
    let mut first = vec![];
    for p in &pages {
        first.push(wait_stats(&d, srv.addr, p, 0, 1, 0, "first 1280x720 frames and audio").await);
    }
    // ...and keeps decoding: framesDecoded rises (by at least 15 frames, half a second of the
    // 30 fps composite) and audio keeps arriving.
    for (p, s) in pages.iter().zip(&first) {
        let (frames, audio) = (s["framesDecoded"].as_u64().unwrap(), s["audioPackets"].as_u64().unwrap());
        let s2 = wait_stats(&d, srv.addr, p, frames, 15, audio, "framesDecoded and audioPackets rising").await;
        assert!(s2["framesDecoded"].as_u64().unwrap() > frames, "{}: {s2}", p.name);
        assert_eq!(
            (s2["frameWidth"].as_u64(), s2["frameHeight"].as_u64()),
            (Some(1280), Some(720)),
            "{}: {s2}",
            p.name
        );
        assert!(s2["audioPackets"].as_u64().unwrap() > 0, "{}: {s2}", p.name);
    }

    // Screenshots of both pages, always (a failed wait above saves the failing page's).
    for p in &pages {
        d.switch_to(&p.handle).await;
        let shot = format!("{}/browser-{}.png", env!("CARGO_TARGET_TMPDIR"), p.name);
        d.screenshot(&shot).await.unwrap_or_else(|e| panic!("{}: screenshot: {e}", p.name));
        eprintln!("{}: screenshot {shot}", p.name);
    }

    // The server sees both browsers publishing both kinds.
    let room = common::room_json(srv.addr, ROOM).await;
    let ps = room["participants"].as_array().unwrap_or_else(|| panic!("room JSON: {room}"));
    assert_eq!(ps.len(), 2, "room JSON: {room}");
    let mut names: Vec<_> = ps.iter().map(|p| p["name"].as_str().unwrap_or("")).collect();
    names.sort();
    assert_eq!(names, ["alice", "bob"], "room JSON: {room}");
    for p in ps {
        assert!(
            p["publishes"]["video"] == true && p["publishes"]["audio"] == true,
            "{} does not publish both: {room}",
            p["name"]
        );
    }
    assert_eq!(
        (room["output"]["width"].as_u64(), room["output"]["height"].as_u64()),
        (Some(1280), Some(720)),
        "{room}"
    );

    // Chat over the room-events data channel: alice sends, bob (and alice, the sender) receive it.
    const HELLO: &str = "hello from alice";
    d.switch_to(&pages[0].handle).await;
    let r = d.execute_async(SEND_CHAT, json!([HELLO, PAGE_WAIT_MS])).await;
    assert!(r["sent"] == true, "alice: sendChat: {r}\n  console:\n{}", d.console().await);
    for p in pages.iter().rev() {
        page_check(&d, p, WAIT_CHAT, json!([HELLO, "alice", PAGE_WAIT_MS]), "chat from alice received").await;
    }

    // Alice switches the layout to speaker through the page; both pages get `layout_changed`.
    d.switch_to(&pages[0].handle).await;
    let r = d.execute_async(SET_LAYOUT, json!([{ "layout": "speaker" }])).await;
    assert_eq!(r["status"], 200, "alice: setLayout(speaker): {r}");
    for p in &pages {
        let r = page_check(
            &d,
            p,
            WAIT_LAYOUT,
            json!(["speaker", p.name, ["alice", "bob"], PAGE_WAIT_MS]),
            "layout_changed to speaker",
        )
        .await;
        eprintln!("{}: participants {}", p.name, r["participants"]);
    }
    let room = common::room_json(srv.addr, ROOM).await;
    assert_eq!(room["layout"]["layout"], "speaker", "room JSON after the layout switch: {room}");

    // Screenshots once each page has decoded a second of the new layout.
    for p in &pages {
        d.switch_to(&p.handle).await;
        let frames =
            d.execute_async("arguments[0](window.tessera.stats.framesDecoded)", json!([])).await.as_u64().unwrap_or(0);
        wait_stats(&d, srv.addr, p, frames, 30, 0, "decoding after the layout switch").await;
        let shot = format!("{}/browser-{}-speaker.png", env!("CARGO_TARGET_TMPDIR"), p.name);
        d.screenshot(&shot).await.unwrap_or_else(|e| panic!("{}: screenshot: {e}", p.name));
        eprintln!("{}: screenshot {shot}", p.name);
    }

    // Both leave through the page (DELETE of their participant resource) and the room empties.
    for p in &pages {
        d.switch_to(&p.handle).await;
        let r = d.execute_async(LEAVE, json!([10_000])).await;
        assert!(r["state"] == "left" && r["pc"] == false, "{}: leaving: {r}", p.name);
    }
    let room = common::room_json(srv.addr, ROOM).await;
    assert!(
        room.is_null() || room["participants"].as_array().is_some_and(|a| a.is_empty()),
        "room after both left: {room}"
    );

    // Close bob's tab, then end the session (which closes alice's and quits Chromium).
    d.switch_to(&pages[1].handle).await;
    d.s("DELETE", "/window", None).await;
    d.switch_to(&pages[0].handle).await;
    let id = d.session.take().unwrap();
    d.call("DELETE", &format!("/session/{id}"), None).await.unwrap_or_else(|e| panic!("deleting the session: {e}"));
    drop(d);
    eprintln!("browser test done in {:?}", started.elapsed());
}

/// Decodes standard base64 (with or without padding; whitespace ignored).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
