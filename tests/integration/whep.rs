//! A WHEP viewer (recvonly) receives the composite with every publisher and the full mix.

use std::time::Duration;

use crate::common::{self, PeerOpts, close, tone_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_viewer_gets_every_colour_and_every_tone() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let _a = common::join(srv.addr, "whep", PeerOpts::publisher("a", (220, 40, 40), 500.0)).await;
    let _b = common::join(srv.addr, "whep", PeerOpts::publisher("b", (40, 200, 60), 900.0)).await;
    let viewer = common::join(srv.addr, "whep", PeerOpts::viewer("viewer")).await;
    let both = |f: &common::Frame| {
        f.width == 1280
            && close(f.colour_at(320, 360, 40), (220, 40, 40), 45)
            && close(f.colour_at(960, 360, 40), (40, 200, 60), 45)
    };
    let f = viewer.wait_frame(Duration::from_secs(20), both).await.expect("viewer decodes the composite");
    assert!(both(&f), "viewer sees {:?} and {:?}", f.colour_at(320, 360, 40), f.colour_at(960, 360, 40));
    viewer.audio_window(24000, Duration::from_secs(10)).await;
    let s = viewer.audio_window(48000, Duration::from_secs(10)).await;
    let (l5, l9) = (tone_db(&s, 500.0), tone_db(&s, 900.0));
    assert!(l5 > -30.0 && l9 > -30.0, "viewer hears 500 Hz at {l5:.1} dB and 900 Hz at {l9:.1} dB");
    let room = common::room_json(srv.addr, "whep").await;
    let v = room["participants"].as_array().unwrap().iter().find(|p| p["id"] == viewer.id.as_str()).cloned().unwrap();
    assert_eq!(v["kind"], "whep");
    assert_eq!(v["publishes"]["video"], false);
    assert_eq!(v["receives"]["video"], true);
}
