//! Composite recordings: the room's encoded video (VP8 for WebM/MKV, the room's H.264 encode for
//! MP4) and its full audio mix (the shared Opus encode) muxed into a file that survives a crash:
//! Matroska/WebM in clusters of at most 1 s, MP4 fragmented every second.
//!
//! ```text
//! room pipeline:  encoder ─ tee ─ Tap (leaky queue ─ appsink)
//!                                   ┆
//! own pipeline:                     └┄> appsrc ─ queue ─ (h264parse) ─┐
//!      mixer (shared Opus) ┄> appsrc ─ opusparse ─ queue ─────────────┴─ webmmux / matroskamux / mp4mux ─ filesink
//! ```
//!
//! Each recording is its own pipeline, fed through a [`Tap`]: a slow, full or failing disk
//! blocks or fails only the recording's pipeline, never the room's encoder (the tap drops what the
//! recording cannot take, about 8 s of video, and resumes at a keyframe). A write that fails ends
//! the recording `failed`, with the OS error in its `error`, a log line and a `recording_state`
//! event; the room and its other outputs keep going.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use serde::{Deserialize, Serialize};

use super::tap::{Stamp, Tap};
use crate::codec::VideoCodec;
use crate::media::audio::AudioMixer;
use crate::media::video::RoomVideo;

/// How often a recording asks the encoder for a keyframe (its seek points).
const RECORDING_KEYFRAME_INTERVAL: Duration = Duration::from_secs(10);
/// Bytes of video a recording's pipeline may hold unwritten before the tap drops frames: about
/// 8 s at the full tier's 2.5 Mbit/s.
const RECORDING_BACKLOG_BYTES: u64 = 2_500_000;
/// Bytes of audio likewise (8 s of 32 kbit/s Opus is 32 KB).
const AUDIO_BACKLOG_BYTES: u64 = 64_000;

/// Container of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Fragmented MP4: H.264 (the room's H.264 encode, added if no receiver uses it) + Opus.
    Mp4,
    /// WebM: the room's VP8 + Opus, no extra encode.
    Webm,
    /// Matroska: the room's VP8 + Opus, no extra encode.
    Mkv,
}

impl Format {
    /// The video codec the container takes.
    pub fn codec(self) -> VideoCodec {
        match self {
            Format::Mp4 => VideoCodec::H264,
            Format::Webm | Format::Mkv => VideoCodec::Vp8,
        }
    }

    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Mp4 => "mp4",
            Format::Webm => "webm",
            Format::Mkv => "mkv",
        }
    }
}

/// State of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Writing.
    Recording,
    /// Finalized and closed.
    Stopped,
    /// Failed; the file holds what was written.
    Failed,
}

/// A recording as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingInfo {
    /// Recording id.
    pub id: String,
    /// Container.
    pub format: Format,
    /// Path of the file on the server.
    pub file: String,
    /// State.
    pub state: State,
    /// Seconds recorded.
    pub duration_s: f64,
    /// File size now, bytes.
    pub size_bytes: u64,
    /// Start, ms since the Unix epoch.
    pub started_ms: u64,
    /// Why it failed (GStreamer's message and the OS error), when `state` is `failed`.
    pub error: Option<String>,
    /// With `--recordings-url`: the object's URL, `s3://BUCKET/PREFIX/ROOM/ID/FILE` (there once
    /// `upload.state` is `uploaded`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// With `--recordings-url`: the upload's progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload: Option<super::upload::UploadInfo>,
}

/// Errors starting a recording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// A bad file name.
    #[error("{0}")]
    BadName(String),
    /// The file cannot be created.
    #[error("cannot write {path}: {err}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        err: std::io::Error,
    },
    /// GStreamer failed.
    #[error("gstreamer: {0}")]
    Gst(String),
}

fn gst_err(e: impl std::fmt::Display) -> RecordingError {
    RecordingError::Gst(e.to_string())
}

impl From<crate::media::video::VideoError> for RecordingError {
    fn from(e: crate::media::video::VideoError) -> Self {
        gst_err(e)
    }
}

