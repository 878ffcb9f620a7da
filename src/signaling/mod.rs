//! Signaling and control over HTTP (axum): participants (offer/answer, non-trickle), WHIP
//! (RFC 9725) ingest, WHEP viewers, the rooms control API, Prometheus metrics, the OpenAPI
//! document and the embedded web client. Every refusal is an HTTP status with a one-line reason
//! in the body; none of them touches a room.

pub mod auth;
pub mod forward;
pub mod http;
mod join;
pub mod limits;
mod metrics;
mod node_api;
mod outputs_api;
mod rooms_api;
pub mod sdp;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use rust_embed::RustEmbed;
use serde::Deserialize;
use tower_http::cors::{Any, CorsLayer};

use crate::cluster::RoomDirectory;
use crate::media::layout::{Layout, LayoutSpec};
use crate::room::{JoinKind, JoinRequest, RoomError, RoomOptions, Rooms, Source};
use crate::transport::TransportError;
use auth::{Auth, AuthError, Need};
use join::{join_participant, join_whep, join_whip, leave};
pub use metrics::{MetricsOptions, metrics_router};
use node_api::{drain, readyz};
use outputs_api::{
    get_recording, list_egress, list_recordings, recording_file, start_egress, start_recording, stop_egress,
    stop_recording,
};
use rooms_api::{delete_room, get_layout, get_room, list_rooms, mute, put_layout, put_room};
use sdp::OfferError;
use webrtc::peer_connection::RTCIceServer;

/// Largest accepted request body, bytes (64 KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Errors of the HTTP API, each mapped to a status and a reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 415: the body must be `application/sdp` (or JSON for control calls).
    #[error("Content-Type must be {0}")]
    UnsupportedMediaType(&'static str),
    /// 400: a bad name, body or parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 400 or 422: the offer was refused.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// 404: no such room or participant.
    #[error("{0} not found")]
    NotFound(String),
    /// 401/403.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// From the room engine.
    #[error(transparent)]
    Room(#[from] RoomError),
    /// 500: the server failed in a way the request did not cause (e.g. a join task panicked).
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Offer(OfferError::NoCommonCodec(_)) | ApiError::Offer(OfferError::NothingToDo) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Offer(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Auth(AuthError::WrongRoom { .. } | AuthError::Forbidden(_)) => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::Room(RoomError::Transport(TransportError::Offer(_))) => StatusCode::BAD_REQUEST,
            ApiError::Room(RoomError::Transport(TransportError::NoPort(_)) | RoomError::Refused(_)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Room(RoomError::Full(_) | RoomError::Conflict(_)) => StatusCode::CONFLICT,
            ApiError::Room(RoomError::Invalid(_)) => StatusCode::BAD_REQUEST,
            ApiError::Room(RoomError::NoParticipant(_) | RoomError::NoRecording(_)) => StatusCode::NOT_FOUND,
            ApiError::Room(RoomError::Recording(crate::outputs::recording::RecordingError::BadName(_))) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Room(RoomError::Egress(crate::outputs::egress::EgressError::BadTarget(_))) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Room(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(%status, "{self}");
        } else {
            tracing::info!(%status, "refused: {self}");
        }
        let mut r =
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{self}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let retry_after = match &self {
            ApiError::Room(RoomError::Refused(refusal)) => Some(refusal.retry_after()),
            ApiError::Room(RoomError::Transport(TransportError::NoPort(_))) => {
                Some(crate::room::admission::RETRY_NO_PORT)
            }
            _ => None,
        };
        if let Some(after) = retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
        }
        r
    }
}

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Every room.
    pub rooms: Arc<Rooms>,
    /// Token checks.
    pub auth: Auth,
    /// Where requests for a room run: here alone, or on the node that owns it.
    pub directory: Arc<dyn RoomDirectory>,
    /// The client that proxies requests to other nodes.
    proxy: Arc<forward::Proxy>,
    metrics: Arc<metrics::Metrics>,
}

impl AppState {
    /// State for `rooms` with `auth`, on a node alone.
    pub fn new(rooms: Arc<Rooms>, auth: Auth) -> Self {
        let directory = Arc::new(crate::cluster::Alone::new("tessera"));
        Self { rooms, auth, directory, proxy: Arc::default(), metrics: Arc::default() }
    }

