//! The web client in Firefox: a headless Firefox ESR (fake camera and microphone, a fresh
//! profile) joins a room through `/?room=..&name=..&autojoin=1` and, by the page's own
//! `window.tessera.stats`, decodes the 1280x720 composite and receives audio. The page follows
//! the room from its data channel: a webrtc-rs test peer's `joined`, server mute (`mute_changed`)
//! and `left` show in its participant list; a connection closed under the page is rejoined by
//! itself; Leave empties the room.
//!
//! Firefox is driven through geckodriver's W3C WebDriver API with the Chromium test's client
//! (`browser::Driver`). Firefox neither gathers nor pairs loopback candidates, so the server's
//! media binds every interface and announces the machine's non-loopback addresses (the harness's
//! `server_with` pins media to 127.0.0.1, hence the server is started here). `firefox-esr` and
//! `geckodriver` (`cargo install geckodriver`) must be installed: the test fails, rather than
//! skips, without them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::json;
use tessera::config::Config;
use tessera::server::Server;

use crate::browser::{
    CLOSE_AND_REJOIN, Driver, LEAVE, PAGE_WAIT_MS, Page, free_port, fresh_dir, page_check, room_gets, wait_for,
    wait_stats,
};
use crate::common::{self, PeerOpts};

const FIREFOX: &str = "/usr/bin/firefox-esr";
const ROOM: &str = "firefox";

/// geckodriver: `~/.cargo/bin/geckodriver` (where `cargo install` puts it), else on `PATH`.
fn geckodriver() -> PathBuf {
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/geckodriver"));
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("geckodriver")).collect::<Vec<_>>())
        .unwrap_or_default();
    home.into_iter().chain(on_path).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "geckodriver is missing: the Firefox test needs it (cargo install geckodriver --version 0.37.1 --locked)"
        )
    })
}

/// Starts geckodriver on a free loopback port; its log (with Firefox's console) goes to
/// `geckodriver.log` under the test target's temp dir, and each session's fresh profile under a
/// directory of our own that the driver's drop removes.
async fn firefox_driver() -> Driver {
    assert!(
        Path::new(FIREFOX).exists(),
        "{FIREFOX} is missing: the Firefox test needs the Debian package `firefox-esr` (apt-get install firefox-esr)"
    );
    let port = free_port();
    let dir = fresh_dir("tessera-firefox");
    let log = PathBuf::from(format!("{}/geckodriver.log", env!("CARGO_TARGET_TMPDIR")));
    let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let mut cmd = Command::new(geckodriver());
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string(), "--log", "info"])
        .arg("--profile-root")
        .arg(&dir)
        .env("MOZ_HEADLESS", "1")
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    Driver::spawn(cmd, port, dir, log, "firefox").await
}

/// The Firefox session: headless, fake camera and microphone without a permission prompt, audio
/// allowed to autoplay, plain host candidates (no mDNS names), the console on stdout.
async fn new_firefox_session(d: &mut Driver) {
    d.new_session(json!({
        "browserName": "firefox",
        "moz:firefoxOptions": {
            "binary": FIREFOX,
            "args": ["-headless"],
            "prefs": {
                "media.navigator.streams.fake": true,
                "media.navigator.permission.disabled": true,
                "media.autoplay.default": 0,
                "media.autoplay.blocking_policy": 0,
                // Host candidates as addresses: the server cannot resolve `.local` names.
                "media.peerconnection.ice.obfuscate_host_addresses": false,
                "devtools.console.stdout.content": true,
                "browser.shell.checkDefaultBrowser": false,
                "datareporting.policy.dataSubmissionEnabled": false,
                "app.update.enabled": false,
            },
        },
    }))
    .await;
}

