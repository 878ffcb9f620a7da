//! Live egress: the room's composite (its H.264 encode) and full mix (the shared Opus encode,
//! turned into AAC here) streamed to RTMP/RTMPS (FLV), SRT (MPEG-TS) or an HLS folder.
//!
//! Each egress is its own GStreamer pipeline fed from the room through an `appsink` on the room's
//! encoded H.264, so a far end that drops or errors never touches the room: the egress pipeline is
//! torn down and rebuilt with backoff (1, 2, 4 … 30 s) until it is stopped.
//!
//! ```text
//! room H.264 encode ─ tee ─ queue ─ appsink ┄┄> appsrc ─ h264parse ──────────────────────┐
//! mixer (shared Opus) ┄┄> appsrc ─ opusparse ─ opusdec ─ audioconvert ─ avenc_aac ─ aacparse ┴─ flvmux ─ rtmp2sink
//!                                                                                   (or mpegtsmux ─ srtsink, hlssink2)
//! ```

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gstreamer as gst;
use gstreamer_app as gst_app;
use serde::Serialize;

use crate::codec::VideoCodec;
use crate::media::audio::AudioMixer;
use crate::media::video::RoomVideo;

/// How often an egress needs a keyframe: players and platforms want one at least every 2 s
/// (HLS segments start at one).
const EGRESS_KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);

/// Where an egress goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// `rtmp://` or `rtmps://` URL: FLV, H.264 + AAC.
    Rtmp {
        /// URL.
        url: String,
    },
    /// `srt://` URL: MPEG-TS, H.264 + AAC.
    Srt {
        /// URL.
        url: String,
    },
    /// An HLS folder: `playlist.m3u8` and 2 s MPEG-TS segments.
    Hls {
        /// Folder.
        dir: PathBuf,
    },
}

/// Errors of starting an egress.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// A URL or folder that cannot be used.
    #[error("{0}")]
    BadTarget(String),
    /// GStreamer failed.
    #[error("gstreamer: {0}")]
    Gst(String),
}

/// An egress as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EgressInfo {
    /// Egress id.
    pub id: String,
    /// Where it goes.
    pub target: Target,
    /// `connecting`, `streaming`, `reconnecting`, `stopped`.
    pub state: String,
    /// Times the far end was (re)connected.
    pub connects: u64,
    /// Last error from the far end.
    pub last_error: Option<String>,
}

/// Parses an egress request: `rtmp://`, `rtmps://` or `srt://` URL, or an HLS folder name (a plain
/// name, created under `hls_root`).
///
/// # Errors
/// [`EgressError::BadTarget`] for other schemes or names with path separators.
pub fn target(url: Option<&str>, hls: Option<&str>, hls_root: &std::path::Path) -> Result<Target, EgressError> {
    match (url, hls) {
        (Some(u), None) if u.starts_with("rtmp://") || u.starts_with("rtmps://") => Ok(Target::Rtmp { url: u.into() }),
        (Some(u), None) if u.starts_with("srt://") => Ok(Target::Srt { url: u.into() }),
        (Some(u), None) => Err(EgressError::BadTarget(format!("url {u:?}: use rtmp://, rtmps:// or srt://"))),
        (None, Some(h)) if !h.is_empty() && h.len() <= 128 && !h.contains(['/', '\\']) && !h.starts_with('.') => {
            Ok(Target::Hls { dir: hls_root.join(h) })
        }
        (None, Some(h)) => Err(EgressError::BadTarget(format!("hls {h:?}: a plain folder name"))),
        _ => Err(EgressError::BadTarget(
            "give either \"url\" (rtmp://, rtmps://, srt://) or \"hls\" (a folder name)".into(),
        )),
    }
}

struct Status {
    state: String,
    connects: u64,
    last_error: Option<String>,
}

/// One running egress.
pub struct Egress {
    id: String,
    target: Target,
    status: Arc<Mutex<Status>>,
    stopped: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tap: gst::Bin,
    feed: gst::Pad,
    video: RoomVideo,
    /// The running egress pipeline's sources, swapped on each reconnect.
    sources: Arc<Mutex<Option<(gst_app::AppSrc, gst_app::AppSrc)>>>,
}

/// Sets a pipeline to `NULL` when dropped, so an egress pipeline never outlives its supervisor
/// (a runtime shutting down drops the task mid-await).
struct NullOnDrop(gst::Pipeline);

