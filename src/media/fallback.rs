//! Run-time fallback of a pipeline fragment: a GPU decoder or encoder that fails in a running
//! pipeline (it refuses the stream's caps, its driver refuses the session or the preset, the
//! session table is full) is replaced by the next candidate — in the end `cpu` — without
//! stopping the pipeline, so a room never fails because its GPU did.
//!
//! ```text
//! upstream ─ errorignore (the guard) ─ <fragment> ─ next
//! ```
//!
//! The guard (`errorignore`, gst-plugins-bad `debugutilsbad`) turns the fragment's
//! `not-negotiated` and `error` flow returns into `ok`, so upstream — the room's tee and every
//! other branch behind it, or a publisher's jitter buffer — keeps running. Its source pad keeps
//! the real last flow return ([`gst::Pad::last_flow_result`]): [`FragmentSlot::check`] reads it
//! and, when the fragment is not `cpu`'s and failed, marks it failed in [`Backends`] (later builds
//! skip it) and swaps in the next candidate while buffers reaching the guard are dropped. A `cpu`
//! fragment is never swapped (there is nothing below it); its errors stay in the log.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::prelude::*;
use gstreamer as gst;

use super::video::{VideoError, gst_err};
use crate::pipelines::{Backends, Built, Params, Role};

/// Longest a swap waits for the buffer in flight through the guard to be done.
const IDLE_WAIT: Duration = Duration::from_secs(2);

/// One fragment of a running pipeline that can be swapped for the next candidate.
pub struct FragmentSlot {
    label: String,
    role: Role,
    params: Params,
    backends: Backends,
    guard: gst::Element,
    current: Mutex<Built>,
    /// The current fragment is not `cpu`'s (only those are checked and swapped).
    on_gpu: AtomicBool,
    busy: AtomicBool,
}

