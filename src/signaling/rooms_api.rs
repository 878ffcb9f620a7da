//! The rooms control API: list, read, create and close rooms, their layout, server mutes.

use super::*;

pub(super) async fn list_rooms(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.auth.check(&headers, None, Need::Admin)?;
    let rooms: Vec<_> = st.rooms.all().iter().map(|r| r.info()).collect();
    Ok(axum::Json(serde_json::json!({ "rooms": rooms })).into_response())
}

pub(super) async fn get_room(
    State(st): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Member)?;
    Ok(axum::Json(room_of(&st, &room)?.info()).into_response())
}

pub(super) async fn put_room(
    State(st): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    check_room_name(&room)?;
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    let options: RoomOptions = if body.is_empty() { RoomOptions::default() } else { json_body(&headers, &body)? };
    let (r, created) = st.rooms.create_or_update(&room, options)?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(r.info())).into_response())
}

pub(super) async fn delete_room(
    State(st): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    if st.rooms.end(&room).await {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(format!("room {room:?}")))
    }
}

pub(super) async fn get_layout(
    State(st): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Member)?;
    let spec: LayoutSpec = room_of(&st, &room)?.layout().into();
    Ok(axum::Json(spec).into_response())
}

pub(super) async fn put_layout(
    State(st): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    let r = room_of(&st, &room)?;
    let spec: LayoutSpec = json_body(&headers, &body)?;
    let layout = Layout::try_from(spec).map_err(ApiError::BadRequest)?;
    r.try_set_layout(layout)?;
    let spec: LayoutSpec = r.layout().into();
    Ok(axum::Json(spec).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MuteBody {
    audio: Option<bool>,
    video: Option<bool>,
}

pub(super) async fn mute(
    State(st): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    let r = room_of(&st, &room)?;
    let m: MuteBody = json_body(&headers, &body)?;
    if m.audio.is_none() && m.video.is_none() {
        return Err(ApiError::BadRequest("give \"audio\" and/or \"video\" (true = muted)".into()));
    }
    r.mute(&id, m.audio, m.video, "server")?;
    let p =
        r.info().participants.into_iter().find(|p| p.id == id).ok_or_else(|| RoomError::NoParticipant(id.clone()))?;
    Ok(axum::Json(p).into_response())
}
