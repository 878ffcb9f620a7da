//! A room's tiles: who is shown where (layout, visible-tile cap, last-N, speaker highlight),
//! their labels and placeholders. Backend-independent: it computes each [`Scene`] and hands it,
//! with the decoded frames, to the room's [`Compositor`].
//!
//! Every participant who publishes gets a tile at join, in join order. A tile whose video is
//! muted, absent (audio-only) or stale for [`STALE`] shows its placeholder (initials on a dark
//! tile), never a frozen frame. Tiles the layout does not show are hidden and their publisher's
//! decoder is told to stop (a [`VisibilityListener`]); a tile's picture is letterboxed in its
//! cell, so a new source resolution re-lays the room out.
//!
//! Lock order: `state` before the compositor's own locks; decoded frames reach the compositor
//! without taking `state` unless their size changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use gstreamer as gst;

use super::super::layout::{self, Layout, Placement, Rect, TileSource};
use super::super::tiers::OutputFormat;
use super::VideoStats;
use super::compositor::{Compositor, Scene, TilePlace};
use super::labels::{render_label, render_placeholder};

/// A tile with no new frame for this long shows its placeholder.
pub const STALE: Duration = Duration::from_millis(1000);
/// How often placeholders are checked (the composite keeps the last drawing in between).
const PLACEHOLDER_PERIOD: Duration = Duration::from_millis(250);
/// Width of the speaker highlight, pixels.
pub const HIGHLIGHT: u32 = 4;

/// Called with `true` when a tile becomes visible and `false` when the layout hides it.
pub type VisibilityListener = Arc<dyn Fn(bool) + Send + Sync>;

/// One tile as [`arrange`] sees it.
#[derive(Debug, Clone)]
pub struct TileIn<'a> {
    /// Participant id.
    pub id: &'a str,
    /// A screen share.
    pub screen: bool,
    /// Size of the frames arriving now, pixels; `(0, 0)` before the first.
    pub src: (u32, u32),
    /// Tick of its last speech (last-N and featured tiles), `None` if never.
    pub last_spoke: Option<u64>,
}

/// The outcome of laying a room out.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrangement {
    /// The layout's cells in drawing order (what `placements` shows in the room JSON).
    pub placements: Vec<Placement>,
    /// Every tile's picture rectangle and z in join order, and the highlight.
    pub scene: Scene,
}

