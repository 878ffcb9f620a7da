//! Audio-only participants get a placeholder tile; a server-muted participant is absent from
//! everyone's audio and a video-muted one shows its placeholder, never a frozen frame.

use std::time::Duration;

use serde_json::json;

use crate::common::{self, PeerOpts, close, tone_db};

/// The placeholder's dark background (0x262b36 through VP8 and back).
const DARK: (u8, u8, u8) = (38, 43, 54);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_only_gets_a_placeholder_and_mutes_apply_to_everyone() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let a = srv.addr;
    let mut cam = PeerOpts::publisher("camera", (220, 40, 40), 500.0);
    cam.receive = false;
    let cam = common::join(a, "mute", cam).await;
    let mut voice = PeerOpts::publisher("Ada Lovelace", (0, 0, 0), 900.0);
    voice.video = tessera::client::loadgen::VideoSource::None;
    voice.receive = false;
    let voice = common::join(a, "mute", voice).await;
    let viewer = common::join(a, "mute", PeerOpts::viewer("viewer")).await;

    // Two tiles: camera left, the audio-only participant's placeholder right, with initials.
    let placeholder = |f: &common::Frame| close(f.colour_at(960, 250, 20), DARK, 25);
    let f = viewer
        .wait_frame(Duration::from_secs(15), |f| placeholder(f) && close(f.colour_at(320, 360, 30), (220, 40, 40), 45))
        .await
        .unwrap();
    common::save(&f, "placeholder-audio-only");
    assert!(placeholder(&f), "audio-only tile is {:?}, not the placeholder", f.colour_at(960, 250, 20));
    // The initials "AL" are drawn in light text in the middle of the tile.
    let bright = (900..1020).step_by(4).any(|x| (330..390).step_by(4).any(|y| f.colour_at(x, y, 1).0 > 150));
    assert!(bright, "no initials on the placeholder");
    let room = common::room_json(a, "mute").await;
    let v = room["participants"].as_array().unwrap().iter().find(|p| p["id"] == voice.id.as_str()).unwrap().clone();
    assert_eq!(v["publishes"]["video"], false);
    assert_eq!(v["publishes"]["audio"], true);

    // Both tones are heard.
    viewer.audio_window(24000, Duration::from_secs(10)).await;
    let s = viewer.audio_window(24000, Duration::from_secs(10)).await;
    assert!(
        tone_db(&s, 500.0) > -30.0 && tone_db(&s, 900.0) > -30.0,
        "before mute: {:.1} / {:.1} dB",
        tone_db(&s, 500.0),
        tone_db(&s, 900.0)
    );

    // Server-side mute of the audio-only participant: gone from the mix, the label says so.
    let r =
        common::put_json(a, &format!("/v1/rooms/mute/participants/{}/mute", voice.id), json!({"audio": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    viewer.audio_window(24000, Duration::from_secs(10)).await;
    let s = viewer.audio_window(24000, Duration::from_secs(10)).await;
    assert!(tone_db(&s, 900.0) < -45.0, "muted participant still heard: {:.1} dB", tone_db(&s, 900.0));
    assert!(tone_db(&s, 500.0) > -30.0, "the other participant is gone too: {:.1} dB", tone_db(&s, 500.0));

    // Server-side video mute of the camera: its tile turns into its placeholder.
    let r = common::put_json(a, &format!("/v1/rooms/mute/participants/{}/mute", cam.id), json!({"video": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let f = viewer.wait_frame(Duration::from_secs(5), |f| close(f.colour_at(320, 250, 20), DARK, 25)).await.unwrap();
    common::save(&f, "placeholder-video-muted");
    assert!(close(f.colour_at(320, 250, 20), DARK, 25), "video-muted tile shows {:?}", f.colour_at(320, 250, 20));
    let room = common::room_json(a, "mute").await;
    let c = room["participants"].as_array().unwrap().iter().find(|p| p["id"] == cam.id.as_str()).unwrap().clone();
    assert_eq!(c["muted"]["video"], true);
    // Unmute: the picture comes back.
    let r = common::put_json(a, &format!("/v1/rooms/mute/participants/{}/mute", cam.id), json!({"video": false})).await;
    assert_eq!(r.status, 200);
    let f = viewer
        .wait_frame(Duration::from_secs(5), |f| close(f.colour_at(320, 360, 30), (220, 40, 40), 45))
        .await
        .unwrap();
    assert!(close(f.colour_at(320, 360, 30), (220, 40, 40), 45));
    // Bad mute requests.
    let r = common::put_json(a, "/v1/rooms/mute/participants/nobody/mute", json!({"audio": true})).await;
    assert_eq!(r.status, 404);
    let r = common::put_json(a, &format!("/v1/rooms/mute/participants/{}/mute", cam.id), json!({})).await;
    assert_eq!(r.status, 400);
}