/// The file a recording writes: `file` (a plain name, no folders; the extension is added when
/// missing) or `{room}-{id}.{ext}`, under `dir`.
///
/// # Errors
/// [`RecordingError::BadName`] for names with path separators, `..`, control characters or more
/// than 128 characters.
pub fn file_path(
    dir: &Path,
    room: &str,
    id: &str,
    format: Format,
    file: Option<&str>,
) -> Result<PathBuf, RecordingError> {
    let name = match file {
        None => format!("{room}-{id}.{}", format.extension()),
        Some(f) => {
            let bad = f.is_empty()
                || f.len() > 128
                || f.contains(['/', '\\'])
                || f.starts_with('.')
                || f.chars().any(char::is_control);
            if bad {
                return Err(RecordingError::BadName(format!(
                    "file {f:?}: a plain file name, no folders, at most 128 characters"
                )));
            }
            let ext = format!(".{}", format.extension());
            if f.ends_with(&ext) { f.to_string() } else { format!("{f}{ext}") }
        }
    };
    Ok(dir.join(name))
}

/// How a recording ended, if it did.
#[derive(Default)]
struct End {
    /// When and how.
    at: Option<(Instant, State)>,
    /// Why it failed.
    error: Option<String>,
}

/// Called with `("failed", Some(reason))` when a recording fails on its own (its owner reports
/// the states it causes itself).
pub type OnState = Arc<dyn Fn(&str, Option<&str>) + Send + Sync>;

/// One running (or finished) recording.
pub struct Recording {
    id: String,
    format: Format,
    path: PathBuf,
    started: Instant,
    started_ms: u64,
    end: Arc<Mutex<End>>,
    tap: Arc<Tap>,
    pipeline: gst::Pipeline,
    video_src: gst_app::AppSrc,
    audio_src: gst_app::AppSrc,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    eos: Arc<tokio::sync::Notify>,
    got_eos: Arc<AtomicBool>,
}

/// The recording's own pipeline: `(pipeline, video appsrc, audio appsrc)`. The video source gets
/// its caps from the tap's first sample.
fn build(format: Format, path: &Path) -> Result<(gst::Pipeline, gst_app::AppSrc, gst_app::AppSrc), RecordingError> {
    let pipeline = gst::Pipeline::with_name("recording");
    let make = |f: &str| gst::ElementFactory::make(f).build().map_err(gst_err);
    let video_src = gst_app::AppSrc::builder().format(gst::Format::Time).is_live(false).build();
    let vqueue = make("queue")?;
    let mux = match format {
        Format::Mp4 => {
            gst::ElementFactory::make("mp4mux").property("fragment-duration", 1000u32).build().map_err(gst_err)?
        }
        Format::Webm | Format::Mkv => {
            let m = make(if format == Format::Webm { "webmmux" } else { "matroskamux" })?;
            m.set_property("min-cluster-duration", 500_000_000i64);
            m.set_property("max-cluster-duration", 1_000_000_000i64);
            m
        }
    };
    let sink = gst::ElementFactory::make("filesink")
        .property("location", path.to_string_lossy().to_string())
        .property("sync", false)
        .property("async", false)
        // Every write straight to the kernel: a SIGKILL loses no user-space buffer, and a
        // failing disk shows at once.
        .property_from_str("buffer-mode", "unbuffered")
        .build()
        .map_err(gst_err)?;
    let audio_src = gst_app::AppSrc::builder()
        .caps(
            &gst::Caps::builder("audio/x-opus")
                .field("channel-mapping-family", 0i32)
                .field("channels", 1i32)
                .field("rate", 48000i32)
                .build(),
        )
        .is_live(false)
        .format(gst::Format::Time)
        .build();
    let aparse = make("opusparse")?;
    let aqueue = make("queue")?;
    pipeline
        .add_many([video_src.upcast_ref(), &vqueue, &mux, &sink, audio_src.upcast_ref(), &aparse, &aqueue])
        .map_err(gst_err)?;
    let mut video_chain = vec![video_src.clone().upcast::<gst::Element>(), vqueue];
    if format == Format::Mp4 {
        let parse = make("h264parse")?;
        pipeline.add(&parse).map_err(gst_err)?;
        video_chain.push(parse);
    }
    video_chain.push(mux.clone());
    gst::Element::link_many(&video_chain).map_err(gst_err)?;
    gst::Element::link_many([audio_src.upcast_ref(), &aparse, &aqueue, &mux]).map_err(gst_err)?;
    mux.link(&sink).map_err(gst_err)?;
    Ok((pipeline, video_src, audio_src))
}