/// A server like `common::server_with(Config::default())` but with media on every interface:
/// HTTP on 127.0.0.1:0, ephemeral UDP and TCP media ports bound to 0.0.0.0.
async fn server_on_every_interface() -> Server {
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
        media_ip: Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ..Config::default()
    };
    Server::start(cfg).await.expect("server starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_page_decodes_the_composite_and_follows_the_room() {
    let _serial = common::serial().await;
    let started = Instant::now();
    let announced = tessera::transport::announced_ips(&[], IpAddr::V4(Ipv4Addr::UNSPECIFIED), false);
    assert!(
        announced.iter().any(|ip| !ip.is_loopback()),
        "this machine has no non-loopback IPv4 address ({announced:?}): Firefox pairs no loopback candidates"
    );
    let srv = server_on_every_interface().await;
    let mut d = firefox_driver().await;
    new_firefox_session(&mut d).await;
    eprintln!("geckodriver and Firefox up in {:?}", started.elapsed());

    let fox = Page { name: "fox", handle: d.window().await, room: ROOM };
    d.goto(&format!("http://{}/?room={ROOM}&name=fox&autojoin=1", srv.addr)).await;

    // The page decodes 1280x720 video and receives audio, and keeps doing so.
    let s = wait_stats(&d, srv.addr, &fox, 0, 1, 0, "first 1280x720 frames and audio").await;
    let (frames, audio) = (s["framesDecoded"].as_u64().unwrap(), s["audioPackets"].as_u64().unwrap());
    wait_stats(&d, srv.addr, &fox, frames, 15, audio, "framesDecoded and audioPackets rising").await;
    eprintln!("fox: screenshot {}", d.screenshot("fox").await);
    let room = common::room_json(srv.addr, ROOM).await;
    let ps = room["participants"].as_array().unwrap_or_else(|| panic!("room JSON: {room}"));
    assert!(
        ps.len() == 1 && ps[0]["publishes"]["video"] == true && ps[0]["publishes"]["audio"] == true,
        "Firefox does not publish both: {room}"
    );
    // The fake devices are offered in the pickers, with labels.
    wait_for(
        &d,
        &fox,
        "t.devices.cameras.length >= 1 && t.devices.mics.length >= 1 \
         && t.devices.cameras.concat(t.devices.mics).every((x) => x.label)",
        "t.devices",
        "camera and microphone listed",
    )
    .await;

    // A webrtc-rs peer joins: the page lists it from the `joined` event, then shows its server
    // mute from `mute_changed`, and drops it on `left`.
    let mut o = PeerOpts::publisher("harness", (40, 200, 60), 600.0);
    o.receive = false;
    let peer = common::join(srv.addr, ROOM, o).await;
    let id = &peer.id;
    wait_for(
        &d,
        &fox,
        &format!(
            "t.events.some((e) => e.type === 'joined' && e.participant.id === '{id}') \
             && list().some((l) => l.startsWith('harness')) && list().some((l) => l.startsWith('fox (you)'))"
        ),
        "list()",
        "harness listed from its joined event",
    )
    .await;
    let r =
        common::put_json(srv.addr, &format!("/v1/rooms/{ROOM}/participants/{id}/mute"), json!({ "audio": true })).await;
    assert_eq!(r.status, 200, "server mute: {}", r.body);
    wait_for(
        &d,
        &fox,
        &format!(
            "t.participants.some((p) => p.id === '{id}' && p.muted.audio && !p.muted.video) \
             && /mic off/.test(q('#participants li[data-id=\"{id}\"]').innerText)"
        ),
        "list()",
        "harness shown muted",
    )
    .await;
    assert_eq!(peer.leave().await.unwrap(), 204);
    wait_for(
        &d,
        &fox,
        &format!(
            "t.events.some((e) => e.type === 'left' && e.participant.id === '{id}') \
             && list().length === 1 && list()[0].startsWith('fox (you)')"
        ),
        "list()",
        "harness dropped on its left event",
    )
    .await;

    // The connection is closed under the page: it rejoins by itself as a new participant.
    let old = fox_id(&d).await;
    let r = page_check(&d, &fox, CLOSE_AND_REJOIN, json!([PAGE_WAIT_MS]), "fox rejoined by itself").await;
    eprintln!("fox: {} -> {} via {}", r["before"], r["after"], r["states"]);
    wait_stats(&d, srv.addr, &fox, 0, 15, 0, "decoding again after the rejoin").await;
    let room = common::room_json(srv.addr, ROOM).await;
    let ids: Vec<_> = room["participants"].as_array().unwrap().iter().map(|p| p["id"].clone()).collect();
    let new = fox_id(&d).await;
    assert!(new != old && ids == [json!(new)], "old {old} new {new}: {room}");

    // Never polled: the room JSON at most once per welcome.
    let gets = room_gets(ROOM);
    wait_for(
        &d,
        &fox,
        &format!("{gets} === t.roomFetches && t.roomFetches <= 2"),
        &format!("{{gets: {gets}, roomFetches: t.roomFetches}}"),
        "the room JSON fetched once per welcome, not polled",
    )
    .await;

    // Leave (DELETE of the participant resource) empties the room.
    let r = d.execute_async(LEAVE, json!([10_000])).await;
    assert!(r["state"] == "left" && r["pc"] == false, "fox: leaving: {r}");
    assert!(common::room_json(srv.addr, ROOM).await.is_null(), "room after fox left");
    d.quit().await;
    eprintln!("firefox test done in {:?} (page waits up to {PAGE_WAIT_MS} ms each)", started.elapsed());
}

/// The page's own participant id.
async fn fox_id(d: &Driver) -> String {
    d.execute_async("arguments[0](window.tessera.me)", json!([])).await.as_str().expect("tessera.me").to_string()
}
