//! A lossy downlink heals: a viewer behind a relay that drops 5% of the datagrams (below SRTP,
//! `loadgen::lossy`) NACKs what it misses and the server resends it from the encoder branch's
//! shared history (`media::retransmit`), as the same packet or on the RTX stream (RFC 4588) when
//! the viewer offered RTX; the viewer keeps decoding the composite.

use std::time::Duration;

use tessera::client::loadgen::lossy::LinkSpec;

use crate::common::{self, PeerOpts, VideoSource, participant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_viewers_get_what_they_missed_again_with_and_without_rtx() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    // Noise: a composite with many packets a frame, so 5% loss hits most frames.
    let mut a = PeerOpts::publisher("a", (0, 0, 0), 500.0);
    a.video = VideoSource::Noise;
    let _a = common::join(srv.addr, "loss", a).await;
    let link = LinkSpec { loss: 0.05, jitter: Duration::from_millis(10) };
    let mut plain = PeerOpts::viewer("plain");
    plain.link = Some(link);
    let mut rtx = PeerOpts::viewer("rtx");
    rtx.link = Some(link);
    rtx.rtx = true;
    let plain = common::join(srv.addr, "loss", plain).await;
    let rtx = common::join(srv.addr, "loss", rtx).await;

    for v in [&plain, &rtx] {
        assert!(v.wait_frames(30, Duration::from_secs(15)).await, "{} starts decoding: {:?}", v.opts.name, v.stats());
    }
    let before = [plain.stats(), rtx.stats()];
    // 5 s of composite at 30 fps through 5% loss each way.
    for v in [&plain, &rtx] {
        let n = v.stats().frames + 120;
        assert!(v.wait_frames(n, Duration::from_secs(10)).await, "{} keeps decoding: {:?}", v.opts.name, v.stats());
    }
    let room = common::room_json(srv.addr, "loss").await;
    for (v, b) in [&plain, &rtx].into_iter().zip(before) {
        let p = participant(&room, &v.id);
        let resent = p["retransmissions"].as_u64().unwrap_or(0);
        let unanswered = p["nacks_unanswered"].as_u64().unwrap_or(u64::MAX);
        assert!(resent > 0, "{}'s NACKs were answered: {p}", v.opts.name);
        assert!(unanswered * 10 <= resent, "the history held what {} asked for: {p}", v.opts.name);
        // Unhealed, 5% loss on a composite of many packets a frame breaks most frames until the
        // next keyframe: the 120 frames above would not come. A few gaps past the 200 ms freeze
        // threshold remain on a loaded 2-core machine (a NACK's round trip plus jitter, and the
        // noise encode's own stalls).
        let s = v.stats();
        assert!(s.freezes - b.freezes <= 5, "{} healed its losses (freezes {b:?} → {s:?}): {p}", v.opts.name);
    }
}
