//! The node itself: readiness (`GET /readyz`, for load balancers) and draining (`POST /v1/drain`).

use super::*;

/// `GET /readyz`: `200` while the node takes new rooms and joins, `503` while it is full
/// (`--max-load`, `--max-rooms`) or draining; the body is [`crate::room::Readiness`] as JSON
/// either way. No token needed: it names no room.
pub(super) async fn readyz(State(st): State<AppState>) -> Response {
    let r = st.rooms.readiness();
    let status = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut resp = (status, axum::Json(&r)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `POST /v1/drain` (admin token for every room, `*`): the node takes no new rooms or joins from
/// now on and each room ends when its last participant leaves; the process keeps running (SIGTERM
/// drains and then exits). `202` with the readiness JSON; again while draining: the same.
pub(super) async fn drain(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.auth.check(&headers, None, Need::Admin)?;
    if st.rooms.start_drain() {
        tracing::info!("drain asked over HTTP");
    }
    Ok((StatusCode::ACCEPTED, axum::Json(st.rooms.readiness())).into_response())
}
