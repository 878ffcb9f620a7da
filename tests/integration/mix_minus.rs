//! Each participant hears everyone but themselves: the others' tones, its own ≥ 20 dB lower.

use std::time::Duration;

use crate::common::{self, PeerOpts, tone_db};

const TONES: [f64; 3] = [400.0, 700.0, 1100.0];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_receiver_hears_the_others_but_not_itself() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let colours = [(200, 50, 50), (50, 200, 50), (50, 50, 200)];
    let mut peers = vec![];
    for (i, (c, f)) in colours.iter().zip(TONES).enumerate() {
        peers.push(common::join(srv.addr, "mix", PeerOpts::publisher(&format!("m{i}"), *c, f)).await);
    }
    // Let every source reach the mixer and every talker get its own encode, then listen for 1 s.
    for p in &peers {
        p.audio_window(48000, Duration::from_secs(10)).await;
    }
    for (i, p) in peers.iter().enumerate() {
        let samples = p.audio_window(48000, Duration::from_secs(10)).await;
        assert_eq!(samples.len(), 48000, "{} received too little audio", p.opts.name);
        let levels: Vec<f64> = TONES.iter().map(|f| tone_db(&samples, *f)).collect();
        eprintln!("{}: tone levels {levels:?} dB", p.opts.name);
        let own = levels[i];
        for (j, l) in levels.iter().enumerate() {
            if j == i {
                continue;
            }
            assert!(*l > -30.0, "{} does not hear {} Hz: {l:.1} dB (levels {levels:?})", p.opts.name, TONES[j]);
            assert!(
                own < *l - 20.0,
                "{} hears itself: own {own:.1} dB vs {:.1} dB for {} Hz",
                p.opts.name,
                l,
                TONES[j]
            );
        }
    }
    // Three talkers: three mix-minus encodes plus the shared one.
    let room = common::room_json(srv.addr, "mix").await;
    let encodes = room["audio_encodes_last_tick"].as_u64().unwrap();
    assert!((1..=4).contains(&encodes), "Opus encodes per tick {encodes} > talkers + 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_participants_share_one_encode() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let talker = common::join(srv.addr, "quiet", PeerOpts::publisher("talker", (200, 50, 50), 600.0)).await;
    let mut quiet = vec![];
    for i in 0..3 {
        let mut o = PeerOpts::publisher(&format!("quiet{i}"), (50, 50, 200), 0.0);
        o.tone_hz = None; // publishes video only: no own audio, so nothing to subtract
        quiet.push(common::join(srv.addr, "quiet", o).await);
    }
    for q in &quiet {
        let s = q.audio_window(24000, Duration::from_secs(10)).await;
        assert!(tone_db(&s, 600.0) > -30.0, "{} does not hear the talker", q.opts.name);
    }
    let s = talker.audio_window(24000, Duration::from_secs(10)).await;
    assert!(tone_db(&s, 600.0) < -40.0, "the talker hears itself: {:.1} dB", tone_db(&s, 600.0));
    let room = common::room_json(srv.addr, "quiet").await;
    let encodes = room["audio_encodes_last_tick"].as_u64().unwrap();
    assert_eq!(encodes, 2, "one talker: its own mix-minus plus one shared encode for everyone else");
}
