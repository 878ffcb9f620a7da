//! Requests for a room another node runs: proxied there (a reverse proxy, not a redirect:
//! browsers drop `Authorization` on a cross-origin redirect, and a WHIP client would have to
//! follow one). Method, path, query, headers (`Authorization` included) and body go as they came;
//! status, headers (`Location`, `Link`, `ETag`, `Retry-After`) and body come back as the owner
//! answered, streamed (a recording file passes through). A proxied request carries
//! `X-Tessera-Forwarded: {node}` and is never proxied again (loop guard); the answer carries
//! `X-Tessera-Node: {owner}`.
//!
//! Which node: [`crate::cluster::RoomDirectory::route`]. Alone (no `--redis`) nothing is asked:
//! every request is served here.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::AppState;
use crate::cluster::{Ask, ClusterStats, NodeInfo, Route};

/// Set on a proxied request: the node that proxied it.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-tessera-forwarded");
/// The address of the client a node forwards a call for, as a voucher signed with the API secret
/// ([`crate::signaling::auth::Auth::vouch`]): the owner's per-address join limit counts that
/// client, not the forwarding node. Only sent when there is a secret; dropped from clients' calls.
pub const CLIENT: HeaderName = HeaderName::from_static("x-tessera-client");

/// The address per-address limits count for `req` from `peer`: the client a forwarding node
/// vouched for ([`CLIENT`], with [`FORWARDED`]), else `peer`.
pub fn client_address(req: &Request, peer: std::net::IpAddr, auth: &crate::signaling::auth::Auth) -> std::net::IpAddr {
    if !req.headers().contains_key(FORWARDED) {
        return peer;
    }
    req.headers().get(CLIENT).and_then(|v| v.to_str().ok()).and_then(|v| auth.vouched(v)).unwrap_or(peer)
}
/// Set on a proxied answer: the node that served it.
pub const SERVED_BY: HeaderName = HeaderName::from_static("x-tessera-node");

/// Longest wait for another node to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for another node's answer to begin (a join answers within a few seconds).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// A request path that names a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RoomCall {
    /// The room's name.
    pub room: String,
    /// It creates the room if there is none (a join, WHIP, WHEP, `PUT /v1/rooms/{room}`).
    pub creates: bool,
}

/// The room `path` names, if it names one: `/v1/rooms/{room}[/…]`, `/whip/{room}`, `/whep/{room}`.
/// `OPTIONS` (answered here: it names no room's state) and names that are not valid room names
/// (answered here with `400`) are not routed.
pub(super) fn room_call(method: &Method, path: &str) -> Option<RoomCall> {
    if method == Method::OPTIONS {
        return None;
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (room, creates) = match segs.as_slice() {
        ["v1", "rooms", room] => (*room, method == Method::PUT),
        ["v1", "rooms", room, "participants"] => (*room, method == Method::POST),
        ["v1", "rooms", room, _, ..] => (*room, false),
        ["whip" | "whep", room] => (*room, method == Method::POST),
        _ => return None,
    };
    super::check_room_name(room).ok()?;
    Some(RoomCall { room: room.to_string(), creates })
}

/// The middleware: a request that names a room this node does not run goes where the directory
/// says.
pub(super) async fn forward(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !st.directory.clustered() {
        return next.run(req).await;
    }
    let Some(call) = room_call(req.method(), req.uri().path()) else { return next.run(req).await };
    // A room here, or a request the handler refuses anyway (no token, wrong room): served here.
    let refused = call.creates && st.auth.check(req.headers(), Some(&call.room), super::Need::Member).is_err();
    if refused || st.rooms.get(&call.room).is_some() {
        return next.run(req).await;
    }
    let ask = Ask { creates: call.creates, forwarded: req.headers().contains_key(FORWARDED) };
    match st.directory.route(&call.room, ask).await {
        Route::Local { claimed } => {
            let r = next.run(req).await;
            if claimed {
                st.directory.publish().await;
            }
            r
        }
        Route::Forward(node) => proxy(&st, &call.room, &node, req).await,
        Route::Unavailable { reason, retry_after } => unavailable(&reason, retry_after),
    }
}

/// `503` with `reason` and `Retry-After` (whole seconds, at least 1).
fn unavailable(reason: &str, retry_after: Duration) -> Response {
    let mut r = (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response();
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs_f64().ceil().max(1.0) as u64));
    r
}

/// Proxies `req` to `node`; `503` with the reason when it does not answer.
async fn proxy(st: &AppState, room: &str, node: &NodeInfo, req: Request) -> Response {
    ClusterStats::count(&st.directory.stats().forwarded);
    let client = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    let voucher = client.and_then(|ip| st.auth.vouch(st.directory.node(), ip));
    match st.proxy.send(&node.url, st.directory.node(), voucher.as_deref(), req).await {
        Ok(mut r) => {
            strip(r.headers_mut(), true);
            if let Ok(v) = HeaderValue::from_str(&node.node) {
                r.headers_mut().insert(SERVED_BY, v);
            }
            r
        }
        Err(e) => {
            ClusterStats::count(&st.directory.stats().forward_failures);
            tracing::warn!(room, node = %node.node, url = %node.url, "forwarding failed: {e}");
            let reason = format!("room {room:?} runs on node {}, which did not answer: {e}", node.node);
            unavailable(&reason, Duration::from_secs(1))
        }
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1) and, from an answer, the other node's CORS
/// headers (this node's CORS layer adds its own).
fn strip(h: &mut HeaderMap, answer: bool) {
    let named: Vec<HeaderName> = h
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').filter_map(|n| HeaderName::try_from(n.trim()).ok()).collect())
        .unwrap_or_default();
    for n in named {
        h.remove(n);
    }
    for n in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"] {
        h.remove(n);
    }
    if answer {
        let cors: Vec<HeaderName> =
            h.keys().filter(|k| k.as_str().starts_with("access-control-") || *k == header::VARY).cloned().collect();
        for k in cors {
            h.remove(k);
        }
    } else {
        h.remove(header::HOST);
        h.remove(CLIENT);
    }
}

