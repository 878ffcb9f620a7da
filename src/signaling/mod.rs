//! Signaling over HTTP (axum): participants (offer/answer, non-trickle), WHIP (RFC 9725) ingest,
//! WHEP viewers, the rooms API, and the embedded web client. Every refusal is an HTTP status with
//! a one-line reason in the body; none of them touches a room.

pub mod sdp;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use rust_embed::RustEmbed;
use serde::Deserialize;
use tower_http::cors::{Any, CorsLayer};

use crate::room::{JoinKind, JoinRequest, RoomError, Rooms, Source};
use crate::transport::TransportError;
use sdp::{Endpoint, OfferError};

/// Largest accepted SDP body, bytes (64 KiB).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

#[derive(RustEmbed)]
#[folder = "assets/"]
struct Assets;

/// Errors of the HTTP API, each mapped to a status and a reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 415: the body must be `application/sdp`.
    #[error("Content-Type must be application/sdp")]
    UnsupportedMediaType,
    /// 400: the room or participant name is not acceptable.
    #[error("{0}")]
    BadName(String),
    /// 400 or 422: the offer was refused.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// 404: no such room or participant.
    #[error("{0} not found")]
    NotFound(String),
    /// 400/503/500 from joining.
    #[error(transparent)]
    Join(#[from] RoomError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadName(_) => StatusCode::BAD_REQUEST,
            ApiError::Offer(OfferError::NoCommonCodec(_)) | ApiError::Offer(OfferError::NothingToDo) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Offer(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Join(RoomError::Transport(TransportError::Offer(_))) => StatusCode::BAD_REQUEST,
            ApiError::Join(RoomError::Transport(TransportError::NoPort(_))) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Join(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(%status, "{self}");
        } else {
            tracing::info!(%status, "refused: {self}");
        }
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{self}\n")).into_response()
    }
}

/// State shared by the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Every room.
    pub rooms: Arc<Rooms>,
}

/// The HTTP routes.
pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::IF_MATCH])
        .expose_headers([header::LOCATION, header::LINK, header::ETAG]);
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/config", get(client_config))
        .route("/v1/rooms", get(list_rooms))
        .route("/v1/rooms/{room}", get(get_room))
        .route("/v1/rooms/{room}/participants", post(join_participant).options(sdp_options))
        .route(
            "/v1/rooms/{room}/participants/{id}",
            delete(leave).patch(|| async { (StatusCode::METHOD_NOT_ALLOWED, "trickle ICE is not supported: send a complete offer\n") }),
        )
        .route("/whip/{room}", post(join_whip).options(sdp_options))
        .route("/whep/{room}", post(join_whep).options(sdp_options))
        .route("/", get(|| asset("index.html")))
        .route("/{file}", get(|Path(file): Path<String>| asset(file)))
        .layer(DefaultBodyLimit::max(MAX_SDP_BYTES))
        .layer(cors)
        .with_state(state)
}

async fn asset(file: impl AsRef<str>) -> Response {
    let file = file.as_ref();
    match Assets::get(file) {
        Some(f) => {
            let mime = match file.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            ([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")], f.data.into_owned()).into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// `OPTIONS` on an SDP endpoint (RFC 9725 §4.2): what may be posted.
async fn sdp_options() -> impl IntoResponse {
    (StatusCode::NO_CONTENT, [("accept-post", "application/sdp")])
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
    axum::Json(serde_json::json!({ "ice_servers": servers }))
}

async fn list_rooms(State(st): State<AppState>) -> impl IntoResponse {
    let rooms: Vec<_> = st.rooms.all().iter().map(|r| r.info()).collect();
    axum::Json(serde_json::json!({ "rooms": rooms }))
}

async fn get_room(State(st): State<AppState>, Path(room): Path<String>) -> Result<Response, ApiError> {
    let r = st.rooms.get(&room).ok_or_else(|| ApiError::NotFound(format!("room {room:?}")))?;
    Ok(axum::Json(r.info()).into_response())
}

#[derive(Deserialize)]
struct JoinQuery {
    name: Option<String>,
}

async fn join_participant(
    State(st): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<JoinQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    join(st, room, q.name, headers, body, Endpoint::Participant, JoinKind::Participant).await
}

async fn join_whip(
    State(st): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<JoinQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    join(st, room, q.name, headers, body, Endpoint::Whip, JoinKind::Whip).await
}

async fn join_whep(
    State(st): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<JoinQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    join(st, room, q.name, headers, body, Endpoint::Whep, JoinKind::Whep).await
}

/// Room names: 1–64 of `A-Z a-z 0-9 _ - .`.
fn check_room_name(room: &str) -> Result<(), ApiError> {
    let ok = !room.is_empty()
        && room.len() <= 64
        && room.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok { Ok(()) } else { Err(ApiError::BadName(format!("room name {room:?}: use 1-64 of A-Z a-z 0-9 _ - ."))) }
}

async fn join(
    st: AppState,
    room: String,
    name: Option<String>,
    headers: HeaderMap,
    body: Bytes,
    endpoint: Endpoint,
    kind: JoinKind,
) -> Result<Response, ApiError> {
    check_room_name(&room)?;
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !is_sdp {
        return Err(ApiError::UnsupportedMediaType);
    }
    let name = name.unwrap_or_else(|| match kind {
        JoinKind::Whep => "viewer".into(),
        _ => "guest".into(),
    });
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadName("name: at most 64 printable characters".into()));
    }
    let offer = std::str::from_utf8(&body).map_err(|_| OfferError::Malformed("body is not UTF-8".into()))?;
    let plan = sdp::plan(offer, endpoint)?;
    let req = JoinRequest { name, kind, source: Source::Camera, offer: offer.to_string(), plan };
    let (id, answer) = st.rooms.join(&room, req).await?;
    let location = format!("/v1/rooms/{room}/participants/{id}");
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/sdp")),
            (header::LOCATION, HeaderValue::from_str(&location).expect("ascii location")),
            (header::ETAG, HeaderValue::from_str(&format!("\"{id}\"")).expect("ascii etag")),
        ],
        answer,
    )
        .into_response())
}

async fn leave(State(st): State<AppState>, Path((room, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    if st.rooms.leave(&room, &id, "left").await {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(format!("participant {id:?} in room {room:?}")))
    }
}
