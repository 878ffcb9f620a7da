//! Composite recordings: the room's encoded video (VP8 for WebM/MKV, the room's H.264 encode for
//! MP4) and its full audio mix (the shared Opus encode) muxed into a file that survives a crash:
//! Matroska/WebM in clusters of at most 1 s, MP4 fragmented every second.
//!
//! ```text
//! room encoder ─ tee ─ [sink] queue ─ (h264parse) ─┐
//! mixer (shared Opus) → appsrc ─ opusparse ─ queue ─┴─ webmmux / matroskamux / mp4mux ─ filesink
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use serde::{Deserialize, Serialize};

use crate::codec::VideoCodec;
use crate::media::audio::AudioMixer;
use crate::media::video::RoomVideo;

/// How often a recording asks the encoder for a keyframe (its seek points).
const RECORDING_KEYFRAME_INTERVAL: Duration = Duration::from_secs(10);

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

/// One running (or finished) recording.
pub struct Recording {
    id: String,
    format: Format,
    path: PathBuf,
    started: Instant,
    started_ms: u64,
    ended: Mutex<Option<(Instant, State)>>,
    bin: gst::Bin,
    feed: gst::Pad,
    audio_src: gst_app::AppSrc,
    audio_task: tokio::task::JoinHandle<()>,
    eos: Arc<tokio::sync::Notify>,
    got_eos: Arc<AtomicBool>,
    video: RoomVideo,
}

