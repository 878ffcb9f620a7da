//! `tessera doctor`: which backend runs each media role on this machine, what GPUs and
//! accelerators it has, and the codec policy that follows.
//!
//! [`report`] builds a [`Report`] (a plain, serde-serializable struct: `tessera doctor --json`
//! prints it, the server can log it at start-up and expose it). Usability is a real test, not an
//! element lookup: with probing on, each candidate fragment runs a small pipeline (320x240, 10
//! frames; a decoder decodes what the `cpu` encoder of its codec made) to end-of-stream
//! ([`crate::pipelines::Check::Probe`]). An NVENC element is registered on any GPU with the
//! encoder API, but a driver that refuses the preset, a GPU without NVENC (A100, H100, H200) or a
//! full session table only shows up when it runs.
//!
//! The JSON shape (`schema` 1; fields are only ever added):
//!
//! ```text
//! { "schema": 1, "tessera": "0.1.0", "gstreamer": "1.22.0",
//!   "backend": "nvenc",                       the backend asked for (--backend / TESSERA_BACKEND)
//!   "pipelines_dir": null, "probed": true,
//!   "roles": [ Resolution, ... ],             vp8-decode, h264-decode, composite, vp8-encode, h264-encode
//!   "optional_roles": [ Resolution, ... ],    av1-decode, av1-encode (not negotiated yet)
//!   "gpus": [ { "name": "NVIDIA L4", "driver_version": "550.54.15", "memory_total": "23034 MiB" } ],
//!   "render_nodes": [ "/dev/dri/renderD128" ],
//!   "accelerators": [ { "name": "nvenc", "usable": false, "detail": "..." }, ... ],
//!                                             nvenc, nvdec, cuda-compositor, vaapi-decode, vaapi-encode, va-compositor
//!   "policy": { "video_codec_order": ["vp8", "h264"], "gpu_decode": false, "gpu_composite": false,
//!               "gpu_encode": false, "summary": "..." },
//!   "notes": [ "..." ] }
//! ```
//!
//! A `Resolution` is `{ "role", "wanted", "backend" (null: no backend can), "fragment" ({ "backend",
//! "variant", "description" } or null for the CPU canvas), "probed", "reason" (why not the wanted
//! backend's first variant; empty when it is), "tried": [ { "backend", "variant", "description",
//! "result": "ok" | "missing_elements" | "parse_error" | "probe_failed" | "marked_failed" |
//! "not_tried", plus "elements" / "error" / "reason" } ] }`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::pipelines::{Backends, Check, Resolution, Role};

/// The GPU backends the accelerator section looks at, whatever backend is asked for.
const GPU_BACKENDS: [&str; 2] = ["nvenc", "vaapi"];

/// What [`report`] looks at.
#[derive(Debug, Clone)]
pub struct Options {
    /// The backend to report on (a folder of `pipelines/`: `cpu`, `nvenc`, `vaapi`).
    pub backend: String,
    /// Read fragments from this folder instead of the embedded copies (`--pipelines-dir`).
    pub pipelines_dir: Option<PathBuf>,
    /// Probe each candidate with a small pipeline, waiting up to this long for it; `None`: only
    /// check element names and parsing.
    pub probe: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Self { backend: "cpu".into(), pipelines_dir: None, probe: Some(Duration::from_secs(10)) }
    }
}

/// One NVIDIA GPU as `nvidia-smi --query-gpu=name,driver_version,memory.total` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gpu {
    /// Model, e.g. `NVIDIA L4`.
    pub name: String,
    /// Driver version, e.g. `550.54.15`.
    pub driver_version: String,
    /// Memory, as nvidia-smi prints it (`23034 MiB`).
    pub memory_total: String,
}

/// Whether one kind of hardware acceleration works here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accelerator {
    /// `nvenc`, `nvdec`, `cuda-compositor`, `vaapi-decode`, `vaapi-encode` or `va-compositor`.
    pub name: String,
    /// Some fragment using it passed (a probe run, or parsing without probes).
    pub usable: bool,
    /// Per role, the fragment that passed or why none did.
    pub detail: String,
}

/// The codec and placement policy that follows from the roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Video codecs to offer browsers, most preferred first (`h264` first when a GPU encodes it).
    pub video_codec_order: Vec<String>,
    /// A VP8 or H.264 decoder runs on the GPU.
    pub gpu_decode: bool,
    /// The room composites on the GPU.
    pub gpu_composite: bool,
    /// The H.264 encoder runs on the GPU (no GPU here encodes VP8).
    pub gpu_encode: bool,
    /// One line saying what runs where.
    pub summary: String,
}

