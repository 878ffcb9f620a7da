//! Recording storage: the local folder (`--recordings-dir`, where every pipeline writes) and,
//! with `--recordings-url s3://BUCKET/PREFIX`, an object store the recordings are uploaded to
//! over the S3 API (`object_store`'s S3 client: AWS, MinIO, Ceph RGW, Garage, moto, ...).
//!
//! Object layout, one folder per recording:
//!
//! ```text
//! PREFIX/ROOM/ID/FILE               the finished recording (uploaded once it is finalized)
//! PREFIX/ROOM/ID/parts/000001 ...   what the file held, in order, while it recorded
//! ```
//!
//! Why parts and not an S3 multipart upload while recording: an unfinished multipart upload is
//! not an object — a node lost mid-recording would leave nothing readable (and parts under
//! 5 MiB are refused). Parts are whole objects the moment they are written, and because the file
//! only grows (Matroska clusters, MP4 fragments), their concatenation is the file as a crash
//! would have left it: playable up to its last complete cluster or fragment. The finished file
//! (whose header the muxer rewrites at the end) is then uploaded whole — multipart above 10 MiB —
//! and the parts are deleted. The `upload` module does the uploading.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, GetResult, ObjectStore};
use serde::Serialize;

use crate::config::StoreConfig;

/// How long the S3 client retries one request (with its own backoff) before it fails.
pub const REQUEST_RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// The folder of a recording's parts, under its own folder.
pub const PARTS: &str = "parts";

/// Errors of the object store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A bad `--recordings-url` or S3 setting.
    #[error("{0}")]
    Config(String),
    /// The store answered with an error (or could not be reached).
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// What the uploads counted since start (`/metrics`: `tessera_recording_upload_*`).
#[derive(Debug, Default)]
pub struct UploadCounters {
    /// Parts written while recording.
    pub parts: AtomicU64,
    /// Part writes that failed (retried at the next interval).
    pub part_failures: AtomicU64,
    /// Bytes written, parts and finished files together.
    pub bytes: AtomicU64,
    /// Finished files uploaded.
    pub uploaded: AtomicU64,
    /// Finished files whose upload failed after every try (the local file is kept).
    pub failed: AtomicU64,
}

impl UploadCounters {
    /// Adds one to `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// The object store recordings go to, and its uploads.
pub struct ObjectStorage {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    prefix: String,
    /// What the uploads counted.
    pub counters: UploadCounters,
    /// Uploads still running (a shutdown waits for them).
    running: tokio::sync::watch::Sender<usize>,
}

/// A recording found in the store (for a room this node does not have, or whose node is gone).
#[derive(Debug, Clone, Serialize)]
pub struct StoredRecording {
    /// Recording id.
    pub id: String,
    /// File name.
    pub file: String,
    /// `uploaded` (the finished file is there) or `partial` (parts only: its node stopped
    /// before it finished).
    pub state: &'static str,
    /// `s3://` URL of the finished file, or of the parts' folder.
    pub url: String,
    /// Bytes: the file's, or the parts' together.
    pub size_bytes: u64,
    /// Parts left in the store.
    pub parts: usize,
    /// Last write, ms since the Unix epoch.
    pub modified_ms: u64,
    /// Keys to read, in order: the file, or the parts.
    #[serde(skip)]
    pub keys: Vec<Key>,
}

impl ObjectStorage {
    /// The store of `cfg.url` (`s3://BUCKET/PREFIX`), with credentials and region from `cfg`
    /// and then the standard `AWS_*` variables. Nothing is sent until the first upload.
    ///
    /// # Errors
    /// [`StorageError::Config`] for a bad URL or settings the S3 client refuses.
    pub fn new(cfg: &StoreConfig) -> Result<Arc<Self>, StorageError> {
        let url = cfg.url.as_deref().ok_or_else(|| StorageError::Config("no --recordings-url".into()))?;
        let (bucket, prefix) = crate::config::parse_s3_url(url).map_err(StorageError::Config)?;
        crate::outputs::webhook::install_tls_provider();
        // A request is retried for at most 30 s (the default is 3 min): the upload's own tries
        // and intervals are the longer loop.
        let retry = object_store::RetryConfig {
            max_retries: 4,
            retry_timeout: REQUEST_RETRY_TIMEOUT,
            ..object_store::RetryConfig::default()
        };
        let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&bucket).with_retry(retry);
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        b = b.with_region(cfg.region.clone().unwrap_or_else(|| "us-east-1".into()));
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &cfg.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        let store = b.build().map_err(|e| StorageError::Config(format!("--recordings-url {url}: {e}")))?;
        let (running, _) = tokio::sync::watch::channel(0);
        Ok(Arc::new(Self { store: Arc::new(store), bucket, prefix, counters: UploadCounters::default(), running }))
    }

