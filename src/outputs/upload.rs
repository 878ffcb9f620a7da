//! Uploading one recording to the object store ([`super::storage`]): while it records, every
//! [`PART_INTERVAL`] what the file gained becomes the next part object; once it is finalized, the
//! whole file becomes its object, then the parts and the local file are deleted.
//!
//! It never blocks the recording: it is a task of its own that only reads the file the
//! recording's pipeline writes. A part that fails is counted, logged and sent again at the next
//! interval (the parts stay in order: the next one starts where the last stored one ended). The
//! finished file is tried [`FINAL_TRIES`] times with backoff (each try is itself retried by the
//! S3 client); if every try fails the recording's upload is `failed`, and the local file and
//! the parts stay.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as Key;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::storage::{ObjectStorage, UploadCounters};

/// How often what a recording's file gained is stored as a part: the most a lost node loses.
pub const PART_INTERVAL: Duration = Duration::from_secs(5);
/// Largest part, bytes (a backlog after a store outage goes up in parts of this size).
pub const MAX_PART_BYTES: u64 = 16 << 20;
/// Tries of the finished file's upload.
pub const FINAL_TRIES: u32 = 5;
/// Wait before the second try of the finished file; doubled for each later one (2, 4, 8, 16 s).
pub const FINAL_BACKOFF: Duration = Duration::from_secs(2);
/// The buffer of the finished file's upload: a file larger than this goes up as an S3
/// multipart upload in parts of this size (S3 wants at least 5 MiB).
const MULTIPART_BYTES: usize = 10 << 20;

/// State of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    /// Recording: parts go up as the file grows; then the finished file.
    Uploading,
    /// The finished file is in the store; the parts and the local file are gone.
    Uploaded,
    /// Every try of the finished file failed; the local file and the parts stay.
    Failed,
}

/// An upload as the recordings API shows it (`"upload"` of a recording).
#[derive(Debug, Clone, Serialize)]
pub struct UploadInfo {
    /// `s3://BUCKET/PREFIX/ROOM/ID/FILE`: where the finished file is (or will be).
    pub url: String,
    /// State.
    pub state: UploadState,
    /// Parts stored while recording.
    pub parts: u32,
    /// Bytes stored so far, parts and finished file together.
    pub uploaded_bytes: u64,
    /// Size of the finished file, bytes, once it is uploaded.
    pub size_bytes: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Called once, when the upload has ended (uploaded or failed).
pub type OnDone = Box<dyn FnOnce(&UploadInfo) + Send>;

/// The upload of one recording.
pub struct Upload {
    key: Key,
    status: Arc<Mutex<UploadInfo>>,
    finished: tokio::sync::watch::Sender<bool>,
}

impl Upload {
    /// Starts uploading the recording `id` of `room` written to `path`, as
    /// `PREFIX/ROOM/ID/FILE`; `on_done` hears when it has ended.
    pub fn start(storage: &Arc<ObjectStorage>, room: &str, id: &str, path: PathBuf, on_done: OnDone) -> Arc<Self> {
        let file = path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_else(|| format!("{id}.bin"));
        let key = storage.file_key(room, id, &file);
        let status = Arc::new(Mutex::new(UploadInfo {
            url: storage.url(&key),
            state: UploadState::Uploading,
            parts: 0,
            uploaded_bytes: 0,
            size_bytes: None,
            error: None,
        }));
        let (finished, rx) = tokio::sync::watch::channel(false);
        let job = Job {
            running: storage.running(),
            storage: storage.clone(),
            room: room.to_string(),
            id: id.to_string(),
            path,
            key: key.clone(),
            status: status.clone(),
        };
        tokio::spawn(job.run(rx, on_done));
        Arc::new(Self { key, status, finished })
    }

    /// The recording's file is final (stopped or failed): upload it whole. Idempotent.
    pub fn finish(&self) {
        self.finished.send_replace(true);
    }