/// Everything `tessera doctor` prints. See the module docs for the JSON shape.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Version of this shape (1).
    pub schema: u32,
    /// Tessera's version.
    pub tessera: String,
    /// GStreamer's version (`major.minor.micro`).
    pub gstreamer: String,
    /// The backend asked for.
    pub backend: String,
    /// `--pipelines-dir`, if given.
    pub pipelines_dir: Option<String>,
    /// Whether candidates were probed by running them.
    pub probed: bool,
    /// [`Role::CORE`], in pipeline order.
    pub roles: Vec<Resolution>,
    /// [`Role::OPTIONAL`].
    pub optional_roles: Vec<Resolution>,
    /// NVIDIA GPUs (empty without `nvidia-smi` or a driver).
    pub gpus: Vec<Gpu>,
    /// `/dev/dri/renderD*` nodes (VA-API devices), sorted.
    pub render_nodes: Vec<String>,
    /// NVENC, NVDEC, the CUDA compositor, VA-API decode/encode, the VA compositor.
    pub accelerators: Vec<Accelerator>,
    /// What follows for codecs and placement.
    pub policy: Policy,
    /// Anything else worth knowing (nvidia-smi's error, an unknown backend).
    pub notes: Vec<String>,
}

impl Report {
    /// The resolution of `role` ([`Role::CORE`] or [`Role::OPTIONAL`]).
    pub fn role(&self, role: Role) -> Option<&Resolution> {
        self.roles.iter().chain(&self.optional_roles).find(|r| r.role == role)
    }
}

/// Builds the report for `opts`: resolves every role of the asked backend and of both GPU backends
/// (probing when asked), queries `nvidia-smi` and lists the render nodes. Blocks: milliseconds
/// without GPU elements, a few seconds of probes with them (call it off async workers). Logs
/// nothing; initializes GStreamer.
pub fn report(opts: &Options) -> Report {
    let _ = gstreamer::init();
    let check = opts.probe.map_or(Check::Parse, Check::Probe);
    let mut notes = vec![];
    let wanted = Backends::new(&opts.backend, opts.pipelines_dir.clone());
    if !wanted.available().contains(&opts.backend) {
        notes.push(format!(
            "no backend {:?} among {:?}: every role falls back to cpu",
            opts.backend,
            wanted.available()
        ));
    }
    // The GPU backends' core roles, resolved once: for the accelerators, and as the roles when asked.
    let gpu: Vec<(&str, Vec<Resolution>)> = GPU_BACKENDS
        .iter()
        .map(|&b| {
            if b == opts.backend {
                (b, Role::CORE.iter().map(|&r| wanted.resolve(r, check)).collect())
            } else {
                let other = Backends::new(b, opts.pipelines_dir.clone());
                (b, Role::CORE.iter().map(|&r| other.resolve(r, check)).collect())
            }
        })
        .collect();
    let roles: Vec<Resolution> = match gpu.iter().find(|(b, _)| *b == opts.backend) {
        Some((_, rs)) => rs.clone(),
        None => Role::CORE.iter().map(|&r| wanted.resolve(r, check)).collect(),
    };
    let optional_roles = Role::OPTIONAL.iter().map(|&r| wanted.resolve(r, check)).collect();
    let (gpus, smi_note) = nvidia_gpus();
    notes.extend(smi_note);
    let accelerators = accelerators(&gpu);
    let policy = policy(&roles);
    let (major, minor, micro, _) = gstreamer::version();
    Report {
        schema: 1,
        tessera: env!("CARGO_PKG_VERSION").to_string(),
        gstreamer: format!("{major}.{minor}.{micro}"),
        backend: opts.backend.clone(),
        pipelines_dir: opts.pipelines_dir.as_ref().map(|d| d.display().to_string()),
        probed: opts.probe.is_some(),
        roles,
        optional_roles,
        gpus,
        render_nodes: render_nodes(),
        accelerators,
        policy,
        notes,
    }
}