impl Recording {
    /// Starts recording `video` and `audio` into `path`.
    ///
    /// # Errors
    /// [`RecordingError`] when the file or the GStreamer branch cannot be made.
    pub fn start(
        id: &str,
        format: Format,
        path: PathBuf,
        video: &RoomVideo,
        audio: &AudioMixer,
    ) -> Result<Arc<Self>, RecordingError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|err| RecordingError::Io { path: dir.display().to_string(), err })?;
        }
        // Fail early and clearly on an unwritable path.
        std::fs::File::create(&path).map_err(|err| RecordingError::Io { path: path.display().to_string(), err })?;
        let bin = gst::Bin::with_name(&format!("rec-{id}"));
        let make = |f: &str| gst::ElementFactory::make(f).build().map_err(gst_err);
        let vqueue = gst::ElementFactory::make("queue")
            .property("max-size-time", 3_000_000_000u64)
            .property("max-size-buffers", 0u32)
            .property("max-size-bytes", 0u32)
            .build()
            .map_err(gst_err)?;
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
            // Every write straight to the kernel: a SIGKILL loses no user-space buffer.
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
            .is_live(true)
            .format(gst::Format::Time)
            .build();
        let aparse = make("opusparse")?;
        let aqueue = make("queue")?;
        bin.add_many([&vqueue, &mux, &sink, audio_src.upcast_ref(), &aparse, &aqueue]).map_err(gst_err)?;
        let mut video_chain = vec![vqueue.clone()];
        if format == Format::Mp4 {
            let parse = make("h264parse")?;
            bin.add(&parse).map_err(gst_err)?;
            video_chain.push(parse);
        }
        gst::Element::link_many(&video_chain).map_err(gst_err)?;
        video_chain.last().unwrap().link(&mux).map_err(gst_err)?;
        gst::Element::link_many([audio_src.upcast_ref(), &aparse, &aqueue, &mux]).map_err(gst_err)?;
        mux.link(&sink).map_err(gst_err)?;
        let ghost = gst::GhostPad::with_target(&vqueue.static_pad("sink").unwrap()).map_err(gst_err)?;
        ghost.set_active(true).map_err(gst_err)?;
        bin.add_pad(&ghost).map_err(gst_err)?;
        // The file starts at its first keyframe: delta frames before it are dropped, and every
        // timestamp (video here, audio when pushed) is made relative to that keyframe's, so the
        // file starts at 0 with audio and video on the room's one clock.
        let base = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
        let b0 = base.clone();
        // Encoders stamp in their own segment (x264enc adds 1000 h to every PTS): convert each
        // buffer to running time with the upstream segment, and hand the muxer a plain segment.
        let upstream: Arc<Mutex<Option<gst::FormattedSegment<gst::ClockTime>>>> = Arc::default();
        vqueue.static_pad("sink").unwrap().add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |_, info| {
                match &mut info.data {
                    Some(gst::PadProbeData::Event(ev)) => {
                        if let gst::EventView::Segment(seg) = ev.view() {
                            *upstream.lock().unwrap() = seg.segment().downcast_ref::<gst::ClockTime>().cloned();
                            *ev = gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new());
                        }
                        gst::PadProbeReturn::Ok
                    }
                    Some(gst::PadProbeData::Buffer(buffer)) => {
                        let seg = upstream.lock().unwrap().clone();
                        let running = |t: Option<gst::ClockTime>| {
                            t.and_then(|t| seg.as_ref().map_or(Some(t), |s| s.to_running_time(t)))
                        };
                        let Some(pts) = running(buffer.pts()) else { return gst::PadProbeReturn::Drop };
                        let mut start = b0.load(Ordering::Acquire);
                        if start == u64::MAX {
                            if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                                return gst::PadProbeReturn::Drop;
                            }
                            start = pts.nseconds();
                            b0.store(start, Ordering::Release);
                        }
                        let Some(rel) = pts.nseconds().checked_sub(start) else { return gst::PadProbeReturn::Drop };
                        let dts = running(buffer.dts()).and_then(|d| d.nseconds().checked_sub(start));
                        let b = buffer.make_mut();
                        b.set_pts(gst::ClockTime::from_nseconds(rel));
                        // No B-frames: decode order is presentation order (mp4mux needs a DTS).
                        b.set_dts(gst::ClockTime::from_nseconds(dts.unwrap_or(rel)));
                        gst::PadProbeReturn::Ok
                    }
                    _ => gst::PadProbeReturn::Ok,
                }
            },
        );
        // The end: EOS reaching the file.
        let eos = Arc::new(tokio::sync::Notify::new());
        let got_eos = Arc::new(AtomicBool::new(false));
        let (e, g) = (eos.clone(), got_eos.clone());
        sink.static_pad("sink").unwrap().add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if info.event().is_some_and(|ev| ev.type_() == gst::EventType::Eos) {
                g.store(true, Ordering::Relaxed);
                e.notify_waiters();
            }
            gst::PadProbeReturn::Ok
        });

        let feed = video.attach_encoded(format.codec(), &bin, RECORDING_KEYFRAME_INTERVAL).map_err(gst_err)?;
        let mut rx = audio.subscribe();
        let (src, v) = (audio_src.clone(), video.clone());
        let codec = format.codec();
        let audio_task = tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            // Until the first keyframe, ask for one every half second (a request made while the
            // encoder was starting can be lost).
            let mut last_request = Instant::now();
            loop {
                match rx.recv().await {
                    Ok(f) if !f.shared.is_empty() => {
                        let start = base.load(Ordering::Acquire);
                        if start == u64::MAX {
                            if last_request.elapsed() > Duration::from_millis(500) {
                                v.request_keyframe(codec);
                                last_request = Instant::now();
                            }
                            continue;
                        }
                        // A mix frame sent at tick T holds the 20 ms before T: stamp its start, on the
                        // room's running time like the composite frames.
                        let Some(now) = v.running_time() else { continue };
                        let Some(rel) = now.nseconds().checked_sub(start + 20_000_000) else { continue };
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
        tracing::info!(recording = id, file = %path.display(), ?format, "recording started");
        Ok(Arc::new(Self {
            id: id.to_string(),
            format,
            path,
            started: Instant::now(),
            started_ms: crate::ids::now_ms(),
            ended: Mutex::new(None),
            bin,
            feed,
            audio_src,
            audio_task,
            eos,
            got_eos,
            video: video.clone(),
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
        self.ended.lock().unwrap().is_none()
    }

    /// Stops and finalizes: end-of-stream through the muxer (which writes its index), waits up to
    /// 5 s for it to reach the file, then closes. Stopping twice does nothing.
    pub async fn stop(&self) -> RecordingInfo {
        if !self.is_recording() {
            return self.info();
        }
        let waiting = self.eos.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        self.audio_task.abort();
        let _ = self.audio_src.end_of_stream();
        self.video.detach_encoded(&self.feed, &self.bin);
        let finished =
            self.got_eos.load(Ordering::Relaxed) || tokio::time::timeout(Duration::from_secs(5), waiting).await.is_ok();
        self.video.remove_branch(&self.bin);
        let state = if finished { State::Stopped } else { State::Failed };
        *self.ended.lock().unwrap() = Some((Instant::now(), state));
        tracing::info!(recording = %self.id, file = %self.path.display(), ?state, "recording finalized");
        self.info()
    }

    /// The recording as the API shows it.
    pub fn info(&self) -> RecordingInfo {
        let ended = *self.ended.lock().unwrap();
        let end = ended.map_or_else(Instant::now, |(t, _)| t);
        RecordingInfo {
            id: self.id.clone(),
            format: self.format,
            file: self.path.display().to_string(),
            state: ended.map_or(State::Recording, |(_, s)| s),
            duration_s: end.duration_since(self.started).as_secs_f64(),
            size_bytes: std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
            started_ms: self.started_ms,
        }
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