    /// The same state on a node whose rooms `directory` places (several nodes through Redis).
    pub fn with_directory(mut self, directory: Arc<dyn RoomDirectory>) -> Self {
        self.directory = directory;
        self
    }

    /// What the HTTP listeners count ([`http::serve`] adds to it; `/metrics` shows it).
    pub fn http_stats(&self) -> Arc<http::HttpStats> {
        self.metrics.http.clone()
    }
}

/// The HTTP routes: the API, the OpenAPI document's paths (a test checks that they agree), CORS
/// open to any origin, bodies capped at [`MAX_SDP_BYTES`]. Only a CORS preflight (an `OPTIONS`
/// with `Access-Control-Request-Method`) is answered by the CORS layer; a plain `OPTIONS` reaches
/// the endpoint (RFC 9725 §4.2: `204` with `Accept-Post`), which tower-http's layer would take.
pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::IF_MATCH])
        .expose_headers([header::LOCATION, header::LINK, header::ETAG, header::RETRY_AFTER]);
    // With a listener of its own, `/metrics` falls to `/{file}` here: a 404.
    let metrics_here = state.metrics.on_main_listener();
    let plain = routes()
        .into_iter()
        .filter(|(path, _)| *path != "/metrics" || metrics_here)
        .fold(Router::new(), |r, (path, methods)| r.route(path, methods))
        .layer(DefaultBodyLimit::max(MAX_SDP_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), forward::forward))
        .with_state(state);
    plain
        .clone()
        .layer(cors)
        .layer(axum::middleware::from_fn_with_state(plain, plain_options_skip_cors))
        .layer(axum::middleware::map_response(reason_for_too_large))
}

/// A body over [`MAX_SDP_BYTES`] is refused by axum's body limit with its own text: answer with
/// Tessera's one-line reason instead.
async fn reason_for_too_large(r: Response) -> Response {
    if r.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return r;
    }
    let reason = format!("request body larger than {} KiB\n", MAX_SDP_BYTES / 1024);
    (StatusCode::PAYLOAD_TOO_LARGE, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], reason).into_response()
}

/// Sends a plain `OPTIONS` (no `Access-Control-Request-Method`: not a CORS preflight) past the
/// CORS layer to the routes themselves.
async fn plain_options_skip_cors(
    State(plain): State<Router>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let plain_options =
        req.method() == Method::OPTIONS && !req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if plain_options {
        tower::ServiceExt::oneshot(plain, req).await.unwrap_or_else(|e| match e {})
    } else {
        next.run(req).await
    }
}

/// `Link` header values for the ICE servers clients should use (RFC 9725 §4.6, RFC 8288), with
/// TURN credentials as `username`/`credential` parameters.
fn ice_server_links(servers: &[RTCIceServer]) -> Vec<HeaderValue> {
    let quote = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    servers
        .iter()
        .flat_map(|s| {
            s.urls.iter().map(move |url| {
                let mut v = format!("<{url}>; rel=\"ice-server\"");
                if !s.username.is_empty() {
                    v.push_str(&format!(
                        "; username=\"{}\"; credential=\"{}\"; credential-type=\"password\"",
                        quote(&s.username),
                        quote(&s.credential)
                    ));
                }
                v
            })
        })
        .filter_map(|v| HeaderValue::from_str(&v).ok())
        .collect()
}

/// Every route: its path (axum syntax, as in `openapi.json`) and handlers by method.
fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    let no_trickle = || async {
        let reason = "trickle ICE is not supported: send a complete offer\n";
        (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "DELETE")], reason)
    };
    vec![
        ("/healthz", get(|| async { "ok\n" })),
        ("/readyz", get(readyz)),
        ("/v1/drain", post(drain)),
        ("/metrics", get(metrics::handler)),
        ("/v1/openapi.json", get(openapi)),
        ("/v1/config", get(client_config)),
        ("/v1/rooms", get(list_rooms)),
        ("/v1/rooms/{room}", get(get_room).put(put_room).delete(delete_room)),
        ("/v1/rooms/{room}/layout", get(get_layout).put(put_layout)),
        ("/v1/rooms/{room}/participants", post(join_participant).options(sdp_options)),
        ("/v1/rooms/{room}/participants/{id}", delete(leave).patch(no_trickle)),
        ("/v1/rooms/{room}/participants/{id}/mute", put(mute)),
        ("/v1/rooms/{room}/recordings", post(start_recording).get(list_recordings)),
        ("/v1/rooms/{room}/recordings/{id}", get(get_recording).delete(stop_recording)),
        ("/v1/rooms/{room}/recordings/{id}/file", get(recording_file)),
        ("/v1/rooms/{room}/egress", post(start_egress).get(list_egress)),
        ("/v1/rooms/{room}/egress/{id}", delete(stop_egress)),
        ("/whip/{room}", post(join_whip).options(sdp_options)),
        ("/whep/{room}", post(join_whep).options(sdp_options)),
        ("/", get(|| asset("index.html".to_string()))),
        ("/{file}", get(|Path(file): Path<String>| asset(file))),
    ]
}