fn accelerators(gpu: &[(&str, Vec<Resolution>)]) -> Vec<Accelerator> {
    let on = |backend: &str, roles: &[Role], name: &str| -> Accelerator {
        let rs = gpu.iter().find(|(b, _)| *b == backend).map(|(_, rs)| rs.as_slice()).unwrap_or_default();
        let mut usable = false;
        let mut detail = vec![];
        for r in rs.iter().filter(|r| roles.contains(&r.role)) {
            let mine: Vec<_> = r.tried.iter().filter(|t| t.fragment.backend == backend).collect();
            if let Some(ok) = mine.iter().find(|t| t.outcome == crate::pipelines::Outcome::Ok) {
                usable = true;
                let first = crate::pipelines::element_names(&ok.fragment.description).join(" ! ");
                detail.push(format!("{}: ok ({backend}#{}: {first})", r.role.name(), ok.fragment.variant));
            } else if mine.is_empty() {
                detail.push(format!("{}: no {backend} fragment", r.role.name()));
            } else {
                let why: Vec<String> = mine.iter().map(|t| format!("#{} {}", t.fragment.variant, t.outcome)).collect();
                detail.push(format!("{}: {}", r.role.name(), why.join("; ")));
            }
        }
        Accelerator { name: name.to_string(), usable, detail: detail.join(" | ") }
    };
    vec![
        on("nvenc", &[Role::H264Encode], "nvenc"),
        on("nvenc", &[Role::H264Decode, Role::Vp8Decode], "nvdec"),
        on("nvenc", &[Role::Composite], "cuda-compositor"),
        on("vaapi", &[Role::H264Decode, Role::Vp8Decode], "vaapi-decode"),
        on("vaapi", &[Role::H264Encode], "vaapi-encode"),
        on("vaapi", &[Role::Composite], "va-compositor"),
    ]
}

/// The video codecs to offer browsers, most preferred first, given the backend that encodes
/// H.264 (`None` or `cpu`: VP8 first, the CPU default; a GPU: H.264 first, encoded there).
pub fn video_codec_order(h264_encode: Option<&str>) -> [&'static str; 2] {
    match h264_encode {
        Some(b) if b != "cpu" => ["h264", "vp8"],
        _ => ["vp8", "h264"],
    }
}

/// The policy for the roles of the asked backend.
pub fn policy(roles: &[Resolution]) -> Policy {
    let gpu = |role: Role| -> Option<String> {
        roles.iter().find(|r| r.role == role).and_then(|r| r.backend.clone()).filter(|b| b != "cpu")
    };
    let encode = gpu(Role::H264Encode);
    let gpu_decode = gpu(Role::Vp8Decode).is_some() || gpu(Role::H264Decode).is_some();
    let gpu_composite = gpu(Role::Composite).is_some();
    let order = video_codec_order(encode.as_deref());
    let summary = match (&encode, gpu_decode || gpu_composite) {
        (Some(b), _) => format!(
            "H.264 is encoded on the GPU ({b}): offer browsers H.264 first; a VP8 receiver still costs the room a libvpx encode"
        ),
        (None, true) => format!(
            "no GPU H.264 encoder here: {} on the GPU, encode on the CPU (libvpx for VP8, x264 for H.264); VP8 stays first",
            if gpu_composite { "decode and composite" } else { "decode" }
        ),
        (None, false) => "everything runs on the CPU (libvpx, x264, libav and the CPU canvas); VP8 first".to_string(),
    };
    Policy {
        video_codec_order: order.iter().map(|s| s.to_string()).collect(),
        gpu_decode,
        gpu_composite,
        gpu_encode: encode.is_some(),
        summary,
    }
}

/// The GPUs `nvidia-smi` lists (waiting at most 5 s for it), and a note when it is missing or fails.
fn nvidia_gpus() -> (Vec<Gpu>, Option<String>) {
    let out = run_with_timeout(
        "nvidia-smi",
        &["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
        Duration::from_secs(5),
    );
    match out {
        Err(e) => (vec![], Some(format!("nvidia-smi: {e}"))),
        Ok(text) => {
            let gpus = text
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(',').map(str::trim).collect();
                    (f.len() == 3).then(|| Gpu {
                        name: f[0].to_string(),
                        driver_version: f[1].to_string(),
                        memory_total: f[2].to_string(),
                    })
                })
                .collect();
            (gpus, None)
        }
    }
}

/// Runs `cmd args`, returning its stdout when it exits 0 within `timeout` (killed otherwise).
fn run_with_timeout(cmd: &str, args: &[&str], timeout: Duration) -> Result<String, String> {
    use std::io::Read;
    let mut child = std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| if e.kind() == std::io::ErrorKind::NotFound { "not found".to_string() } else { e.to_string() })?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", timeout.as_secs()));
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() {
        Ok(out)
    } else {
        let msg = if err.trim().is_empty() { out.trim() } else { err.trim() };
        Err(format!("{status}: {}", msg.lines().next().unwrap_or_default()))
    }
}

