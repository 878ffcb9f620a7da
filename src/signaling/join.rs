//! Joins (participant, WHIP, WHEP: an SDP offer in, the answer and a `Location` out) and leaves.

use super::sdp::Endpoint;
use super::*;

#[derive(Deserialize)]
pub(super) struct JoinQuery {
    name: Option<String>,
    source: Option<String>,
}

pub(super) async fn join_participant(
    State(st): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<JoinQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    join(st, room, q, headers, body, Endpoint::Participant, JoinKind::Participant).await
}

pub(super) async fn join_whip(
    State(st): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<JoinQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    join(st, room, q, headers, body, Endpoint::Whip, JoinKind::Whip).await
}

pub(super) async fn join_whep(
    State(st): State<AppState>,
    Path(room): Path<String>,
    Query(q): Query<JoinQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    join(st, room, q, headers, body, Endpoint::Whep, JoinKind::Whep).await
}

async fn join(
    st: AppState,
    room: String,
    q: JoinQuery,
    headers: HeaderMap,
    body: Bytes,
    endpoint: Endpoint,
    kind: JoinKind,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    check_room_name(&room)?;
    let claims = st.auth.check(&headers, Some(&room), Need::Member)?;
    let is_sdp = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !is_sdp {
        return Err(ApiError::UnsupportedMediaType("application/sdp"));
    }
    let source = match q.source.as_deref() {
        None | Some("camera") => Source::Camera,
        Some("screen") => Source::Screen,
        Some(s) => return Err(ApiError::BadRequest(format!("source {s:?}: use camera or screen"))),
    };
    let name = claims.as_ref().and_then(|c| c.name.clone()).or(q.name).unwrap_or_else(|| match kind {
        JoinKind::Whep => "viewer".into(),
        _ => "guest".into(),
    });
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("name: at most 64 printable characters".into()));
    }
    if name.contains('\u{FFFD}') {
        // The query decoder replaces bytes that are not UTF-8 (`?name=%FF%FE`).
        return Err(ApiError::BadRequest("name: not valid UTF-8".into()));
    }
    let offer = std::str::from_utf8(&body).map_err(|_| OfferError::Malformed("body is not UTF-8".into()))?;
    let sdp::OfferPlan { session: mut plan, rejected } = sdp::plan(offer, endpoint)?;
    if source == Source::Screen {
        if !(plan.publish_video) {
            return Err(ApiError::BadRequest("a screen share must send video".into()));
        }
        // A screen share is a second, send-only session: it neither hears nor sees the room.
        plan.receive_audio = false;
        plan.receive_video = None;
        plan.codec_choice = None;
    }
    if let Some(c) = &claims {
        if (plan.publish_audio || plan.publish_video) && !(c.grants.publish || c.grants.admin) {
            return Err(AuthError::Forbidden("publish").into());
        }
        if (plan.receive_audio || plan.receive_video.is_some()) && !(c.grants.subscribe || c.grants.admin) {
            return Err(AuthError::Forbidden("subscribe").into());
        }
    }
    let identity = claims.map(|c| c.sub);
    let req = JoinRequest { name, kind, source, offer: offer.to_string(), plan, rejected, identity };
    // A join runs to the end even if the client hangs up meanwhile (hyper then drops this
    // handler): a half-made participant (a tile without a session) would stay in the room. One
    // that joined for nobody goes when its connection fails.
    let rooms = st.rooms.clone();
    let room_name = room.clone();
    let (id, answer) = tokio::spawn(async move { rooms.join(&room_name, req).await })
        .await
        .map_err(|e| ApiError::Internal(format!("join of {room}: {e}")))??;
    let location = format!("/v1/rooms/{room}/participants/{id}");
    let mut r = (
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/sdp")),
            (header::LOCATION, HeaderValue::from_str(&location).expect("ascii location")),
            (header::ETAG, HeaderValue::from_str(&format!("\"{id}\"")).expect("ascii etag")),
        ],
        answer,
    )
        .into_response();
    for link in ice_server_links(st.rooms.deps().transport.ice_servers()) {
        r.headers_mut().append(header::LINK, link);
    }
    st.metrics.observe_join(started.elapsed());
    Ok(r)
}

/// `DELETE` a participant: the participant itself (a token with its identity) leaves; an admin
/// kicks.
pub(super) async fn leave(
    State(st): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let claims = st.auth.check(&headers, Some(&room), Need::Member)?;
    let r = room_of(&st, &room)?;
    let owner = r.identity_of(&id).ok_or_else(|| ApiError::NotFound(format!("participant {id:?} in room {room:?}")))?;
    let reason = match &claims {
        None => "left",
        Some(c) if owner.as_deref() == Some(c.sub.as_str()) => "left",
        Some(c) if c.grants.admin => "kicked",
        Some(_) => return Err(AuthError::Forbidden("admin").into()),
    };
    if st.rooms.leave(&room, &id, reason).await {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(format!("participant {id:?} in room {room:?}")))
    }
}
