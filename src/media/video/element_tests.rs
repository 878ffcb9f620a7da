//! The compositor seam's tests, run on both implementations: the CPU canvas and the element
//! compositor (here with GStreamer's CPU `compositor` standing in for `cudacompositor` /
//! `vacompositor`, which take the same pad properties). Layout, relayout, labels, the highlight,
//! hiding and removing tiles must look the same; then the element compositor's run-time fallback.

use super::super::cpu::CpuCompositor;
use super::super::labels::render_label;
use super::super::tiles::{TileIn, arrange};
use super::*;
use crate::media::layout::{CustomTile, Layout};
use gstreamer_video::prelude::*;

const FORMAT: OutputFormat = OutputFormat { width: 320, height: 180, fps: 30, kbps: 300 };
/// The stand-in for a GPU fragment: a head, the aggregator, a tail, as `nvenc/composite.gst`.
const STANDIN: &str = "videoconvert ! compositor ! videoconvert ! capsfilter caps=video/x-raw,format=I420";

type Yuv = [u8; 3];
const RED: Yuv = [81, 90, 240];
const GREEN: Yuv = [145, 54, 34];
const BLUE: Yuv = [41, 240, 110];
const BLACK: Yuv = [16, 128, 128];

fn standin(fragment: &str) -> (Backends, Fragment) {
    let f = Fragment { backend: "standin".into(), variant: 0, description: fragment.into() };
    (Backends::new("standin", None), f)
}

fn element(fragment: &str, stats: Arc<VideoStats>) -> ElementCompositor {
    let (b, f) = standin(fragment);
    ElementCompositor::new("seam-test", &b, &f, FORMAT, stats).expect("the stand-in fragment runs")
}

/// A solid `w`×`h` I420 frame.
fn frame(c: Yuv, w: u32, h: u32) -> gst::Sample {
    let (cw, ch) = (w.div_ceil(2) as usize, h.div_ceil(2) as usize);
    let mut data = vec![c[0]; (w * h) as usize];
    data.extend(std::iter::repeat_n(c[1], cw * ch));
    data.extend(std::iter::repeat_n(c[2], cw * ch));
    let caps = gst::Caps::builder("video/x-raw")
        .field("format", "I420")
        .field("width", w as i32)
        .field("height", h as i32)
        .field("framerate", gst::Fraction::new(30, 1))
        .build();
    gst::Sample::builder().buffer(&gst::Buffer::from_mut_slice(data)).caps(&caps).build()
}

/// The composite's colour at (x, y).
fn at(buf: &gst::Buffer, x: u32, y: u32) -> Yuv {
    let info = gstreamer_video::VideoInfo::builder(gstreamer_video::VideoFormat::I420, FORMAT.width, FORMAT.height)
        .build()
        .unwrap();
    let f = gstreamer_video::VideoFrameRef::from_buffer_ref_readable(buf.as_ref(), &info).unwrap();
    let s = f.plane_stride();
    let px = |k: u32, x: u32, y: u32| f.plane_data(k).unwrap()[y as usize * s[k as usize] as usize + x as usize];
    [px(0, x, y), px(1, x / 2, y / 2), px(2, x / 2, y / 2)]
}

fn near(a: Yuv, b: Yuv) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 12)
}

fn centre(r: Rect) -> (u32, u32) {
    (r.x + r.w / 2, r.y + r.h / 2)
}

/// Lays out `ids` (all 160x90 sources) with `layout` and `speaker` and hands the scene over.
fn lay_out(c: &dyn Compositor, ids: &[&str], layout: &Layout, speaker: Option<&str>) -> Scene {
    let tiles: Vec<TileIn<'_>> =
        ids.iter().map(|id| TileIn { id, screen: false, src: (160, 90), last_spoke: None }).collect();
    let scene = arrange(&tiles, layout, speaker, 16, FORMAT.width, FORMAT.height).scene;
    c.set_scene(&scene);
    scene
}