impl FragmentSlot {
    /// The guard and the first fragment for `role` (the first candidate that parses and is not
    /// marked failed), not yet in a pipeline. `label` names the room or tile in log lines.
    ///
    /// # Errors
    /// [`VideoError`] when no fragment parses.
    pub fn new(label: &str, role: Role, params: Params, backends: &Backends) -> Result<Arc<Self>, VideoError> {
        let guard = match gst::ElementFactory::make("errorignore")
            .property("ignore-error", true)
            .property("ignore-notnegotiated", true)
            .property("ignore-notlinked", false)
            .property_from_str("convert-to", "ok")
            .build()
        {
            Ok(g) => g,
            Err(_) => {
                // Without gst-plugins-bad a failing fragment still gets swapped, but its flow
                // error reaches upstream first (a room's composite may stall until the swap).
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| tracing::warn!("no errorignore element (gstreamer1.0-plugins-bad): a failing GPU fragment's errors reach the rest of its pipeline"));
                gst::ElementFactory::make("identity").build().map_err(gst_err)?
            }
        };
        let built = backends.build(role, params)?;
        let on_gpu = built.fragment.backend != "cpu";
        Ok(Arc::new(Self {
            label: label.to_string(),
            role,
            params,
            backends: backends.clone(),
            guard,
            current: Mutex::new(built),
            on_gpu: AtomicBool::new(on_gpu),
            busy: AtomicBool::new(false),
        }))
    }

    /// The guard element (link upstream → guard → [`FragmentSlot::element`] → next).
    pub fn guard(&self) -> &gst::Element {
        &self.guard
    }

    /// The current fragment's bin.
    pub fn element(&self) -> gst::Element {
        self.current.lock().unwrap().bin.clone().upcast()
    }

    /// The backend of the current fragment (`cpu` after a fallback).
    pub fn backend(&self) -> String {
        self.current.lock().unwrap().fragment.backend.clone()
    }

    /// Whether the current fragment is a GPU backend's (the one that [`FragmentSlot::check`] watches).
    pub fn on_gpu(&self) -> bool {
        self.on_gpu.load(Ordering::Relaxed)
    }

    /// Links guard → fragment → `next` (all three already in one bin). A GPU fragment that does
    /// not link (no caps in common: a size or format the GPU element does not take) is marked
    /// failed and replaced by the next candidate until one links; `cpu`'s failing is an error.
    ///
    /// # Errors
    /// [`VideoError`] when no candidate links.
    pub fn link(&self, next: &gst::Element) -> Result<(), VideoError> {
        let mut cur = self.current.lock().unwrap();
        loop {
            let el: gst::Element = cur.bin.clone().upcast();
            if self.guard.link(&el).is_ok() && el.link(next).is_ok() {
                return Ok(());
            }
            self.guard.unlink(&el);
            el.unlink(next);
            if cur.fragment.backend == "cpu" {
                return Err(gst_err(format!("{}: the cpu fragment does not link", self.role.name())));
            }
            let bin = el.parent().and_then(|p| p.downcast::<gst::Bin>().ok()).ok_or_else(|| gst_err("not in a bin"))?;
            let _ = bin.remove(&el);
            self.backends.mark_failed(self.role, &cur.fragment, "does not link (no caps in common)");
            let built = self.backends.build(self.role, self.params)?;
            bin.add(&built.bin).map_err(gst_err)?;
            tracing::warn!(tile = %self.label, role = self.role.name(), from = %cur.fragment.backend,
                to = %built.fragment.backend, "pipeline fragment does not link; fell back");
            self.on_gpu.store(built.fragment.backend != "cpu", Ordering::Relaxed);
            *cur = built;
        }
    }

    /// The fragment's failure, if its last push failed: `not-negotiated`, `error` or
    /// `not-supported` (flushing, EOS and not-linked are not failures).
    pub fn failure(&self) -> Option<gst::FlowError> {
        let pad = self.guard.static_pad("src")?;
        match pad.last_flow_result() {
            Err(e @ (gst::FlowError::NotNegotiated | gst::FlowError::Error | gst::FlowError::NotSupported)) => Some(e),
            _ => None,
        }
    }

    /// Swaps the fragment for the next candidate when it is a GPU backend's and failed. Cheap
    /// (an atomic load) on `cpu`. Returns whether it swapped. Blocks for the swap (the old
    /// fragment's stop and the new one's start: milliseconds to a second for a GPU element).
    pub fn check(&self) -> bool {
        if !self.on_gpu() {
            return false;
        }
        match self.failure() {
            Some(e) => self.fall_back(&format!("flow {e:?} at run time")).is_ok(),
            None => false,
        }
    }

    /// Marks the current fragment failed (`why`) and swaps in the next candidate in `pipeline`
    /// while it plays. Does nothing (and says so) when the current fragment is `cpu`'s or a
    /// swap is under way.
    ///
    /// # Errors
    /// [`VideoError`] when no candidate is left or the new one does not link or start.
    pub fn fall_back(&self, why: &str) -> Result<(), VideoError> {
        if !self.on_gpu() {
            return Err(gst_err(format!("{}: cpu fragment failed ({why}); nothing to fall back to", self.role.name())));
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(gst_err("a fallback is under way"));
        }
        let r = self.swap(why);
        self.busy.store(false, Ordering::Release);
        r
    }

    fn swap(&self, why: &str) -> Result<(), VideoError> {
        let mut cur = self.current.lock().unwrap();
        self.backends.mark_failed(self.role, &cur.fragment, why);
        let old: gst::Element = cur.bin.clone().upcast();
        let bin =
            old.parent().and_then(|p| p.downcast::<gst::Bin>().ok()).ok_or_else(|| gst_err("not in a pipeline"))?;
        let gsrc = self.guard.static_pad("src").ok_or_else(|| gst_err("errorignore has no src pad"))?;
        let old_src = old.static_pad("src").ok_or_else(|| gst_err("fragment has no src pad"))?;
        let next = old_src.peer().ok_or_else(|| gst_err("fragment is not linked downstream"))?;
        // Drop what reaches the guard from now on, and wait for the push in flight to be done.
        let drop = gsrc
            .add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST, |_, _| gst::PadProbeReturn::Drop);
        let (tx, rx) = std::sync::mpsc::channel();
        gsrc.add_probe(gst::PadProbeType::IDLE, move |_, _| {
            let _ = tx.send(());
            gst::PadProbeReturn::Remove
        });
        let _ = rx.recv_timeout(IDLE_WAIT);
        let _ = old.set_state(gst::State::Null);
        self.guard.unlink(&old);
        let _ = old_src.unlink(&next);
        let _ = bin.remove(&old);
        let built = loop {
            let built = self.backends.build(self.role, self.params)?;
            let el: gst::Element = built.bin.clone().upcast();
            bin.add(&el).map_err(gst_err)?;
            let new_src = el.static_pad("src").ok_or_else(|| gst_err("fragment has no src pad"))?;
            let linked = self.guard.link(&el).is_ok() && new_src.link(&next).is_ok();
            if linked && el.sync_state_with_parent().is_ok() {
                break built;
            }
            // It did not link or start: take it out too and try the next.
            let _ = el.set_state(gst::State::Null);
            let _ = bin.remove(&el);
            if built.fragment.backend == "cpu" {
                if let Some(id) = drop {
                    gsrc.remove_probe(id);
                }
                return Err(gst_err(format!("{}: the cpu fragment did not start", self.role.name())));
            }
            self.backends.mark_failed(self.role, &built.fragment, "did not link or start");
        };
        if let Some(id) = drop {
            gsrc.remove_probe(id);
        }
        tracing::warn!(tile = %self.label, role = self.role.name(), from = %cur.fragment.backend,
            to = %built.fragment.backend, variant = built.fragment.variant, %why,
            "pipeline fragment failed while running; fell back");
        self.on_gpu.store(built.fragment.backend != "cpu", Ordering::Relaxed);
        *cur = built;
        Ok(())
    }
}
