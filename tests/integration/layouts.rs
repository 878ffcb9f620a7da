//! Each layout puts each participant's colour where the layout says, on decoded frames.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tessera::config::Config;

use crate::common::{self, Frame, Peer, PeerOpts, close};

type Rgb = (u8, u8, u8);

/// Every shown tile's centre has its participant's colour. Returns a description of what differs.
fn mismatches(f: &Frame, room: &Value, colours: &HashMap<String, Rgb>) -> Vec<String> {
    let mut out = vec![];
    for t in room["tiles"].as_array().unwrap() {
        let Some(r) = t["rect"].as_object() else { continue };
        let (x, y, w, h) = (
            r["x"].as_u64().unwrap() as u32,
            r["y"].as_u64().unwrap() as u32,
            r["w"].as_u64().unwrap() as u32,
            r["h"].as_u64().unwrap() as u32,
        );
        let id = t["participant"].as_str().unwrap();
        let want = colours[id];
        let got = f.colour_at(x + w / 2, y + h / 2, (w.min(h) / 6).clamp(2, 30));
        if !close(got, want, 45) {
            out.push(format!("{id} at {x},{y} {w}x{h}: {got:?} != {want:?}"));
        }
    }
    out
}

/// Sets `layout`, then waits until the viewer's frame matches the room's tiles; saves it.
async fn check_layout(
    addr: SocketAddr,
    viewer: &Peer,
    layout: Value,
    colours: &HashMap<String, Rgb>,
    name: &str,
) -> Value {
    let r = common::put_json(addr, "/v1/rooms/layouts/layout", layout.clone()).await;
    assert_eq!(r.status, 200, "PUT layout {layout}: {}", r.body);
    // A tile moves when its source's next frame arrives; the room JSON says where it goes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let room = common::room_json(addr, "layouts").await;
        let f = viewer.wait_frame(Duration::from_secs(1), |f| mismatches(f, &room, colours).is_empty()).await.unwrap();
        let bad = mismatches(&f, &room, colours);
        if bad.is_empty() || std::time::Instant::now() > deadline {
            let path = common::save(&f, &format!("layout-{name}"));
            eprintln!("layout {name}: {}", path.display());
            assert!(bad.is_empty(), "layout {name}: {bad:?}\nroom: {}", room["tiles"]);
            return room;
        }
    }
}

