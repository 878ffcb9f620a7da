//! The compositor seam: what a room's tiles (the `tiles` module: layout, labels, placeholders,
//! speaker highlight — backend-independent) ask of the backend that draws them. The CPU canvas
//! (`cpu::CpuCompositor`) is the first implementation; the element compositor
//! (`element::ElementCompositor`: a backend's `composite` fragment, `cudacompositor` or
//! `vacompositor` on a GPU) is the second, behind the same trait, so the room, its layouts and
//! their tests do not change with it.
//!
//! The contract: tiles are added in join order and hidden until a [`Scene`] places them; decoded
//! frames arrive from each publisher's decoder thread at any time ([`Compositor::push`]) and must
//! not wait for another input; the room clock asks whether anything was drawn
//! ([`Compositor::take_dirty`]) and for the composite ([`Compositor::composite`]), in
//! [`Compositor::caps`] at the room's output size.

use gstreamer as gst;

use super::super::canvas::Label;
use super::super::layout::Rect;

/// Where one tile is drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TilePlace {
    /// Participant id.
    pub id: String,
    /// Its picture's rectangle (letterboxed in its cell), output pixels; `None` while hidden or
    /// before its first frame.
    pub rect: Option<Rect>,
    /// Drawing order, higher on top.
    pub z: u32,
}

/// What the composite shows: every tile's place, in join order, and the speaker highlight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scene {
    /// One entry per tile, in join order.
    pub tiles: Vec<TilePlace>,
    /// The highlight's top, bottom, left and right bars (output pixels), drawn over everything.
    pub highlight: Option<[Rect; 4]>,
}

/// A backend that draws a room's tiles into its composite. Every method may be called from any
/// thread; implementations keep their own locks and never call back into the room.
pub trait Compositor: Send + Sync + 'static {
    /// The caps of [`Compositor::composite`]'s buffers (e.g. `video/x-raw,format=I420`, the
    /// room's size and rate; a GPU backend may give `memory:CUDAMemory`).
    fn caps(&self) -> &gst::Caps;
    /// The backend drawing now: `cpu` for the CPU canvas (also after a GPU compositor fell back
    /// to it), else the backend whose `composite` fragment runs (`nvenc`, `vaapi`).
    fn backend(&self) -> String;
    /// Adds tile `id` (hidden until placed) with its name label.
    fn add_tile(&self, id: &str, label: Option<Label>);
    /// Removes tile `id`; unknown ids are ignored. The next [`Scene`] redraws the rest.
    fn remove_tile(&self, id: &str);
    /// Replaces tile `id`'s label and redraws the tile.
    fn set_label(&self, id: &str, label: Option<Label>);
    /// Places every tile and redraws the whole composite.
    fn set_scene(&self, scene: &Scene);
    /// Takes a decoded frame (or placeholder) for tile `id`: kept as the tile's picture, and drawn
    /// now, scaled into its rectangle, when `draw` (the caller passes `false` when the frame's
    /// size changed and a new scene follows). Frames that cannot be drawn are counted in
    /// `VideoStats::frames_dropped`.
    fn push(&self, id: &str, frame: &gst::Sample, draw: bool);
    /// Whether anything was drawn since the last call.
    fn take_dirty(&self) -> bool;
    /// The composite now, in a new buffer of [`Compositor::caps`]; `None` when the backend is
    /// shut down.
    fn composite(&self) -> Option<gst::Buffer>;
}
