//! Bad requests get a 4xx with a reason and disturb nothing: the room keeps streaming.

use std::time::Duration;

use crate::common::{self, PeerOpts, http};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_the_room_keeps_streaming() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let a = srv.addr;
    let publisher = common::join(a, "bad", PeerOpts::publisher("pub", (220, 40, 40), 500.0)).await;
    let viewer = common::join(a, "bad", PeerOpts::viewer("viewer")).await;
    viewer.wait_frame(Duration::from_secs(20), |f| f.width == 1280).await.expect("streaming before");
    let join = format!("http://{a}/v1/rooms/bad/participants?name=x");
    let sdp = Some("application/sdp");

    let r = http("POST", join.clone(), Some("text/plain"), b"v=0\r\n".to_vec()).await;
    assert_eq!(r.status, 415, "{}", r.body);
    let r = http("POST", join.clone(), None, b"v=0\r\n".to_vec()).await;
    assert_eq!(r.status, 415, "{}", r.body);
    let r = http("POST", join.clone(), sdp, b"hello, I am not SDP".to_vec()).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("malformed SDP"), "{}", r.body);
    let r = http("POST", join.clone(), sdp, b"v=0\r\no=broken\r\nm=audio x y\r\n".to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http("POST", join.clone(), sdp, vec![b'v'; 70 * 1024]).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.body, "request body larger than 64 KiB\n");
    let r = http("POST", format!("http://{a}/v1/rooms/bad/participants?name=%FF%FE"), sdp, b"v=0\r\n".to_vec()).await;
    assert_eq!((r.status, r.body.as_str()), (400, "name: not valid UTF-8\n"));
    for dots in ["%2E", "%2E%2E"] {
        let r = http("PUT", format!("http://{a}/v1/rooms/{dots}"), None, vec![]).await;
        assert_eq!(r.status, 400, "room {dots}: {}", r.body);
    }
    let two_mids = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n";
    let r = http("POST", join.clone(), sdp, two_mids.as_bytes().to_vec()).await;
    assert_eq!((r.status, r.body.as_str()), (400, "duplicate a=mid:0\n"));
    let av1 = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 45\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:45 AV1/90000\r\n";
    let r = http("POST", join.clone(), sdp, av1.as_bytes().to_vec()).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("no codec in common"), "{}", r.body);
    // Parses, has Opus, but no ICE credentials or DTLS fingerprint: the WebRTC stack refuses it.
    let no_ice = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\n";
    let r = http("POST", join.clone(), sdp, no_ice.as_bytes().to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http(
        "POST",
        format!("http://{a}/whep/bad"),
        sdp,
        av1.replace("AV1", "VP8").replace("sendrecv", "sendonly").into_bytes(),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("recvonly"), "{}", r.body);
    let r = http("POST", format!("http://{a}/v1/rooms/bad%20room!/participants"), sdp, b"v=0\r\n".to_vec()).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = http("DELETE", format!("http://{a}/v1/rooms/bad/participants/nobody"), None, vec![]).await;
    assert_eq!(r.status, 404);
    let r = http("GET", format!("http://{a}/v1/rooms/no-such-room"), None, vec![]).await;
    assert_eq!(r.status, 404);
    let r = http(
        "PATCH",
        format!("http://{a}/v1/rooms/bad/participants/{}", publisher.id),
        Some("application/trickle-ice-sdpfrag"),
        vec![],
    )
    .await;
    assert_eq!(r.status, 405);
    let r = http("OPTIONS", format!("http://{a}/whip/bad"), None, vec![]).await;
    assert_eq!(r.status, 204, "OPTIONS");

    // Nothing was created by any of that, and nobody was disturbed.
    let room = common::room_json(a, "bad").await;
    assert_eq!(room["participants"].as_array().unwrap().len(), 2, "{room}");
    let rooms = http("GET", format!("http://{a}/v1/rooms"), None, vec![]).await;
    let rooms: serde_json::Value = serde_json::from_str(&rooms.body).unwrap();
    assert_eq!(rooms["rooms"].as_array().unwrap().len(), 1, "a refused join left a room behind: {rooms}");
    let before = viewer.frames();
    viewer.wait_frame(Duration::from_secs(5), |_| viewer.frames() >= before + 30).await;
    assert!(viewer.frames() >= before + 30, "the composite stalled after bad input");
}
