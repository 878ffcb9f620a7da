//! Recordings and egress of a room over HTTP: start, list, read, stop, download (with `Range`).

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordingBody {
    format: crate::outputs::recording::Format,
    file: Option<String>,
}

pub(super) async fn start_recording(
    State(st): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    let r = room_of(&st, &room)?;
    let b: RecordingBody = json_body(&headers, &body)?;
    let info = r.start_recording(b.format, b.file.as_deref())?;
    Ok(created(&format!("/v1/rooms/{room}/recordings/{}", info.id), info))
}

pub(super) async fn list_recordings(
    State(st): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    Ok(axum::Json(serde_json::json!({ "recordings": room_of(&st, &room)?.recordings() })).into_response())
}

pub(super) async fn get_recording(
    State(st): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    let rec = room_of(&st, &room)?.recording(&id).ok_or(RoomError::NoRecording(id))?;
    Ok(axum::Json(rec.info()).into_response())
}

pub(super) async fn stop_recording(
    State(st): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    let info = room_of(&st, &room)?.stop_recording(&id).await?;
    Ok(axum::Json(info).into_response())
}

/// Downloads a recording's file, with HTTP range support (RFC 9110 §14).
pub(super) async fn recording_file(
    State(st): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    let rec = room_of(&st, &room)?.recording(&id).ok_or(RoomError::NoRecording(id))?;
    let mut req = req;
    if req.headers().get(header::RANGE).is_some_and(|v| !v.to_str().is_ok_and(range_is_well_formed)) {
        // RFC 9110 §14.2: a Range that does not parse is ignored: the whole file, 200.
        req.headers_mut().remove(header::RANGE);
    }
    let serve = tower_http::services::ServeFile::new(rec.path());
    let resp = tower::ServiceExt::oneshot(serve, req).await.unwrap_or_else(|e| match e {});
    Ok(resp.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EgressBody {
    url: Option<String>,
    hls: Option<String>,
}

pub(super) async fn start_egress(
    State(st): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    let r = room_of(&st, &room)?;
    let b: EgressBody = json_body(&headers, &body)?;
    let info = r.start_egress(b.url.as_deref(), b.hls.as_deref())?;
    Ok(created(&format!("/v1/rooms/{room}/egress/{}", info.id), info))
}

pub(super) async fn list_egress(
    State(st): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    Ok(axum::Json(serde_json::json!({ "egress": room_of(&st, &room)?.egresses() })).into_response())
}

pub(super) async fn stop_egress(
    State(st): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    let info = room_of(&st, &room)?.stop_egress(&id).await?;
    Ok(axum::Json(info).into_response())
}