fn render_nodes() -> Vec<String> {
    let mut nodes: Vec<String> = std::fs::read_dir("/dev/dri")
        .map(|it| {
            it.flatten()
                .map(|e| e.path().display().to_string())
                .filter(|p| p.rsplit('/').next().is_some_and(|n| n.starts_with("renderD")))
                .collect()
        })
        .unwrap_or_default();
    nodes.sort();
    nodes
}

/// The report as `tessera doctor` prints it without `--json`: a few lines per section.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line(format!(
        "tessera {} doctor: backend {}, GStreamer {}{}{}",
        r.tessera,
        r.backend,
        r.gstreamer,
        if r.probed { ", candidates probed" } else { ", parse checks only (no probes)" },
        r.pipelines_dir.as_ref().map(|d| format!(", fragments from {d}")).unwrap_or_default()
    ));
    let gpus = if r.gpus.is_empty() {
        "none".to_string()
    } else {
        r.gpus
            .iter()
            .map(|g| format!("{} (driver {}, {})", g.name, g.driver_version, g.memory_total))
            .collect::<Vec<_>>()
            .join("; ")
    };
    line(format!("NVIDIA GPUs: {gpus}"));
    line(format!(
        "VA-API render nodes: {}",
        if r.render_nodes.is_empty() { "none".to_string() } else { r.render_nodes.join(", ") }
    ));
    line(String::new());
    let roles = |line: &mut dyn FnMut(String), title: &str, rs: &[Resolution]| {
        line(format!("{title:<13} {:<8} fragment", "backend"));
        for res in rs {
            let backend = res.backend.clone().unwrap_or_else(|| "none".into());
            let frag = match &res.fragment {
                Some(f) => format!("#{} {}", f.variant, f.description),
                None if res.role == Role::Composite && res.backend.is_some() => "the CPU canvas".into(),
                None => "-".into(),
            };
            line(format!("{:<13} {backend:<8} {frag}", res.role.name()));
            if !res.reason.is_empty() {
                line(format!("{:<13} {:<8} why: {}", "", "", res.reason));
            }
        }
    };
    roles(&mut line, "role", &r.roles);
    line(String::new());
    roles(&mut line, "optional", &r.optional_roles);
    line(String::new());
    line("accelerators:".into());
    for a in &r.accelerators {
        line(format!("  {:<16} {:<3} {}", a.name, if a.usable { "yes" } else { "no" }, a.detail));
    }
    line(String::new());
    line(format!("policy: offer {} (in this order): {}", r.policy.video_codec_order.join(", "), r.policy.summary));
    for n in &r.notes {
        line(format!("note: {n}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use gstreamer as gst;

    use super::*;
    use crate::pipelines::{Outcome, Params};

    #[test]
    fn the_policy_puts_h264_first_only_with_a_gpu_encoder() {
        let cpu = Backends::new("cpu", None);
        let mut roles: Vec<Resolution> = Role::CORE.iter().map(|&r| cpu.resolve(r, Check::Parse)).collect();
        let p = policy(&roles);
        assert_eq!(p.video_codec_order, ["vp8", "h264"]);
        assert!(!p.gpu_encode && !p.gpu_decode && !p.gpu_composite);
        assert!(p.summary.starts_with("everything runs on the CPU"), "{}", p.summary);
        // As on an H100/H200: NVDEC but no NVENC.
        for r in roles.iter_mut().filter(|r| r.role == Role::Vp8Decode) {
            r.backend = Some("nvenc".into());
        }
        let p = policy(&roles);
        assert_eq!(p.video_codec_order, ["vp8", "h264"]);
        assert!(p.gpu_decode && !p.gpu_encode);
        assert!(p.summary.contains("decode on the GPU, encode on the CPU"), "{}", p.summary);
        for r in roles.iter_mut().filter(|r| r.role == Role::H264Encode) {
            r.backend = Some("nvenc".into());
        }
        let p = policy(&roles);
        assert_eq!(p.video_codec_order, ["h264", "vp8"]);
        assert!(p.gpu_encode);
    }

    #[test]
    fn a_report_without_gpus_has_every_role_on_cpu_and_renders() {
        let r = report(&Options { backend: "vaapi".into(), pipelines_dir: None, probe: None });
        if r.accelerators.iter().any(|a| a.usable) {
            return; // a machine with a GPU: nothing to assert here
        }
        for res in &r.roles {
            assert_eq!(res.backend.as_deref(), Some("cpu"), "{res:?}");
        }
        assert_eq!(r.roles.len(), 5);
        let text = render_text(&r);
        for role in Role::all() {
            assert!(text.contains(role.name()), "{text}");
        }
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["roles"][0]["role"], "vp8-decode");
        assert_eq!(json["accelerators"][0]["name"], "nvenc");
    }

    /// The CPU fragments run, each with its probe input and (de)payloader: the probe machinery works
    /// where there is no GPU to test it on.
    #[test]
    fn cpu_probes_run() {
        gst::init().unwrap();
        let cpu = Backends::new("cpu", None);
        for role in Role::all() {
            let r = cpu.resolve(role, Check::Probe(Duration::from_secs(20)));
            assert_eq!(r.backend.as_deref(), Some("cpu"), "{r:?}");
            assert!(r.probed);
            if role != Role::Composite {
                assert_eq!(r.tried[0].outcome, Outcome::Ok, "{role:?}: {r:?}");
            }
        }
    }

    #[test]
    fn a_failing_probe_is_reported_with_the_element_error() {
        gst::init().unwrap();
        let dir = std::env::temp_dir().join(format!("tessera-pipelines-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cpu")).unwrap();
        std::fs::create_dir_all(dir.join("bad")).unwrap();
        std::fs::copy("pipelines/cpu/vp8-encode.gst", dir.join("cpu/vp8-encode.gst")).unwrap();
        // Parses (the caps intersect), but cannot negotiate with the probe's 320x240 input.
        std::fs::write(dir.join("bad/vp8-encode.gst"), "vp8enc ! capsfilter caps=video/x-vp8,width=16\n").unwrap();
        let bad = Backends::new("bad", Some(dir.clone()));
        assert_eq!(bad.available(), ["bad", "cpu"]);
        let r = bad.resolve(Role::Vp8Encode, Check::Probe(Duration::from_secs(10)));
        assert!(matches!(&r.tried[0].outcome, Outcome::ProbeFailed { .. }), "{r:?}");
        assert_eq!(r.backend.as_deref(), Some("cpu"));
        // The report says the same.
        let rep = report(&Options {
            backend: "bad".into(),
            pipelines_dir: Some(dir.clone()),
            probe: Some(Duration::from_secs(10)),
        });
        let enc = rep.role(Role::Vp8Encode).unwrap();
        assert_eq!(enc.backend.as_deref(), Some("cpu"));
        assert!(enc.reason.contains("bad#0: probe failed"), "{}", enc.reason);
        let _ = bad.verify(crate::pipelines::Check::Probe(Duration::from_secs(10)));
        assert_eq!(bad.build(Role::Vp8Encode, Params::TYPICAL).unwrap().fragment.backend, "cpu");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn resolve_reports_the_fallback_and_why() {
        gst::init().unwrap();
        let nv = Backends::new("nvenc", None);
        let r = nv.resolve(Role::Vp8Encode, Check::Parse);
        assert_eq!(r.backend.as_deref(), Some("cpu"));
        assert!(r.fell_back());
        assert!(r.reason.contains("nvenc has no vp8-encode fragment"), "{}", r.reason);
        if gst::ElementFactory::find("nvh264enc").is_none() {
            let r = nv.resolve(Role::H264Encode, Check::Probe(Duration::from_secs(10)));
            assert_eq!(r.backend.as_deref(), Some("cpu"));
            assert_eq!(r.tried.len(), 4, "{r:?}");
            assert!(matches!(r.tried[0].outcome, Outcome::MissingElements { .. }), "{r:?}");
            assert_eq!(r.tried[3].outcome, Outcome::Ok, "{r:?}");
            assert!(r.reason.contains("nvenc#0: no element nvh264enc"), "{}", r.reason);
            let c = nv.resolve(Role::Composite, Check::Parse);
            assert_eq!(c.backend.as_deref(), Some("cpu"));
            assert!(c.fragment.is_none());
        }
        let cpu = Backends::new("cpu", None);
        let r = cpu.resolve(Role::H264Encode, Check::Parse);
        assert_eq!(r.backend.as_deref(), Some("cpu"));
        assert!(!r.fell_back() && r.reason.is_empty(), "{r:?}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["role"], "h264-encode");
        assert_eq!(json["tried"][0]["result"], "ok");
        assert_eq!(json["tried"][0]["backend"], "cpu");
    }
}
