//! One GPU context per process, shared by every pipeline: the rooms' encoder pipelines and each
//! publisher's decode pipeline.
//!
//! GStreamer's CUDA and VA elements look for their device context by asking their neighbours
//! (a context query), then the application (a `need-context` message on the bus); when nobody
//! answers they open their own and announce it (`have-context`). Each Tessera pipeline is
//! separate, so without an answer every publisher's `nvh264dec` opened its own CUDA context
//! (~300 MB of GPU memory and a context switch each). [`share`] installs a synchronous bus
//! handler on a pipeline that keeps the first context of each shared type announced by any
//! pipeline and hands it to every element that asks later (GStreamer's context negotiation,
//! <https://gstreamer.freedesktop.org/documentation/additional/design/context.html>).
//!
//! One context per type means one GPU per process (the first one the elements open, device 0 by
//! default): run one Tessera per GPU to use several.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use gst::prelude::*;
use gstreamer as gst;

/// The context types shared between pipelines: CUDA (`nvcodec`) and VA-API (`va`) devices.
pub const SHARED_TYPES: [&str; 2] = ["gst.cuda.context", "gst.va.display.handle"];

fn contexts() -> &'static Mutex<HashMap<String, gst::Context>> {
    static CONTEXTS: OnceLock<Mutex<HashMap<String, gst::Context>>> = OnceLock::new();
    CONTEXTS.get_or_init(Mutex::default)
}

/// Answers `need-context` for the [`SHARED_TYPES`] on `pipeline`'s bus with the context an
/// element of any pipeline announced first, and keeps the first one announced. Other messages
/// pass on to the bus (the pipeline's bus watch still sees errors).
pub fn share(pipeline: &gst::Pipeline) {
    let Some(bus) = pipeline.bus() else { return };
    bus.set_sync_handler(|_, msg| {
        handle(msg);
        gst::BusSyncReply::Pass
    });
}

/// Acts on one bus message: caches an announced shared context, or hands a cached one to the
/// element that needs it. Returns whether it did either.
pub fn handle(msg: &gst::Message) -> bool {
    match msg.view() {
        gst::MessageView::HaveContext(h) => {
            let ctx = h.context();
            let kind = ctx.context_type().to_string();
            if !SHARED_TYPES.contains(&kind.as_str()) {
                return false;
            }
            let mut all = contexts().lock().unwrap();
            if all.contains_key(&kind) {
                return false;
            }
            tracing::info!(context = %kind, "GPU context shared by every pipeline from now on");
            all.insert(kind, ctx);
            true
        }
        gst::MessageView::NeedContext(n) => {
            let kind = n.context_type();
            if !SHARED_TYPES.contains(&kind) {
                return false;
            }
            let Some(ctx) = contexts().lock().unwrap().get(kind).cloned() else { return false };
            let Some(element) = msg.src().and_then(|s| s.downcast_ref::<gst::Element>().cloned()) else {
                return false;
            };
            element.set_context(&ctx);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_announced_gpu_context_is_handed_to_the_next_pipeline() {
        gst::init().unwrap();
        let (a, b) = (gst::Pipeline::new(), gst::Pipeline::new());
        let (ea, eb) = (
            gst::ElementFactory::make("identity").build().unwrap(),
            gst::ElementFactory::make("identity").build().unwrap(),
        );
        a.add(&ea).unwrap();
        b.add(&eb).unwrap();
        share(&a);
        share(&b);
        // Another type is not shared.
        eb.post_message(gst::message::NeedContext::builder("gst.gl.GLDisplay").src(&eb).build()).unwrap();
        assert!(eb.context("gst.gl.GLDisplay").is_none());
        // Pipeline a's decoder opened the device and says so; pipeline b's asks: it gets a's.
        let mut ctx = gst::Context::new("gst.cuda.context", true);
        ctx.get_mut().unwrap().structure_mut().set("cuda-device-id", 0u32);
        ea.post_message(gst::message::HaveContext::builder(ctx.clone()).src(&ea).build()).unwrap();
        eb.post_message(gst::message::NeedContext::builder("gst.cuda.context").src(&eb).build()).unwrap();
        let got = eb.context("gst.cuda.context").expect("b's element got the shared context");
        assert_eq!(got.structure().get::<u32>("cuda-device-id").unwrap(), 0);
        // A later announcement does not replace the first.
        let mut other = gst::Context::new("gst.cuda.context", true);
        other.get_mut().unwrap().structure_mut().set("cuda-device-id", 1u32);
        assert!(!handle(&gst::message::HaveContext::builder(other).src(&eb).build()));
    }
}
