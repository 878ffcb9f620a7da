//! The pieces of a `composite` fragment for the element compositor (`element.rs`): the fragment
//! split around its video aggregator, and the **head** — the elements before the aggregator (an
//! upload such as `cudaupload`, `vapostproc`) — run synchronously in the caller's thread, once per
//! picture, so that what the aggregator reads is already where it composes.

use std::sync::{Arc, Mutex};

use gst::prelude::*;
use gstreamer as gst;

use super::super::canvas::Label;
use super::super::gpu_context;

/// Opacity of a label's box, 0-255 (about the CPU canvas's shading).
const LABEL_BOX_ALPHA: u8 = 90;

/// A `composite` fragment split around its aggregator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The elements before the aggregator (empty: none), run once per picture.
    pub head: String,
    /// The aggregator element and its properties, e.g. `cudacompositor`.
    pub aggregator: String,
    /// The elements after it (empty: none).
    pub tail: String,
}

/// Splits `desc` at its first element whose factory makes a `GstVideoAggregator`.
///
/// # Errors
/// A one-line reason when no element of `desc` is a video aggregator here.
pub fn split(desc: &str) -> Result<Split, String> {
    let _ = gst::init();
    let segs: Vec<&str> = desc.split('!').map(str::trim).collect();
    for (i, seg) in segs.iter().enumerate() {
        let Some(factory) = seg.split_whitespace().next().and_then(gst::ElementFactory::find) else { continue };
        let Ok(factory) = factory.load() else { continue };
        let aggregator = gst::glib::Type::from_name("GstVideoAggregator");
        if aggregator.is_some_and(|t| factory.element_type().is_a(t)) {
            return Ok(Split {
                head: segs[..i].join(" ! "),
                aggregator: seg.to_string(),
                tail: segs[i + 1..].join(" ! "),
            });
        }
    }
    Err(format!("no video aggregator element in `{desc}`"))
}

/// A picture ready for the aggregator: the head's output and its caps.
#[derive(Clone)]
pub(super) struct Ready {
    pub buffer: gst::Buffer,
    pub caps: gst::Caps,
}

/// Why a picture could not be made ready.
#[derive(Debug)]
pub(super) enum HeadError {
    /// This picture cannot go through (its caps are refused, it is empty): drop and count it.
    Refused(String),
    /// The head itself failed: the element compositor cannot go on.
    Failed(String),
}

/// The head's elements in a pipeline of their own, driven in the caller's thread: a buffer pushed
/// into `src` comes out into `out` before [`Head::run`] returns.
pub(super) struct Head {
    pipeline: gst::Pipeline,
    src: gst::Pad,
    /// Held: a link does not keep a parentless pad alive.
    _sink: gst::Pad,
    caps: Option<gst::Caps>,
    out: Arc<Mutex<Option<Ready>>>,
}

impl Head {
    fn new(desc: &str, name: &str) -> Result<Self, String> {
        let bin = gst::parse::bin_from_description(desc, true).map_err(|e| e.to_string())?;
        let pipeline = gst::Pipeline::with_name(name);
        pipeline.add(&bin).map_err(|e| e.to_string())?;
        if let Some(bus) = pipeline.bus() {
            bus.set_sync_handler(|_, msg| {
                gpu_context::handle(msg);
                gst::BusSyncReply::Drop
            });
        }
        let out: Arc<Mutex<Option<Ready>>> = Arc::default();
        // The caps of the head's last caps event.
        let out_caps: Arc<Mutex<Option<gst::Caps>>> = Arc::default();
        let (o, oc, oc2) = (out.clone(), out_caps.clone(), out_caps);
        let sink = gst::Pad::builder(gst::PadDirection::Sink)
            .name("head-out")
            .chain_function(move |_, _, buffer| {
                let caps = oc.lock().unwrap().clone().ok_or(gst::FlowError::NotNegotiated)?;
                *o.lock().unwrap() = Some(Ready { buffer, caps });
                Ok(gst::FlowSuccess::Ok)
            })
            // Any caps, whatever came before (the default answers with the current caps).
            .query_function(|pad, parent, query| match query.view_mut() {
                gst::QueryViewMut::Caps(q) => {
                    let caps = q.filter().map_or_else(gst::Caps::new_any, |f| f.to_owned());
                    q.set_result(&caps);
                    true
                }
                gst::QueryViewMut::AcceptCaps(q) => {
                    q.set_result(true);
                    true
                }
                _ => gst::Pad::query_default(pad, parent, query),
            })
            .event_function(move |_, _, event| {
                if let gst::EventView::Caps(c) = event.view() {
                    *oc2.lock().unwrap() = Some(c.caps_owned());
                }
                true
            })
            .build();
        let src = gst::Pad::builder(gst::PadDirection::Src).name("head-in").build();
        let bin_sink = bin.static_pad("sink").ok_or("head has no sink")?;
        let bin_src = bin.static_pad("src").ok_or("head has no src")?;
        src.link(&bin_sink).map_err(|e| format!("head input: {e:?}"))?;
        bin_src.link(&sink).map_err(|e| format!("head output: {e:?}"))?;
        sink.set_active(true).map_err(|e| e.to_string())?;
        pipeline.set_state(gst::State::Playing).map_err(|e| format!("head does not start: {e}"))?;
        src.set_active(true).map_err(|e| e.to_string())?;
        src.push_event(gst::event::StreamStart::new(name));
        Ok(Self { pipeline, src, _sink: sink, caps: None, out })
    }

