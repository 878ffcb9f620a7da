//! The HTTP listeners' serve loop: what `axum::serve` does, plus what a server on an open port
//! needs against slow, idle and abusive clients (all set by [`HttpLimits`]):
//!
//! - **header timeout** (slowloris): hyper's HTTP/1 `header_read_timeout` with a tokio timer. It
//!   runs from the connection's start or the previous response until the end of the next
//!   request's headers, so it also bounds how long a keep-alive connection waits for a request.
//! - **idle timeout**: a connection on which no byte moved either way for that long, while no
//!   request is being handled, is closed (a client that stops reading a response, an idle
//!   keep-alive when the header timeout is longer).
//! - **body timeout**: a request body must arrive whole in time, else `408` and the connection
//!   closes. Bodies are at most [`MAX_SDP_BYTES`] and buffered here anyway, so this is a deadline
//!   on reading them (tower-http's `RequestBodyTimeoutLayer` would surface as axum's `400`).
//! - **connection caps**, in total and per client address ([`ConnTable`]): a connection past a
//!   cap is accepted, answered `503` with `Retry-After` (best effort, one write) and closed at
//!   once, so it neither waits in the kernel's backlog nor holds a descriptor.
//! - **join rate per address** ([`JoinRate`]): a `POST` of an offer past the rate gets `429`
//!   with `Retry-After` before its body is read.
//! - **a panicking handler** answers `500` with a reason and a log line (tower-http's
//!   `CatchPanicLayer`) instead of resetting the connection.
//! - **accept errors** (`EMFILE` when descriptors run out): a pause that doubles up to 1 s and
//!   one log line a second at most ([`AcceptBackoff`]), counted in `/metrics`.
//!
//! Requests carry `ConnectInfo<SocketAddr>` (the client's address) as `axum::serve`'s
//! `into_make_service_with_connect_info` would add. HTTP/1 only, as before (axum's `http2`
//! feature is off).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::MAX_SDP_BYTES;
use super::auth::Auth;
use super::limits::{AcceptBackoff, ConnSlot, ConnTable, JoinRate, Refusal};
use crate::config::HttpLimits;

/// Descriptors kept for everything but HTTP connections (media sockets, pipelines, recordings)
/// when `--http-max-connections` is fitted to the open-file limit.
const FD_RESERVE: u64 = 1024;

/// What the listeners did, for `/metrics` (`tessera_http_*`). Shared by both listeners.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections open now.
    pub open: AtomicI64,
    /// Connections accepted and served.
    pub accepted: AtomicU64,
    /// Connections refused at `--http-max-connections`.
    pub refused_total: AtomicU64,
    /// Connections refused at `--http-max-connections-per-ip`.
    pub refused_per_ip: AtomicU64,
    /// `accept()` errors other than a connection reset before it was accepted (e.g. `EMFILE`).
    pub accept_errors: AtomicU64,
    /// Connections closed for request headers not received in time (slowloris, or nothing
    /// sent since the connection opened or since the previous response).
    pub header_timeouts: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Requests answered `408` for a body not received in time.
    pub body_timeouts: AtomicU64,
    /// Joins answered `429`.
    pub joins_limited: AtomicU64,
}

impl HttpStats {
    fn refused(&self, why: Refusal) {
        match why {
            Refusal::Total => &self.refused_total,
            Refusal::PerIp => &self.refused_per_ip,
        }
        .fetch_add(1, Relaxed);
    }
}

fn ms(v: u64) -> Option<Duration> {
    (v > 0).then(|| Duration::from_millis(v))
}

/// Raises this process's soft open-file limit to its hard limit (as servers commonly do at
/// start) and returns the soft limit then in force; `None` if it cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // `rlim_t` is not `u64` on every target.
    Some(lim.rlim_cur as u64)
}

