//! Live egress: the room's composite (its H.264 encode) and full mix (the shared Opus encode,
//! turned into AAC here) streamed to RTMP/RTMPS (FLV), SRT (MPEG-TS) or an HLS folder.
//!
//! Each egress is its own GStreamer pipeline fed from the room through a [`Tap`] on the room's
//! encoded H.264, so a far end that drops or errors never touches the room: the egress pipeline is
//! torn down and rebuilt with backoff (1, 2, 4 … 30 s) until it is stopped. It says `streaming`
//! only once the far end has taken media ([`far_end_took`]), `connecting` before.
//!
//! ```text
//! room H.264 encode ─ tee ─ Tap ┄┄> appsrc ─ h264parse config-interval=-1 ───────────────┐
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

use super::recording::OnState;
use super::tap::{Stamp, Tap};
use crate::codec::VideoCodec;
use crate::media::audio::AudioMixer;
use crate::media::video::RoomVideo;

/// How often an egress needs a keyframe: players and platforms want one at least every 2 s
/// (HLS segments start at one).
const EGRESS_KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);
/// Bytes of video an egress pipeline may hold unsent before the tap drops frames (about 3 s at
/// the full tier's bitrate): a far end that stalls costs frames, never the room's encoder.
const EGRESS_BACKLOG_BYTES: u64 = 1_000_000;
/// Bytes of Opus likewise (about 3 s).
const AUDIO_BACKLOG_BYTES: u64 = 16_000;

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
    /// `connecting` (until the far end has taken media), `streaming`, `reconnecting` (after a far
    /// end's error, with `last_error`), `failed` (the pipeline cannot be built), `stopped`.
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

/// Whether the far end has taken media, from what the egress pipeline's sink says: RTMP once
/// `rtmp2sink` holds a connection (handshake, `connect` and `publish` answered — its stats carry
/// the connection's `out-chunk-size`, 0 before); SRT once the listener acknowledged data
/// (`srtsink` stats `packet-ack-received` > 0; the egress is the caller); HLS once the first
/// segment was closed on disk (`splitmuxsink-fragment-closed` from inside `hlssink2`).
pub fn far_end_took(target: &Target, sink_stats: Option<&gst::StructureRef>, segment_closed: bool) -> bool {
    fn number(s: &gst::StructureRef, field: &str) -> u64 {
        let Ok(v) = s.value(field) else { return 0 };
        v.get::<u64>()
            .ok()
            .or_else(|| v.get::<u32>().ok().map(u64::from))
            .or_else(|| v.get::<i64>().ok().map(|n| n.max(0) as u64))
            .or_else(|| v.get::<i32>().ok().map(|n| n.max(0) as u64))
            .unwrap_or(0)
    }
    match target {
        Target::Hls { .. } => segment_closed,
        Target::Rtmp { .. } => sink_stats.is_some_and(|s| number(s, "out-chunk-size") > 0),
        Target::Srt { .. } => sink_stats.is_some_and(|s| number(s, "packet-ack-received") > 0),
    }
}

