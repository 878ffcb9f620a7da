//! A room's outputs beyond its participants: its recordings and live egresses, started and
//! stopped through the API, finalized when the room ends.

use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Map;

use super::events::RoomEvent;
use super::{Room, RoomError};
use crate::outputs::egress::{Egress, EgressInfo};
use crate::outputs::recording::{Format, OnState, Recording, RecordingError, RecordingInfo};
use crate::outputs::upload::{Upload, UploadInfo};

/// A recording and, with `--recordings-url`, its upload.
pub struct RoomRecording {
    /// The recording.
    pub rec: Arc<Recording>,
    /// Its upload to the object store.
    pub upload: Option<Arc<Upload>>,
}

impl RoomRecording {
    /// The recording as the API shows it, with its object URL and upload when it has one.
    pub fn info(&self) -> RecordingInfo {
        with_upload(self.rec.info(), self.upload.as_ref().map(|u| u.info()))
    }
}

/// `info` with the upload's URL, state and (once the local file is gone) size.
fn with_upload(mut info: RecordingInfo, upload: Option<UploadInfo>) -> RecordingInfo {
    if let Some(u) = upload {
        info.url = Some(u.url.clone());
        if info.size_bytes == 0 {
            info.size_bytes = u.size_bytes.unwrap_or(0);
        }
        info.upload = Some(u);
    }
    info
}

/// The recordings (finished ones too) and running egresses of one room.
#[derive(Default)]
pub(super) struct RoomOutputs {
    recordings: Mutex<Vec<Arc<RoomRecording>>>,
    egresses: Mutex<Vec<Arc<Egress>>>,
}

impl RoomOutputs {
    /// Whether a recording is running.
    pub(super) fn recording_any(&self) -> bool {
        self.recordings.lock().unwrap().iter().any(|r| r.rec.is_recording())
    }

    /// Whether a recording or an egress runs (the room's media must then run too).
    pub(super) fn running(&self) -> bool {
        self.recording_any() || !self.egresses.lock().unwrap().is_empty()
    }
}

impl Room {
    /// Starts recording the composite and the full mix as `format` into `file` (a plain name under
    /// `--recordings-dir`, default `{room}-{id}.{ext}`), uploaded to the object store as it
    /// grows when there is one.
    ///
    /// # Errors
    /// [`RoomError::Recording`] for a bad name or when the file or the branch cannot be made.
    pub fn start_recording(self: &Arc<Self>, format: Format, file: Option<&str>) -> Result<RecordingInfo, RoomError> {
        let id = self.new_id("rec");
        let path = crate::outputs::recording::file_path(&self.deps.recordings_dir, &self.name, &id, format, file)?;
        if self.outputs.recordings.lock().unwrap().iter().any(|r| r.rec.is_recording() && r.rec.path() == path) {
            return Err(RecordingError::BadName(format!("{} is being recorded already", path.display())).into());
        }
        let _media = self.wake()?;
        // A recording that fails on its own is final: its upload goes ahead.
        let upload_slot: Arc<OnceLock<Arc<Upload>>> = Arc::default();
        let (w, i, u) = (Arc::downgrade(self), id.clone(), upload_slot.clone());
        let on_state: OnState = Arc::new(move |state: &str, reason: Option<&str>| {
            if let Some(up) = u.get() {
                up.finish();
            }
            if let Some(room) = w.upgrade() {
                let (id, kind, state, reason) =
                    (i.clone(), "recording".into(), state.into(), reason.map(str::to_string));
                room.emit(RoomEvent::RecordingState { ts: crate::ids::now_ms(), id, kind, state, reason });
            }
        });
        let rec = Recording::start(&self.name, &id, format, path.clone(), &self.video, &self.audio, on_state)?;
        let upload = self.deps.storage.as_ref().map(|s| {
            // `recording_finished` once the object is in the store (the room may be gone by then).
            let (hooks, room, r) = (self.deps.webhooks.clone(), self.name.clone(), rec.clone());
            let done = Box::new(move |u: &UploadInfo| {
                let info = with_upload(r.info(), Some(u.clone()));
                let mut f = Map::new();
                f.insert("recording".into(), serde_json::to_value(info).unwrap_or_default());
                hooks.send("recording_finished", &room, f);
            });
            let up = Upload::start(s, &self.name, &id, path, done);
            let _ = upload_slot.set(up.clone());
            up
        });
        let entry = Arc::new(RoomRecording { rec, upload });
        let info = entry.info();
        self.outputs.recordings.lock().unwrap().push(entry);
        self.emit(RoomEvent::RecordingState {
            ts: crate::ids::now_ms(),
            id: id.clone(),
            kind: "recording".into(),
            state: "recording".into(),
            reason: None,
        });
        Ok(info)
    }

