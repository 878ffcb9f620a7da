//! Simulcast ingest (RFC 8853): a publisher sending its video at 160x90, 320x180 and 640x360
//! (rids `q`, `h`, `f`) is decoded at the layer that fits its tile — the largest while it fills
//! the composite, the smallest in a small tile — switching at the new layer's keyframe, and the
//! room JSON says which layer is decoded.

use std::time::Duration;

use serde_json::json;

use crate::common::{self, PeerOpts, VideoSource, close};

/// Waits (up to 10 s) until the room JSON says participant `id` decodes layer `rid`; returns it.
async fn decoded(addr: std::net::SocketAddr, room: &str, id: &str, rid: &str) -> serde_json::Value {
    let mut p = serde_json::Value::Null;
    for _ in 0..100 {
        let r = common::room_json(addr, room).await;
        p = r["participants"].as_array().unwrap().iter().find(|p| p["id"] == id).cloned().unwrap_or_default();
        if p["simulcast"]["decoded"] == rid {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} does not decode layer {rid}: {p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_publisher_is_decoded_at_the_layer_that_fits_its_tile() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let mut o = PeerOpts::publisher("sim", (230, 120, 30), 500.0);
    o.video = VideoSource::SimulcastColour((230, 120, 30));
    o.receive = false;
    let sim = common::join(srv.addr, "simulcast", o).await;
    let viewer = common::join(srv.addr, "simulcast", PeerOpts::viewer("viewer")).await;
    // Alone, it fills the 1280x720 composite: the largest layer.
    let p = decoded(srv.addr, "simulcast", &sim.id, "f").await;
    // Layers are listed as their first packets arrive, in no set order.
    let mut rids: Vec<&str> = p["simulcast"]["rids"].as_array().unwrap().iter().filter_map(|r| r.as_str()).collect();
    rids.sort_unstable();
    assert_eq!(rids, ["f", "h", "q"], "{p}");
    assert_eq!(p["simulcast"]["size"], json!([640, 360]), "{p}");
    let f = viewer.wait_frame(Duration::from_secs(10), |f| close(f.colour_at(640, 360, 60), (230, 120, 30), 45)).await;
    assert!(f.is_some_and(|f| close(f.colour_at(640, 360, 60), (230, 120, 30), 45)), "its picture fills the grid");
    // In a 128x72 tile, the 160x90 layer.
    let small = json!({"layout": "custom", "tiles": [{"x": 0, "y": 0, "w": 0.1, "h": 0.1, "participant": sim.id}]});
    assert_eq!(common::put_json(srv.addr, "/v1/rooms/simulcast/layout", small).await.status, 200);
    let p = decoded(srv.addr, "simulcast", &sim.id, "q").await;
    assert_eq!(p["simulcast"]["size"], json!([160, 90]), "{p}");
    let f = viewer
        .wait_frame(Duration::from_secs(10), |f| {
            close(f.colour_at(64, 36, 20), (230, 120, 30), 45) && close(f.colour_at(640, 360, 60), (0, 0, 0), 30)
        })
        .await;
    assert!(
        f.is_some_and(|f| close(f.colour_at(64, 36, 20), (230, 120, 30), 45)),
        "the small layer shows in the small tile"
    );
    // Back to the grid: the largest layer again.
    assert_eq!(common::put_json(srv.addr, "/v1/rooms/simulcast/layout", json!({"layout": "grid"})).await.status, 200);
    decoded(srv.addr, "simulcast", &sim.id, "f").await;
}