/// Lays `tiles` (join order) out for `layout` on a `width`×`height` output with at most `cap`
/// visible: each placed tile's picture letterboxed in its cell (z = 10 + the cell's z), hidden
/// tiles and tiles without a frame yet get no rectangle. In the grid, the active `speaker`'s cell
/// (with more than one tile) is inset by [`HIGHLIGHT`] pixels and outlined by four bars.
pub fn arrange(
    tiles: &[TileIn<'_>],
    layout: &Layout,
    speaker: Option<&str>,
    cap: usize,
    width: u32,
    height: u32,
) -> Arrangement {
    let sources: Vec<TileSource> =
        tiles.iter().map(|t| TileSource { id: t.id.to_string(), screen: t.screen, last_spoke: t.last_spoke }).collect();
    let placements = layout::place(layout, &sources, speaker, width, height, cap);
    let highlight_grid = matches!(layout, Layout::Grid) && tiles.len() > 1;
    let mut highlight: Option<Rect> = None;
    let mut scene = Scene::default();
    for t in tiles {
        let Some(p) = placements.iter().find(|p| p.participant == t.id) else {
            scene.tiles.push(TilePlace { id: t.id.to_string(), rect: None, z: 0 });
            continue;
        };
        let mut cell = p.cell;
        if highlight_grid && speaker == Some(t.id) {
            highlight = Some(cell);
            let inset = HIGHLIGHT.min(cell.w / 4).min(cell.h / 4) & !1;
            cell = Rect { x: cell.x + inset, y: cell.y + inset, w: cell.w - 2 * inset, h: cell.h - 2 * inset };
        }
        let rect = (t.src.0 > 0).then(|| layout::letterbox(cell, t.src.0, t.src.1));
        scene.tiles.push(TilePlace { id: t.id.to_string(), rect, z: 10 + p.z });
    }
    scene.highlight = highlight
        .map(|c| {
            let t = HIGHLIGHT.min(c.w / 4).min(c.h / 4) & !1;
            [
                Rect { x: c.x, y: c.y, w: c.w, h: t },
                Rect { x: c.x, y: c.y + c.h - t, w: c.w, h: t },
                Rect { x: c.x, y: c.y, w: t, h: c.h },
                Rect { x: c.x + c.w - t, y: c.y, w: t, h: c.h },
            ]
        })
        .filter(|b| b[0].h > 0 && b[2].w > 0);
    Arrangement { placements, scene }
}

/// The tiles of one room and the compositor that draws them.
pub(super) struct Tiles {
    room: String,
    format: OutputFormat,
    compositor: Arc<dyn Compositor>,
    state: Mutex<State>,
    stats: Arc<VideoStats>,
    stopped: AtomicBool,
    /// Generation of the placeholder thread: one that sees another number ends.
    generation: std::sync::atomic::AtomicU64,
}

struct State {
    /// Tiles in join order.
    inputs: Vec<InputState>,
    layout: Layout,
    cap: usize,
    speaker: Option<String>,
    /// Tick of each participant's last speech (for last-N and featured tiles).
    last_spoke: HashMap<String, u64>,
    placements: Vec<Placement>,
}

struct InputState {
    id: String,
    name: String,
    screen: bool,
    /// Size of the frames arriving now (picture or placeholder), 0x0 before the first.
    src: (u32, u32),
    /// Where it is drawn now.
    rect: Option<Rect>,
    visible: bool,
    on_visible: Option<VisibilityListener>,
    shared: Arc<InputShared>,
    audio_muted: bool,
}

/// What the push path and the placeholder thread share with the layout.
struct InputShared {
    video_muted: AtomicBool,
    last_frame: Mutex<Option<Instant>>,
    showing_placeholder: AtomicBool,
    placeholder: Option<gst::Sample>,
    size: Mutex<(u32, u32)>,
}

impl Tiles {
    /// The tiles of `room` (none yet) with `layout` and at most `cap` visible, drawn by
    /// `compositor`; the placeholder thread starts with [`Tiles::start`].
    pub(super) fn new(
        room: &str,
        format: OutputFormat,
        compositor: Arc<dyn Compositor>,
        layout: Layout,
        cap: usize,
        stats: Arc<VideoStats>,
    ) -> Arc<Self> {
        let state =
            State { inputs: vec![], layout, cap, speaker: None, last_spoke: HashMap::new(), placements: vec![] };
        Arc::new(Self {
            room: room.to_string(),
            format,
            compositor,
            state: Mutex::new(state),
            stats,
            stopped: AtomicBool::new(false),
            generation: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Starts the placeholder thread (the room video calls it when it starts; a thread of an
    /// earlier start ends).
    pub(super) fn start(self: &Arc<Self>) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        spawn_placeholder_thread(Arc::downgrade(self), generation);
    }

    /// Ends the placeholder thread until the next [`Tiles::start`].
    pub(super) fn park(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops the placeholder thread.
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Adds a tile (see `RoomVideo::add_input`). Blocks for 5-35 ms (label and placeholder).
    pub(super) fn add_input(self: &Arc<Self>, id: &str, name: &str, screen: bool) -> VideoInput {
        let shared = Arc::new(InputShared {
            video_muted: AtomicBool::new(false),
            last_frame: Mutex::new(None),
            showing_placeholder: AtomicBool::new(false),
            placeholder: render_placeholder(name),
            size: Mutex::new((0, 0)),
        });
        let label = render_label(name);
        {
            let mut st = self.state.lock().unwrap();
            self.compositor.add_tile(id, label);
            st.inputs.push(InputState {
                id: id.to_string(),
                name: name.to_string(),
                screen,
                src: (0, 0),
                rect: None,
                visible: false,
                on_visible: None,
                shared: shared.clone(),
                audio_muted: false,
            });
            self.relayout(&mut st);
        }
        // Show the placeholder at once rather than an empty cell.
        self.push_placeholder(id, &shared);
        tracing::info!(room = %self.room, participant = id, "tile added");
        VideoInput { id: id.to_string(), tiles: Arc::downgrade(self), shared }
    }

    pub(super) fn remove_input(&self, id: &str) {
        let removed = {
            let mut st = self.state.lock().unwrap();
            let Some(i) = st.inputs.iter().position(|x| x.id == id) else { return };
            let input = st.inputs.remove(i);
            st.last_spoke.remove(id);
            if st.speaker.as_deref() == Some(id) {
                st.speaker = None;
            }
            self.compositor.remove_tile(id);
            self.relayout(&mut st);
            input
        };
        drop(removed);
        tracing::info!(room = %self.room, participant = id, "tile removed");
    }

    pub(super) fn set_visibility_listener(&self, id: &str, listener: VisibilityListener) {
        let mut st = self.state.lock().unwrap();
        if let Some(i) = st.inputs.iter_mut().find(|i| i.id == id) {
            listener(i.visible);
            i.on_visible = Some(listener);
        }
    }

    pub(super) fn set_layout(&self, layout: Layout) {
        let mut st = self.state.lock().unwrap();
        st.layout = layout;
        self.relayout(&mut st);
    }

    pub(super) fn set_max_visible(&self, cap: usize) {
        let mut st = self.state.lock().unwrap();
        st.cap = cap.max(1);
        self.relayout(&mut st);
    }

    pub(super) fn layout(&self) -> Layout {
        self.state.lock().unwrap().layout.clone()
    }

    pub(super) fn set_speaking(&self, speaker: Option<&str>, talking: &[String], tick: u64) {
        let mut st = self.state.lock().unwrap();
        for t in talking {
            st.last_spoke.insert(t.clone(), tick);
        }
        let changed_speaker = st.speaker.as_deref() != speaker;
        st.speaker = speaker.map(str::to_string);
        // Last-N only changes the picture when someone hidden starts talking.
        let hidden_talker = talking.iter().any(|t| st.inputs.iter().any(|i| &i.id == t && !i.visible));
        if changed_speaker || hidden_talker {
            self.relayout(&mut st);
        }
    }

    pub(super) fn set_muted(self: &Arc<Self>, id: &str, audio: bool, video: bool) {
        let name = {
            let mut st = self.state.lock().unwrap();
            let Some(i) = st.inputs.iter_mut().find(|i| i.id == id) else { return };
            i.shared.video_muted.store(video, Ordering::Relaxed);
            i.audio_muted = audio;
            i.name.clone()
        };
        let (tiles, id) = (Arc::downgrade(self), id.to_string());
        let render = move || {
            let label = render_label(&if audio { format!("{name}  [mic off]") } else { name });
            let Some(tiles) = tiles.upgrade() else { return };
            let st = tiles.state.lock().unwrap();
            // Unless another mute of the same tile came first.
            if st.inputs.iter().any(|i| i.id == id && i.audio_muted == audio) {
                tiles.compositor.set_label(&id, label);
            }
        };
        // Rendering blocks for 5-35 ms: on the runtime's blocking pool when there is one.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(render)),
            Err(_) => {
                if let Err(e) = std::thread::Builder::new().name("label".into()).spawn(render) {
                    tracing::warn!(room = %self.room, "label thread: {e}");
                }
            }
        }
    }

    pub(super) fn placements(&self) -> Vec<Placement> {
        self.state.lock().unwrap().placements.clone()
    }

    pub(super) fn tiles(&self) -> Vec<(String, Option<Rect>)> {
        self.state.lock().unwrap().inputs.iter().map(|i| (i.id.clone(), i.rect)).collect()
    }

    pub(super) fn speaker(&self) -> Option<String> {
        self.state.lock().unwrap().speaker.clone()
    }

    /// Recomputes the arrangement, tells listeners about visibility changes and hands the scene
    /// to the compositor.
    fn relayout(&self, st: &mut State) {
        let ins: Vec<TileIn<'_>> = st
            .inputs
            .iter()
            .map(|i| TileIn { id: &i.id, screen: i.screen, src: i.src, last_spoke: st.last_spoke.get(&i.id).copied() })
            .collect();
        let a = arrange(&ins, &st.layout, st.speaker.as_deref(), st.cap, self.format.width, self.format.height);
        for (input, place) in st.inputs.iter_mut().zip(&a.scene.tiles) {
            let visible = a.placements.iter().any(|p| p.participant == input.id);
            if visible != input.visible {
                input.visible = visible;
                if let Some(l) = &input.on_visible {
                    l(visible);
                }
            }
            input.rect = place.rect;
        }
        st.placements = a.placements;
        self.compositor.set_scene(&a.scene);
    }

    /// Draws `shared`'s placeholder in tile `id` (once: while it keeps showing, the composite
    /// keeps it).
    fn push_placeholder(&self, id: &str, shared: &InputShared) {
        let Some(sample) = &shared.placeholder else { return };
        if shared.showing_placeholder.swap(true, Ordering::Relaxed) {
            return;
        }
        self.push_frame(id, shared, sample);
    }

    /// Hands one frame to the compositor; re-lays out when its size changed (a new source
    /// resolution, or placeholder ↔ picture).
    fn push_frame(&self, id: &str, shared: &InputShared, sample: &gst::Sample) {
        let Some(info) = sample.caps().and_then(|c| gstreamer_video::VideoInfo::from_caps(c).ok()) else {
            self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let dims = (info.width(), info.height());
        let resized = std::mem::replace(&mut *shared.size.lock().unwrap(), dims) != dims;
        self.compositor.push(id, sample, !resized);
        if resized {
            let mut st = self.state.lock().unwrap();
            if let Some(input) = st.inputs.iter_mut().find(|i| i.id == id) {
                input.src = dims;
            }
            self.relayout(&mut st);
        }
    }
}

/// Draws the placeholders of muted, audio-only and stale tiles, checked every
/// [`PLACEHOLDER_PERIOD`].
fn spawn_placeholder_thread(tiles: Weak<Tiles>, generation: u64) {
    let _ = std::thread::Builder::new().name("placeholders".into()).spawn(move || {
        loop {
            std::thread::sleep(PLACEHOLDER_PERIOD);
            let Some(t) = tiles.upgrade() else { return };
            if t.stopped.load(Ordering::Relaxed) || t.generation.load(Ordering::SeqCst) != generation {
                return;
            }
            let due: Vec<(String, Arc<InputShared>)> = {
                let st = t.state.lock().unwrap();
                st.inputs
                    .iter()
                    .filter(|i| i.visible && !i.shared.showing_placeholder.load(Ordering::Relaxed))
                    .filter(|i| {
                        i.shared.video_muted.load(Ordering::Relaxed)
                            || i.shared.last_frame.lock().unwrap().is_none_or(|t| t.elapsed() > STALE)
                    })
                    .map(|i| (i.id.clone(), i.shared.clone()))
                    .collect()
            };
            for (id, shared) in due {
                t.push_placeholder(&id, &shared);
            }
        }
    });
}

/// A decoded video source feeding one tile. Dropping it does not remove the tile; call
/// `RoomVideo::remove_input`.
pub struct VideoInput {
    id: String,
    tiles: Weak<Tiles>,
    shared: Arc<InputShared>,
}

impl VideoInput {
    /// Draws one decoded frame (`I420`, any size; other formats are counted in
    /// [`VideoStats::frames_dropped`]) into the tile, scaled to it, in the calling thread; it
    /// shows from the next composite on. Ignored while the tile is video-muted (its placeholder
    /// shows).
    pub fn push(&self, sample: &gst::Sample) {
        if self.shared.video_muted.load(Ordering::Relaxed) {
            return;
        }
        let Some(tiles) = self.tiles.upgrade() else { return };
        *self.shared.last_frame.lock().unwrap() = Some(Instant::now());
        self.shared.showing_placeholder.store(false, Ordering::Relaxed);
        tiles.push_frame(&self.id, &self.shared, sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, src: (u32, u32)) -> TileIn<'_> {
        TileIn { id, screen: false, src, last_spoke: None }
    }

    #[test]
    fn the_grid_letterboxes_each_picture_in_its_cell_and_outlines_the_speaker() {
        let tiles = [t("a", (640, 360)), t("b", (640, 480)), t("c", (0, 0))];
        let a = arrange(&tiles, &Layout::Grid, Some("b"), 16, 1280, 720);
        assert_eq!(a.placements.len(), 3);
        // 2 columns: cells of 640x360; a 16:9 picture fills its cell.
        assert_eq!(a.scene.tiles[0].rect, Some(Rect { x: 0, y: 0, w: 640, h: 360 }));
        // The speaker's cell is inset by 4 and its 4:3 picture pillarboxed inside.
        let b = a.scene.tiles[1].rect.unwrap();
        assert!(b.x >= 644 && b.y >= 4 && b.h == 352 && b.w < 632, "{b:?}");
        assert_eq!(a.scene.tiles[2].rect, None, "no frame yet: nothing to draw");
        let bars = a.scene.highlight.expect("the speaker is outlined");
        assert_eq!(bars[0], Rect { x: 640, y: 0, w: 640, h: 4 });
        assert!(a.scene.tiles.iter().all(|p| p.z == 0 || p.z >= 10));
    }

    #[test]
    fn tiles_past_the_cap_are_hidden_and_one_tile_has_no_highlight() {
        let tiles: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        let ins: Vec<TileIn<'_>> = tiles.iter().map(|id| t(id, (640, 360))).collect();
        let a = arrange(&ins, &Layout::Grid, None, 4, 1280, 720);
        assert_eq!(a.placements.len(), 4);
        assert_eq!(a.scene.tiles.iter().filter(|p| p.rect.is_none()).count(), 1);
        let one = arrange(&ins[..1], &Layout::Grid, Some("p0"), 16, 1280, 720);
        assert!(one.scene.highlight.is_none(), "a lone tile is not outlined");
        assert_eq!(one.scene.tiles[0].rect, Some(Rect { x: 0, y: 0, w: 1280, h: 720 }));
    }
}
