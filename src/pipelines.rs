//! Encoder/decoder backends from `pipelines/<backend>/<role>.gst` text fragments.
//!
//! The fragments are embedded in the binary; `--pipelines-dir` reads them from disk instead. A
//! fragment file holds one or more **variants** separated by `---` lines (GStreamer versions name
//! and configure GPU elements differently: NVENC is `nvh264enc` with P1-P7 presets on 1.26,
//! `nvcudah264enc` on 1.24, legacy presets only on 1.22). For a role, the candidates are the chosen
//! backend's variants in order, then `cpu`'s; the first one that passes is used:
//!
//! 1. every element it names is registered (GPU plugins register nothing without a GPU/driver);
//! 2. it parses: its properties and their values exist in this GStreamer;
//! 3. it was not marked failed ([`Backends::mark_failed`]: by the room when a running GPU element
//!    errors, or by [`Backends::verify`]'s probe);
//! 4. only with [`Check::Probe`]: a small pipeline through it runs to end-of-stream (an NVENC
//!    element is registered on any NVIDIA GPU with the encoder API, but a driver that refuses its
//!    preset, a GPU without NVENC or a full session table only shows up when it runs).
//!
//! So a GPU image still runs, role by role on `cpu`, without a GPU. [`Backends::resolve`] says which
//! candidate serves a role here and why the others did not (what `tessera doctor` prints).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstreamer as gst;
use rust_embed::RustEmbed;
use serde::Serialize;

#[derive(RustEmbed)]
#[folder = "pipelines/"]
#[include = "*.gst"]
struct Embedded;

/// GPU element factories a fragment may name on a machine that lacks them (no GPU, no driver, an
/// older GStreamer), space-separated: the fragment checks tolerate "no such element" for these only.
pub const GPU_ELEMENTS: &str = "nvh264dec nvvp8dec nvav1dec nvh264enc nvcudah264enc nvav1enc cudaupload cudadownload \
     cudaconvertscale cudacompositor vah264dec vavp8dec vaav1dec vah264enc vah264lpenc vaav1enc vaav1lpenc vapostproc \
     vacompositor";

/// Whether `factory` is one of [`GPU_ELEMENTS`].
pub fn is_gpu_element(factory: &str) -> bool {
    GPU_ELEMENTS.split_whitespace().any(|n| n == factory)
}

/// What a fragment does; the file is `<role>.gst` (the role's [`Role::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// raw I420 → VP8 frames.
    Vp8Encode,
    /// raw I420 → H.264 byte-stream, constrained baseline, AU-aligned.
    H264Encode,
    /// VP8 frames → raw video.
    Vp8Decode,
    /// H.264 byte-stream → raw video.
    H264Decode,
    /// raw video → the backend's compositing elements → raw I420 in system memory: the elements
    /// before its video aggregator run once per picture (an upload), the aggregator composes the
    /// tiles, the rest brings the composite back (`media::video::element`). No `cpu` fragment:
    /// the CPU canvas (`media::video::cpu`) composites there.
    Composite,
    /// Optional (not negotiated yet): raw I420 → AV1 OBU stream, temporal-unit aligned.
    Av1Encode,
    /// Optional (not negotiated yet): AV1 OBU stream → raw video.
    Av1Decode,
}

impl Role {
    /// The roles a room uses, in pipeline order (what `tessera doctor` lists first).
    pub const CORE: [Role; 5] = [Role::Vp8Decode, Role::H264Decode, Role::Composite, Role::Vp8Encode, Role::H264Encode];
    /// Roles with fragments that no room uses yet.
    pub const OPTIONAL: [Role; 2] = [Role::Av1Decode, Role::Av1Encode];
    /// [`Role::CORE`] then [`Role::OPTIONAL`].
    pub fn all() -> impl Iterator<Item = Role> {
        Self::CORE.into_iter().chain(Self::OPTIONAL)
    }

