//! The HTTP listener against slow, idle and abusive clients (`signaling::http`): connections
//! that dribble headers or send nothing are closed after the header or idle timeout, a stalled
//! body gets `408`, `/healthz` still answers with 1000 idle connections open, connections past
//! the caps get `503`, and joins past the rate get `429` with `Retry-After`. Raw TCP clients, so
//! that nothing in between completes or times out a request on the server's behalf.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tessera::config::{Config, HttpLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common;

/// Longest any step here may take before the test fails (not a speed bound: a deadlock guard).
const PATIENCE: Duration = Duration::from_secs(20);

fn limits(f: impl FnOnce(&mut HttpLimits)) -> Config {
    let mut cfg = Config::default();
    f(&mut cfg.http);
    cfg
}

/// A connection to `to` from loopback address `from` (any of 127.0.0.0/8).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::from(from), 0)).unwrap();
    s.connect(to).await.expect("connect")
}

/// A parsed response: status, header block (lowercase names), body.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
    }
}

/// Reads one response (`Content-Length` framed) from `s`.
async fn read_reply(s: &mut TcpStream) -> Reply {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let (status_line, headers) = head.split_once("\r\n").unwrap_or((head.as_str(), ""));
            let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
            let mut reply = Reply { status, headers: headers.to_string(), body: String::new() };
            let len: usize = reply.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk)).await.expect("body").unwrap();
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            reply.body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            return reply;
        }
        let n = tokio::time::timeout_at(deadline.into(), s.read(&mut chunk)).await.expect("a response").unwrap_or(0);
        assert!(n > 0, "connection closed before a response: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Sends `raw` on a new connection from 127.0.0.1 and reads the response.
async fn request(addr: SocketAddr, raw: String) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    read_reply(&mut s).await
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
}

/// How long until the server closes `s` (EOF or reset), reading and discarding what it sends.
async fn closed_after(s: &mut TcpStream, since: Instant) -> Duration {
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(PATIENCE, s.read(&mut chunk)).await.expect("the server never closed it") {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => {}
        }
    }
}

/// The value of the sample `name` (with its labels, as printed) on `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    metric_now(addr, name).await.unwrap_or_else(|| panic!("{name} not on /metrics"))
}