fn rect_of(scene: &Scene, id: &str) -> Option<Rect> {
    scene.tiles.iter().find(|t| t.id == id).and_then(|t| t.rect)
}

/// What the room asks of any compositor, checked on `c`'s composites.
fn draws_layouts_labels_and_the_highlight(c: &dyn Compositor) {
    let name = c.backend();
    let colours = [("a", RED), ("b", GREEN), ("c", BLUE)];
    for (id, _) in colours {
        c.add_tile(id, None);
    }
    c.set_label("a", render_label("Alice Example"));
    let scene = lay_out(c, &["a", "b", "c"], &Layout::Grid, Some("a"));
    for (id, col) in colours {
        c.push(id, &frame(col, 160, 90), true);
    }
    assert!(c.take_dirty(), "{name}: pushed frames make it dirty");
    let out = c.composite().unwrap();
    assert!(!c.take_dirty(), "{name}: nothing new since");
    for (id, col) in colours {
        let (x, y) = centre(rect_of(&scene, id).unwrap());
        assert!(near(at(&out, x, y), col), "{name}: {id} at {x},{y} is {:?}", at(&out, x, y));
    }
    // The 2x2 grid's fourth cell is empty: black.
    assert!(near(at(&out, 240, 135), BLACK), "{name}: empty cell {:?}", at(&out, 240, 135));
    // The speaker's highlight: amber bars around a's cell.
    let bars = scene.highlight.unwrap();
    let top = bars[0];
    let amber = at(&out, top.x + top.w / 2, top.y + top.h / 2);
    assert!(near(amber, [182, 32, 166]), "{name}: highlight {amber:?}");
    // Alice's label, bottom-left in her tile: darker than her picture, with lighter text in it.
    let a = rect_of(&scene, "a").unwrap();
    let rows = a.y + a.h - LABEL_MARGIN - 16..a.y + a.h - LABEL_MARGIN;
    let lumas: Vec<u8> = rows
        .flat_map(|y| (a.x + LABEL_MARGIN..a.x + a.w / 2).map(move |x| (x, y)))
        .map(|(x, y)| at(&out, x, y)[0])
        .collect();
    assert!(lumas.iter().any(|&l| l + 20 < RED[0]), "{name}: no label box");
    assert!(lumas.iter().any(|&l| l > RED[0] + 40), "{name}: no label text");

    // Relayout: b full screen, a small on top in the corner, c hidden.
    let custom = Layout::Custom {
        tiles: vec![
            CustomTile { x: 0.0, y: 0.0, w: 1.0, h: 1.0, z: 0, participant: Some("b".into()) },
            CustomTile { x: 0.75, y: 0.75, w: 0.25, h: 0.25, z: 1, participant: Some("a".into()) },
        ],
    };
    let scene = lay_out(c, &["a", "b", "c"], &custom, None);
    assert!(rect_of(&scene, "c").is_none());
    assert!(c.take_dirty(), "{name}: a new scene makes it dirty");
    let out = c.composite().unwrap();
    // (The top of a's small tile: its label covers the rest.)
    let ra = rect_of(&scene, "a").unwrap();
    let (ax, ay) = (ra.x + ra.w / 2, ra.y + 4);
    assert!(near(at(&out, ax, ay), RED), "{name}: a on top {:?}", at(&out, ax, ay));
    assert!(near(at(&out, 40, 40), GREEN), "{name}: b underneath {:?}", at(&out, 40, 40));
    assert!(near(at(&out, 80, 135), GREEN), "{name}: c hidden, b there {:?}", at(&out, 80, 135));

    // A new frame shows in the next composite; a removed tile leaves black.
    c.push("a", &frame(BLUE, 160, 90), true);
    assert!(near(at(&c.composite().unwrap(), ax, ay), BLUE), "{name}: a's new frame");
    c.remove_tile("b");
    lay_out(c, &["a", "c"], &custom, None);
    let out = c.composite().unwrap();
    assert!(near(at(&out, 40, 40), BLACK), "{name}: b removed {:?}", at(&out, 40, 40));
    assert!(near(at(&out, ax, ay), BLUE), "{name}: a stays");
}