    /// Stops and finalizes recording `id`.
    ///
    /// # Errors
    /// [`RoomError::NoRecording`] for an unknown id.
    pub async fn stop_recording(&self, id: &str) -> Result<RecordingInfo, RoomError> {
        let entry = self.recording(id).ok_or_else(|| RoomError::NoRecording(id.into()))?;
        let was = entry.rec.is_recording();
        entry.rec.stop().await;
        if let Some(u) = &entry.upload {
            u.finish();
        }
        let info = entry.info();
        if was {
            let state =
                serde_json::to_value(info.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            let (kind, reason) = ("recording".into(), info.error.clone());
            self.emit(RoomEvent::RecordingState { ts: crate::ids::now_ms(), id: id.into(), kind, state, reason });
        }
        Ok(info)
    }

    /// Starts streaming the composite and the full mix to `url` (`rtmp://`, `rtmps://`,
    /// `srt://`) or into the HLS folder `hls` under `--recordings-dir`.
    ///
    /// # Errors
    /// [`RoomError::Egress`] for a bad target or when the room's H.264 encode cannot be tapped.
    pub fn start_egress(self: &Arc<Self>, url: Option<&str>, hls: Option<&str>) -> Result<EgressInfo, RoomError> {
        let target = crate::outputs::egress::target(url, hls, &self.deps.recordings_dir)?;
        let id = self.new_id("eg");
        let (w, i) = (Arc::downgrade(self), id.clone());
        let on_state: OnState = Arc::new(move |state: &str, reason: Option<&str>| {
            if let Some(room) = w.upgrade() {
                let (id, kind, state, reason) = (i.clone(), "egress".into(), state.into(), reason.map(str::to_string));
                room.emit(RoomEvent::RecordingState { ts: crate::ids::now_ms(), id, kind, state, reason });
            }
        });
        let _media = self.wake()?;
        let e = Egress::start(&id, target, &self.video, &self.audio, on_state)?;
        let info = e.info();
        self.outputs.egresses.lock().unwrap().push(e);
        Ok(info)
    }

    /// Stops egress `id`.
    ///
    /// # Errors
    /// [`RoomError::NoRecording`] for an unknown id.
    pub async fn stop_egress(&self, id: &str) -> Result<EgressInfo, RoomError> {
        let e = {
            let mut v = self.outputs.egresses.lock().unwrap();
            let i = v.iter().position(|e| e.id() == id).ok_or_else(|| RoomError::NoRecording(id.into()))?;
            v.remove(i)
        };
        Ok(e.stop().await)
    }

    /// Every running egress.
    pub fn egresses(&self) -> Vec<EgressInfo> {
        self.outputs.egresses.lock().unwrap().iter().map(|e| e.info()).collect()
    }

    /// Finalizes every running recording and stops every egress (room end, server shutdown).
    pub async fn stop_recordings(&self) {
        let egress: Vec<Arc<Egress>> = self.outputs.egresses.lock().unwrap().drain(..).collect();
        for e in egress {
            e.stop().await;
        }
        let running: Vec<String> = self
            .outputs
            .recordings
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.rec.is_recording())
            .map(|r| r.rec.id().to_string())
            .collect();
        for id in running {
            let _ = self.stop_recording(&id).await;
        }
    }

    /// A recording (and its upload) by id.
    pub fn recording(&self, id: &str) -> Option<Arc<RoomRecording>> {
        self.outputs.recordings.lock().unwrap().iter().find(|r| r.rec.id() == id).cloned()
    }

    /// A recording as the API shows it, by id.
    pub fn recording_info(&self, id: &str) -> Option<RecordingInfo> {
        self.recording(id).map(|r| r.info())
    }

    /// Every recording of this room, oldest first.
    pub fn recordings(&self) -> Vec<RecordingInfo> {
        self.outputs.recordings.lock().unwrap().iter().map(|r| r.info()).collect()
    }
}
