//! Peers join one room and each receives the 1280x720 grid with every publisher in its cell.

use std::time::{Duration, Instant};

use crate::common::{self, PeerOpts, close};

/// Centres of the 2x2 grid's cells at 1280x720 (cols = ceil(sqrt(3)) = 2, rows = 2).
const CENTRES: [(u32, u32); 4] = [(320, 180), (960, 180), (320, 540), (960, 540)];
pub const COLOURS: [(u8, u8, u8); 3] = [(220, 40, 40), (40, 200, 60), (40, 60, 220)];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_publishers_fill_their_grid_cells() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let mut peers = vec![];
    for (i, c) in COLOURS.iter().enumerate() {
        peers.push(
            common::join(srv.addr, "grid", PeerOpts::publisher(&format!("p{i}"), *c, 400.0 + 300.0 * i as f64)).await,
        );
    }
    for p in &peers {
        let f = p
            .wait_frame(Duration::from_secs(20), |f| {
                f.width == 1280
                    && f.height == 720
                    && COLOURS.iter().zip(CENTRES).all(|(c, (x, y))| close(f.colour_at(x, y, 40), *c, 45))
            })
            .await
            .unwrap_or_else(|| panic!("{} decoded no composite: {:?}", p.opts.name, p.stats()));
        let seen: Vec<_> = CENTRES.iter().map(|(x, y)| f.colour_at(*x, *y, 40)).collect();
        common::save(&f, &format!("join_grid-{}", p.opts.name));
        assert_eq!((f.width, f.height), (1280, 720), "{}", p.opts.name);
        for (i, c) in COLOURS.iter().enumerate() {
            assert!(close(seen[i], *c, 45), "{}: cell {i} shows {:?}, expected {c:?}", p.opts.name, seen[i]);
        }
        assert!(close(seen[3], (0, 0, 0), 20), "{}: the empty cell is not black: {:?}", p.opts.name, seen[3]);
        // The join time: POST → first decoded composite frame.
        eprintln!("{}: join to first frame {:?} ms", p.opts.name, p.stats().join_ms);
    }
    let room = common::room_json(srv.addr, "grid").await;
    let ps = room["participants"].as_array().unwrap();
    assert_eq!(ps.len(), 3);
    assert!(
        ps.iter().all(|p| p["publishes"]["video"] == true
            && p["publishes"]["audio"] == true
            && p["receives"]["video"] == true)
    );
    // The test publishers send keyframes only when asked (as browsers do): the pictures above
    // prove the server asked each of them, and the counter says so.
    assert!(ps.iter().all(|p| p["plis_sent"].as_u64().unwrap() >= 1), "{room}");
    assert_eq!(room["output"]["width"], 1280);
    // The composite keeps flowing.
    let before = peers[0].frames();
    let t = Instant::now();
    peers[0].wait_frame(Duration::from_secs(5), |_| peers[0].frames() >= before + 30).await;
    assert!(
        peers[0].frames() >= before + 30,
        "composite stalled: {} frames in {:?}",
        peers[0].frames() - before,
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_without_vp8_gets_h264() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let _red = common::join(srv.addr, "h264", PeerOpts::publisher("red", COLOURS[0], 500.0)).await;
    let mut opts = PeerOpts::viewer("h264-viewer");
    opts.via = common::Via::Participant;
    opts.video_codecs = vec![rtc::peer_connection::configuration::media_engine::MIME_TYPE_H264];
    let viewer = common::join(srv.addr, "h264", opts).await;
    let f = viewer
        .wait_frame(Duration::from_secs(20), |f| f.width == 1280 && close(f.colour_at(640, 360, 40), COLOURS[0], 45))
        .await;
    assert_eq!(viewer.video_codec().as_deref(), Some("H264"));
    let f = f.expect("H264 composite decoded");
    assert!(close(f.colour_at(640, 360, 40), COLOURS[0], 45), "centre is {:?}", f.colour_at(640, 360, 40));
    let room = common::room_json(srv.addr, "h264").await;
    let v = room["participants"].as_array().unwrap().iter().find(|p| p["id"] == viewer.id.as_str()).cloned().unwrap();
    assert_eq!(v["video_codec"], "h264");
}
