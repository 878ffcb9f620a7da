//! End to end in a real browser: headless Chromium pages join rooms through the embedded web
//! client (`/?room=..&name=..&autojoin=1`, fake camera and microphone).
//!
//! - Two pages (one WebDriver session, two tabs) each decode the 1280x720 composite and receive
//!   the audio mix, as reported by the page's own `window.tessera.stats` (from `getStats`); a chat
//!   message and a layout switch reach both pages over the room-events data channel; switching
//!   the microphone while joined replaces the track on the same sender; a page whose connection
//!   is closed under it rejoins by itself (and the other page's list follows from `left` and
//!   `joined`); the pages never poll the room JSON.
//! - With access tokens, only the admin's page shows the admin controls; a join refused because
//!   the room is full is retried with backoff until it fits; the admin's kick button removes the
//!   other page, which then stays out.
//!
//! The WebDriver client here ([`Driver`]) and the in-page scripts are shared with the Firefox test
//! (`firefox.rs`): the W3C WebDriver HTTP API with the blocking `ureq` client on blocking threads.
//! `chromium` and `chromium-driver` must be installed: the tests fail, rather than skip, without
//! them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera::config::Config;
use tessera::signaling::auth::{Auth, Grants};

use crate::common;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ROOM: &str = "browser";
/// How long the in-page waits poll before giving up (ms); the session's script timeout is a
/// little longer so the page, not WebDriver, reports the timeout.
pub(crate) const PAGE_WAIT_MS: u64 = 25_000;
const SCRIPT_TIMEOUT_MS: u64 = 30_000;