/// The HTTP client that talks to other nodes (HTTP/1.1, pooled connections).
pub struct Proxy {
    client: Client<HttpConnector, Body>,
}

impl Default for Proxy {
    fn default() -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(http);
        Self { client }
    }
}

impl Proxy {
    /// Sends `req` to the node at `base` (`http://host:port`) as node `me` forwarding it, with
    /// `voucher` for its client's address ([`CLIENT`]); returns its answer with the body
    /// streaming.
    ///
    /// # Errors
    /// The connection failed, or no answer began within [`ANSWER_TIMEOUT`].
    pub async fn send(&self, base: &str, me: &str, voucher: Option<&str>, req: Request) -> Result<Response, String> {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("{base}{path}").parse::<Uri>().map_err(|e| format!("{base}{path}: {e}"))?;
        strip(&mut parts.headers, false);
        parts.headers.insert(FORWARDED, HeaderValue::from_str(me).map_err(|e| e.to_string())?);
        if let Some(v) = voucher.and_then(|v| HeaderValue::from_str(v).ok()) {
            parts.headers.insert(CLIENT, v);
        }
        parts.version = axum::http::Version::HTTP_11;
        let sent = self.client.request(Request::from_parts(parts, body));
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, sent)
            .await
            .map_err(|_| format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()))?
            .map_err(|e| {
                let mut why = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    why.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                why
            })?;
        Ok(answer.map(Body::new))
    }

    /// `GET {base}{path}` with `authorization` as node `me`; the answer's status and body (at most
    /// 16 MiB).
    ///
    /// # Errors
    /// As [`Proxy::send`], or the body failed to arrive.
    pub async fn get(
        &self,
        base: &str,
        path: &str,
        me: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<(StatusCode, bytes::Bytes), String> {
        let mut req = Request::get(path).body(Body::empty()).map_err(|e| e.to_string())?;
        if let Some(a) = authorization {
            req.headers_mut().insert(header::AUTHORIZATION, a.clone());
        }
        let r = self.send(base, me, None, req).await?;
        let status = r.status();
        let body = axum::body::to_bytes(r.into_body(), 16 << 20).await.map_err(|e| e.to_string())?;
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(room: &str, creates: bool) -> Option<RoomCall> {
        Some(RoomCall { room: room.into(), creates })
    }

    #[test]
    fn paths_that_name_a_room_and_those_that_create_it() {
        assert_eq!(room_call(&Method::POST, "/v1/rooms/r1/participants"), call("r1", true));
        assert_eq!(room_call(&Method::POST, "/whip/r1"), call("r1", true));
        assert_eq!(room_call(&Method::POST, "/whep/r1"), call("r1", true));
        assert_eq!(room_call(&Method::PUT, "/v1/rooms/r1"), call("r1", true));
        assert_eq!(room_call(&Method::GET, "/v1/rooms/r1"), call("r1", false));
        assert_eq!(room_call(&Method::DELETE, "/v1/rooms/r1"), call("r1", false));
        assert_eq!(room_call(&Method::DELETE, "/v1/rooms/r1/participants/p1-abc"), call("r1", false));
        assert_eq!(room_call(&Method::PUT, "/v1/rooms/r1/participants/p1-abc/mute"), call("r1", false));
        assert_eq!(room_call(&Method::PUT, "/v1/rooms/r1/layout"), call("r1", false));
        assert_eq!(room_call(&Method::GET, "/v1/rooms/r1/recordings/rec1/file"), call("r1", false));
        assert_eq!(room_call(&Method::POST, "/v1/rooms/r1/egress"), call("r1", false));
    }

    #[test]
    fn paths_that_name_no_room_stay_here() {
        for (m, p) in [
            (Method::GET, "/v1/rooms"),
            (Method::GET, "/v1/rooms/"),
            (Method::GET, "/healthz"),
            (Method::GET, "/metrics"),
            (Method::POST, "/v1/drain"),
            (Method::OPTIONS, "/whip/r1"),
            (Method::POST, "/whip/bad%20name"),
            (Method::POST, "/whip/.."),
            (Method::GET, "/index.html"),
        ] {
            assert_eq!(room_call(&m, p), None, "{m} {p}");
        }
    }

    #[test]
    fn hop_by_hop_and_cors_headers_do_not_cross() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(header::LOCATION, HeaderValue::from_static("/v1/rooms/r/participants/p1"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        let mut answer = h.clone();
        strip(&mut answer, true);
        assert_eq!(answer.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["location", "authorization"]);
        strip(&mut h, false);
        assert!(h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) && h.contains_key(header::AUTHORIZATION));
    }
}
