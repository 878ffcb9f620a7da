//! A louder tone makes its publisher the active speaker within 2 s; the speaker layout follows and
//! the grid highlights the speaker.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{self, PeerOpts, close};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loudest_publisher_becomes_the_active_speaker() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let a = srv.addr;
    let mut viewer_opts = PeerOpts::viewer("viewer");
    viewer_opts.data_channel = true;
    let viewer = common::join(a, "talk", viewer_opts).await;
    // Events reach a data channel from when it opened.
    viewer.wait_event(Duration::from_secs(10), |e| e["type"] == "welcome").await.expect("welcome");
    let mut quiet = PeerOpts::publisher("quiet", (40, 200, 60), 500.0);
    quiet.tone_volume = 0.05;
    quiet.receive = false;
    let quiet = common::join(a, "talk", quiet).await;
    let ev = viewer
        .wait_event(Duration::from_secs(5), |e| {
            e["type"] == "active_speaker" && e["participant"]["id"] == quiet.id.as_str()
        })
        .await;
    assert!(ev.is_some(), "the only talker becomes the speaker: {:?}", viewer.events());

    let mut loud = PeerOpts::publisher("loud", (220, 40, 40), 900.0);
    loud.tone_volume = 0.5;
    loud.receive = false;
    let loud = common::join(a, "talk", loud).await;
    // Joined and sending: from here the louder tone must win within 2 s.
    let t = Instant::now();
    let ev = viewer
        .wait_event(Duration::from_secs(2), |e| {
            e["type"] == "active_speaker" && e["participant"]["id"] == loud.id.as_str()
        })
        .await;
    assert!(ev.is_some(), "loud did not become the speaker within 2 s: {:?}", viewer.events());
    eprintln!("active speaker switched {} ms after the louder publisher joined", t.elapsed().as_millis());
    assert_eq!(common::room_json(a, "talk").await["active_speaker"], loud.id.as_str());

    // Grid: the speaker's cell (left) has the highlight bars around it.
    let f = viewer
        .wait_frame(Duration::from_secs(5), |f| {
            close(f.colour_at(320, 361, 1), (255, 200, 0), 60) && close(f.colour_at(320, 360, 30), (40, 200, 60), 45)
        })
        .await;
    let f = f.expect("frames");
    let edge = |x, y| f.colour_at(x, y, 1);
    // The grid of two: quiet (joined first) left, loud right; highlight on loud's cell edges.
    let room = common::room_json(a, "talk").await;
    let cell =
        room["placements"].as_array().unwrap().iter().find(|p| p["participant"] == loud.id.as_str()).unwrap()["cell"]
            .clone();
    let (x, y, w, h) = (
        cell["x"].as_u64().unwrap() as u32,
        cell["y"].as_u64().unwrap() as u32,
        cell["w"].as_u64().unwrap() as u32,
        cell["h"].as_u64().unwrap() as u32,
    );
    let f = viewer
        .wait_frame(Duration::from_secs(5), |f| close(f.colour_at(x + w / 2, y + 1, 1), (255, 200, 0), 70))
        .await
        .unwrap();
    common::save(&f, "speaker-highlight");
    assert!(
        close(f.colour_at(x + w / 2, y + 1, 1), (255, 200, 0), 70),
        "no highlight on the speaker's top edge: {:?}",
        f.colour_at(x + w / 2, y + 1, 1)
    );
    assert!(close(f.colour_at(x + 1, y + h / 2, 1), (255, 200, 0), 70), "no highlight on the speaker's left edge");
    let _ = edge;

    // Speaker layout: the speaker is the large tile.
    let r = common::put_json(a, "/v1/rooms/talk/layout", json!({"layout": "speaker"})).await;
    assert_eq!(r.status, 200);
    let f = viewer
        .wait_frame(Duration::from_secs(5), |f| close(f.colour_at(640, 250, 30), (220, 40, 40), 45))
        .await
        .unwrap();
    common::save(&f, "layout-speaker-follows");
    assert!(
        close(f.colour_at(640, 250, 30), (220, 40, 40), 45),
        "the speaker is not large: {:?}",
        f.colour_at(640, 250, 30)
    );
    assert!(
        viewer
            .wait_event(Duration::from_secs(2), |e| e["type"] == "layout_changed" && e["layout"]["layout"] == "speaker")
            .await
            .is_some()
    );
}