    /// The role's name and fragment file stem: `vp8-encode`, `h264-decode`, `composite`, ….
    pub fn name(self) -> &'static str {
        match self {
            Role::Vp8Encode => "vp8-encode",
            Role::H264Encode => "h264-encode",
            Role::Vp8Decode => "vp8-decode",
            Role::H264Decode => "h264-decode",
            Role::Composite => "composite",
            Role::Av1Encode => "av1-encode",
            Role::Av1Decode => "av1-decode",
        }
    }

    /// The encode role of the same codec that makes a decode role's probe input.
    fn encode_of(self) -> Option<Role> {
        match self {
            Role::Vp8Decode => Some(Role::Vp8Encode),
            Role::H264Decode => Some(Role::H264Encode),
            Role::Av1Decode => Some(Role::Av1Encode),
            _ => None,
        }
    }

    /// The RTP payloader and depayloader Tessera puts around the role's codec, if any.
    fn rtp(self) -> Option<(&'static str, &'static str)> {
        match self {
            Role::Vp8Encode | Role::Vp8Decode => Some(("rtpvp8pay", "rtpvp8depay")),
            Role::H264Encode | Role::H264Decode => Some(("rtph264pay", "rtph264depay")),
            _ => None,
        }
    }
}

/// Values substituted into a fragment's `{kbps}`, `{bps}`, `{keyint}`, `{fps}` placeholders.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Target bitrate, kbit/s.
    pub kbps: u32,
    /// Most frames between forced keyframes (Tessera passes 600 s worth: keyframes come on
    /// request).
    pub keyint: u32,
    /// Frames per second.
    pub fps: u32,
}

impl Params {
    /// What a room's full-size encoder gets by default (1500 kbit/s, 600 s at 30 fps): used by
    /// [`Backends::resolve`] and the probes.
    pub const TYPICAL: Params = Params { kbps: 1500, keyint: 18_000, fps: 30 };
}

/// Why no element chain could be made for a role.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Neither the chosen backend nor `cpu` has a usable fragment for the role.
    #[error("no usable pipeline fragment for {role:?} (backend {backend}): {reason}")]
    Unavailable {
        /// The role asked for.
        role: Role,
        /// The backend asked for.
        backend: String,
        /// The last parse or read error.
        reason: String,
    },
}

/// One variant of one backend's fragment for a role, placeholders substituted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fragment {
    /// The backend (folder) it comes from.
    pub backend: String,
    /// Its index among the file's variants, from 0.
    pub variant: usize,
    /// The launch description (comments dropped, lines joined).
    pub description: String,
}

/// A bin made by [`Backends::build`], and the fragment it came from (hand it to
/// [`Backends::mark_failed`] when the bin's elements fail at run time).
#[derive(Debug, Clone)]
pub struct Built {
    /// The elements, with ghost `sink` and `src` pads (a `composite` bin: `src` only, plus request
    /// sink pads of its compositor).
    pub bin: gst::Bin,
    /// Where it came from.
    pub fragment: Fragment,
}

/// How far [`Backends::resolve`] tests each candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Element names and parsing, as [`Backends::build`] does (milliseconds).
    Parse,
    /// Also run a small pipeline through the fragment (320x240, 10 frames) and wait up to this long
    /// for its end-of-stream: a GPU's first use takes 0.2-2 s.
    Probe(Duration),
}

/// What became of one candidate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Outcome {
    /// It passed every check asked for.
    Ok,
    /// These element factories are not registered here.
    MissingElements {
        /// Factory names, in fragment order.
        elements: Vec<String>,
    },
    /// GStreamer refused the description (an unknown property or value, a failed link).
    ParseError {
        /// GStreamer's message.
        error: String,
    },
    /// The probe pipeline posted an error, produced nothing, or did not finish in time.
    ProbeFailed {
        /// What happened.
        error: String,
    },
    /// [`Backends::mark_failed`] took it out.
    MarkedFailed {
        /// The reason given.
        reason: String,
    },
    /// An earlier candidate served the role.
    NotTried,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok => write!(f, "ok"),
            Outcome::MissingElements { elements } => write!(f, "no element {}", elements.join(", ")),
            Outcome::ParseError { error } => write!(f, "does not parse: {error}"),
            Outcome::ProbeFailed { error } => write!(f, "probe failed: {error}"),
            Outcome::MarkedFailed { reason } => write!(f, "marked failed: {reason}"),
            Outcome::NotTried => write!(f, "not tried"),
        }
    }
}