/// A WebDriver process (chromedriver or geckodriver) on a loopback port and, once created, its
/// one browser session. Dropping it (also while unwinding from a failed assertion) deletes the
/// session, which quits the browser, then kills the driver's process group and removes `dir`.
pub(crate) struct Driver {
    base: String,
    child: Child,
    session: Option<String>,
    /// Removed on drop: Chromium's profile, or geckodriver's profile root.
    dir: PathBuf,
    /// The driver's log; geckodriver's also holds Firefox's console (`devtools.console.stdout.content`).
    pub(crate) log: PathBuf,
    /// Screenshots are saved as `{shots}-{page}.png` under the test target's temp dir.
    shots: &'static str,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = request_blocking(&self.base, "DELETE", &format!("/session/{id}"), None, Duration::from_secs(20));
        }
        // The driver runs in its own process group (with the browser under it, if it outlived
        // the session): end that group, then the driver itself.
        let _ =
            Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).stderr(Stdio::null()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
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

/// A free TCP port on loopback (for the driver to listen on).
pub(crate) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A fresh, empty directory under the system temp dir named `{prefix}-{pid}-{nanos}`.
pub(crate) fn fresh_dir(prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Driver {
    /// Starts `cmd` (a WebDriver listening on `port`) in its own process group and waits for
    /// `/status` to report ready. `dir` is removed and `log` named in failures.
    pub(crate) async fn spawn(mut cmd: Command, port: u16, dir: PathBuf, log: PathBuf, shots: &'static str) -> Driver {
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let mut d = Driver { base: format!("http://127.0.0.1:{port}"), child, session: None, dir, log, shots };
        let started = Instant::now();
        loop {
            if let Ok(v) = d.call("GET", "/status", None).await
                && v["ready"] == true
            {
                break;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("{cmd:?} exited at start ({st}); see {}", d.log.display());
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{cmd:?} not ready on port {port} after 15 s; see {}",
                d.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        d
    }

    /// Starts chromedriver on a free loopback port.
    async fn chromium() -> Driver {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the browser test needs the Debian packages `chromium` and `chromium-driver` \
                 (apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        let log = PathBuf::from(format!("{}/chromedriver.log", env!("CARGO_TARGET_TMPDIR")));
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Driver::spawn(cmd, port, fresh_dir("tessera-chromium"), log, "browser").await
    }

    /// A WebDriver call on a blocking thread.
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let (base, method, path) = (self.base.clone(), method.to_string(), path.to_string());
        let timeout = Duration::from_millis(SCRIPT_TIMEOUT_MS + 15_000);
        tokio::task::spawn_blocking(move || request_blocking(&base, &method, &path, body, timeout)).await.unwrap()
    }

    /// A call on the session (`/session/{id}{path}`) that must succeed.
    pub(crate) async fn s(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let id = self.session.as_ref().expect("session");
        self.call(method, &format!("/session/{id}{path}"), body).await.unwrap_or_else(|e| panic!("WebDriver: {e}"))
    }

    /// Creates the session with `capabilities` (W3C `alwaysMatch`) and sets the script and
    /// page-load timeouts.
    pub(crate) async fn new_session(&mut self, capabilities: Value) {
        let caps = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let v = self
            .call("POST", "/session", Some(caps))
            .await
            .unwrap_or_else(|e| panic!("creating the browser session: {e}; see {}", self.log.display()));
        self.session = Some(v["sessionId"].as_str().expect("sessionId").to_string());
        self.s("POST", "/timeouts", Some(json!({ "script": SCRIPT_TIMEOUT_MS, "pageLoad": 20_000 }))).await;
    }

    /// Creates the one Chromium session: headless, fake camera and microphone (granted without
    /// a prompt), audio allowed to autoplay, nothing that phones home, a fresh profile.
    async fn new_chromium_session(&mut self) {
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
            // Background tabs keep their timers: the page that is not being driven still runs
            // its stats and rejoin timers at full rate.
            "--disable-background-timer-throttling".into(),
            "--disable-renderer-backgrounding".into(),
            "--window-size=1400,1000".into(),
            format!("--user-data-dir={}", self.dir.display()),
        ];
        self.new_session(json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        }))
        .await;
    }

    /// Ends the session (quitting the browser) and checks that the driver agreed.
    pub(crate) async fn quit(mut self) {
        let id = self.session.take().unwrap();
        self.call("DELETE", &format!("/session/{id}"), None)
            .await
            .unwrap_or_else(|e| panic!("deleting the session: {e}"));
    }

    /// Opens `url` in the current window.
    pub(crate) async fn goto(&self, url: &str) {
        self.s("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// The current window's handle.
    pub(crate) async fn window(&self) -> String {
        self.s("GET", "/window", None).await.as_str().unwrap().to_string()
    }

    /// Opens a new tab, switches to it and returns its handle.
    async fn new_tab(&self) -> String {
        let h =
            self.s("POST", "/window/new", Some(json!({ "type": "tab" }))).await["handle"].as_str().unwrap().to_string();
        self.switch_to(&h).await;
        h
    }

    pub(crate) async fn switch_to(&self, handle: &str) {
        self.s("POST", "/window", Some(json!({ "handle": handle }))).await;
    }

    /// Runs an async script in the current window: the script's last argument is the callback.
    pub(crate) async fn execute_async(&self, script: &str, args: Value) -> Value {
        self.s("POST", "/execute/async", Some(json!({ "script": script, "args": args }))).await
    }

    /// Saves the current window's screenshot as `{shots}-{name}.png` under the test target's temp
    /// dir; returns the path, or why there is none.
    pub(crate) async fn screenshot(&self, name: &str) -> String {
        let path = format!("{}/{}-{name}.png", env!("CARGO_TARGET_TMPDIR"), self.shots);
        let id = self.session.as_ref().expect("session");
        let png = match self.call("GET", &format!("/session/{id}/screenshot"), None).await {
            Ok(Value::String(b64)) => base64_decode(&b64),
            Ok(v) => return format!("(none: screenshot is not a string: {v:.100})"),
            Err(e) => return format!("(none: {e})"),
        };
        match std::fs::write(&path, png) {
            Ok(()) => path,
            Err(e) => format!("(none: writing {path}: {e})"),
        }
    }

    /// The browser console: chromedriver's log endpoint for the current window since the last
    /// call; for geckodriver, whose Firefox prints it to stdout, the last lines of the log file.
    pub(crate) async fn console(&self) -> String {
        let id = self.session.as_ref().expect("session");
        match self.call("POST", &format!("/session/{id}/se/log"), Some(json!({ "type": "browser" }))).await {
            Ok(Value::Array(entries)) => entries
                .iter()
                .map(|e| format!("  {} {}", e["level"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => {
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let lines: Vec<&str> =
                    text.lines().filter(|l| l.contains("console.") || l.contains("JavaScript error")).collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                format!("  (from {})\n  {}", self.log.display(), tail.join("\n  "))
            }
        }
    }
}

/// A page (tab) in the session.
pub(crate) struct Page {
    pub(crate) name: &'static str,
    pub(crate) handle: String,
    /// The room it joins (for the server's side in failure reports).
    pub(crate) room: &'static str,
}

/// Waits inside the page until the stats show decoding has moved past `after` frames (by at least
/// `rise` frames) at 1280x720 and more than `audio_after` audio packets arrived, or until the
/// deadline, or until the page reports an error. Returns `{ok, stats, state, error, status, statsText}`.
pub(crate) const WAIT_STATS: &str = r#"
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
pub(crate) const LEAVE: &str = r#"
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
pub(crate) const SEND_CHAT: &str = r#"
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
pub(crate) const WAIT_CHAT: &str = r#"
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

/// Waits (in the page) until the JavaScript expression `cond` is true, then evaluates `report`.
/// Both see `t` (`window.tessera`), `q(selector)`, `qa(selector)` (an array) and `list()` (the
/// participant list's lines, whitespace folded). Returns `{ok, report, err, states, state,
/// status, events}`: `states` every `t.state` seen while waiting, `events` the last 20 room events.
pub(crate) const WAIT_FOR: &str = r#"
const [cond, report, waitMs, done] = arguments;
const deadline = Date.now() + waitMs;
const q = (sel) => document.querySelector(sel);
const qa = (sel) => Array.from(document.querySelectorAll(sel));
const list = () => qa('#participants li').map((li) => li.innerText.replace(/\s+/g, ' ').trim());
const f = new Function('t', 'q', 'qa', 'list', 'return (' + cond + ');');
const r = new Function('t', 'q', 'qa', 'list', 'return (' + report + ');');
const seen = [];
const tick = () => {
  const t = window.tessera || {};
  if (seen[seen.length - 1] !== t.state) seen.push(t.state);
  let ok = false, err = null;
  try { ok = !!f(t, q, qa, list); } catch (e) { err = String(e); }
  if (ok || Date.now() >= deadline) {
    let rep;
    try { rep = r(t, q, qa, list); } catch (e) { rep = 'report threw: ' + e; }
    done({ ok, report: rep, err, states: seen, state: t.state || null, status: (q('#status') || {}).textContent || null,
           events: (t.events || []).slice(-20).map((e) => e.type + (e.participant ? ':' + e.participant.name + ':' + e.participant.id : '')
                                                    + (e.reason ? ':' + e.reason : '')) });
    return;
  }
  setTimeout(tick, 50);
};
tick();
"#;

/// Picks another microphone in the page's picker (the first other one, else the one in use) and
/// waits until the audio sender carries a new live track from that device, the choice is in
/// `localStorage`, and the sender has sent at least 25 more packets (half a second of Opus) on
/// it. Returns `{ok, picked, before, after, labels, cameras, stored, sent}`.
const SWITCH_MIC: &str = r#"
const [waitMs, done] = arguments;
const t = window.tessera;
const deadline = Date.now() + waitMs;
const sel = document.getElementById('micSel');
const labels = Array.from(sel.options).filter((o) => o.value).map((o) => o.textContent);
const cameras = Array.from(document.getElementById('camSel').options).filter((o) => o.value).map((o) => o.textContent);
const sender = t.pc.getSenders().find((s) => s.track && s.track.kind === 'audio');
const old = sender && sender.track;
const before = old ? old.getSettings().deviceId : null;
const opts = Array.from(sel.options).filter((o) => o.value);
const picked = (opts.find((o) => o.value !== before) || opts[0] || { value: null }).value;
const sent = async () => {
  let n = 0;
  (await t.pc.getStats()).forEach((r) => { if (r.type === 'outbound-rtp' && r.kind === 'audio') n = r.packetsSent; });
  return n;
};
(async () => {
  if (!sender || !picked) { done({ ok: false, picked, before, labels, cameras, why: 'no audio sender or no device' }); return; }
  sel.value = picked;
  sel.dispatchEvent(new Event('change'));
  let base = null;
  for (;;) {
    const now = sender.track;
    const switched = !!now && now !== old && now.readyState === 'live' && now.getSettings().deviceId === picked
      && localStorage.getItem('tessera.mic') === picked && t.devices.mic === picked && old.readyState === 'ended';
    const n = await sent();
    if (switched && base === null) base = n;
    const ok = switched && n >= base + 25;
    if (ok || Date.now() >= deadline) {
      done({ ok, picked, before, after: now ? now.getSettings().deviceId : null, labels, cameras,
             stored: localStorage.getItem('tessera.mic'), sent: [base, n], notice: document.getElementById('notice').textContent });
      return;
    }
    await new Promise((res) => setTimeout(res, 100));
  }
})();
"#;

/// Closes the page's peer connection under it (as a dead network would end it) and waits until
/// the page has rejoined by itself: connected again with a new participant resource, after
/// showing `reconnecting`. Returns `{ok, before, after, me, rejoins, states, status}`.
pub(crate) const CLOSE_AND_REJOIN: &str = r#"
const [waitMs, done] = arguments;
const t = window.tessera;
const deadline = Date.now() + waitMs;
const before = t.location;
const states = [t.state];
t.pc.close();
const tick = () => {
  if (states[states.length - 1] !== t.state) states.push(t.state);
  const ok = t.state === 'connected' && !!t.location && t.location !== before && t.reconnect.rejoins === 1
    && states.includes('reconnecting') && !!t.dc && t.dc.readyState === 'open';
  if (ok || Date.now() >= deadline) {
    done({ ok, before, after: t.location, me: t.me, rejoins: t.reconnect.rejoins, states,
           status: document.getElementById('status').textContent });
    return;
  }
  setTimeout(tick, 50);
};
tick();
"#;

/// Clicks the kick button of participant `id` in the page's list. Returns whether there was one.
const CLICK_KICK: &str = r#"
const [id, done] = arguments;
const b = document.querySelector('#participants li[data-id="' + id + '"] button.kick');
if (b) b.click();
done(!!b);
"#;

/// Waits on `page` for the condition of [`WAIT_STATS`]; on failure, panics with the page's state,
/// status line, ICE pair, inbound RTP counters, last stats, console and the server's room counters.
pub(crate) async fn wait_stats(
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
        let shot = d.screenshot(page.name).await;
        // The server's side: frames_out not advancing means the room's compositor is stalled.
        let room = common::room_json(srv, page.room).await;
        let room = format!(
            "frames_out {} audio_encodes_last_tick {} participants {}",
            room["frames_out"], room["audio_encodes_last_tick"], room["participants"]
        );
        panic!(
            "{}: {what}: not reached after {:?}\n  state: {} error: {}\n  status line: {}\n  pc: connection {} ice {} pair {}\n  transceivers: {}\n  inbound RTP: {}\n  last stats: {}\n  stats line: {}\n  participants: {}\n  server room: {room}\n  screenshot: {shot}\n  driver log: {}\n  console:\n{}",
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
            d.log.display(),
            d.console().await,
        );
    }
    r["stats"].clone()
}

/// Runs `script` (an async script whose result has `ok`) on `page`; on `ok != true` panics with
/// the result, a screenshot and the page's console.
pub(crate) async fn page_check(d: &Driver, page: &Page, script: &str, args: Value, what: &str) -> Value {
    d.switch_to(&page.handle).await;
    let t = Instant::now();
    let r = d.execute_async(script, args).await;
    eprintln!("{}: {what} after {:?}", page.name, t.elapsed());
    if r["ok"] != true {
        let shot = d.screenshot(&format!("{}-failed", page.name)).await;
        panic!(
            "{}: {what}: not reached after {:?}: {r}\n  screenshot: {shot}\n  console:\n{}",
            page.name,
            t.elapsed(),
            d.console().await
        );
    }
    r
}

/// [`WAIT_FOR`] on `page`: waits until `cond` holds, or panics with `report`, the states seen,
/// the last events, a screenshot and the console.
pub(crate) async fn wait_for(d: &Driver, page: &Page, cond: &str, report: &str, what: &str) -> Value {
    page_check(d, page, WAIT_FOR, json!([cond, report, PAGE_WAIT_MS]), what).await
}

/// Resource-timing entries of the page's requests to `GET /v1/rooms/{room}` (the room JSON).
pub(crate) fn room_gets(room: &str) -> String {
    format!(
        "performance.getEntriesByType('resource').filter((e) => new URL(e.name).pathname === '/v1/rooms/{room}').length"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chromium_pages_decode_the_composite_and_hear_the_mix() {
    let _serial = common::serial().await;
    let started = Instant::now();
    let srv = common::server().await;
    let mut d = Driver::chromium().await;
    d.new_chromium_session().await;
    eprintln!("chromedriver and Chromium up in {:?}", started.elapsed());

    let url = |name: &str| format!("http://{}/?room={ROOM}&name={name}&autojoin=1", srv.addr);
    let alice = d.window().await;
    d.goto(&url("alice")).await;
    let bob = d.new_tab().await;
    d.goto(&url("bob")).await;
    let pages = [Page { name: "alice", handle: alice, room: ROOM }, Page { name: "bob", handle: bob, room: ROOM }];

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
        eprintln!("{}: screenshot {}", p.name, d.screenshot(p.name).await);
    }

    // The server sees both browsers publishing both kinds (a page's simulcast video may start a
    // moment after its audio on a loaded machine: wait for it, up to 10 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut room = common::room_json(srv.addr, ROOM).await;
    let both = |room: &serde_json::Value| {
        room["participants"].as_array().is_some_and(|ps| {
            ps.len() == 2 && ps.iter().all(|p| p["publishes"]["video"] == true && p["publishes"]["audio"] == true)
        })
    };
    while !both(&room) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        room = common::room_json(srv.addr, ROOM).await;
    }
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

    // Without access tokens everyone gets the admin controls: the layout picker, the outputs
    // panel, and per participant pin and mute, and kick for the others.
    for p in &pages {
        wait_for(
            &d,
            p,
            "t.admin === true && t.auth === false && !q('#layoutSel').hidden && !q('section.admin').hidden \
             && qa('#participants button.mute').length === 2 && qa('#participants button.kick').length === 1 \
             && !q('#participants li[data-id=\"' + t.me + '\"] button.kick')",
            "{admin: t.admin, auth: t.auth, layoutHidden: q('#layoutSel').hidden, list: list(), \
             buttons: qa('#participants button').map((b) => b.className)}",
            "admin controls shown without auth",
        )
        .await;
    }

    // Screenshots once each page has decoded a second of the new layout.
    for p in &pages {
        d.switch_to(&p.handle).await;
        let frames =
            d.execute_async("arguments[0](window.tessera.stats.framesDecoded)", json!([])).await.as_u64().unwrap_or(0);
        wait_stats(&d, srv.addr, p, frames, 30, 0, "decoding after the layout switch").await;
        eprintln!("{}: screenshot {}", p.name, d.screenshot(&format!("{}-speaker", p.name)).await);
    }

    // Alice switches her microphone while joined: a new track on the same sender, sending.
    let r = page_check(&d, &pages[0], SWITCH_MIC, json!([PAGE_WAIT_MS]), "microphone switched while joined").await;
    eprintln!("alice: microphones {} cameras {}: {} -> {}", r["labels"], r["cameras"], r["before"], r["after"]);
    let labels = r["labels"].as_array().unwrap();
    assert!(!labels.is_empty() && labels.iter().all(|l| l.as_str().is_some_and(|l| !l.is_empty())), "{r}");
    assert!(!r["cameras"].as_array().unwrap().is_empty(), "no camera listed: {r}");

    // Bob's connection is closed under his page: it rejoins by itself as a new participant, the
    // old one is gone from the room, and alice's list follows from `left` and `joined`.
    let r = page_check(&d, &pages[1], CLOSE_AND_REJOIN, json!([PAGE_WAIT_MS]), "bob rejoined by himself").await;
    eprintln!("bob: {} -> {} via {}", r["before"], r["after"], r["states"]);
    let (old_bob, new_bob) = (r["before"].as_str().unwrap(), r["me"].as_str().unwrap().to_string());
    let old_bob = old_bob.rsplit('/').next().unwrap().to_string();
    assert_ne!(old_bob, new_bob);
    wait_stats(&d, srv.addr, &pages[1], 0, 15, 0, "decoding again after the rejoin").await;
    let room = common::room_json(srv.addr, ROOM).await;
    let mut ids: Vec<String> =
        room["participants"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    assert!(ids.contains(&new_bob) && !ids.contains(&old_bob) && ids.len() == 2, "old {old_bob} new {new_bob}: {room}");
    let ids_js = serde_json::to_string(&ids).unwrap();
    for p in &pages {
        wait_for(
            &d,
            p,
            &format!(
                "JSON.stringify(t.participants.map((p) => p.id).sort()) === '{ids_js}' \
                 && list().filter((l) => l.startsWith('bob')).length === 1"
            ),
            "{ids: t.participants.map((p) => p.id), list: list()}",
            "participant list after bob's rejoin",
        )
        .await;
    }
    wait_for(
        &d,
        &pages[0],
        &format!(
            "t.events.some((e) => e.type === 'left' && e.participant.id === '{old_bob}') \
             && t.events.some((e) => e.type === 'joined' && e.participant.id === '{new_bob}')"
        ),
        "t.events.map((e) => e.type)",
        "alice got bob's left and joined",
    )
    .await;

    // No polling: after half a minute joined, each page asked for the room JSON at most once per
    // `welcome` (for the mute states it lacks), never on a timer.
    for p in &pages {
        let gets = room_gets(ROOM);
        wait_for(
            &d,
            p,
            &format!("{gets} === t.roomFetches && t.roomFetches <= 2"),
            &format!("{{gets: {gets}, roomFetches: t.roomFetches}}"),
            "the room JSON fetched once per welcome, not polled",
        )
        .await;
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
    d.quit().await;
    eprintln!("browser test done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_admin_controls_follow_the_token_and_a_full_room_is_retried() {
    const SECRET: &str = "browser-secret-0123456789";
    const SECURE: &str = "secure-browser";
    let _serial = common::serial().await;
    let started = Instant::now();
    let srv = common::server_with(Config { api_secret: Some(SECRET.into()), ..Config::default() }).await;
    let auth = Auth::new(Some(SECRET));
    let hour = Duration::from_secs(3600);
    let admin = auth.mint(SECURE, "ops", Some("ops"), Grants { publish: true, subscribe: true, admin: true }, hour);
    let member = auth.mint(SECURE, "mia", Some("mia"), Grants { publish: true, subscribe: true, admin: false }, hour);
    let room_url = format!("http://{}/v1/rooms/{SECURE}", srv.addr);
    let cap = |n: u32| {
        let (url, admin) = (room_url.clone(), admin.clone());
        async move {
            let body = json!({ "max_participants": n }).to_string().into_bytes();
            common::http_auth("PUT", url, Some("application/json"), body, Some(&admin)).await
        }
    };
    // A room for one: mia's join is refused (409) until the cap is raised.
    let r = cap(1).await;
    assert_eq!(r.status, 201, "PUT room: {}", r.body);

    let mut d = Driver::chromium().await;
    d.new_chromium_session().await;
    let url = |token: &str| format!("http://{}/?room={SECURE}&autojoin=1&token={token}", srv.addr);
    let ops = d.window().await;
    d.goto(&url(&admin)).await;
    let ops = Page { name: "ops", handle: ops, room: SECURE };
    wait_for(
        &d,
        &ops,
        "t.state === 'connected' && t.admin === true && t.auth === true && !q('#layoutSel').hidden \
         && !q('section.admin').hidden && list().some((l) => l.startsWith('ops (you)'))",
        "{admin: t.admin, auth: t.auth, list: list()}",
        "ops joined with the admin controls",
    )
    .await;

    let mia = d.new_tab().await;
    d.goto(&url(&member)).await;
    let mia = Page { name: "mia", handle: mia, room: SECURE };
    wait_for(
        &d,
        &mia,
        "t.state === 'reconnecting' && /^HTTP 409/.test(t.reconnect.reason || '') && t.reconnect.delayMs >= 1000 \
         && t.admin === false && t.auth === true && q('#layoutSel').hidden && q('section.admin').hidden",
        "{reconnect: t.reconnect, admin: t.admin, layoutHidden: q('#layoutSel').hidden}",
        "mia's join refused as the room is full, retry scheduled, no admin controls",
    )
    .await;
    let r = cap(2).await;
    assert_eq!(r.status, 200, "PUT room: {}", r.body);
    let r = wait_for(
        &d,
        &mia,
        "t.state === 'connected' && t.reconnect.rejoins === 1 && !!t.dc && t.dc.readyState === 'open' \
         && list().some((l) => l.startsWith('mia (you)')) && list().some((l) => l.startsWith('ops ')) \
         && qa('#participants button').length === 0",
        "{me: t.me, reconnect: t.reconnect, list: list()}",
        "mia in once the room has space, still without admin controls",
    )
    .await;
    eprintln!("mia: joined via {}", r["states"]);
    let mia_id = r["report"]["me"].as_str().unwrap().to_string();

    // The admin kicks mia from the page: every page hears `left` with reason `kicked`. (Mia's own
    // page gets no `left`: the server ends a participant's data channel before it announces the
    // departure, so she only sees her session end and rejoins. Once the server sends her the
    // event, her page stops at `left (kicked)` instead; either is accepted here.) Leave then
    // cancels whatever rejoin is pending.
    wait_for(
        &d,
        &ops,
        &format!("!!q('#participants li[data-id=\"{mia_id}\"] button.kick')"),
        "list()",
        "ops sees mia with a kick button",
    )
    .await;
    assert_eq!(d.execute_async(CLICK_KICK, json!([mia_id])).await, true);
    wait_for(
        &d,
        &ops,
        &format!(
            "t.events.some((e) => e.type === 'left' && e.participant.id === '{mia_id}' && e.reason === 'kicked') \
             && !t.participants.some((p) => p.id === '{mia_id}')"
        ),
        "list()",
        "ops hears that mia was kicked",
    )
    .await;
    let r = wait_for(
        &d,
        &mia,
        &format!("t.me !== '{mia_id}' && (t.state === 'left' || t.reconnect.rejoins >= 1)"),
        "{state: t.state, status: q('#status').textContent, reconnect: t.reconnect}",
        "mia's page noticed the kick",
    )
    .await;
    eprintln!("mia: after the kick: {} ({})", r["report"], r["states"]);
    let r = d.execute_async(LEAVE, json!([10_000])).await;
    assert!(r["state"] == "left" && r["pc"] == false, "mia: leaving: {r}");
    wait_for(
        &d,
        &mia,
        "t.state === 'left' && !t.pc && t.reconnect.delayMs === 0 && !q('#join').disabled",
        "{state: t.state, reconnect: t.reconnect}",
        "mia out, no rejoin pending",
    )
    .await;
    wait_for(
        &d,
        &ops,
        "t.participants.length === 1 && list().length === 1 && list()[0].startsWith('ops (you)')",
        "list()",
        "ops alone in the list",
    )
    .await;
    let r = common::http_auth("GET", room_url.clone(), None, vec![], Some(&admin)).await;
    let room: Value = serde_json::from_str(&r.body).unwrap();
    let names: Vec<_> = room["participants"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, [json!("ops")], "{room}");

    d.switch_to(&ops.handle).await;
    let r = d.execute_async(LEAVE, json!([10_000])).await;
    assert!(r["state"] == "left", "ops: leaving: {r}");
    d.quit().await;
    eprintln!("admin/retry browser test done in {:?}", started.elapsed());
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
