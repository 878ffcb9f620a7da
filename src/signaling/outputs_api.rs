//! Recordings and egress of a room over HTTP: start, list, read, stop, download (with `Range`).
//! With `--recordings-url`, a recording whose local file is gone (uploaded) downloads from the
//! object store, and the recordings of a room this node does not have (ended, or on a node that
//! is gone) are listed and downloaded from the store.

use futures_util::StreamExt;
use object_store::GetRange;

use super::*;
use crate::outputs::storage::{ObjectStorage, StorageError, StoredRecording};

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
    let recordings = match (st.rooms.get(&room), &st.rooms.deps().storage) {
        (Some(r), _) => serde_json::to_value(r.recordings()).unwrap_or_default(),
        (None, Some(storage)) => {
            serde_json::to_value(storage.list_room(&room).await.map_err(store_error)?).unwrap_or_default()
        }
        (None, None) => return Err(ApiError::NotFound(format!("room {room:?}"))),
    };
    Ok(axum::Json(serde_json::json!({ "recordings": recordings })).into_response())
}

/// Recording `id` of `room` in the object store, or 404.
async fn stored(storage: &ObjectStorage, room: &str, id: &str) -> Result<StoredRecording, ApiError> {
    let all = storage.list_room(room).await.map_err(store_error)?;
    all.into_iter().find(|r| r.id == id).ok_or_else(|| RoomError::NoRecording(id.into()).into())
}

fn store_error(e: StorageError) -> ApiError {
    ApiError::Internal(e.to_string())
}

pub(super) async fn get_recording(
    State(st): State<AppState>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.check(&headers, Some(&room), Need::Admin)?;
    if let Some(info) = st.rooms.get(&room).and_then(|r| r.recording_info(&id)) {
        return Ok(axum::Json(info).into_response());
    }
    match &st.rooms.deps().storage {
        Some(storage) => Ok(axum::Json(stored(storage, &room, &id).await?).into_response()),
        None => Err(room_of(&st, &room).err().unwrap_or_else(|| RoomError::NoRecording(id).into())),
    }
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
    let storage = st.rooms.deps().storage.clone();
    let entry = st.rooms.get(&room).and_then(|r| r.recording(&id));
    let path = match (&entry, &storage) {
        (Some(e), _) if e.rec.path().exists() => e.rec.path().to_path_buf(),
        (Some(e), Some(storage)) => match &e.upload {
            Some(u) => return from_store(storage, vec![u.key().clone()], &headers).await,
            None => return Err(ApiError::NotFound(format!("the file of recording {id:?}"))),
        },
        (None, Some(storage)) => return from_store(storage, stored(storage, &room, &id).await?.keys, &headers).await,
        (Some(_), None) => return Err(ApiError::NotFound(format!("the file of recording {id:?}"))),
        (None, None) => return Err(room_of(&st, &room).err().unwrap_or_else(|| RoomError::NoRecording(id).into())),
    };
    let mut req = req;
    if req.headers().get(header::RANGE).is_some_and(|v| !v.to_str().is_ok_and(range_is_well_formed)) {
        // RFC 9110 §14.2: a Range that does not parse is ignored: the whole file, 200.
        req.headers_mut().remove(header::RANGE);
    }
    let serve = tower_http::services::ServeFile::new(path);
    let resp = tower::ServiceExt::oneshot(serve, req).await.unwrap_or_else(|e| match e {});
    Ok(resp.into_response())
}

/// The one range of a `Range` header (RFC 9110 §14.1.2) as the store takes it; `None` for none,
/// several, or one that does not parse (then the whole object is sent).
fn single_range(v: &str) -> Option<GetRange> {
    if !range_is_well_formed(v) || v.contains(',') {
        return None;
    }
    let (a, b) = v.trim().strip_prefix("bytes=")?.trim().split_once('-')?;
    match (a.parse::<u64>().ok(), b.parse::<u64>().ok()) {
        (Some(a), Some(b)) if b >= a => Some(GetRange::Bounded(a..b.saturating_add(1))),
        (Some(a), None) => Some(GetRange::Offset(a)),
        (None, Some(n)) => Some(GetRange::Suffix(n)),
        _ => None,
    }
}

/// Streams `keys` from the store, one after another, as one file: one key honours a single
/// `Range` (`206`, or `416` past its end); several (the parts of a recording whose node stopped)
/// are sent whole.
async fn from_store(
    storage: &Arc<ObjectStorage>,
    keys: Vec<object_store::path::Path>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let name = keys.last().and_then(|k| k.filename()).unwrap_or("recording").to_string();
    let mime = match name.rsplit('.').next() {
        Some("webm") => "video/webm",
        Some("mp4") => "video/mp4",
        Some("mkv") => "video/x-matroska",
        _ => "application/octet-stream",
    };
    let range = match keys.len() {
        1 => headers.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(single_range),
        _ => None,
    };
    let mut resp = Response::builder().header(header::CONTENT_TYPE, mime);
    let body = if let [key] = keys.as_slice() {
        let got = match storage.get(key, range.clone()).await {
            Ok(g) => g,
            Err(StorageError::Store(object_store::Error::NotFound { .. })) => {
                return Err(ApiError::NotFound(format!("object {key}")));
            }
            Err(e) if range.is_some() && e.to_string().contains("range") => {
                let unsatisfiable = (StatusCode::RANGE_NOT_SATISFIABLE, format!("{e}\n"));
                return Ok(unsatisfiable.into_response());
            }
            Err(e) => return Err(store_error(e)),
        };
        let (r, size) = (got.range.clone(), got.meta.size);
        resp = resp.header(header::ACCEPT_RANGES, "bytes").header(header::CONTENT_LENGTH, r.end - r.start);
        if range.is_some() {
            resp = resp
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end.saturating_sub(1)));
        }
        axum::body::Body::from_stream(got.into_stream())
    } else {
        let s = storage.clone();
        let parts = futures_util::stream::iter(keys)
            .then(move |k| {
                let s = s.clone();
                async move { s.get(&k, None).await }
            })
            .flat_map(|got| match got {
                Ok(g) => g.into_stream().map(|b| b.map_err(std::io::Error::other)).boxed(),
                Err(e) => futures_util::stream::iter([Err(std::io::Error::other(e))]).boxed(),
            });
        axum::body::Body::from_stream(parts)
    };
    resp.body(body).map_err(|e| ApiError::Internal(e.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_range_reaches_the_store_and_others_do_not() {
        assert_eq!(single_range("bytes=0-99"), Some(GetRange::Bounded(0..100)));
        assert_eq!(single_range("bytes=100-"), Some(GetRange::Offset(100)));
        assert_eq!(single_range("bytes=-500"), Some(GetRange::Suffix(500)));
        for none in ["bytes=0-1,5-9", "bytes=9-3", "items=0-5", "bytes=abc"] {
            assert_eq!(single_range(none), None, "{none}");
        }
    }
}