async fn asset(file: String) -> Response {
    match Assets::get(&file) {
        Some(f) => {
            let mime = match file.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("json") => "application/json",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")], f.data.into_owned()).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}

/// `OPTIONS` on an SDP endpoint (RFC 9725 §4.2): what may be posted, and the ICE servers
/// (§4.6) for a client that configures ICE before its offer.
async fn sdp_options(State(st): State<AppState>) -> Response {
    let mut r = (StatusCode::NO_CONTENT, [("accept-post", "application/sdp")]).into_response();
    for link in ice_server_links(st.rooms.deps().transport.ice_servers()) {
        r.headers_mut().append(header::LINK, link);
    }
    r
}

async fn client_config(State(st): State<AppState>) -> impl IntoResponse {
    let servers: Vec<serde_json::Value> = st
        .rooms
        .deps()
        .transport
        .ice_servers()
        .iter()
        .map(|s| serde_json::json!({"urls": s.urls, "username": s.username, "credential": s.credential}))
        .collect();
    // Simulcast publishing: the server decodes each publisher at the layer that fits its tile.
    // H.264 first where a GPU encodes it (`tessera doctor`'s policy), VP8 first on the CPU.
    let h264 = st.rooms.deps().backends.serving().into_iter().find(|(r, _)| *r == crate::pipelines::Role::H264Encode);
    let order = crate::doctor::video_codec_order(h264.and_then(|(_, b)| b).as_deref());
    axum::Json(serde_json::json!({
        "ice_servers": servers,
        "auth": st.auth.enabled(),
        "simulcast": true,
        "video_codec_order": order,
    }))
}

fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType("application/json"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad JSON: {e}")))
}

/// Room names: 1–64 of `A-Z a-z 0-9 _ - .`.
fn check_room_name(room: &str) -> Result<(), ApiError> {
    let ok = !room.is_empty()
        && room.len() <= 64
        && room.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        // `.` and `..` (and other all-dot names) are path segments URLs normalise away.
        && !room.chars().all(|c| c == '.');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("room name {room:?}: use 1-64 of A-Z a-z 0-9 _ - ., not only dots")))
    }
}

/// Whether a `Range` header value is well-formed per RFC 9110 §14.1.2 (`bytes=` and a list of
/// `first-last`, `first-` or `-suffix`); a malformed one is to be ignored (§14.2), not refused.
fn range_is_well_formed(v: &str) -> bool {
    let Some(set) = v.trim().strip_prefix("bytes=") else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    set.split(',').all(|spec| match spec.trim().split_once('-') {
        Some((a, b)) => (digits(a) && (b.is_empty() || digits(b))) || (a.is_empty() && digits(b)),
        None => false,
    })
}

/// The room `room`, or 404.
/// `201 Created` with `Location: location` (a path of ASCII ids) and `body` as JSON: what a call
/// that makes a resource answers (a recording, an egress).
fn created(location: &str, body: impl serde::Serialize) -> Response {
    let location = HeaderValue::from_str(location).expect("ids are ASCII");
    (StatusCode::CREATED, [(header::LOCATION, location)], axum::Json(body)).into_response()
}

fn room_of(st: &AppState, room: &str) -> Result<Arc<crate::room::Room>, ApiError> {
    st.rooms.get(room).ok_or_else(|| ApiError::NotFound(format!("room {room:?}")))
}

