//! Run-time fallback of GPU fragments: a backend whose VP8 decoder, encoder and compositor parse
//! and pass the start-up probe (320x240, 10 frames) but then fail — the decoder refuses a
//! publisher's 640x360, the encoder errors after 20 frames, the compositor after 60 composites —
//! as a GPU element refusing a size, or a driver dropping a session or its device, does. The room
//! never fails: each fragment is swapped for `cpu`'s (the compositor for the CPU canvas) while the
//! room runs, receivers decode the grid, and the room JSON, `/metrics` and `/v1/config` say what
//! runs where.

use std::time::Duration;

use tessera::config::Config;

use crate::common::{self, PeerOpts, close};
use crate::join_grid::COLOURS;

/// A pipelines folder with `cpu`'s fragments and a `flaky` backend whose VP8 decoder takes 320x240
/// only and whose VP8 encoder fails after 20 frames (`identity error-after`).
fn flaky_pipelines() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-flaky-{}", std::process::id()));
    let cpu = dir.join("cpu");
    let flaky = dir.join("flaky");
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::create_dir_all(&flaky).unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/cpu");
    for e in std::fs::read_dir(&repo).unwrap().flatten() {
        std::fs::copy(e.path(), cpu.join(e.file_name())).unwrap();
    }
    let only = r#"capsfilter caps="video/x-raw,width=320,height=240""#;
    std::fs::write(flaky.join("vp8-decode.gst"), format!("vp8dec ! {only}\n")).unwrap();
    std::fs::write(
        flaky.join("vp8-encode.gst"),
        "vp8enc deadline=1 cpu-used=8 end-usage=cbr target-bitrate={bps} keyframe-max-dist={keyint} ! identity error-after=20\n",
    )
    .unwrap();
    // The GPU compositor's shape (head, aggregator, tail) with CPU elements; its tail fails after
    // 60 composites, as a GPU element losing its device does.
    std::fs::write(
        flaky.join("composite.gst"),
        "videoconvert ! compositor ! identity error-after=60 ! videoconvert ! capsfilter caps=video/x-raw,format=I420\n",
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_decoder_encoder_and_compositor_failing_while_running_fall_back_to_cpu() {
    let _serial = common::serial().await;
    let dir = flaky_pipelines();
    let srv =
        common::server_with(Config { backend: "flaky".into(), pipelines_dir: Some(dir.clone()), ..Config::default() })
            .await;
    let config = common::http("GET", format!("http://{}/v1/config", srv.addr), None, vec![]).await;
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    assert_eq!(config["video_codec_order"], serde_json::json!(["vp8", "h264"]), "no GPU H.264 encoder: VP8 first");
    let before = metrics_text(srv.addr).await;
    assert!(before.contains(r#"backend="flaky""#), "the start-up probe passed the flaky fragments: {before}");

    let mut peers = vec![];
    for (i, c) in COLOURS.iter().take(2).enumerate() {
        let opts = PeerOpts {
            video_codecs: vec![tessera::codec::VP8.mime],
            ..PeerOpts::publisher(&format!("f{i}"), *c, 500.0)
        };
        peers.push(common::join(srv.addr, "fallback", opts).await);
    }
    // Both tiles in the composite: the decoders and the encoder run again, on cpu.
    for p in &peers {
        p.wait_frame(Duration::from_secs(30), |f| {
            close(f.colour_at(320, 360, 40), COLOURS[0], 45) && close(f.colour_at(960, 360, 40), COLOURS[1], 45)
        })
        .await
        .unwrap_or_else(|| panic!("{} decoded no composite with both tiles: {:?}", p.opts.name, p.stats()));
    }
    // The encoder fails after 20 frames: wait until it has been replaced, then for the composite
    // to keep flowing from its successor.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut room = common::room_json(srv.addr, "fallback").await;
    let replaced = |room: &serde_json::Value| {
        room["encoder_fallbacks"].as_u64() > Some(0) && room["compositor_fallbacks"].as_u64() > Some(0)
    };
    while !replaced(&room) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        room = common::room_json(srv.addr, "fallback").await;
    }
    for p in &peers {
        let before = p.frames();
        p.wait_frame(Duration::from_secs(10), |f| {
            p.frames() >= before + 30 && close(f.colour_at(960, 360, 40), COLOURS[1], 45)
        })
        .await
        .unwrap_or_else(|| {
            panic!("{}: the composite stopped after the encoder fell back: {:?}", p.opts.name, p.stats())
        });
    }
    let branches = room["encoder_branches"].as_array().unwrap();
    assert!(!branches.is_empty(), "{room}");
    assert!(branches.iter().all(|b| b["backend"] == "cpu"), "every branch encodes on cpu now: {room}");
    assert!(room["encoder_fallbacks"].as_u64().unwrap() >= 1, "{room}");
    assert_eq!(room["compositor_fallbacks"], 1, "{room}");
    assert_eq!(room["compositor"], "cpu", "the CPU canvas composites now: {room}");
    let metrics = metrics_text(srv.addr).await;
    for role in ["vp8-decode", "vp8-encode", "composite"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with("tessera_role_backend") && l.contains(&format!(r#"role="{role}""#)))
            .unwrap_or_else(|| panic!("no tessera_role_backend for {role}: {metrics}"));
        assert!(line.contains(r#"backend="cpu""#), "{line}");
    }
    drop(peers);
    srv.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn metrics_text(addr: std::net::SocketAddr) -> String {
    let r = common::http("GET", format!("http://{addr}/metrics"), None, vec![]).await;
    r.body
}