impl Drop for NullOnDrop {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        *self.sources.lock().unwrap() = None;
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn gst_err(e: impl std::fmt::Display) -> EgressError {
    EgressError::Gst(e.to_string())
}

fn build(target: &Target) -> Result<(gst::Pipeline, gst_app::AppSrc, gst_app::AppSrc), EgressError> {
    let tail = match target {
        Target::Rtmp { url } => {
            format!("flvmux name=m streamable=true ! rtmp2sink name=out location=\"{url}\" async=false sync=false")
        }
        Target::Srt { url } => format!("mpegtsmux name=m ! srtsink name=out uri=\"{url}\" async=false sync=false"),
        Target::Hls { dir } => {
            std::fs::create_dir_all(dir).map_err(|e| EgressError::BadTarget(format!("{}: {e}", dir.display())))?;
            format!(
                "hlssink2 name=m target-duration=2 max-files=10 playlist-length=6 location=\"{}/segment%05d.ts\" playlist-location=\"{}/playlist.m3u8\"",
                dir.display(),
                dir.display()
            )
        }
    };
    let (vpad, apad) = match target {
        Target::Hls { .. } => ("m.video", "m.audio"),
        _ => ("m.", "m."),
    };
    let desc = format!(
        "appsrc name=v is-live=true do-timestamp=true format=time \
           caps=\"video/x-h264,stream-format=byte-stream,alignment=au\" ! h264parse config-interval=-1 ! queue ! {vpad} \
         appsrc name=a is-live=true do-timestamp=true format=time \
           caps=\"audio/x-opus,channel-mapping-family=0,channels=1,rate=48000\" ! opusparse ! opusdec ! audioconvert ! audioresample \
           ! audio/x-raw,rate=48000,channels=2 ! avenc_aac bitrate=128000 ! aacparse ! queue ! {apad} \
         {tail}"
    );
    let p = gst::parse::launch(&desc)
        .map_err(gst_err)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| gst_err("not a pipeline"))?;
    let v = p.by_name("v").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()).ok_or_else(|| gst_err("appsrc"))?;
    let a = p.by_name("a").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()).ok_or_else(|| gst_err("appsrc"))?;
    Ok((p, v, a))
}