/// An app state for unit tests: rooms of 320x180 output on ephemeral media ports, no tokens.
#[cfg(test)]
pub(super) fn test_state() -> AppState {
    let cfg = crate::config::Config { udp_port: 0, tcp_port: 0, ..crate::config::Config::default() };
    let deps = crate::room::RoomDeps {
        transport: crate::transport::Transport::new(&cfg).unwrap(),
        backends: crate::pipelines::Backends::new("cpu", None),
        format: crate::media::tiers::OutputFormat { width: 320, height: 180, fps: 30, kbps: 300 },
        audio_kbps: 32,
        jitter_ms: 50,
        recordings_dir: std::env::temp_dir(),
        storage: None,
        webhooks: Default::default(),
    };
    AppState::new(Arc::new(Rooms::new(deps)), Auth::new(None))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    const METHODS: [Method; 6] =
        [Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS];

    fn state() -> AppState {
        test_state()
    }

    /// Whether `method` on `path` reaches a handler: axum answers an unrouted one with an empty
    /// 404 or 405; every handler of Tessera's answers with a reason or content. The request is
    /// one no handler acts on (`text/plain` body, names of nothing that exists).
    async fn routed(app: &Router, method: &Method, path: &str) -> bool {
        let uri =
            path.replace("{room}", "no-such-room").replace("{id}", "no-such-id").replace("{file}", "no-such-file");
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("x"))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        !(matches!(status, StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED) && body.is_empty())
    }

    #[test]
    fn ranges_that_do_not_parse_are_told_apart() {
        for ok in ["bytes=0-5", "bytes=10-", "bytes=-100", "bytes=0-1, 5-9", "bytes=99999999-"] {
            assert!(range_is_well_formed(ok), "{ok}");
        }
        for bad in ["items=0-5", "bytes=abc", "bytes=", "bytes=5", "bytes=-", "bytes=1-x"] {
            assert!(!range_is_well_formed(bad), "{bad}");
        }
        assert!(check_room_name("..").is_err() && check_room_name(".").is_err() && check_room_name("a.b").is_ok());
    }

    #[test]
    fn ice_servers_become_link_headers() {
        let servers = [
            crate::transport::parse_ice_server("stun:stun.example.org:3478"),
            crate::transport::parse_ice_server("turn:u:p\"w@turn.example.org:3478?transport=udp"),
        ];
        let links: Vec<String> = ice_server_links(&servers).iter().map(|v| v.to_str().unwrap().to_string()).collect();
        assert_eq!(links[0], "<stun:stun.example.org:3478>; rel=\"ice-server\"");
        assert_eq!(
            links[1],
            "<turn:turn.example.org:3478?transport=udp>; rel=\"ice-server\"; username=\"u\"; credential=\"p\\\"w\"; credential-type=\"password\""
        );
    }

    #[tokio::test]
    async fn a_plain_options_reaches_the_endpoint_and_a_preflight_the_cors_layer() {
        let app = router(state());
        let send = |req: Request<Body>| app.clone().oneshot(req);
        let plain = send(Request::options("/whip/r").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(plain.status(), StatusCode::NO_CONTENT);
        assert_eq!(plain.headers()["accept-post"], "application/sdp");
        let preflight = Request::options("/whip/r")
            .header(header::ORIGIN, "https://example.org")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .unwrap();
        let preflight = send(preflight).await.unwrap();
        assert_eq!(preflight.status(), StatusCode::OK);
        assert!(preflight.headers().contains_key(header::ACCESS_CONTROL_ALLOW_METHODS));
        // Ordinary requests still get CORS headers.
        let get = Request::get("/healthz").header(header::ORIGIN, "https://example.org").body(Body::empty()).unwrap();
        assert_eq!(send(get).await.unwrap().headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }

    #[tokio::test]
    async fn every_route_is_documented_and_every_documented_path_is_routed() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).expect("openapi.json parses");
        let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .map(|(path, ops)| {
                let methods = ops
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter(|m| METHODS.iter().any(|x| x.as_str().eq_ignore_ascii_case(m)));
                (path.clone(), methods.map(|m| m.to_ascii_uppercase()).collect())
            })
            .collect();
        // Without the CORS layer, which answers every OPTIONS itself.
        let app =
            routes().into_iter().fold(Router::new(), |r, (path, methods)| r.route(path, methods)).with_state(state());
        let mut served = BTreeMap::new();
        for (path, _) in routes() {
            let mut methods = BTreeSet::new();
            for m in &METHODS {
                if routed(&app, m, path).await {
                    methods.insert(m.to_string());
                }
            }
            served.insert(path.to_string(), methods);
        }
        assert_eq!(served, documented, "routes (left) and openapi.json paths (right) differ");
    }
}
