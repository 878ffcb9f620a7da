//! Room events and chat over each participant's data channel.

use std::time::Duration;

use serde_json::json;

use crate::common::{self, PeerOpts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_chat_reach_the_other_peers() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let a = srv.addr;
    let mut o = PeerOpts::publisher("alice", (220, 40, 40), 500.0);
    o.data_channel = true;
    let alice = common::join(a, "chat", o).await;
    let welcome = alice.wait_event(Duration::from_secs(5), |e| e["type"] == "welcome").await.expect("welcome");
    assert_eq!(welcome["you"]["id"], alice.id.as_str());
    assert_eq!(welcome["layout"]["layout"], "grid");

    let mut o = PeerOpts::publisher("bob", (40, 60, 220), 800.0);
    o.data_channel = true;
    let bob = common::join(a, "chat", o).await;
    let joined = alice
        .wait_event(Duration::from_secs(5), |e| e["type"] == "joined" && e["participant"]["id"] == bob.id.as_str())
        .await
        .expect("alice hears that bob joined");
    assert_eq!(joined["participant"]["name"], "bob");
    assert_eq!((joined["kind"].as_str(), joined["source"].as_str()), (Some("participant"), Some("camera")));
    let welcome = bob.wait_event(Duration::from_secs(5), |e| e["type"] == "welcome").await.expect("bob's welcome");
    let listed = &welcome["participants"][0];
    assert_eq!(listed["id"], alice.id.as_str(), "{welcome}");
    assert_eq!(listed["kind"], "participant");
    assert_eq!(listed["muted"], json!({"audio": false, "video": false}));

    // Chat: relayed to everyone with the sender's id and name and the server's time.
    alice.send(&json!({"type": "chat", "text": "hello bob"})).await.unwrap();
    let chat = bob.wait_event(Duration::from_secs(5), |e| e["type"] == "chat").await.expect("bob gets the chat");
    assert_eq!(chat["from"]["id"], alice.id.as_str());
    assert_eq!(chat["from"]["name"], "alice");
    assert_eq!(chat["text"], "hello bob");
    assert!(chat["ts"].as_u64().unwrap() > 1_700_000_000_000);

    // Limits: too long, too fast, unknown.
    alice.send(&json!({"type": "chat", "text": "x".repeat(1001)})).await.unwrap();
    alice
        .wait_event(Duration::from_secs(5), |e| {
            e["type"] == "error" && e["reason"].as_str().unwrap().contains("longer")
        })
        .await
        .expect("length refused");
    for i in 0..8 {
        alice.send(&json!({"type": "chat", "text": format!("spam {i}")})).await.unwrap();
    }
    alice
        .wait_event(Duration::from_secs(5), |e| e["type"] == "error" && e["reason"].as_str().unwrap().contains("rate"))
        .await
        .expect("rate limited");
    alice.send(&json!({"type": "dance"})).await.unwrap();
    alice
        .wait_event(Duration::from_secs(5), |e| {
            e["type"] == "error" && e["reason"].as_str().unwrap().contains("unknown")
        })
        .await
        .expect("unknown refused");

    // Self-mute and server events reach the others.
    bob.send(&json!({"type": "mute", "video": true})).await.unwrap();
    let m = alice
        .wait_event(Duration::from_secs(5), |e| {
            e["type"] == "mute_changed" && e["participant"]["id"] == bob.id.as_str()
        })
        .await
        .expect("mute event");
    assert_eq!((m["video"].as_bool(), m["audio"].as_bool(), m["by"].as_str()), (Some(true), Some(false), Some("self")));
    let r = common::put_json(a, "/v1/rooms/chat/layout", json!({"layout": "1+N"})).await;
    assert_eq!(r.status, 200);
    bob.wait_event(Duration::from_secs(5), |e| e["type"] == "layout_changed" && e["layout"]["layout"] == "1+N")
        .await
        .expect("layout event");
    assert_eq!(bob.leave().await.unwrap(), 204);
    let left = alice
        .wait_event(Duration::from_secs(5), |e| e["type"] == "left" && e["participant"]["id"] == bob.id.as_str())
        .await
        .expect("left event");
    assert_eq!(left["reason"], "left");

    // A kick reaches the kicked participant itself before its connection goes.
    let mut o = PeerOpts::viewer("carol");
    o.data_channel = true;
    let carol = common::join(a, "chat", o).await;
    carol.wait_event(Duration::from_secs(5), |e| e["type"] == "welcome").await.expect("carol's welcome");
    let r = common::http("DELETE", format!("http://{a}{}", carol.location), None, vec![]).await;
    assert_eq!(r.status, 204);
    let own = carol
        .wait_event(Duration::from_secs(5), |e| e["type"] == "left" && e["participant"]["id"] == carol.id.as_str())
        .await
        .expect("carol hears her own left");
    assert_eq!(own["reason"], "left");
}
