//! A WHIP (RFC 9725) publisher shows in the grid.

use std::time::Duration;

use crate::common::{self, PeerOpts, Via, close, tone_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publisher_shows_in_the_grid() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let mut o = PeerOpts::publisher("obs", (230, 200, 40), 800.0);
    o.via = Via::Whip;
    o.receive = false;
    let whip = common::join(srv.addr, "whip", o).await;
    let viewer = common::join(srv.addr, "whip", PeerOpts::viewer("viewer")).await;
    // One tile: the 640x360 picture scaled up to fill 1280x720.
    let f = viewer
        .wait_frame(Duration::from_secs(20), |f| {
            close(f.colour_at(640, 360, 60), (230, 200, 40), 45) && close(f.colour_at(60, 60, 30), (230, 200, 40), 45)
        })
        .await
        .expect("composite");
    assert!(close(f.colour_at(640, 360, 60), (230, 200, 40), 45), "centre {:?}", f.colour_at(640, 360, 60));
    let s = viewer.audio_window(48000, Duration::from_secs(10)).await;
    assert!(tone_db(&s, 800.0) > -30.0, "WHIP audio missing from the mix: {:.1} dB", tone_db(&s, 800.0));
    let room = common::room_json(srv.addr, "whip").await;
    let w = room["participants"].as_array().unwrap().iter().find(|p| p["id"] == whip.id.as_str()).cloned().unwrap();
    assert_eq!(w["kind"], "whip");
    assert_eq!(w["publishes"]["video"], true);
    assert_eq!(w["receives"]["video"], false);
    assert_eq!(whip.leave().await.unwrap(), 204);
}