/// One candidate of [`Resolution::tried`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tried {
    /// The candidate.
    #[serde(flatten)]
    pub fragment: Fragment,
    /// What became of it.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Which backend serves a role on this machine, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// The role.
    pub role: Role,
    /// The backend asked for (`--backend`).
    pub wanted: String,
    /// The backend that runs the role here: `wanted`, `cpu` after a fallback, or `None` when no
    /// backend can (an optional role whose elements are all missing).
    pub backend: Option<String>,
    /// The fragment that runs it; `None` for the CPU canvas (`composite` on `cpu`) or when none can.
    pub fragment: Option<Fragment>,
    /// Whether the candidates were probed ([`Check::Probe`]).
    pub probed: bool,
    /// Why it is not the wanted backend's first variant (empty when it is).
    pub reason: String,
    /// Every candidate in order, with what became of it.
    pub tried: Vec<Tried>,
}

impl Resolution {
    /// Whether `backend` differs from the backend asked for.
    pub fn fell_back(&self) -> bool {
        self.backend.as_deref() != Some(self.wanted.as_str())
    }
}

/// Makes GStreamer bins from the fragments of one backend. Clones share the failure marks.
#[derive(Debug, Clone)]
pub struct Backends {
    backend: String,
    dir: Option<PathBuf>,
    failed: Arc<Mutex<Marks>>,
    /// The backend of the fragment last built (or verified) for each role.
    serving: Arc<Mutex<HashMap<Role, String>>>,
}

/// (role, backend, variant) → why it was taken out.
type Marks = HashMap<(Role, String, usize), String>;

impl Backends {
    /// A factory for `backend` (a folder name), reading from `dir` when given, else the embedded copies.
    pub fn new(backend: &str, dir: Option<PathBuf>) -> Self {
        Self { backend: backend.to_string(), dir, failed: Arc::default(), serving: Arc::default() }
    }