/// One running egress.
pub struct Egress {
    id: String,
    target: Target,
    status: Arc<Mutex<Status>>,
    stopped: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tap: Arc<Tap>,
    /// The running egress pipeline's audio source, swapped on each reconnect.
    audio_src: Arc<Mutex<Option<gst_app::AppSrc>>>,
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
        self.tap.disconnect();
        *self.audio_src.lock().unwrap() = None;
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn gst_err(e: impl std::fmt::Display) -> EgressError {
    EgressError::Gst(e.to_string())
}

/// The egress pipeline for `target`: `(pipeline, video appsrc, audio appsrc)`; its sink is named
/// `out` (RTMP, SRT) and its muxer `m`.
fn build(target: &Target) -> Result<(gst::Pipeline, gst_app::AppSrc, gst_app::AppSrc), EgressError> {
    let tail = match target {
        Target::Rtmp { url } => {
            format!("flvmux name=m streamable=true ! rtmp2sink name=out location=\"{url}\" async=false sync=false")
        }
        // alignment=7: 7 TS packets (1316 bytes) per buffer. srtsink sends each buffer as one SRT
        // message and libsrt's live mode takes at most 1316 bytes per message: with mpegtsmux's
        // default (a whole access unit per buffer) every frame over 1316 bytes — every IDR with
        // its SPS/PPS — was lost. Measured with srt-live-transmit as the listener, 6 s of 720p
        // x264: 0 IDRs of 176 access units before, 3 of 177 (each with SPS/PPS) with it.
        Target::Srt { url } => {
            format!("mpegtsmux name=m alignment=7 ! srtsink name=out uri=\"{url}\" async=false sync=false")
        }
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
    // config-interval=-1: SPS and PPS before every IDR, so a consumer that joins at any keyframe
    // (a player, an HLS segment) can decode from it.
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

/// What ended one run of an egress pipeline.
enum RunEnd {
    /// Stopped through the API or with the room.
    Stopped,
    /// The far end or the pipeline failed (the reason).
    Failed(String),
}

impl Egress {
    /// Starts streaming the room to `target`. The egress is `connecting` until the far end has
    /// taken media ([`far_end_took`]), then `streaming`; a far end that fails makes it
    /// `reconnecting` (with `last_error`) and it is rebuilt with backoff; a pipeline that cannot
    /// be built makes it `failed`. `on_state` hears every change, with the reason for
    /// `reconnecting` and `failed`.
    ///
    /// # Errors
    /// [`EgressError`] when the room's H.264 encode cannot be tapped or the target is unusable.
    pub fn start(
        id: &str,
        target: Target,
        video: &RoomVideo,
        audio: &AudioMixer,
        on_state: OnState,
    ) -> Result<Arc<Self>, EgressError> {
        // Fail early on a target that cannot even be built.
        let (p, _, _) = build(&target)?;
        drop(p);
        let tap = Tap::start(
            &format!("egress-{id}"),
            video,
            VideoCodec::H264,
            EGRESS_KEYFRAME_INTERVAL,
            Stamp::Arrival,
            EGRESS_BACKLOG_BYTES,
        )
        .map_err(gst_err)?;
        let status = Arc::new(Mutex::new(Status { state: "connecting".into(), connects: 0, last_error: None }));
        let stopped = Arc::new(AtomicBool::new(false));
        let audio_src: Arc<Mutex<Option<gst_app::AppSrc>>> = Arc::default();
        // Audio into whatever egress pipeline runs now.
        let mut rx = audio.subscribe();
        let a2 = audio_src.clone();
        let audio_task = tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(f) if !f.shared.is_empty() => {
                        if let Some(a) = a2.lock().unwrap().as_ref()
                            && a.current_level_bytes() < AUDIO_BACKLOG_BYTES
                        {
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
        let (t, st, stop, a3, tap2) = (target.clone(), status.clone(), stopped.clone(), audio_src.clone(), tap.clone());
        let label = id.to_string();
        let set = move |st: &Mutex<Status>, state: &str, reason: Option<&str>| {
            let changed = {
                let mut s = st.lock().unwrap();
                if let Some(r) = reason {
                    s.last_error = Some(r.to_string());
                }
                let changed = s.state != state;
                s.state = state.to_string();
                if state == "streaming" && changed {
                    s.connects += 1;
                }
                changed
            };
            if changed {
                on_state(state, reason);
            }
        };
        let supervisor = tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            while !stop.load(Ordering::Relaxed) {
                let (p, v, a) = match build(&t) {
                    Ok(b) => b,
                    Err(e) => {
                        let e = e.to_string();
                        tracing::error!(egress = %label, "egress failed: {e}");
                        set(&st, "failed", Some(&e));
                        return;
                    }
                };
                let _null_on_drop = NullOnDrop(p.clone());
                let end = if p.set_state(gst::State::Playing).is_err() {
                    RunEnd::Failed("the egress pipeline did not start".into())
                } else {
                    *a3.lock().unwrap() = Some(a);
                    tap2.connect(v);
                    set(&st, "connecting", None);
                    let end = run(&p, &t, &stop, &tap2, || {
                        set(&st, "streaming", None);
                        tracing::info!(egress = %label, "egress streaming: the far end takes media");
                    })
                    .await;
                    tap2.disconnect();
                    *a3.lock().unwrap() = None;
                    end
                };
                let p2 = p.clone();
                let _ = tokio::task::spawn_blocking(move || p2.set_state(gst::State::Null)).await;
                let RunEnd::Failed(e) = end else { break };
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tracing::warn!(egress = %label, "egress failed: {e}; reconnecting in {backoff:?}");
                set(&st, "reconnecting", Some(&e));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            set(&st, "stopped", None);
        });
        Ok(Arc::new(Self {
            id: id.to_string(),
            target,
            status,
            stopped,
            tasks: vec![audio_task, supervisor],
            tap,
            audio_src,
        }))
    }

    /// Egress id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops streaming and takes the tap out of the room.
    pub async fn stop(&self) -> EgressInfo {
        self.stopped.store(true, Ordering::Relaxed);
        self.tap.stop().await;
        *self.audio_src.lock().unwrap() = None;
        // The supervisor notices within half a second and shuts its pipeline down.
        for _ in 0..30 {
            if matches!(self.status.lock().unwrap().state.as_str(), "stopped" | "failed") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.tasks[0].abort();
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

/// Runs one egress pipeline until it fails or `stop` is set, calling `taken` once the far end
/// has taken media, and asking for keyframes the tap waits for.
async fn run(p: &gst::Pipeline, target: &Target, stop: &AtomicBool, tap: &Tap, taken: impl Fn()) -> RunEnd {
    let bus = p.bus().expect("pipeline bus");
    let sink = p.by_name("out");
    let mut segment_closed = false;
    let mut took = false;
    // Check for stop, the far end and the bus twice a second.
    loop {
        if stop.load(Ordering::Relaxed) {
            return RunEnd::Stopped;
        }
        if !took {
            let stats = sink.as_ref().map(|s| s.property::<gst::Structure>("stats"));
            if far_end_took(target, stats.as_deref(), segment_closed) {
                took = true;
                taken();
            }
        }
        tap.poll_keyframe();
        let b = bus.clone();
        let msg = tokio::task::spawn_blocking(move || {
            b.timed_pop_filtered(
                gst::ClockTime::from_mseconds(500),
                &[gst::MessageType::Error, gst::MessageType::Eos, gst::MessageType::Element],
            )
        })
        .await
        .ok()
        .flatten();
        let Some(m) = msg else { continue };
        match m.view() {
            gst::MessageView::Error(e) => {
                let debug = e.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                return RunEnd::Failed(format!("{}{debug}", e.error()));
            }
            gst::MessageView::Eos(_) => return RunEnd::Failed("end of stream from the far end".into()),
            gst::MessageView::Element(el)
                if el.structure().is_some_and(|s| s.name() == "splitmuxsink-fragment-closed") =>
            {
                segment_closed = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(s: &str) -> gst::Structure {
        s.parse().unwrap()
    }

    #[test]
    fn the_far_end_takes_media_only_when_its_sink_says_so() {
        gst::init().unwrap();
        let rtmp = Target::Rtmp { url: "rtmp://h/a/k".into() };
        let before = stats("stats, in-chunk-size=(uint)0, out-chunk-size=(uint)0, out-bytes-total=(guint64)0");
        let after = stats("stats, in-chunk-size=(uint)4096, out-chunk-size=(uint)128, out-bytes-total=(guint64)3500");
        assert!(!far_end_took(&rtmp, None, false));
        assert!(!far_end_took(&rtmp, Some(&before), false));
        assert!(far_end_took(&rtmp, Some(&after), false));

        let srt = Target::Srt { url: "srt://h:1".into() };
        let unconnected = stats("application/x-srt-statistics, bytes-sent-total=(guint64)0");
        let sent = stats("application/x-srt-statistics, packets-sent=(gint64)40, packet-ack-received=(int)0");
        let acked = stats("application/x-srt-statistics, packets-sent=(gint64)445, packet-ack-received=(int)98");
        assert!(!far_end_took(&srt, Some(&unconnected), false));
        assert!(!far_end_took(&srt, Some(&sent), false), "sent is not taken");
        assert!(far_end_took(&srt, Some(&acked), false));

        let hls = Target::Hls { dir: "/x".into() };
        assert!(!far_end_took(&hls, None, false));
        assert!(far_end_took(&hls, None, true));
    }
}