impl Egress {
    /// Starts streaming the room to `target`.
    ///
    /// # Errors
    /// [`EgressError`] when the room's H.264 encode cannot be tapped or the target is unusable.
    pub fn start(
        id: &str,
        target: Target,
        video: &RoomVideo,
        audio: &AudioMixer,
        on_state: Arc<dyn Fn(&str) + Send + Sync>,
    ) -> Result<Arc<Self>, EgressError> {
        // Fail early on a target that cannot even be built.
        let (p, _, _) = build(&target)?;
        drop(p);
        let sources: Arc<Mutex<Option<(gst_app::AppSrc, gst_app::AppSrc)>>> = Arc::default();
        // Tap: encoded H.264 from the room into whatever egress pipeline runs now.
        let tap = gst::Bin::with_name(&format!("egress-{id}"));
        let q = gst::ElementFactory::make("queue")
            .property_from_str("leaky", "downstream")
            .property("max-size-buffers", 60u32)
            .build()
            .map_err(gst_err)?;
        let sink = gst_app::AppSink::builder().sync(false).async_(false).max_buffers(60).drop(true).build();
        tap.add_many([&q, sink.upcast_ref()]).map_err(gst_err)?;
        q.link(&sink).map_err(gst_err)?;
        let ghost = gst::GhostPad::with_target(&q.static_pad("sink").unwrap()).map_err(gst_err)?;
        ghost.set_active(true).map_err(gst_err)?;
        tap.add_pad(&ghost).map_err(gst_err)?;
        let need_key = Arc::new(AtomicBool::new(true));
        let (s2, nk) = (sources.clone(), need_key.clone());
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let Some(buf) = sample.buffer() else { return Ok(gst::FlowSuccess::Ok) };
                    let guard = s2.lock().unwrap();
                    let Some((v, _)) = guard.as_ref() else {
                        nk.store(true, Ordering::Relaxed);
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    if nk.load(Ordering::Relaxed) {
                        if buf.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                            return Ok(gst::FlowSuccess::Ok);
                        }
                        nk.store(false, Ordering::Relaxed);
                    }
                    let mut b = buf.copy();
                    {
                        let b = b.make_mut();
                        b.set_pts(gst::ClockTime::NONE);
                        b.set_dts(gst::ClockTime::NONE);
                    }
                    if v.push_buffer(b).is_err() {
                        nk.store(true, Ordering::Relaxed);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let feed = video.attach_encoded(VideoCodec::H264, &tap, EGRESS_KEYFRAME_INTERVAL).map_err(gst_err)?;
        let status = Arc::new(Mutex::new(Status { state: "connecting".into(), connects: 0, last_error: None }));
        let stopped = Arc::new(AtomicBool::new(false));
        // Audio into whatever egress pipeline runs now.
        let mut rx = audio.subscribe();
        let s3 = sources.clone();
        let audio_task = tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(f) if !f.shared.is_empty() => {
                        if let Some((_, a)) = s3.lock().unwrap().as_ref() {
                            let mut b = gst::Buffer::from_slice(f.shared.clone());
                            b.get_mut().unwrap().set_duration(gst::ClockTime::from_mseconds(20));
                            let _ = a.push_buffer(b);
                        }
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => break,
                }
            }
        });
        // The supervisor: run, and on error rebuild with backoff.
        let (t, st, stop, src, v2) = (target.clone(), status.clone(), stopped.clone(), sources.clone(), video.clone());
        let label = id.to_string();
        let supervisor = tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            while !stop.load(Ordering::Relaxed) {
                let built = build(&t);
                let Ok((p, v, a)) = built else {
                    let e = built.err().map(|e| e.to_string());
                    st.lock().unwrap().last_error = e;
                    break;
                };
                let bus = p.bus().expect("pipeline bus");
                let _null_on_drop = NullOnDrop(p.clone());
                if p.set_state(gst::State::Playing).is_err() {
                    let _ = p.set_state(gst::State::Null);
                } else {
                    *src.lock().unwrap() = Some((v, a));
                    v2.request_keyframe(VideoCodec::H264);
                    {
                        let mut s = st.lock().unwrap();
                        s.state = "streaming".into();
                        s.connects += 1;
                    }
                    on_state("streaming");
                    tracing::info!(egress = %label, "egress streaming");
                    // Wait for an error or end, checking for stop twice a second.
                    let error = loop {
                        if stop.load(Ordering::Relaxed) {
                            break None;
                        }
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
                        match msg {
                            Some(m) => match m.view() {
                                gst::MessageView::Error(e) => break Some(e.error().to_string()),
                                _ => break Some("end of stream from the far end".into()),
                            },
                            None => continue,
                        }
                    };
                    *src.lock().unwrap() = None;
                    let _ = p.set_state(gst::State::Null);
                    let Some(e) = error else { break };
                    tracing::warn!(egress = %label, "egress failed: {e}; reconnecting in {backoff:?}");
                    backoff = Duration::from_secs(1);
                    let mut s = st.lock().unwrap();
                    s.last_error = Some(e);
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                st.lock().unwrap().state = "reconnecting".into();
                on_state("reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            st.lock().unwrap().state = "stopped".into();
            on_state("stopped");
        });
        Ok(Arc::new(Self {
            id: id.to_string(),
            target,
            status,
            stopped,
            tasks: vec![audio_task, supervisor],
            tap,
            feed,
            video: video.clone(),
            sources,
        }))
    }

    /// Egress id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops streaming and takes the tap out of the room.
    pub async fn stop(&self) -> EgressInfo {
        self.stopped.store(true, Ordering::Relaxed);
        *self.sources.lock().unwrap() = None;
        self.video.detach_encoded(&self.feed, &self.tap);
        // The supervisor notices within half a second and shuts its pipeline down.
        for _ in 0..20 {
            if self.status.lock().unwrap().state == "stopped" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.tasks[0].abort();
        self.video.remove_branch(&self.tap);
        self.info()
    }

    /// The egress as the API shows it.
    pub fn info(&self) -> EgressInfo {
        let s = self.status.lock().unwrap();
        EgressInfo {
            id: self.id.clone(),
            target: self.target.clone(),
            state: s.state.clone(),
            connects: s.connects,
            last_error: s.last_error.clone(),
        }
    }
}