/// `max` connections (`0`: as many as descriptors allow), lowered to the open-file limit
/// `fd_limit` less [`FD_RESERVE`] (at least 64); `0` (no cap) when the limit is unknown.
fn fit_to_fd_limit(max: usize, fd_limit: Option<u64>) -> usize {
    let Some(fds) = fd_limit else { return max };
    let room = fds.saturating_sub(FD_RESERVE).max(64) as usize;
    if max == 0 {
        room
    } else if max > room {
        tracing::warn!(
            requested = max,
            fd_limit = fds,
            using = room,
            "--http-max-connections lowered to fit the open-file limit (raise `ulimit -n` for more)"
        );
        room
    } else {
        max
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then stops accepting,
/// lets every connection finish its request (idle ones close at once), and returns once all have
/// closed.
///
/// # Errors
/// None so far: accept errors are paused on and counted, not returned (the signature is
/// `axum::serve`'s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stats: Arc<HttpStats>,
    auth: Auth,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let table =
        ConnTable::new(fit_to_fd_limit(limits.max_connections, raise_fd_limit()), limits.max_connections_per_ip);
    let timeouts = Timeouts { header: ms(limits.header_timeout_ms), idle: ms(limits.idle_timeout_ms) };
    let app = harden(app, &limits, stats.clone(), auth);
    let (close_tx, close_rx) = tokio::sync::watch::channel(());
    let mut backoff = AcceptBackoff::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(a) => {
                backoff.succeeded();
                a
            }
            // The client gave up between the handshake and accept(): nothing to pause for.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                stats.accept_errors.fetch_add(1, Relaxed);
                let (pause, log) = backoff.failed(Instant::now());
                if let Some(errors) = log {
                    tracing::error!(errors, pause_ms = pause.as_millis() as u64, "HTTP accept failed: {e}");
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
        let slot = match table.admit(remote.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                stats.refused(why);
                tracing::debug!(client = %remote, reason = why.label(), "HTTP connection refused");
                refuse(&stream, why);
                continue;
            }
        };
        stats.accepted.fetch_add(1, Relaxed);
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, remote, slot, app.clone(), timeouts, stats.clone(), close_rx.clone()));
    }
    drop(listener);
    drop(close_rx);
    close_tx.send_replace(());
    close_tx.closed().await;
    Ok(())
}

/// Errors of `accept()` that concern one connection only (as `axum::serve` tells them apart).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}

/// Answers a refused connection `503` in one non-blocking write (a fresh socket's buffer takes
/// it), then drops it.
fn refuse(stream: &TcpStream, why: Refusal) {
    let reason = match why {
        Refusal::Total => "too many connections to this server\n",
        Refusal::PerIp => "too many connections from your address\n",
    };
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{reason}",
        reason.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Option<Duration>,
    idle: Option<Duration>,
}

/// When a connection last moved a byte, and how many of its requests are being handled.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self { start: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicUsize::new(0) }
    }
    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Relaxed);
    }
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Relaxed))
    }
}

/// One request being handled; dropping it ends it.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Relaxed);
        Self(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
        self.0.touch();
    }
}