fn rect(room: &Value, id: &str) -> (u64, u64, u64, u64) {
    let t = room["tiles"].as_array().unwrap().iter().find(|t| t["participant"] == id).unwrap();
    let r = &t["rect"];
    (r["x"].as_u64().unwrap(), r["y"].as_u64().unwrap(), r["w"].as_u64().unwrap(), r["h"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_puts_each_colour_in_its_place() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    every_layout(srv.addr).await;
}

/// A pipelines folder with `cpu`'s fragments and a `standin` backend whose `composite.gst` is
/// `nvenc`'s shape (head, video aggregator, tail) with GStreamer's CPU `compositor` standing in for
/// `cudacompositor`: the room composites through the element compositor.
fn standin_pipelines() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-standin-{}", std::process::id()));
    let (cpu, standin) = (dir.join("cpu"), dir.join("standin"));
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::create_dir_all(&standin).unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/cpu");
    for e in std::fs::read_dir(&repo).unwrap().flatten() {
        std::fs::copy(e.path(), cpu.join(e.file_name())).unwrap();
    }
    let composite = "videoconvert ! compositor ! videoconvert ! capsfilter caps=video/x-raw,format=I420\n";
    std::fs::write(standin.join("composite.gst"), composite).unwrap();
    dir
}

/// The same layouts, composited by the element compositor (the GPU path's code, on the CPU).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_puts_each_colour_in_its_place_through_the_element_compositor() {
    let _serial = common::serial().await;
    let dir = standin_pipelines();
    let cfg = Config { backend: "standin".into(), pipelines_dir: Some(dir.clone()), ..Config::default() };
    let srv = common::server_with(cfg).await;
    let room = every_layout(srv.addr).await;
    assert_eq!(room["compositor"], "standin", "{room}");
    assert_eq!(room["compositor_fallbacks"], 0, "{room}");
    let metrics = common::http("GET", format!("http://{}/metrics", srv.addr), None, vec![]).await.body;
    let line = metrics.lines().find(|l| l.starts_with("tessera_role_backend") && l.contains(r#"role="composite""#));
    assert!(line.is_some_and(|l| l.contains(r#"backend="standin""#) && l.ends_with(" 1")), "{metrics}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every layout on room `layouts` of the server at `a`: each colour where the room JSON says.
/// Returns the room JSON at the end.
async fn every_layout(a: SocketAddr) -> Value {
    let spec = [("red", (220, 40, 40)), ("green", (40, 200, 60)), ("blue", (40, 60, 220))];
    let mut peers = vec![];
    let mut colours = HashMap::new();
    for (name, c) in spec {
        let mut o = PeerOpts::publisher(name, c, 0.0);
        o.tone_hz = None; // silent: the active speaker stays put
        o.receive = false;
        let p = common::join(a, "layouts", o).await;
        colours.insert(p.id.clone(), c);
        peers.push(p);
    }
    let viewer = common::join(a, "layouts", PeerOpts::viewer("viewer")).await;
    let (red, green, blue) = (peers[0].id.clone(), peers[1].id.clone(), peers[2].id.clone());

    let room = check_layout(a, &viewer, json!({"layout": "grid"}), &colours, "grid").await;
    assert_eq!(rect(&room, &green), (640, 0, 640, 360));

    let room = check_layout(a, &viewer, json!({"layout": "pinned", "participant": blue}), &colours, "pinned").await;
    let (_, y, w, _) = rect(&room, &blue);
    assert!(w >= 960 && y == 0, "pinned blue is large: {:?}", rect(&room, &blue));
    assert!(rect(&room, &red).1 > rect(&room, &blue).1 + rect(&room, &blue).3 / 2, "red is in the strip below");

    let room = check_layout(a, &viewer, json!({"layout": "2+N"}), &colours, "2+N").await;
    let featured: Vec<_> = room["placements"].as_array().unwrap().iter().filter(|p| p["featured"] == true).collect();
    assert_eq!(featured.len(), 2);

    let room = check_layout(a, &viewer, json!({"layout": "1+7"}), &colours, "1+7").await;
    assert_eq!(room["placements"].as_array().unwrap().iter().filter(|p| p["featured"] == true).count(), 1);

    let room = check_layout(a, &viewer, json!({"layout": "speaker"}), &colours, "speaker").await;
    assert_eq!(room["layout"]["layout"], "speaker");

    // Custom: green full screen underneath, red small on top in the bottom-right corner.
    let custom = json!({"layout": "custom", "tiles": [
        {"x": 0.0, "y": 0.0, "w": 1.0, "h": 1.0, "z": 0, "participant": green},
        {"x": 0.75, "y": 0.75, "w": 0.25, "h": 0.25, "z": 1, "participant": red},
    ]});
    let room = check_layout(a, &viewer, custom, &colours, "custom").await;
    assert_eq!(rect(&room, &red), (960, 540, 320, 180));
    assert!(
        room["tiles"].as_array().unwrap().iter().any(|t| t["participant"] == blue.as_str() && t["rect"].is_null()),
        "blue is not shown"
    );

    // Presentation: a screen share (second, send-only session) is shown large.
    let mut o = PeerOpts::publisher("red-screen", (230, 200, 40), 0.0);
    o.tone_hz = None;
    o.receive = false;
    o.source = Some("screen");
    let screen = common::join(a, "layouts", o).await;
    colours.insert(screen.id.clone(), (230, 200, 40));
    let room = check_layout(a, &viewer, json!({"layout": "presentation"}), &colours, "presentation").await;
    let (_, _, w, _) = rect(&room, &screen.id);
    assert!(w >= 960, "the screen share is large: {:?}", rect(&room, &screen.id));
    let s = room["participants"].as_array().unwrap().iter().find(|p| p["id"] == screen.id.as_str()).unwrap().clone();
    assert_eq!(s["source"], "screen");
    assert_eq!(s["receives"]["video"], false, "a screen share receives nothing");

    // Bad layouts are refused with a reason and change nothing.
    let r = common::put_json(a, "/v1/rooms/layouts/layout", json!({"layout": "mosaic"})).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = common::put_json(a, "/v1/rooms/layouts/layout", json!({"layout": "pinned", "participant": "nobody"})).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let room = common::room_json(a, "layouts").await;
    assert_eq!(room["layout"]["layout"], "presentation");
    room
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_visible_tile_cap_hides_and_stops_decoding_the_rest() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let a = srv.addr;
    let r = common::put_json(a, "/v1/rooms/capped", json!({"max_visible": 2})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut peers = vec![];
    for (i, c) in [(220, 40, 40), (40, 200, 60), (40, 60, 220)].into_iter().enumerate() {
        let mut o = PeerOpts::publisher(&format!("c{i}"), c, 0.0);
        o.tone_hz = None;
        o.receive = false;
        peers.push(common::join(a, "capped", o).await);
    }
    let viewer = common::join(a, "capped", PeerOpts::viewer("viewer")).await;
    let f = viewer
        .wait_frame(Duration::from_secs(15), |f| {
            close(f.colour_at(320, 360, 30), (220, 40, 40), 45) && close(f.colour_at(960, 360, 30), (40, 200, 60), 45)
        })
        .await
        .unwrap();
    common::save(&f, "cap-2");
    let room = common::room_json(a, "capped").await;
    let shown = room["tiles"].as_array().unwrap().iter().filter(|t| !t["rect"].is_null()).count();
    assert_eq!(shown, 2, "{}", room["tiles"]);
    // The hidden publisher is not decoded: its video never reached the compositor after it was
    // hidden, so the picture has no blue anywhere.
    assert!(!close(f.colour_at(640, 600, 30), (40, 60, 220), 45));
    // A persistent room stays when empty, and DELETE ends it.
    for p in &peers {
        p.leave().await.unwrap();
    }
    viewer.leave().await.unwrap();
    assert!(!common::room_json(a, "capped").await.is_null());
    assert_eq!(common::http("DELETE", format!("http://{a}/v1/rooms/capped"), None, vec![]).await.status, 204);
    assert!(common::room_json(a, "capped").await.is_null());
}
