//! After a DELETE the participant is gone: the grid re-lays out and the room JSON drops it.

use std::time::Duration;

use crate::common::{self, PeerOpts, close};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_relays_out_the_grid_and_frees_the_participant() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let red = common::join(srv.addr, "leave", PeerOpts::publisher("red", (220, 40, 40), 400.0)).await;
    let green = common::join(srv.addr, "leave", PeerOpts::publisher("green", (40, 200, 60), 700.0)).await;
    let blue = common::join(srv.addr, "leave", PeerOpts::publisher("blue", (40, 60, 220), 1000.0)).await;
    // 3 tiles: green is top-right.
    let f =
        red.wait_frame(Duration::from_secs(20), |f| close(f.colour_at(960, 180, 40), (40, 200, 60), 45)).await.unwrap();
    assert!(close(f.colour_at(960, 180, 40), (40, 200, 60), 45));

    assert_eq!(green.leave().await.unwrap(), 204);
    // 2 tiles side by side, each 640x360 picture letterboxed in a 640x720 cell.
    let relaid = |f: &common::Frame| {
        close(f.colour_at(320, 360, 40), (220, 40, 40), 45)
            && close(f.colour_at(960, 360, 40), (40, 60, 220), 45)
            && close(f.colour_at(960, 60, 30), (0, 0, 0), 20)
            && close(f.colour_at(320, 660, 30), (0, 0, 0), 20)
    };
    for p in [&red, &blue] {
        let f = p.wait_frame(Duration::from_secs(10), relaid).await.unwrap();
        common::save(&f, &format!("leave-{}", p.opts.name));
        assert!(
            relaid(&f),
            "{}: grid not re-laid out: left {:?} right {:?} top-right band {:?}",
            p.opts.name,
            f.colour_at(320, 360, 40),
            f.colour_at(960, 360, 40),
            f.colour_at(960, 60, 30)
        );
    }
    let room = common::room_json(srv.addr, "leave").await;
    let ids: Vec<&str> = room["participants"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![red.id.as_str(), blue.id.as_str()]);
    assert_eq!(room["tiles"].as_array().unwrap().len(), 2);
    // A second DELETE of the same resource is 404.
    assert_eq!(green.leave().await.unwrap(), 404);
    // The last leave ends the room.
    assert_eq!(red.leave().await.unwrap(), 204);
    assert_eq!(blue.leave().await.unwrap(), 204);
    assert!(common::room_json(srv.addr, "leave").await.is_null(), "empty room still listed");
}