#[test]
fn the_cpu_canvas_draws_layouts_labels_and_the_highlight() {
    gst::init().unwrap();
    let c = CpuCompositor::new(FORMAT, Arc::default()).unwrap();
    draws_layouts_labels_and_the_highlight(&c);
}

#[test]
fn the_element_compositor_draws_the_same() {
    gst::init().unwrap();
    let c = element(STANDIN, Arc::default());
    assert_eq!(Compositor::backend(&c), "standin");
    draws_layouts_labels_and_the_highlight(&c);
    assert_eq!(Compositor::backend(&c), "standin", "it never fell back");
}

#[test]
fn a_fragment_is_split_around_its_aggregator() {
    let s = split(STANDIN).unwrap();
    assert_eq!(
        s,
        Split {
            head: "videoconvert".into(),
            aggregator: "compositor".into(),
            tail: "videoconvert ! capsfilter caps=video/x-raw,format=I420".into()
        }
    );
    assert_eq!(split("compositor background=black").unwrap().head, "");
    assert!(split("videoconvert ! videoscale").unwrap_err().contains("no video aggregator"));
}

#[test]
fn a_fragment_that_does_not_start_is_refused_so_the_room_uses_the_canvas() {
    gst::init().unwrap();
    let (b, f) = standin("videoconvert ! compositor ! capsfilter caps=video/x-raw,format=RGB ! fakesink");
    let e = ElementCompositor::new("seam-test", &b, &f, FORMAT, Arc::default()).err().expect("refused");
    assert!(!e.to_string().is_empty());
}

#[test]
fn an_element_compositor_failing_while_running_hands_the_room_to_the_cpu_canvas() {
    gst::init().unwrap();
    let stats = Arc::new(VideoStats::default());
    // The tail fails on its 4th composite, as a GPU element losing its device does.
    let (backends, fragment) = standin("videoconvert ! compositor ! identity error-after=4 ! videoconvert");
    let c = ElementCompositor::new("seam-test", &backends, &fragment, FORMAT, stats.clone()).unwrap();
    c.add_tile("a", render_label("A"));
    c.add_tile("b", None);
    let scene = lay_out(&c, &["a", "b"], &Layout::Grid, None);
    c.push("a", &frame(RED, 160, 90), true);
    c.push("b", &frame(GREEN, 160, 90), true);
    let (a, b) = (centre(rect_of(&scene, "a").unwrap()), centre(rect_of(&scene, "b").unwrap()));
    for i in 0..8 {
        let out = c.composite().expect("a composite every time");
        assert!(near(at(&out, a.0, a.1), RED) && near(at(&out, b.0, b.1), GREEN), "composite {i}");
    }
    assert_eq!(Compositor::backend(&c), "cpu");
    assert_eq!(stats.compositor_fallbacks.load(Ordering::Relaxed), 1);
    // The CPU canvas has everything: later frames, scenes and removals act on it.
    c.push("b", &frame(BLUE, 160, 90), true);
    assert!(near(at(&c.composite().unwrap(), b.0, b.1), BLUE));
    // What runs the role is reported as cpu now.
    assert!(backends.serving().contains(&(Role::Composite, Some("cpu".into()))));
}

