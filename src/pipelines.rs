//! Encoder/decoder backends from `pipelines/<backend>/<role>.gst` text fragments.
//!
//! The fragments are embedded in the binary; `--pipelines-dir` reads them from disk instead.
//! A role the chosen backend lacks, or whose elements this machine does not have, falls back to
//! the `cpu` backend with a warning, so a GPU image still runs on a machine without a GPU.

use std::path::PathBuf;

use gstreamer as gst;
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "pipelines/"]
#[include = "*.gst"]
struct Embedded;

/// What a fragment does; the file is `<role>.gst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// raw I420 → VP8 frames.
    Vp8Encode,
    /// raw I420 → H.264 byte-stream, constrained baseline, AU-aligned.
    H264Encode,
    /// VP8 frames → raw video.
    Vp8Decode,
    /// H.264 byte-stream → raw video.
    H264Decode,
}

impl Role {
    fn file(self) -> &'static str {
        match self {
            Role::Vp8Encode => "vp8-encode.gst",
            Role::H264Encode => "h264-encode.gst",
            Role::Vp8Decode => "vp8-decode.gst",
            Role::H264Decode => "h264-decode.gst",
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

/// Makes GStreamer bins from the fragments of one backend.
#[derive(Debug, Clone)]
pub struct Backends {
    backend: String,
    dir: Option<PathBuf>,
}

impl Backends {
    /// A factory for `backend` (a folder name), reading from `dir` when given, else the embedded copies.
    pub fn new(backend: &str, dir: Option<PathBuf>) -> Self {
        Self { backend: backend.to_string(), dir }
    }

    fn text(&self, backend: &str, role: Role) -> Option<String> {
        let rel = format!("{backend}/{}", role.file());
        match &self.dir {
            Some(d) => std::fs::read_to_string(d.join(&rel)).ok(),
            None => Embedded::get(&rel).map(|f| String::from_utf8_lossy(&f.data).into_owned()),
        }
    }

    /// The launch description for `role` after placeholder substitution, and the backend it came
    /// from (the chosen one, or `cpu` as the fallback).
    pub fn description(&self, role: Role, p: Params) -> Option<(String, String)> {
        let mut tried = vec![self.backend.as_str()];
        if self.backend != "cpu" {
            tried.push("cpu");
        }
        for b in tried {
            if let Some(t) = self.text(b, role) {
                let body: String = t.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join(" ");
                let desc = body
                    .replace("{kbps}", &p.kbps.to_string())
                    .replace("{bps}", &(p.kbps as u64 * 1000).to_string())
                    .replace("{keyint}", &p.keyint.to_string())
                    .replace("{fps}", &p.fps.to_string());
                if desc.trim().is_empty() {
                    continue;
                }
                if elements_exist(&desc) {
                    return Some((desc.trim().to_string(), b.to_string()));
                }
                tracing::warn!(
                    backend = b,
                    ?role,
                    "pipeline fragment names an element this machine lacks; falling back"
                );
            }
        }
        None
    }

    /// A bin for `role` with ghost `sink` and `src` pads.
    ///
    /// # Errors
    /// [`PipelineError::Unavailable`] when no backend has a fragment that parses here.
    pub fn make_bin(&self, role: Role, p: Params) -> Result<gst::Bin, PipelineError> {
        let unavailable = |reason: String| PipelineError::Unavailable { role, backend: self.backend.clone(), reason };
        let (desc, from) = self.description(role, p).ok_or_else(|| unavailable("no fragment".into()))?;
        let bin = gst::parse::bin_from_description(&desc, true).map_err(|e| unavailable(format!("{desc}: {e}")))?;
        tracing::debug!(?role, backend = from, %desc, "pipeline fragment");
        Ok(bin)
    }
}

/// Whether every element factory named in a launch description is registered.
fn elements_exist(desc: &str) -> bool {
    desc.split('!')
        .filter_map(|seg| seg.split_whitespace().next())
        .filter(|first| !first.contains('/') && !first.contains('='))
        .all(|name| gst::ElementFactory::find(name).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_fragments_parse_and_gpu_falls_back() {
        gst::init().unwrap();
        let p = Params { kbps: 1500, keyint: 300, fps: 30 };
        let b = Backends::new("cpu", None);
        for role in [Role::Vp8Encode, Role::H264Encode, Role::Vp8Decode, Role::H264Decode] {
            let (desc, from) = b.description(role, p).unwrap();
            assert_eq!(from, "cpu");
            assert!(!desc.contains('{'), "{desc}");
            b.make_bin(role, p).unwrap();
        }
        assert!(b.description(Role::Vp8Encode, p).unwrap().0.contains("target-bitrate=1500000"));
        // nvenc has no VP8 encoder fragment, and this machine has no NVENC: both land on cpu.
        let nv = Backends::new("nvenc", None);
        let (_, from) = nv.description(Role::Vp8Encode, p).unwrap();
        assert_eq!(from, "cpu");
        let (desc, from) = nv.description(Role::H264Encode, p).unwrap();
        if gst::ElementFactory::find("nvh264enc").is_none() {
            assert_eq!(from, "cpu");
            assert!(desc.starts_with("x264enc"));
        }
        assert!(Backends::new("no-such-backend", None).make_bin(Role::Vp8Decode, p).is_ok());
    }
}
