//! The rooms control API: list, read, create and close rooms, their layout, server mutes.

use super::*;

#[derive(Deserialize)]
pub(super) struct ListQuery {
    /// Any value: this node's rooms only (what nodes ask each other).
    local: Option<String>,
}

/// `GET /v1/rooms`: every room, each with the `node` that runs it. With several nodes, each live
/// node is asked for its own (`?local=1`, the caller's `Authorization` passed on); a node that
/// does not answer is named in `unreachable` and logged.
pub(super) async fn list_rooms(
    State(st): State<AppState>,
    Query(q): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, None, Need::Admin)?;
    let me = st.directory.node();
    let mut rooms: Vec<serde_json::Value> = st.rooms.all().iter().map(|r| with_node(r.info(), me)).collect();
    let mut unreachable = vec![];
    if st.directory.clustered() && q.local.is_none() {
        let auth = headers.get(header::AUTHORIZATION);
        for n in st.directory.nodes().await.into_iter().filter(|n| n.node != me) {
            let answer = st.proxy.get(&n.url, "/v1/rooms?local=1", me, auth).await;
            let theirs = match &answer {
                Ok((StatusCode::OK, body)) => serde_json::from_slice::<serde_json::Value>(body).ok(),
                _ => None,
            };
            match theirs.as_ref().and_then(|v| v["rooms"].as_array()) {
                Some(list) => rooms.extend(list.iter().cloned()),
                None => {
                    let why = match answer {
                        Ok((status, body)) => format!("{status}: {}", String::from_utf8_lossy(&body).trim()),
                        Err(e) => e,
                    };
                    tracing::warn!(node = %n.node, url = %n.url, "listing its rooms failed: {why}");
                    unreachable.push(n.node);
                }
            }
        }
        rooms.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
    }
    let mut body = serde_json::json!({ "rooms": rooms });
    if !unreachable.is_empty() {
        body["unreachable"] = unreachable.into();
    }
    Ok(axum::Json(body).into_response())
}

/// A room's JSON with the `node` that runs it.
fn with_node(info: crate::room::RoomInfo, node: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(info).unwrap_or_default();
    v["node"] = node.into();
    v
}

pub(super) async fn get_room(
    State(st): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Member)?;
    Ok(axum::Json(with_node(room_of(&st, &room)?.info(), st.directory.node())).into_response())
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
    Ok((status, axum::Json(with_node(r.info(), st.directory.node()))).into_response())
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