/// A bus error as one line: GStreamer's message and its debug text (which holds the OS error,
/// e.g. "system error: No space left on device").
fn error_line(e: &gst::message::Error) -> String {
    match e.debug() {
        Some(d) => format!("{} ({})", e.error(), d.as_str().rsplit(": ").next().unwrap_or(d.as_str())),
        None => e.error().to_string(),
    }
}

impl Recording {
    /// Starts recording `video` and `audio` of `room` into `path`, in a pipeline of its own.
    /// `on_state` hears of a failure the recording finds itself (a write error).
    ///
    /// # Errors
    /// [`RecordingError`] when the file or the pipeline cannot be made.
    pub fn start(
        room: &str,
        id: &str,
        format: Format,
        path: PathBuf,
        video: &RoomVideo,
        audio: &AudioMixer,
        on_state: OnState,
    ) -> Result<Arc<Self>, RecordingError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|err| RecordingError::Io { path: dir.display().to_string(), err })?;
        }
        // Fail early and clearly on an unwritable path.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|err| RecordingError::Io { path: path.display().to_string(), err })?;
        let (pipeline, video_src, audio_src) = build(format, &path)?;
        let tap = Tap::start(
            &format!("rec-{id}"),
            video,
            format.codec(),
            RECORDING_KEYFRAME_INTERVAL,
            Stamp::FromFirstKeyframe,
            RECORDING_BACKLOG_BYTES,
        )?;
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let _ = pipeline.set_state(gst::State::Null);
            let tap = tap.clone();
            tokio::spawn(async move { tap.stop().await });
            return Err(gst_err(e));
        }
        tap.connect(video_src.clone());

        let eos = Arc::new(tokio::sync::Notify::new());
        let got_eos = Arc::new(AtomicBool::new(false));
        let end = Arc::new(Mutex::new(End::default()));
        // The audio: the mix, stamped on the room's running time from the tap's first keyframe.
        let mut rx = audio.subscribe();
        let (src, v, t) = (audio_src.clone(), video.clone(), tap.clone());
        let audio_task = tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(f) if !f.shared.is_empty() => {
                        let Some(start) = t.base() else { continue };
                        // A mix frame sent at tick T holds the 20 ms before T: stamp its start, on the
                        // room's running time like the composite frames.
                        let Some(now) = v.running_time() else { continue };
                        let Some(rel) = now.nseconds().checked_sub(start.nseconds() + 20_000_000) else { continue };
                        if src.current_level_bytes() > AUDIO_BACKLOG_BYTES {
                            continue; // the file does not keep up: drop, as the tap drops video
                        }
                        let mut b = gst::Buffer::from_slice(f.shared.clone());
                        {
                            let b = b.get_mut().unwrap();
                            b.set_pts(gst::ClockTime::from_nseconds(rel));
                            b.set_duration(gst::ClockTime::from_mseconds(20));
                        }
                        if src.push_buffer(b).is_err() {
                            break;
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        });
        // The watch: the end (EOS reaching the file), or an error (a write that failed).
        let bus = pipeline.bus().expect("pipeline bus");
        let (p, t, e, g, en) = (pipeline.clone(), tap.clone(), eos.clone(), got_eos.clone(), end.clone());
        let (room_name, label, file) = (room.to_string(), id.to_string(), path.display().to_string());
        let watch = tokio::spawn(async move {
            loop {
                let b = bus.clone();
                let msg = tokio::task::spawn_blocking(move || {
                    b.timed_pop_filtered(
                        gst::ClockTime::from_mseconds(500),
                        &[gst::MessageType::Error, gst::MessageType::Eos],
                    )
                })
                .await
                .ok()
                .flatten();
                let Some(msg) = msg else {
                    t.poll_keyframe();
                    continue;
                };
                match msg.view() {
                    gst::MessageView::Eos(_) => {
                        g.store(true, Ordering::Relaxed);
                        e.notify_waiters();
                    }
                    gst::MessageView::Error(err) => {
                        let reason = error_line(err);
                        {
                            let mut end = en.lock().unwrap();
                            if end.at.is_some() {
                                break;
                            }
                            end.at = Some((Instant::now(), State::Failed));
                            end.error = Some(reason.clone());
                        }
                        tracing::error!(room = %room_name, recording = %label, %file, "recording failed: {reason}");
                        t.stop().await;
                        let p = p.clone();
                        let _ = tokio::task::spawn_blocking(move || p.set_state(gst::State::Null)).await;
                        on_state("failed", Some(&reason));
                        e.notify_waiters();
                    }
                    _ => continue,
                }
                break;
            }
        });
        tracing::info!(%room, recording = id, file = %path.display(), ?format, "recording started");
        Ok(Arc::new(Self {
            id: id.to_string(),
            format,
            path,
            started: Instant::now(),
            started_ms: crate::ids::now_ms(),
            end,
            tap,
            pipeline,
            video_src,
            audio_src,
            tasks: vec![audio_task, watch],
            eos,
            got_eos,
        }))
    }

    /// Recording id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether it is still writing.
    pub fn is_recording(&self) -> bool {
        self.end.lock().unwrap().at.is_none()
    }

    /// Stops and finalizes: end-of-stream through the muxer (which writes its index), waits up to
    /// 5 s for it to reach the file, then closes. Stopping twice (or after a failure) does nothing.
    pub async fn stop(&self) -> RecordingInfo {
        if !self.is_recording() {
            return self.info();
        }
        let waiting = self.eos.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        self.tap.disconnect();
        self.tasks[0].abort();
        let _ = self.video_src.end_of_stream();
        let _ = self.audio_src.end_of_stream();
        let finished =
            self.got_eos.load(Ordering::Relaxed) || tokio::time::timeout(Duration::from_secs(5), waiting).await.is_ok();
        self.tap.stop().await;
        self.tasks[1].abort();
        // A write blocked in the kernel holds the streaming thread: do not wait on it for ever.
        let p = self.pipeline.clone();
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || p.set_state(gst::State::Null)),
        )
        .await;
        let state = {
            let mut end = self.end.lock().unwrap();
            if end.at.is_none() {
                let state =
                    if self.got_eos.load(Ordering::Relaxed) && finished { State::Stopped } else { State::Failed };
                if state == State::Failed {
                    end.error = Some("the file was not finalized within 5 s".into());
                }
                end.at = Some((Instant::now(), state));
            }
            end.at.map(|(_, s)| s)
        };
        tracing::info!(recording = %self.id, file = %self.path.display(), ?state, "recording finalized");
        self.info()
    }

    /// The recording as the API shows it.
    pub fn info(&self) -> RecordingInfo {
        let (at, error) = {
            let end = self.end.lock().unwrap();
            (end.at, end.error.clone())
        };
        let until = at.map_or_else(Instant::now, |(t, _)| t);
        RecordingInfo {
            id: self.id.clone(),
            format: self.format,
            file: self.path.display().to_string(),
            state: at.map_or(State::Recording, |(_, s)| s),
            duration_s: until.duration_since(self.started).as_secs_f64(),
            size_bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
            started_ms: self.started_ms,
            error,
            url: None,
            upload: None,
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.tap.disconnect();
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        let d = Path::new("/rec");
        assert_eq!(file_path(d, "r", "x1", Format::Webm, None).unwrap(), Path::new("/rec/r-x1.webm"));
        assert_eq!(file_path(d, "r", "x1", Format::Mp4, Some("meeting")).unwrap(), Path::new("/rec/meeting.mp4"));
        assert_eq!(file_path(d, "r", "x1", Format::Mkv, Some("a.mkv")).unwrap(), Path::new("/rec/a.mkv"));
        for bad in ["../x", "a/b", ".hidden", ""] {
            assert!(file_path(d, "r", "x", Format::Mkv, Some(bad)).is_err(), "{bad}");
        }
    }
}
