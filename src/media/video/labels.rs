//! Tile labels and placeholders, rendered once per participant (and per mute change) by small
//! GStreamer pipelines (`textrender`, `textoverlay` from `gstreamer1.0-x`): 5-35 ms each, so
//! callers run them on blocking threads, never on a transport worker.

use gstreamer as gst;
use gstreamer_app as gst_app;
use gstreamer_video::prelude::*;

use super::super::canvas::Label;

/// Placeholder picture size (16:9).
pub const PLACEHOLDER_SIZE: (u32, u32) = (640, 360);

/// Renders the placeholder of a participant named `name`: its initials, centred on a dark
/// [`PLACEHOLDER_SIZE`] I420 picture. `None` when the elements are missing.
pub fn render_placeholder(name: &str) -> Option<gst::Sample> {
    let initials: String = name
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_' || c == '.')
        .filter_map(|w| w.chars().next())
        .take(2)
        .flat_map(char::to_uppercase)
        .collect();
    let initials = if initials.is_empty() { "?".to_string() } else { initials };
    let (w, h) = PLACEHOLDER_SIZE;
    let desc = format!(
        "videotestsrc num-buffers=1 pattern=solid-color foreground-color=0xff262b36 \
         ! video/x-raw,format=I420,width={w},height={h},framerate=1/1 \
         ! textoverlay name=t valignment=center halignment=center font-desc=\"Sans Bold 96\" color=0xffd8dee9 \
         ! appsink name=s sync=false"
    );
    let p = gst::parse::launch(&desc).ok()?.downcast::<gst::Pipeline>().ok()?;
    p.by_name("t")?.set_property("text", &initials);
    let sink = p.by_name("s")?.downcast::<gst_app::AppSink>().ok()?;
    p.set_state(gst::State::Playing).ok()?;
    let sample = sink.pull_sample().ok();
    let _ = p.set_state(gst::State::Null);
    sample
}

/// Renders a tile label `text` (`Sans Bold 14`, white, with [`Label`]'s shaded box) with
/// `textrender`. `None` when the elements are missing or the text is empty.
pub fn render_label(text: &str) -> Option<Label> {
    let (w, h) = (640u32, 48u32);
    let desc = format!(
        "appsrc name=src caps=text/x-raw,format=utf8 ! textrender font-desc=\"Sans Bold 14\" halignment=left valignment=top \
         ! video/x-raw,format=AYUV,width={w},height={h} ! appsink name=s sync=false"
    );
    let p = gst::parse::launch(&desc).ok()?.downcast::<gst::Pipeline>().ok()?;
    let src = p.by_name("src")?.downcast::<gst_app::AppSrc>().ok()?;
    let sink = p.by_name("s")?.downcast::<gst_app::AppSink>().ok()?;
    p.set_state(gst::State::Playing).ok()?;
    let mut buf = gst::Buffer::from_slice(text.as_bytes().to_vec());
    buf.get_mut()?.set_pts(gst::ClockTime::ZERO);
    let _ = src.push_buffer(buf);
    let _ = src.end_of_stream();
    let sample = sink.pull_sample().ok();
    let _ = p.set_state(gst::State::Null);
    let sample = sample?;
    let info = gstreamer_video::VideoInfo::from_caps(sample.caps()?).ok()?;
    let frame = gstreamer_video::VideoFrameRef::from_buffer_ref_readable(sample.buffer()?, &info).ok()?;
    Label::from_ayuv(frame.plane_data(0).ok()?, frame.plane_stride()[0] as usize, info.width(), info.height(), 4)
}
