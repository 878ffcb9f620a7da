//! Pipeline bus watching: errors and warnings of a room's GStreamer pipelines become log lines
//! tagged with the room (or the publisher), so one grep follows them.

use gst::prelude::*;
use gstreamer as gst;

/// Logs errors and warnings from `pipeline`'s bus, tagged `room` (any label), on a thread of its
/// own that ends when the pipeline is dropped or back in `NULL`.
pub fn watch_bus(pipeline: &gst::Pipeline, room: String) {
    let Some(bus) = pipeline.bus() else { return };
    let weak = pipeline.downgrade();
    std::thread::Builder::new()
        .name(format!("bus-{room}"))
        .spawn(move || {
            loop {
                let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(500)) else {
                    match weak.upgrade() {
                        Some(p)
                            if p.current_state() != gst::State::Null
                                || p.pending_state() != gst::State::VoidPending =>
                        {
                            continue;
                        }
                        Some(p) if p.current_state() == gst::State::Null => break,
                        Some(_) => continue,
                        None => break,
                    }
                };
                let element = msg.src().map(|s| s.path_string().to_string()).unwrap_or_default();
                match msg.view() {
                    gst::MessageView::Error(e) => {
                        tracing::error!(%room, %element, "pipeline error: {} ({:?})", e.error(), e.debug())
                    }
                    gst::MessageView::Warning(w) => tracing::warn!(%room, %element, "pipeline warning: {}", w.error()),
                    _ => {}
                }
            }
        })
        .ok();
}