#[test]
fn joins_size_changes_and_relayouts_while_decoders_push_never_stall_it() {
    gst::init().unwrap();
    let stats = Arc::new(VideoStats::default());
    let c = Arc::new(element(STANDIN, stats.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut decoders = vec![];
    let ids = ["a", "b", "c", "d"];
    for (k, id) in ids.iter().enumerate() {
        c.add_tile(id, render_label(id));
        let all: Vec<&str> = ids[..=k].to_vec();
        lay_out(c.as_ref(), &all, &Layout::Grid, Some(id));
        c.push(id, &frame(BLACK, 640, 360), true); // a placeholder first
        let (c2, stop, id) = (c.clone(), stop.clone(), id.to_string());
        decoders.push(std::thread::spawn(move || {
            let c = c2;
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let (w, h) = if (i / 20).is_multiple_of(2) { (320, 180) } else { (160, 120) };
                c.push(&id, &frame(RED, w, h), true);
                i += 1;
                std::thread::sleep(Duration::from_millis(7));
            }
        }));
        for _ in 0..30 {
            assert!(c.composite().is_some());
            std::thread::sleep(Duration::from_millis(3));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for d in decoders {
        d.join().unwrap();
    }
    assert_eq!(stats.compositor_fallbacks.load(Ordering::Relaxed), 0);
    assert_eq!(Compositor::backend(c.as_ref()), "standin");
}

/// Overlapping tiles of equal z are drawn in join order; a frame pushed with `draw = false` (a new
/// size, a new scene follows) shows from that scene on.
fn stacks_in_join_order_and_waits_for_the_scene(c: &dyn Compositor) {
    let name = c.backend();
    c.add_tile("a", None);
    c.add_tile("b", None);
    let both = Layout::Custom {
        tiles: vec![
            CustomTile { x: 0.0, y: 0.0, w: 1.0, h: 1.0, z: 0, participant: Some("a".into()) },
            CustomTile { x: 0.0, y: 0.0, w: 1.0, h: 1.0, z: 0, participant: Some("b".into()) },
        ],
    };
    lay_out(c, &["a", "b"], &both, None);
    c.push("a", &frame(RED, 160, 90), true);
    c.push("b", &frame(GREEN, 160, 90), true);
    assert!(near(at(&c.composite().unwrap(), 160, 90), GREEN), "{name}: b joined last, on top");
    c.push("b", &frame(BLUE, 320, 180), false);
    assert!(near(at(&c.composite().unwrap(), 160, 90), GREEN), "{name}: not before the new scene");
    lay_out(c, &["a", "b"], &both, None);
    c.push("b", &frame(BLUE, 320, 180), true);
    assert!(near(at(&c.composite().unwrap(), 160, 90), BLUE), "{name}: with it");
}

#[test]
fn both_compositors_stack_in_join_order_and_wait_for_the_scene() {
    gst::init().unwrap();
    stacks_in_join_order_and_waits_for_the_scene(&CpuCompositor::new(FORMAT, Arc::default()).unwrap());
    stacks_in_join_order_and_waits_for_the_scene(&element(STANDIN, Arc::default()));
}

#[test]
fn a_frame_the_head_refuses_is_dropped_and_counted_not_a_fallback() {
    gst::init().unwrap();
    let stats = Arc::new(VideoStats::default());
    let c = element(STANDIN, stats.clone());
    c.add_tile("a", None);
    lay_out(&c, &["a"], &Layout::Grid, None);
    c.push("a", &frame(RED, 160, 90), true);
    let audio = gst::Caps::builder("audio/x-raw").field("format", "S16LE").field("rate", 48000).build();
    let bad = gst::Sample::builder().buffer(&gst::Buffer::with_size(960).unwrap()).caps(&audio).build();
    c.push("a", &bad, true);
    c.push("a", &gst::Sample::builder().caps(&audio).build(), true);
    assert_eq!(stats.frames_dropped.load(Ordering::Relaxed), 2);
    assert!(near(at(&c.composite().unwrap(), 160, 90), RED), "the last good frame stays");
    c.push("a", &frame(GREEN, 160, 90), true);
    assert!(near(at(&c.composite().unwrap(), 160, 90), GREEN));
    assert_eq!(Compositor::backend(&c), "standin");
    assert_eq!(stats.compositor_fallbacks.load(Ordering::Relaxed), 0);
}
