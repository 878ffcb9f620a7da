//! Test harness: a Tessera server in-process on loopback, and the library's load-generator peer
//! (`tessera::client::loadgen`) as the webrtc-rs test client: it publishes a solid colour (VP8 from
//! GStreamer) and a sine tone (Opus) and decodes what it receives.
#![allow(dead_code)]

use std::net::SocketAddr;

pub use tessera::client::loadgen::analysis::{Frame, close, tone_db};
#[allow(unused_imports)]
pub use tessera::client::loadgen::{HttpResponse as Resp, Peer, PeerOpts, Via, VideoSource};
use tessera::config::Config;
use tessera::server::Server;

/// Media tests share two cores: one at a time keeps their timing honest. An async lock (each
/// test has its own runtime; a panicking test releases it as it unwinds).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for, then holds, the media-test lock for the test's duration.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Starts a server on 127.0.0.1:0 with ephemeral media ports and the default 1280x720 output.
pub async fn server() -> Server {
    server_with(Config::default()).await
}

/// Starts a server with `cfg`, overriding only the addresses (loopback, port 0, ephemeral UDP).
pub async fn server_with(mut cfg: Config) -> Server {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,tessera=info".into()),
        )
        .with_test_writer()
        .try_init();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.udp_port = 0;
    cfg.tcp_port = 0;
    cfg.media_ip = Some("127.0.0.1".parse().unwrap());
    Server::start(cfg).await.expect("server starts")
}

/// Joins `room` on the server at `addr` as a test peer that keeps decoded pixels; panics with the
/// server's reason if the join is refused.
pub async fn join(addr: SocketAddr, room: &str, opts: PeerOpts) -> Peer {
    let name = opts.name.clone();
    Peer::join(&format!("http://{addr}"), room, opts, true)
        .await
        .unwrap_or_else(|e| panic!("{name} could not join {room}: {e}"))
}

/// Sends one HTTP request to the server.
pub async fn http(method: &str, url: String, content_type: Option<&str>, body: Vec<u8>) -> Resp {
    tessera::client::loadgen::http(method, &url, content_type, body).await.expect("http request")
}

/// `GET /v1/rooms/{room}` as JSON (`Null` on 404).
pub async fn room_json(addr: SocketAddr, room: &str) -> serde_json::Value {
    let r = http("GET", format!("http://{addr}/v1/rooms/{room}"), None, vec![]).await;
    if r.status == 404 {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&r.body).expect("room JSON")
}

/// Participant `id` in a room JSON (`GET /v1/rooms/{room}`); `null` when absent.
pub fn participant(room: &serde_json::Value, id: &str) -> serde_json::Value {
    room["participants"].as_array().unwrap().iter().find(|p| p["id"] == id).cloned().unwrap_or_default()
}

/// Saves `frame` under the test target's temp dir as `name.png`, for a person to look at;
/// returns the path.
pub fn save(frame: &Frame, name: &str) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.png"));
    if let Err(e) = frame.save_png(&path) {
        eprintln!("could not save {}: {e}", path.display());
    }
    path
}

/// Sends one HTTP request with a bearer token.
pub async fn http_auth(
    method: &str,
    url: String,
    content_type: Option<&str>,
    body: Vec<u8>,
    token: Option<&str>,
) -> Resp {
    tessera::client::loadgen::http_auth(method, &url, content_type, body, token).await.expect("http request")
}

/// `PUT`s JSON to the server; returns the response.
pub async fn put_json(addr: SocketAddr, path: &str, body: serde_json::Value) -> Resp {
    http("PUT", format!("http://{addr}{path}"), Some("application/json"), body.to_string().into_bytes()).await
}

/// Waits up to 10 s for `{base}/healthz` to answer (a `tessera serve` child starting); panics
/// naming `what` if it does not.
pub async fn wait_healthy(base: &str, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while http_ok(&format!("{base}/healthz")).await.is_none() {
        assert!(std::time::Instant::now() < deadline, "{what} did not come up");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `GET url`; `Some(status)` when the server answered.
pub async fn http_ok(url: &str) -> Option<u16> {
    tessera::client::loadgen::http("GET", url, None, vec![]).await.ok().map(|r| r.status)
}