/// [`metric`], or `None` when `/metrics` does not answer with it (e.g. refused while this
/// address's connections are still at the cap).
async fn metric_now(addr: SocketAddr, name: &str) -> Option<f64> {
    let r = common::http("GET", format!("http://{addr}/metrics"), None, vec![]).await;
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.rsplit(' ').next()).and_then(|v| v.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_idle_connections_are_closed_after_their_timeouts() {
    let ms = Duration::from_millis;
    // Header timeout only (the idle one far away), and idle timeout only.
    let by_header = common::server_with(limits(|l| (l.header_timeout_ms, l.idle_timeout_ms) = (600, 60_000))).await;
    let by_idle = common::server_with(limits(|l| (l.header_timeout_ms, l.idle_timeout_ms) = (60_000, 600))).await;
    let (h, i) = (by_header.addr, by_idle.addr);

    let silent = async {
        let mut s = TcpStream::connect(h).await.unwrap();
        closed_after(&mut s, Instant::now()).await
    };
    // Slowloris: a header line every 100 ms, never the blank line that ends them.
    let slowloris = async {
        let s = TcpStream::connect(h).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let t0 = Instant::now();
        let dribble = async move {
            let _ = w.write_all(b"GET /healthz HTTP/1.1\r\n").await;
            for n in 0.. {
                tokio::time::sleep(ms(100)).await;
                if w.write_all(format!("X-Slow-{n}: 1\r\n").as_bytes()).await.is_err() || t0.elapsed() > PATIENCE {
                    break;
                }
            }
        };
        let closed = async {
            let mut chunk = [0u8; 1024];
            while matches!(r.read(&mut chunk).await, Ok(n) if n > 0) {}
            t0.elapsed()
        };
        tokio::select! { t = closed => t, () = dribble => panic!("the server never closed the slowloris connection") }
    };
    // A keep-alive connection after a complete request.
    let keep_alive = async {
        let mut s = TcpStream::connect(h).await.unwrap();
        s.write_all(get("/healthz").as_bytes()).await.unwrap();
        assert_eq!(read_reply(&mut s).await.status, 200);
        closed_after(&mut s, Instant::now()).await
    };
    let idle = async {
        let mut s = TcpStream::connect(i).await.unwrap();
        s.write_all(get("/healthz").as_bytes()).await.unwrap();
        assert_eq!(read_reply(&mut s).await.status, 200);
        let t0 = Instant::now();
        (closed_after(&mut s, t0).await, {
            let mut fresh = TcpStream::connect(i).await.unwrap();
            closed_after(&mut fresh, Instant::now()).await
        })
    };
    let (silent, slowloris, keep_alive, (idle_after_request, idle_fresh)) =
        tokio::join!(silent, slowloris, keep_alive, idle);
    for (what, t) in [
        ("silent (header timeout)", silent),
        ("slowloris (header timeout)", slowloris),
        ("keep-alive (header timeout)", keep_alive),
        ("after a request (idle timeout)", idle_after_request),
        ("silent (idle timeout)", idle_fresh),
    ] {
        assert!(t >= ms(500), "{what}: closed after {t:?}, before its 600 ms timeout");
        assert!(t < ms(10_000), "{what}: closed only after {t:?}");
    }
    assert!(metric(h, "tessera_http_timeouts_total{kind=\"header\"").await >= 1.0, "the slowloris is counted");
    assert!(metric(i, "tessera_http_timeouts_total{kind=\"idle\"").await >= 2.0);
    // The servers still serve.
    assert_eq!(request(h, get("/healthz")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_the_connection_closes() {
    let srv = common::server_with(limits(|l| l.body_timeout_ms = 500)).await;
    let a = srv.addr;
    let mut s = TcpStream::connect(a).await.unwrap();
    let head = "POST /v1/rooms/r/participants HTTP/1.1\r\nHost: t\r\nContent-Type: application/sdp\r\nContent-Length: 100\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(b"v=0\r\n").await.unwrap();
    let t0 = Instant::now();
    let r = read_reply(&mut s).await;
    assert_eq!((r.status, r.body.as_str()), (408, "request body not received within 500 ms\n"), "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(t0.elapsed() >= Duration::from_millis(400), "answered after {:?}", t0.elapsed());
    closed_after(&mut s, t0).await;
    assert_eq!(metric(a, "tessera_http_timeouts_total{kind=\"body\"").await, 1.0);

    // A body that arrives in pieces, in time, reaches the handler (which refuses it as SDP).
    let mut s = TcpStream::connect(a).await.unwrap();
    let body = "hello, I am not SDP";
    let head = format!(
        "POST /v1/rooms/r/participants HTTP/1.1\r\nHost: t\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in [&body[..5], &body[5..10], &body[10..]] {
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(piece.as_bytes()).await.unwrap();
    }
    let r = read_reply(&mut s).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.body.contains("malformed SDP"), "{r:?}");
    // A body over the limit is refused with Tessera's reason, whatever its framing.
    let mut s = TcpStream::connect(a).await.unwrap();
    let chunked =
        "POST /whip/r HTTP/1.1\r\nHost: t\r\nContent-Type: application/sdp\r\nTransfer-Encoding: chunked\r\n\r\n";
    s.write_all(chunked.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 40 * 1024, "v".repeat(40 * 1024));
    let _ = s.write_all(format!("{chunk}{chunk}").as_bytes()).await;
    let r = read_reply(&mut s).await;
    assert_eq!((r.status, r.body.as_str()), (413, "request body larger than 64 KiB\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_1000_idle_connections_are_open() {
    // Long timeouts: the idle connections stay for the whole test. 100 per address, under the
    // per-address cap.
    let cfg = limits(|l| (l.header_timeout_ms, l.idle_timeout_ms) = (120_000, 120_000));
    let srv = common::server_with(cfg).await;
    let a = srv.addr;
    let mut idle = Vec::with_capacity(1000);
    for i in 0..1000u32 {
        idle.push(connect_from([127, 0, 1, 1 + (i / 100) as u8], a).await);
    }
    // The server has accepted and holds every one (the gauge counts accepted connections).
    let deadline = Instant::now() + PATIENCE;
    while metric(a, "tessera_http_connections_open").await < 1000.0 {
        assert!(Instant::now() < deadline, "the server did not take the 1000 connections");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        let r = tokio::time::timeout(Duration::from_secs(5), request(a, get("/healthz"))).await;
        let r = r.expect("/healthz did not answer within 5 s with 1000 idle connections open");
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
    }
    let r = request(a, "POST /v1/rooms/h/participants HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".into()).await;
    assert_eq!(r.status, 415, "the API answers too: {r:?}");
    assert!(metric(a, "tessera_http_connections_open").await >= 1000.0, "the idle connections are still open");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_caps_get_503_and_closed_ones_give_their_place_back() {
    let srv = common::server_with(limits(|l| (l.max_connections, l.max_connections_per_ip) = (6, 4))).await;
    let a = srv.addr;
    // Admitted connections answer (so they were accepted before the next one is tried).
    async fn admitted(from: [u8; 4], a: SocketAddr) -> TcpStream {
        let mut s = connect_from(from, a).await;
        s.write_all(get("/healthz").as_bytes()).await.unwrap();
        assert_eq!(read_reply(&mut s).await.status, 200);
        s
    }
    /// A refused connection: answered `503` with the reason, unasked, and closed.
    async fn refused(from: [u8; 4], a: SocketAddr, reason: &str) {
        let mut s = connect_from(from, a).await;
        let mut got = Vec::new();
        tokio::time::timeout(PATIENCE, s.read_to_end(&mut got)).await.expect("closed").expect("read");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.ends_with(reason), "{text}");
        assert!(text.contains("Retry-After: 1\r\n"), "{text}");
    }
    let mut mine = vec![];
    for _ in 0..4 {
        mine.push(admitted([127, 0, 0, 1], a).await);
    }
    refused([127, 0, 0, 1], a, "too many connections from your address\n").await;
    let others = [admitted([127, 0, 0, 2], a).await, admitted([127, 0, 0, 2], a).await];
    refused([127, 0, 0, 3], a, "too many connections to this server\n").await;
    // One of 127.0.0.1's closes: its place is free again once the server has seen the close.
    drop(mine.pop());
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut s = connect_from([127, 0, 0, 1], a).await;
        s.write_all(get("/healthz").as_bytes()).await.unwrap();
        let mut buf = [0u8; 12];
        if s.read_exact(&mut buf).await.is_ok() && &buf == b"HTTP/1.1 200" {
            break;
        }
        assert!(Instant::now() < deadline, "the closed connection's place never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(mine);
    drop(others);
    let deadline = Instant::now() + PATIENCE;
    loop {
        // The closed connections may not have been seen yet: /metrics itself can be refused.
        let per_ip = metric_now(a, "tessera_http_connections_refused_total{reason=\"max_connections_per_ip\"").await;
        let total = metric_now(a, "tessera_http_connections_refused_total{reason=\"max_connections\"").await;
        if per_ip >= Some(1.0) && total >= Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "refusals not counted: {per_ip:?} {total:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_past_the_rate_get_429_with_retry_after() {
    let srv = common::server_with(limits(|l| l.joins_per_minute_per_ip = 3)).await;
    let a = srv.addr;
    let join = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nv=0")
    };
    // Three joins (refused for their content type, but joins all the same) use the minute's budget.
    for path in ["/whip/r", "/whep/r", "/v1/rooms/r/participants"] {
        assert_eq!(request(a, join(path)).await.status, 415, "{path}");
    }
    for path in ["/whip/r", "/v1/rooms/other/participants"] {
        let r = request(a, join(path)).await;
        assert_eq!(r.status, 429, "{path}: {r:?}");
        let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After in seconds");
        assert!((1..=20).contains(&retry), "Retry-After {retry}: one token comes back every 20 s");
        assert_eq!(r.body, format!("too many joins from 127.0.0.1: at most 3 a minute; retry in {retry} s\n"));
    }
    // Other calls are not joins.
    assert_eq!(request(a, get("/healthz")).await.status, 200);
    assert_eq!(request(a, get("/v1/rooms")).await.status, 200);
    assert_eq!(metric(a, "tessera_joins_rate_limited_total").await, 2.0);
}
