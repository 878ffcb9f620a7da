//! `/metrics` on a listener of its own behind a token: gone from the main port, 401 without the
//! token, and with it every sample names the node and a receiving peer shows up in the receiver,
//! UDP, join-time and process metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use tessera::config::Config;

use crate::common::{self, PeerOpts};

const TOKEN: &str = "metrics-s3cret";

/// One sample of the text format: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the samples of a Prometheus text exposition (label values without escapes, as
/// Tessera's names have none).
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            Some((name.to_string(), labels, value.parse().ok()?))
        })
        .collect()
}

/// The value of `name` whose labels include `with`.
fn value(s: &[Sample], name: &str, with: &[(&str, &str)]) -> Option<f64> {
    s.iter()
        .find(|(n, l, _)| n == name && with.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
        .map(|(_, _, v)| *v)
}

/// `GET url` with `Authorization: Bearer token`: status, `WWW-Authenticate`, body.
async fn get(url: String, token: Option<&str>) -> (u16, Option<String>, String) {
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let mut req = agent.get(&url);
        if let Some(t) = &token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().expect("metrics request");
        let www = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_string);
        (resp.status().as_u16(), www, resp.body_mut().read_to_string().unwrap_or_default())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_port_need_the_token_and_show_the_receivers() {
    let _serial = common::serial().await;
    let cfg = Config {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_token: Some(TOKEN.into()),
        node_name: Some("media-7".into()),
        ..Config::default()
    };
    let srv = common::server_with(cfg).await;
    let metrics = format!("http://{}/metrics", srv.metrics_addr.expect("a metrics listener"));

    let (status, _, _) = get(format!("http://{}/metrics", srv.addr), Some(TOKEN)).await;
    assert_eq!(status, 404, "the main port no longer serves /metrics");
    let (status, www, _) = get(metrics.clone(), None).await;
    assert_eq!((status, www.as_deref()), (401, Some("Bearer")), "no token");
    let (status, www, _) = get(metrics.clone(), Some("not-the-token")).await;
    assert_eq!((status, www.as_deref()), (401, Some("Bearer")), "a wrong token");

    let _a = common::join(srv.addr, "metrics", PeerOpts::publisher("a", (220, 40, 40), 500.0)).await;
    let viewer = common::join(srv.addr, "metrics", PeerOpts::viewer("viewer")).await;
    assert!(viewer.wait_frame(Duration::from_secs(20), |_| true).await.is_some(), "the viewer decodes");

    // The estimate needs TWCC feedback: poll until the viewer's appears.
    let mut text = String::new();
    let mut s = vec![];
    let bitrate = |s: &[Sample]| {
        value(s, "tessera_receiver_bitrate_bps", &[("room", "metrics"), ("participant", viewer.id.as_str())])
    };
    for _ in 0..40 {
        let (status, _, body) = get(metrics.clone(), Some(TOKEN)).await;
        assert_eq!(status, 200);
        text = body;
        s = samples(&text);
        if bitrate(&s).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(!s.is_empty());
    let unlabelled: Vec<&Sample> =
        s.iter().filter(|(_, l, _)| l.get("node").map(String::as_str) != Some("media-7")).collect();
    assert!(unlabelled.is_empty(), "samples without node=\"media-7\": {unlabelled:?}");
    assert!(bitrate(&s).is_some_and(|b| b >= 50_000.0), "the viewer's estimate, bits/s:\n{text}");
    let tiers: f64 = ["full", "half", "quarter"]
        .iter()
        .filter_map(|t| value(&s, "tessera_receivers_by_tier", &[("room", "metrics"), ("tier", t)]))
        .sum();
    assert!(tiers >= 1.0, "the viewer is on a tier:\n{text}");
    assert!(value(&s, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0), "{text}");
    assert!(value(&s, "process_cpu_seconds_total", &[]).is_some_and(|v| v > 0.0), "{text}");
    assert!(value(&s, "tessera_udp_peers", &[]).is_some_and(|v| v >= 2.0), "both peers on the UDP port:\n{text}");
    assert!(value(&s, "tessera_udp_datagrams_total", &[("result", "routed")]).is_some_and(|v| v > 0.0), "{text}");
    assert!(value(&s, "tessera_join_seconds_count", &[]).is_some_and(|v| v >= 2.0), "two joins:\n{text}");
    assert_eq!(value(&s, "tessera_participants_total", &[]), Some(2.0), "{text}");
    assert_eq!(value(&s, "tessera_participants", &[("room", "metrics")]), Some(2.0), "{text}");
    assert_eq!(value(&s, "tessera_recordings", &[("state", "recording")]), Some(0.0), "{text}");
    srv.shutdown().await;
}