    /// Its key in the store.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// The upload as the API shows it.
    pub fn info(&self) -> UploadInfo {
        self.status.lock().unwrap().clone()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What the upload task owns.
struct Job {
    #[allow(dead_code)] // held: counts the upload as running until the task ends
    running: super::storage::Running,
    storage: Arc<ObjectStorage>,
    room: String,
    id: String,
    path: PathBuf,
    key: Key,
    status: Arc<Mutex<UploadInfo>>,
}

impl Job {
    async fn run(self, mut finished: tokio::sync::watch::Receiver<bool>, on_done: OnDone) {
        let (mut sent, mut n) = (0u64, 0u32);
        while !*finished.borrow_and_update() {
            tokio::select! {
                _ = tokio::time::sleep(PART_INTERVAL) => self.send_parts(&mut sent, &mut n).await,
                changed = finished.changed() => if changed.is_err() { break },
            }
        }
        let c = &self.storage.counters;
        for attempt in 1..=FINAL_TRIES {
            match self.put_file().await {
                Ok(size) => {
                    c.bytes.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
                    UploadCounters::bump(&c.uploaded);
                    self.clean_up(n).await;
                    let mut s = self.status.lock().unwrap();
                    s.state = UploadState::Uploaded;
                    s.size_bytes = Some(size);
                    s.uploaded_bytes += size;
                    s.error = None;
                    tracing::info!(room = %self.room, recording = %self.id, url = %s.url, size, "recording uploaded");
                    break;
                }
                Err(last) => {
                    tracing::warn!(room = %self.room, recording = %self.id, attempt, "recording upload failed: {last}");
                    if attempt < FINAL_TRIES {
                        tokio::time::sleep(super::backoff(FINAL_BACKOFF, attempt)).await;
                    } else {
                        UploadCounters::bump(&c.failed);
                        tracing::error!(
                            room = %self.room, recording = %self.id, file = %self.path.display(),
                            "recording upload failed {FINAL_TRIES} times: the local file and {n} parts stay: {last}"
                        );
                        let mut s = self.status.lock().unwrap();
                        s.state = UploadState::Failed;
                        s.error = Some(last);
                    }
                }
            }
        }
        let info = self.status.lock().unwrap().clone();
        on_done(&info);
    }

    /// Stores what the file gained since `sent` bytes as parts `n + 1, ...`; stops at the first
    /// failure (counted and logged; the next interval starts there again).
    async fn send_parts(&self, sent: &mut u64, n: &mut u32) {
        let c = &self.storage.counters;
        loop {
            let len = tokio::fs::metadata(&self.path).await.map(|m| m.len()).unwrap_or(0);
            if len <= *sent {
                return;
            }
            let take = (len - *sent).min(MAX_PART_BYTES);
            let bytes = match read_at(&self.path, *sent, take).await {
                Ok(b) => b,
                Err(e) => {
                    UploadCounters::bump(&c.part_failures);
                    tracing::warn!(room = %self.room, recording = %self.id, "reading the recording for a part: {e}");
                    return;
                }
            };
            let key = self.storage.part_key(&self.room, &self.id, *n + 1);
            match self.storage.store().put(&key, bytes.into()).await {
                Ok(_) => {
                    *n += 1;
                    *sent += take;
                    UploadCounters::bump(&c.parts);
                    c.bytes.fetch_add(take, std::sync::atomic::Ordering::Relaxed);
                    let mut s = self.status.lock().unwrap();
                    s.parts = *n;
                    s.uploaded_bytes += take;
                }
                Err(e) => {
                    UploadCounters::bump(&c.part_failures);
                    tracing::warn!(room = %self.room, recording = %self.id, part = *n + 1, "part upload failed: {e}");
                    return;
                }
            }
        }
    }

    /// Uploads the whole file (multipart above [`MULTIPART_BYTES`]); returns its size.
    async fn put_file(&self) -> Result<u64, String> {
        let mut f = tokio::fs::File::open(&self.path).await.map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut w = BufWriter::with_capacity(self.storage.store().clone(), self.key.clone(), MULTIPART_BYTES);
        let n = match tokio::io::copy(&mut f, &mut w).await {
            Ok(n) => n,
            Err(e) => {
                // Cleans up the multipart upload, if one had started.
                let _ = w.abort().await;
                return Err(e.to_string());
            }
        };
        // A failed shutdown (the single PUT, or completing the multipart upload) cannot be
        // aborted any more (`BufWriter::abort` panics then): an unfinished multipart upload is
        // left to the bucket's lifecycle rule (AbortIncompleteMultipartUpload).
        w.shutdown().await.map_err(|e| e.to_string())?;
        Ok(n)
    }

    /// After the finished file is stored: its `n` parts and the local file go (failures logged).
    async fn clean_up(&self, n: u32) {
        for i in 1..=n {
            let key = self.storage.part_key(&self.room, &self.id, i);
            if let Err(e) = self.storage.store().delete(&key).await {
                tracing::warn!(room = %self.room, recording = %self.id, part = i, "deleting a part: {e}");
            }
        }
        if let Err(e) = tokio::fs::remove_file(&self.path).await {
            tracing::warn!(room = %self.room, recording = %self.id, file = %self.path.display(), "removing the uploaded file: {e}");
        }
    }
}

/// `len` bytes of `path` from byte `at`.
async fn read_at(path: &std::path::Path, at: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(at)).await?;
    let mut buf = vec![0; len as usize];
    f.read_exact(&mut buf).await?;
    Ok(buf)
}