/// A socket that notes every byte moved in its [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Keeps the open-connections gauge.
struct Open(Arc<HttpStats>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// Serves one connection until it ends, times out, or the server shuts down.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    _slot: ConnSlot,
    app: Router,
    timeouts: Timeouts,
    stats: Arc<HttpStats>,
    mut close_rx: tokio::sync::watch::Receiver<()>,
) {
    stats.open.fetch_add(1, Relaxed);
    let _open = Open(stats.clone());
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked { inner: stream, activity: activity.clone() });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
            let app = app.clone();
            let in_flight = InFlight::begin(&activity);
            req.extensions_mut().insert(ConnectInfo(remote));
            async move {
                let r = tower::ServiceExt::oneshot(app, req.map(Body::new)).await;
                drop(in_flight);
                r
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(timeouts.header);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        let idle_at = timeouts.idle.map(|d| activity.last() + d);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        stats.header_timeouts.fetch_add(1, Relaxed);
                    }
                    tracing::debug!(client = %remote, "HTTP connection ended: {e}");
                }
                break;
            }
            _ = close_rx.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = sleep_until(idle_at) => {
                let idle = timeouts.idle.unwrap_or(Duration::MAX);
                if activity.in_flight.load(Relaxed) == 0 && activity.last().elapsed() >= idle {
                    stats.idle_timeouts.fetch_add(1, Relaxed);
                    tracing::debug!(client = %remote, "HTTP connection idle: closed");
                    break;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The limits applied per request, around `app`.
struct Guards {
    stats: Arc<HttpStats>,
    /// Checks the client-address vouchers of forwarded calls (`forward::client_address`).
    auth: Auth,
    joins: Mutex<JoinRate>,
    body_timeout: Option<Duration>,
}

/// `app` with the body deadline, the join rate limit around it (a refused join's body is never
/// read), and a panic catcher around both.
fn harden(app: Router, limits: &HttpLimits, stats: Arc<HttpStats>, auth: Auth) -> Router {
    let guards = Arc::new(Guards {
        stats,
        auth,
        joins: Mutex::new(JoinRate::new(limits.joins_per_minute_per_ip)),
        body_timeout: ms(limits.body_timeout_ms),
    });
    app.layer(axum::middleware::from_fn_with_state(guards.clone(), read_body_in_time))
        .layer(axum::middleware::from_fn_with_state(guards, limit_joins))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
}

/// The answer to a request whose handler panicked: a bug, logged with the panic's message.
fn panicked(panic: Box<dyn std::any::Any + Send>) -> Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!("request handler panicked: {what}");
    refusal(StatusCode::INTERNAL_SERVER_ERROR, "internal error: the request handler failed\n".into())
}

/// Whether a request is a join: a `POST` to `/v1/rooms/{room}/participants`, `/whip/{room}` or
/// `/whep/{room}`.
fn is_join(method: &Method, path: &str) -> bool {
    if method != Method::POST {
        return false;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    matches!(segments.as_slice(), ["whip" | "whep", room] if !room.is_empty())
        || matches!(segments.as_slice(), ["v1", "rooms", room, "participants"] if !room.is_empty())
}

/// A one-line refusal from this layer (outside the router's CORS layer, so it says `*` itself).
fn refusal(status: StatusCode, reason: String) -> Response {
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")];
    (status, headers, reason).into_response()
}

async fn limit_joins(State(g): State<Arc<Guards>>, req: Request, next: Next) -> Response {
    if is_join(req.method(), req.uri().path())
        && let Some(ConnectInfo(client)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied()
    {
        // A join a node forwarded counts against the client it vouched for.
        let client = super::forward::client_address(&req, client.ip(), &g.auth);
        let verdict = g.joins.lock().unwrap().check(client, Instant::now());
        if let Err(wait) = verdict {
            g.stats.joins_limited.fetch_add(1, Relaxed);
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            let per_minute = g.joins.lock().unwrap().per_minute();
            tracing::info!(%client, retry_after_s = secs, "join refused: rate limit");
            let reason = format!("too many joins from {client}: at most {per_minute} a minute; retry in {secs} s\n");
            let mut r = refusal(StatusCode::TOO_MANY_REQUESTS, reason);
            r.headers_mut().insert(header::RETRY_AFTER, secs.into());
            return r;
        }
    }
    next.run(req).await
}

/// Why a body could not be read whole.
enum BodyError {
    TooLarge,
    Failed(axum::Error),
}

/// Reads `body` (at most [`MAX_SDP_BYTES`]).
async fn read_body(mut body: Body) -> Result<bytes::Bytes, BodyError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(data) = frame.map_err(BodyError::Failed)?.into_data() {
            if buf.len() + data.len() > MAX_SDP_BYTES {
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

async fn read_body_in_time(State(g): State<Arc<Guards>>, req: Request, next: Next) -> Response {
    let Some(limit) = g.body_timeout else { return next.run(req).await };
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let close = |mut r: Response| {
        // The rest of the body is unread: the connection cannot carry another request.
        r.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        r
    };
    match tokio::time::timeout(limit, read_body(body)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(BodyError::TooLarge)) => close(refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {} KiB\n", MAX_SDP_BYTES / 1024),
        )),
        Ok(Err(BodyError::Failed(e))) => {
            close(refusal(StatusCode::BAD_REQUEST, format!("request body could not be read: {e}\n")))
        }
        Err(_) => {
            g.stats.body_timeouts.fetch_add(1, Relaxed);
            tracing::info!(path = %parts.uri.path(), "request body not received in time: 408");
            close(refusal(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {} ms\n", limit.as_millis()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_are_posts_of_offers() {
        for path in ["/whip/r", "/whep/r", "/v1/rooms/r/participants"] {
            assert!(is_join(&Method::POST, path), "{path}");
            assert!(!is_join(&Method::GET, path), "GET {path}");
        }
        for path in ["/whip/", "/whip", "/v1/rooms/r", "/v1/rooms/r/participants/p", "/v1/rooms/r/recordings", "/"] {
            assert!(!is_join(&Method::POST, path), "{path}");
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_a_stalled_body_408() {
        use axum::routing::{get, post};
        async fn buggy() -> &'static str {
            panic!("a bug")
        }
        let app =
            Router::new().route("/panic", get(buggy)).route("/echo", post(|body: bytes::Bytes| async move { body }));
        let limits = HttpLimits { body_timeout_ms: 50, ..HttpLimits::default() };
        let app = harden(app, &limits, Arc::default(), Auth::new(None));
        let send = |req| tower::ServiceExt::oneshot(app.clone(), req);
        let r = send(Request::get("/panic").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let text = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(&text[..], b"internal error: the request handler failed\n");
        // A body that never ends.
        struct Stalled;
        impl HttpBody for Stalled {
            type Data = bytes::Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>> {
                Poll::Pending
            }
        }
        let r = send(Request::post("/echo").body(Body::new(Stalled)).unwrap()).await.unwrap();
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);
        let r = send(Request::post("/echo").body(Body::from("hello")).unwrap()).await.unwrap();
        assert_eq!(axum::body::to_bytes(r.into_body(), 1024).await.unwrap(), "hello");
    }

    #[test]
    fn the_connection_cap_fits_the_descriptor_limit() {
        assert_eq!(fit_to_fd_limit(8192, Some(1 << 20)), 8192);
        assert_eq!(fit_to_fd_limit(8192, Some(4096)), 3072);
        assert_eq!(fit_to_fd_limit(0, Some(4096)), 3072);
        assert_eq!(fit_to_fd_limit(8192, Some(100)), 64);
        assert_eq!(fit_to_fd_limit(8192, None), 8192);
    }
}