    /// Runs `buffer` (of `caps`) through the head.
    fn run(&mut self, buffer: gst::Buffer, caps: &gst::Caps) -> Result<Ready, HeadError> {
        if self.caps.as_ref() != Some(caps) {
            if !self.src.push_event(gst::event::Caps::new(caps)) {
                return Err(HeadError::Refused(format!("the head refuses {caps}")));
            }
            if self.caps.is_none() {
                self.src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new()));
            }
            self.caps = Some(caps.clone());
        }
        match self.src.push(buffer) {
            Ok(_) => self.out.lock().unwrap().take().ok_or_else(|| HeadError::Failed("the head gave no buffer".into())),
            Err(gst::FlowError::NotNegotiated) => {
                // Sticky: the next picture sends its caps again.
                self.caps = None;
                Err(HeadError::Refused(format!("the head cannot take {caps}")))
            }
            Err(e) => Err(HeadError::Failed(format!("head: {e:?}"))),
        }
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Makes pictures ready: through the head, or as they are when the fragment has none.
pub(super) enum Prepare {
    Direct,
    Head(Box<Head>),
}

impl Prepare {
    /// A head from `head` (a launch description; empty: none), its pipeline named `name`.
    pub fn new(head: &str, name: &str) -> Result<Self, String> {
        Ok(if head.is_empty() { Prepare::Direct } else { Prepare::Head(Box::new(Head::new(head, name)?)) })
    }

    pub fn run(&mut self, buffer: gst::Buffer, caps: &gst::Caps) -> Result<Ready, HeadError> {
        match self {
            Prepare::Direct => Ok(Ready { buffer, caps: caps.clone() }),
            Prepare::Head(h) => h.run(buffer, caps),
        }
    }

    pub fn sample(&mut self, s: &gst::Sample) -> Result<Ready, HeadError> {
        let (Some(b), Some(c)) = (s.buffer_owned(), s.caps_owned()) else {
            return Err(HeadError::Refused("a frame without buffer or caps".into()));
        };
        self.run(b, &c)
    }
}

/// A solid I420 picture of 16x16 in `yuv`.
pub(super) fn solid(yuv: [u8; 3]) -> (gst::Buffer, gst::Caps) {
    let mut data = vec![yuv[0]; 256];
    data.extend(std::iter::repeat_n(yuv[1], 64));
    data.extend(std::iter::repeat_n(yuv[2], 64));
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", 16)
        .field("height", 16)
        .field("framerate", gst::Fraction::new(0, 1))
        .build();
    (gst::Buffer::from_mut_slice(data), caps)
}

/// `label` as a BGRA picture: white text over a translucent black box.
pub(super) fn label_picture(label: &Label) -> (gst::Buffer, gst::Caps) {
    let mut data = Vec::with_capacity(label.luma.len() * 4);
    for (&y, &a) in label.luma.iter().zip(&label.alpha) {
        data.extend_from_slice(&[y, y, y, a.max(LABEL_BOX_ALPHA)]);
    }
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "BGRA")
        .field("width", label.width as i32)
        .field("height", label.height as i32)
        .field("framerate", gst::Fraction::new(0, 1))
        .build();
    (gst::Buffer::from_mut_slice(data), caps)
}