    /// The S3 client.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The folder of room `room`'s recordings: `PREFIX/ROOM`.
    fn room_key(&self, room: &str) -> Key {
        let mut parts: Vec<String> = self.prefix.split('/').filter(|p| !p.is_empty()).map(str::to_string).collect();
        parts.push(room.to_string());
        Key::from_iter(parts)
    }

    /// The key of file `file` of recording `id` of room `room`: `PREFIX/ROOM/ID/FILE`.
    pub fn file_key(&self, room: &str, id: &str, file: &str) -> Key {
        self.room_key(room).join(id).join(file)
    }

    /// The key of part `n` (from 1) of recording `id`: `PREFIX/ROOM/ID/parts/NNNNNN`, so that
    /// the parts list in order.
    pub fn part_key(&self, room: &str, id: &str, n: u32) -> Key {
        self.room_key(room).join(id).join(PARTS).join(format!("{n:06}"))
    }

    /// `s3://BUCKET/KEY`.
    pub fn url(&self, key: &Key) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// Every recording of room `room` in the store, oldest first: one listing of `PREFIX/ROOM/`.
    ///
    /// # Errors
    /// [`StorageError::Store`] when the listing fails.
    pub async fn list_room(&self, room: &str) -> Result<Vec<StoredRecording>, StorageError> {
        let base = self.room_key(room);
        let depth = base.parts().count();
        let mut objects = self.store.list(Some(&base));
        let mut by_id: std::collections::BTreeMap<String, StoredRecording> = Default::default();
        while let Some(meta) = objects.next().await {
            let meta = meta?;
            let rel: Vec<String> = meta.location.parts().skip(depth).map(|p| p.as_ref().to_string()).collect();
            let (id, rest) = match rel.as_slice() {
                [id, rest @ ..] if !rest.is_empty() => (id.clone(), rest),
                _ => continue,
            };
            let r = by_id.entry(id.clone()).or_insert_with(|| StoredRecording {
                id: id.clone(),
                file: String::new(),
                state: "partial",
                url: self.url(&base.clone().join(id.as_str()).join(PARTS)),
                size_bytes: 0,
                parts: 0,
                modified_ms: 0,
                keys: vec![],
            });
            r.modified_ms = r.modified_ms.max(meta.last_modified.timestamp_millis().max(0) as u64);
            match rest {
                [dir, _] if dir == PARTS => {
                    r.parts += 1;
                    if r.state == "partial" {
                        r.size_bytes += meta.size;
                        r.keys.push(meta.location);
                    }
                }
                [file] => {
                    r.file = file.clone();
                    r.state = "uploaded";
                    r.url = self.url(&meta.location);
                    r.size_bytes = meta.size;
                    r.keys = vec![meta.location];
                }
                _ => {}
            }
        }
        let mut v: Vec<StoredRecording> = by_id.into_values().collect();
        for r in &mut v {
            if r.state == "partial" {
                r.keys.sort_by(|a, b| a.as_ref().cmp(b.as_ref()));
            }
        }
        v.sort_by_key(|r| r.modified_ms);
        Ok(v)
    }

    /// Object `key`, or the part `range` of it.
    ///
    /// # Errors
    /// [`StorageError::Store`]: not found, a range past its end, or the store failing.
    pub async fn get(&self, key: &Key, range: Option<GetRange>) -> Result<GetResult, StorageError> {
        Ok(self.store.get_opts(key, GetOptions::new().with_range(range)).await?)
    }

    /// Counts an upload as running until the returned guard drops.
    pub(super) fn running(self: &Arc<Self>) -> Running {
        self.running.send_modify(|n| *n += 1);
        Running(self.clone())
    }

    /// Waits until no upload runs, or `timeout` has passed; returns whether none runs.
    pub async fn wait_uploads(&self, timeout: Duration) -> bool {
        let mut rx = self.running.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0)).await.is_ok_and(|r| r.is_ok())
    }
}

/// An upload counted as running (see [`ObjectStorage::wait_uploads`]).
pub(super) struct Running(Arc<ObjectStorage>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_room_recording_and_parts() {
        let cfg = StoreConfig {
            url: Some("s3://bucket/a/b/".into()),
            endpoint: Some("http://127.0.0.1:9".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..StoreConfig::default()
        };
        let s = ObjectStorage::new(&cfg).unwrap();
        let k = s.file_key("room-1", "rec1-abc", "room-1-rec1-abc.webm");
        assert_eq!(k.as_ref(), "a/b/room-1/rec1-abc/room-1-rec1-abc.webm");
        assert_eq!(s.url(&k), "s3://bucket/a/b/room-1/rec1-abc/room-1-rec1-abc.webm");
        assert_eq!(s.part_key("r", "x", 12).as_ref(), "a/b/r/x/parts/000012");
        let bare = ObjectStorage::new(&StoreConfig { url: Some("s3://bucket".into()), ..cfg }).unwrap();
        assert_eq!(bare.part_key("r", "x", 1).as_ref(), "r/x/parts/000001");
    }
}