    /// The backend asked for (`--backend`).
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The backends (folders) that have fragments, embedded or in `--pipelines-dir`; sorted.
    pub fn available(&self) -> Vec<String> {
        let mut names: Vec<String> = match &self.dir {
            Some(d) => std::fs::read_dir(d)
                .map(|it| {
                    it.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            None => Embedded::iter().filter_map(|p| p.split_once('/').map(|(b, _)| b.to_string())).collect(),
        };
        names.sort();
        names.dedup();
        names
    }

    fn text(&self, backend: &str, role: Role) -> Option<String> {
        let rel = format!("{backend}/{}.gst", role.name());
        match &self.dir {
            Some(d) => std::fs::read_to_string(d.join(&rel)).ok(),
            None => Embedded::get(&rel).map(|f| String::from_utf8_lossy(&f.data).into_owned()),
        }
    }

    /// Every variant of `backend`'s fragment for `role`, in file order, `p` substituted (empty: no file).
    pub fn variants(&self, backend: &str, role: Role, p: Params) -> Vec<Fragment> {
        let Some(text) = self.text(backend, role) else { return vec![] };
        split_variants(&text)
            .into_iter()
            .enumerate()
            .map(|(variant, body)| Fragment {
                backend: backend.to_string(),
                variant,
                description: substitute(&body, p),
            })
            .collect()
    }

    /// The chosen backend's variants, then `cpu`'s.
    fn candidates(&self, role: Role, p: Params) -> Vec<Fragment> {
        let mut all = self.variants(&self.backend, role, p);
        if self.backend != "cpu" {
            all.extend(self.variants("cpu", role, p));
        }
        all
    }

    fn marked(&self, role: Role, f: &Fragment) -> Option<String> {
        self.failed.lock().unwrap().get(&(role, f.backend.clone(), f.variant)).cloned()
    }

    /// Takes `fragment` out for `role` in this factory and its clones: [`Backends::build`] then
    /// skips it (the next variant, or `cpu`). For the room's run-time fallback: a GPU encoder that
    /// posts an error (session limit, driver refusing its preset) is marked, its branch rebuilt.
    pub fn mark_failed(&self, role: Role, fragment: &Fragment, reason: &str) {
        tracing::warn!(role = role.name(), backend = %fragment.backend, variant = fragment.variant, %reason,
            "pipeline fragment marked failed; later builds skip it");
        self.failed.lock().unwrap().insert((role, fragment.backend.clone(), fragment.variant), reason.to_string());
    }

    /// The launch description for `role` after placeholder substitution, and the backend it came
    /// from (the chosen one, or `cpu` as the fallback): the fragment [`Backends::build`] would use.
    pub fn description(&self, role: Role, p: Params) -> Option<(String, String)> {
        let f = self.build(role, p).ok()?.fragment;
        Some((f.description, f.backend))
    }

    /// A bin for `role` with ghost `sink` and `src` pads ([`Backends::build`]'s bin).
    ///
    /// # Errors
    /// [`PipelineError::Unavailable`] when no backend has a fragment that parses here.
    pub fn make_bin(&self, role: Role, p: Params) -> Result<gst::Bin, PipelineError> {
        self.build(role, p).map(|b| b.bin)
    }

    /// A bin for `role` from the first candidate whose elements exist, that parses and that is not
    /// marked failed (no probe: milliseconds), with the fragment it came from. Logs a warning
    /// when the chosen backend could not serve the role.
    ///
    /// # Errors
    /// [`PipelineError::Unavailable`] with the last candidate's reason when none passes.
    pub fn build(&self, role: Role, p: Params) -> Result<Built, PipelineError> {
        let _ = gst::init();
        let mut last = format!("no {} fragment", role.name());
        let mut skipped = vec![];
        for f in self.candidates(role, p) {
            let outcome = match self.marked(role, &f) {
                Some(reason) => Outcome::MarkedFailed { reason },
                None => match parse_checked(&f.description) {
                    Ok(bin) => {
                        if f.backend != self.backend {
                            tracing::warn!(backend = %self.backend, role = role.name(), skipped = %skipped.join("; "),
                                "no usable pipeline fragment in this backend (none, or skipped); falling back to cpu");
                        }
                        tracing::debug!(role = role.name(), backend = %f.backend, variant = f.variant,
                            desc = %f.description, "pipeline fragment");
                        self.serving.lock().unwrap().insert(role, f.backend.clone());
                        return Ok(Built { bin, fragment: f });
                    }
                    Err(o) => o,
                },
            };
            last = format!("{}#{}: {outcome}", f.backend, f.variant);
            skipped.push(last.clone());
        }
        Err(PipelineError::Unavailable { role, backend: self.backend.clone(), reason: last })
    }

    /// Which candidate serves `role` on this machine and what became of each (checked as `check`
    /// says, in order, until one passes; the rest are [`Outcome::NotTried`]). Blocks for the
    /// probes' run time with [`Check::Probe`] (run it off async workers). Logs nothing.
    pub fn resolve(&self, role: Role, check: Check) -> Resolution {
        let _ = gst::init();
        let p = Params::TYPICAL;
        let mut tried: Vec<Tried> = vec![];
        let mut chosen: Option<Fragment> = None;
        for f in self.candidates(role, p) {
            let outcome = if chosen.is_some() {
                Outcome::NotTried
            } else if let Some(reason) = self.marked(role, &f) {
                Outcome::MarkedFailed { reason }
            } else {
                match parse_checked(&f.description) {
                    Err(o) => o,
                    Ok(_) => match check {
                        Check::Parse => Outcome::Ok,
                        Check::Probe(timeout) => match probe(self, role, &f, timeout) {
                            Ok(()) => Outcome::Ok,
                            Err(error) => Outcome::ProbeFailed { error },
                        },
                    },
                }
            };
            if outcome == Outcome::Ok {
                chosen = Some(f.clone());
            }
            tried.push(Tried { fragment: f, outcome });
        }
        let failed: Vec<String> = tried
            .iter()
            .take_while(|t| t.outcome != Outcome::Ok)
            .map(|t| format!("{}#{}: {}", t.fragment.backend, t.fragment.variant, t.outcome))
            .collect();
        let mut reason = failed.join("; ");
        if self.variants(&self.backend, role, p).is_empty() {
            let none = format!("{} has no {} fragment", self.backend, role.name());
            reason = if reason.is_empty() { none } else { format!("{none}; {reason}") };
        }
        let (backend, fragment) = match (role, chosen) {
            (Role::Composite, None) => (Some("cpu".to_string()), None),
            (_, Some(f)) => (Some(f.backend.clone()), Some(f)),
            (_, None) => (None, None),
        };
        if role == Role::Composite && backend.as_deref() == Some("cpu") && self.backend == "cpu" {
            reason = "the CPU canvas composites (media/video/cpu.rs)".into();
        }
        Resolution {
            role,
            wanted: self.backend.clone(),
            backend,
            fragment,
            probed: matches!(check, Check::Probe(_)),
            reason,
            tried,
        }
    }

    /// Checks every [`Role::CORE`] role as `check` says ([`Backends::resolve`]), marks the
    /// candidates whose probe failed, so that [`Backends::build`] skips them from now on, and
    /// records the backend serving each role ([`Backends::serving`]): call once at start-up, on a
    /// blocking thread (milliseconds with [`Check::Parse`]; with [`Check::Probe`] instant without
    /// GPU elements, up to a few seconds with them). Returns the resolutions (for the start-up log).
    pub fn verify(&self, check: Check) -> Vec<Resolution> {
        let all: Vec<Resolution> = Role::CORE.iter().map(|&r| self.resolve(r, check)).collect();
        let mut serving = self.serving.lock().unwrap();
        for r in &all {
            for t in &r.tried {
                if let Outcome::ProbeFailed { error } = &t.outcome {
                    self.mark_failed(r.role, &t.fragment, error);
                }
            }
            if let Some(b) = &r.backend {
                serving.insert(r.role, b.clone());
            }
        }
        all
    }

    /// Records that `backend` serves `role` from now on (what [`Backends::serving`] reports): for a
    /// run-time fallback that builds no fragment, e.g. the room's compositor falling back to the
    /// CPU canvas.
    pub fn note_serving(&self, role: Role, backend: &str) {
        self.serving.lock().unwrap().insert(role, backend.to_string());
    }

    /// The backend serving each [`Role::CORE`] role now, in that order: as [`Backends::verify`]
    /// found it, then as the last [`Backends::build`] for the role chose (`cpu` after a run-time
    /// fallback); `None` before either ran for the role.
    pub fn serving(&self) -> Vec<(Role, Option<String>)> {
        let serving = self.serving.lock().unwrap();
        Role::CORE.iter().map(|r| (*r, serving.get(r).cloned())).collect()
    }
}

/// The variants of a fragment file: `---` lines separate them; `#` lines are comments; the lines
/// of one variant are joined with spaces; empty variants are dropped.
fn split_variants(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur: Vec<&str> = vec![];
    for line in text.lines().map(str::trim) {
        if line == "---" {
            out.push(cur.join(" "));
            cur.clear();
        } else if !line.is_empty() && !line.starts_with('#') {
            cur.push(line);
        }
    }
    out.push(cur.join(" "));
    out.retain(|v| !v.is_empty());
    out
}

fn substitute(body: &str, p: Params) -> String {
    body.replace("{kbps}", &p.kbps.to_string())
        .replace("{bps}", &(u64::from(p.kbps) * 1000).to_string())
        .replace("{keyint}", &p.keyint.to_string())
        .replace("{fps}", &p.fps.to_string())
}

/// The element factory names a launch description uses (the first word of each `!` segment that
/// is not caps), in order.
pub fn element_names(desc: &str) -> Vec<String> {
    desc.split('!')
        .filter_map(|seg| seg.split_whitespace().next())
        .filter(|first| !first.contains('/') && !first.contains('=') && !first.contains('('))
        .map(str::to_string)
        .collect()
}

/// A bin from `desc` when every element it names is registered and it parses.
fn parse_checked(desc: &str) -> Result<gst::Bin, Outcome> {
    let missing: Vec<String> =
        element_names(desc).into_iter().filter(|n| gst::ElementFactory::find(n).is_none()).collect();
    if !missing.is_empty() {
        return Err(Outcome::MissingElements { elements: missing });
    }
    gst::parse::bin_from_description(desc, true).map_err(|e| Outcome::ParseError { error: e.to_string() })
}

/// The probe pipeline's launch description for `f` (serving `role`), or why there is none.
fn probe_description(backends: &Backends, role: Role, f: &Fragment) -> Result<String, String> {
    let src = "videotestsrc num-buffers=10 pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=30/1";
    let sink = "fakesink name=probe_sink sync=false async=false enable-last-sample=true";
    let frag = &f.description;
    Ok(match (role.encode_of(), role.rtp()) {
        // A decoder gets what Tessera's depayloader gives it, from the cpu encoder of the codec.
        (Some(enc), rtp) => {
            let cpu = Backends::new("cpu", backends.dir.clone());
            let input = cpu
                .variants("cpu", enc, Params { kbps: 500, keyint: 30, fps: 30 })
                .into_iter()
                .find(|c| parse_checked(&c.description).is_ok())
                .ok_or_else(|| format!("no cpu {} to make the probe's input", enc.name()))?;
            let rtp = rtp.map(|(pay, depay)| format!(" ! {pay} ! {depay}")).unwrap_or_default();
            format!("{src} ! {}{rtp} ! {frag} ! videoconvert ! video/x-raw,format=I420 ! {sink}", input.description)
        }
        (None, Some((pay, _))) => format!("{src} ! {frag} ! {pay} ! {sink}"),
        (None, None) if role == Role::Composite => {
            format!("{src} ! {frag} ! videoconvert ! video/x-raw,format=I420 ! {sink}")
        }
        (None, None) => format!("{src} ! {frag} ! {sink}"),
    })
}

/// Runs a small pipeline through `f` to its end-of-stream within `timeout`; the error otherwise.
fn probe(backends: &Backends, role: Role, f: &Fragment, timeout: Duration) -> Result<(), String> {
    let desc = probe_description(backends, role, f)?;
    let pipeline = gst::parse::launch(&desc).map_err(|e| format!("probe pipeline: {e}"))?;
    let pipeline = pipeline.downcast::<gst::Pipeline>().map_err(|_| "probe pipeline is not a pipeline".to_string())?;
    let result = run_to_eos(&pipeline, timeout);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run_to_eos(pipeline: &gst::Pipeline, timeout: Duration) -> Result<(), String> {
    let bus = pipeline.bus().ok_or("no bus")?;
    if pipeline.set_state(gst::State::Playing).is_err() {
        return Err(bus.pop_filtered(&[gst::MessageType::Error]).map_or("cannot start".into(), |m| match m.view() {
            gst::MessageView::Error(e) => error_text(e),
            _ => "cannot start".into(),
        }));
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no end-of-stream within {} ms", timeout.as_millis()));
        }
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(e) => return Err(error_text(e)),
            _ => break,
        }
    }
    let sink = pipeline.by_name("probe_sink").ok_or("no probe sink")?;
    match sink.property::<Option<gst::Sample>>("last-sample") {
        Some(_) => Ok(()),
        None => Err("end-of-stream without any output".into()),
    }
}

fn error_text(e: &gst::message::Error) -> String {
    let src = e.src().map(|s| s.name().to_string()).unwrap_or_default();
    let debug = e.debug().and_then(|d| d.lines().last().map(|l| format!(" ({l})"))).unwrap_or_default();
    format!("{src}: {}{debug}", e.error()).chars().take(400).collect()
}

#[cfg(test)]
#[path = "pipelines/tests.rs"]
mod tests;
