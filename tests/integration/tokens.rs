//! With `--api-secret`, joins and control calls need tokens with the right room and grants.

use std::time::Duration;

use serde_json::json;
use tessera::config::Config;
use tessera::signaling::auth::{Auth, Claims, Grants};

use crate::common::{self, PeerOpts, http_auth};

const SECRET: &str = "test-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bad_expired_and_wrong_room_tokens_are_refused() {
    let _serial = common::serial().await;
    let srv = common::server_with(Config { api_secret: Some(SECRET.into()), ..Config::default() }).await;
    let a = srv.addr;
    let auth = Auth::new(Some(SECRET));
    let member = Grants { publish: true, subscribe: true, admin: false };
    let hour = Duration::from_secs(3600);
    let alice = auth.mint("secure", "alice", Some("Alice"), member, hour);
    let viewer_only = auth.mint("secure", "vic", None, Grants { publish: false, subscribe: true, admin: false }, hour);
    let other_room = auth.mint("elsewhere", "mallory", None, member, hour);
    let admin = auth.mint("secure", "ops", None, Grants { publish: false, subscribe: false, admin: true }, hour);
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims { room: "secure".into(), sub: "old".into(), name: None, grants: member, exp: 1_000_000_000 },
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let forged = Auth::new(Some("not-the-secret")).mint("secure", "eve", None, member, hour);

    // A real join with a token; the token's name wins over ?name=.
    let mut o = PeerOpts::publisher("ignored", (220, 40, 40), 500.0);
    o.token = Some(alice.clone());
    let p = common::join(a, "secure", o).await;
    let room_url = format!("http://{a}/v1/rooms/secure");
    let r = http_auth("GET", room_url.clone(), None, vec![], Some(&alice)).await;
    assert_eq!(r.status, 200);
    let room: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(room["participants"][0]["name"], "Alice");

    // Joins with bad tokens: refused before any WebRTC work, with reasons.
    let join = format!("http://{a}/v1/rooms/secure/participants");
    let sdp = "v=0\r\n".as_bytes().to_vec();
    for (token, status, reason) in [
        (None, 401, "missing token"),
        (Some("garbage"), 401, "invalid token"),
        (Some(forged.as_str()), 401, "invalid token"),
        (Some(expired.as_str()), 401, "expired"),
        (Some(other_room.as_str()), 403, "not \"secure\""),
    ] {
        let r = http_auth("POST", join.clone(), Some("application/sdp"), sdp.clone(), token).await;
        assert_eq!(r.status, status, "{token:?}: {}", r.body);
        assert!(r.body.contains(reason), "{token:?}: {}", r.body);
    }
    // A subscribe-only token cannot publish.
    let mut o = PeerOpts::publisher("vic", (40, 60, 220), 800.0);
    o.token = Some(viewer_only.clone());
    let err =
        tessera::client::loadgen::Peer::join(&format!("http://{a}"), "secure", o, false).await.err().expect("refused");
    assert!(err.to_string().contains("403") && err.to_string().contains("publish"), "{err}");
    // ...but can watch.
    let mut o = PeerOpts::viewer("vic");
    o.token = Some(viewer_only.clone());
    let vic = common::join(a, "secure", o).await;

    // Control calls need the admin grant.
    let layout = format!("http://{a}/v1/rooms/secure/layout");
    let body = json!({"layout": "speaker"}).to_string().into_bytes();
    let r = http_auth("PUT", layout.clone(), Some("application/json"), body.clone(), Some(&alice)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http_auth("PUT", layout.clone(), Some("application/json"), body.clone(), None).await;
    assert_eq!(r.status, 401);
    let r = http_auth("PUT", layout, Some("application/json"), body, Some(&admin)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http_auth("GET", format!("http://{a}/v1/rooms"), None, vec![], Some(&admin)).await;
    assert_eq!(r.status, 403, "a room-scoped admin cannot list every room: {}", r.body);
    // A participant cannot kick another; an admin can.
    let kick = format!("http://{a}{}", vic.location);
    let r = http_auth("DELETE", kick.clone(), None, vec![], Some(&alice)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http_auth("DELETE", kick, None, vec![], Some(&admin)).await;
    assert_eq!(r.status, 204, "{}", r.body);
    // Leaving with one's own token works.
    assert_eq!(p.leave().await.unwrap(), 204);
}

#[test]
fn a_public_address_needs_a_secret() {
    let cfg = Config { listen: "0.0.0.0:0".parse().unwrap(), ..Config::default() };
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("--api-secret") && err.contains("--insecure"), "{err}");
}
