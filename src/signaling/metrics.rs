//! `GET /metrics`: Prometheus text format, built at each scrape from the rooms' counters, the
//! shared UDP port's counters and this process's `/proc` entries; only the join-time histogram
//! lives between scrapes. Every sample carries a `node` label (`--node-name`, default the
//! hostname), so the dashboard (`deploy/grafana/tessera.json`) tells nodes apart without relabeling.
//!
//! The metrics name rooms and participants: `--metrics-listen` serves them on an address of their
//! own (the main listener's `/metrics` is then a 404), and `--metrics-token` makes a scrape present
//! `Authorization: Bearer <TOKEN>` (401 with `WWW-Authenticate: Bearer` otherwise).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use super::AppState;
use crate::media::tiers::Tier;
use crate::room::Rooms;

/// Upper bounds of `tessera_join_seconds`' buckets, seconds. A join on a LAN answers in tens of
/// milliseconds; the answer waits at most 5 s for ICE gathering, so the top buckets catch that.
const JOIN_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0];

/// Clock ticks per second of the CPU times in `/proc/self/stat`: Linux reports them in USER_HZ,
/// which is 100 on every architecture (the kernel converts from its internal HZ; this is what
/// `sysconf(_SC_CLK_TCK)` returns).
const USER_HZ: f64 = 100.0;

/// Recording states, as the recordings API names them.
const RECORDING_STATES: [&str; 3] = ["recording", "stopped", "failed"];
/// Egress states, as the egress API names them.
const EGRESS_STATES: [&str; 5] = ["connecting", "streaming", "reconnecting", "failed", "stopped"];

/// How `/metrics` is served, from the server's configuration.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// The `node` label of every sample.
    pub node: String,
    /// The bearer token a scrape must present; `None`: no token needed.
    pub token: Option<String>,
    /// `/metrics` has a listener of its own (`--metrics-listen`), and the main one does not serve it.
    pub own_listener: bool,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self { node: "tessera".into(), token: None, own_listener: false }
    }
}

/// The metrics' options and what lives between scrapes.
pub(super) struct Metrics {
    options: MetricsOptions,
    /// Offer POST → answer sent, seconds, for every successful join.
    joins: Histogram,
    /// What the last scrape saw of each room's composite frame counter, to turn it into a rate.
    last: Mutex<HashMap<String, (Instant, u64)>>,
    /// What the HTTP listeners counted.
    pub(super) http: std::sync::Arc<super::http::HttpStats>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(MetricsOptions::default())
    }
}

impl Metrics {
    /// Metrics served as `options` say.
    pub(super) fn new(options: MetricsOptions) -> Self {
        let joins = Histogram::with_opts(
            HistogramOpts::new("tessera_join_seconds", "Time from the POST of an offer to its answer, seconds")
                .buckets(JOIN_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        Self { options, joins, last: Mutex::default(), http: Default::default() }
    }

    /// Whether the main listener serves `/metrics` (no `--metrics-listen`).
    pub(super) fn on_main_listener(&self) -> bool {
        !self.options.own_listener
    }

    /// Records a successful join that took `elapsed` from its offer to its answer.
    pub(super) fn observe_join(&self, elapsed: Duration) {
        self.joins.observe(elapsed.as_secs_f64());
    }

    /// Every metric family, gathered now from `rooms`, the shared UDP port and `/proc/self`.
    fn gather(&self, rooms: &Rooms, directory: &dyn crate::cluster::RoomDirectory) -> Vec<MetricFamily> {
        let node = HashMap::from([("node".to_string(), self.options.node.clone())]);
        let r = Registry::new_custom(None, Some(node)).expect("valid node label");
        r.register(Box::new(self.joins.clone())).expect("unique metric");
        process_metrics(&r);
        http_metrics(&r, &self.http);
        admission_metrics(&r, rooms);
        if directory.clustered() {
            cluster_metrics(&r, directory.stats());
        }
        outputs_metrics(&r, rooms);
        self.room_metrics(&r, rooms);
        if let Some(udp) = rooms.deps().transport.shared_udp() {
            int_gauge(&r, "tessera_udp_peers", "Peer connections with a remote address on the shared UDP port")
                .set(udp.peers() as i64);
            let datagrams = IntCounterVec::new(
                Opts::new("tessera_udp_datagrams_total", "Datagrams of the shared UDP port, by what became of them"),
                &["result"],
            )
            .expect("valid metric");
            r.register(Box::new(datagrams.clone())).expect("unique metric");
            let s = &udp.stats;
            for (result, n) in [
                ("routed", &s.routed),
                ("unroutable", &s.unroutable),
                ("inbox_full", &s.inbox_full),
                ("send_dropped", &s.send_dropped),
            ] {
                datagrams.with_label_values(&[result]).inc_by(n.load(std::sync::atomic::Ordering::Relaxed));
            }
        }
        r.gather()
    }

    /// Per room, per receiver, and the rooms' recordings and egress.
    fn room_metrics(&self, r: &Registry, rooms: &Rooms) {
        let room_gauge = |name, help| int_gauge_vec(r, name, help, &["room"]);
        let room_counter = |name, help| counter_vec(r, name, help, &["room"]);
        let rooms_g = int_gauge(r, "tessera_rooms", "Rooms running");
        let participants_total = int_gauge(r, "tessera_participants_total", "Participants in every room of the node");
        let participants = room_gauge("tessera_participants", "Participants in the room");
        let encoders = room_gauge("tessera_video_encoders", "Video encoder branches running (one per codec and tier)");
        let audio_encodes =
            room_gauge("tessera_audio_encodes_per_tick", "Opus encodes in the last 20 ms tick (talkers + 1 at most)");
        let fps = gauge_vec(r, "tessera_output_fps", "Composite frames per second since the last scrape", &["room"]);
        let frames = room_counter("tessera_frames_out_total", "Composite frames produced");
        let dropped = room_counter(
            "tessera_frames_dropped_total",
            "Decoded input frames that could not be drawn into the composite",
        );
        let keyframes = room_counter("tessera_keyframes_forced_total", "Keyframes forced on the room's encoders");
        let plis = room_counter("tessera_plis_sent_total", "PLIs sent to publishers");
        let requests = room_counter("tessera_keyframe_requests_received_total", "PLI/FIR received from receivers");
        let by_tier =
            int_gauge_vec(r, "tessera_receivers_by_tier", "Receivers of the composite on each tier", &["room", "tier"]);
        let receiver = ["room", "participant"];
        let bitrate = gauge_vec(
            r,
            "tessera_receiver_bitrate_bps",
            "GCC's estimate of the bandwidth toward the receiver, bits/s",
            &receiver,
        );
        let loss = gauge_vec(
            r,
            "tessera_receiver_loss_ratio",
            "Smoothed fraction of the packets sent to the receiver that it reported lost (0..1)",
            &receiver,
        );
        let recordings = int_gauge_vec(r, "tessera_recordings", "Recordings of the node's rooms, by state", &["state"]);
        let egress = int_gauge_vec(r, "tessera_egress", "Egress streams of the node's rooms, by state", &["state"]);

        let rooms = rooms.all();
        rooms_g.set(rooms.len() as i64);
        let mut recording_states = Vec::new();
        let mut egress_states = Vec::new();
        let mut last = self.last.lock().unwrap();
        let now = Instant::now();
        for room in &rooms {
            let info = room.info();
            let l = [info.room.as_str()];
            participants.with_label_values(&l).set(info.participants.len() as i64);
            participants_total.add(info.participants.len() as i64);
            encoders.with_label_values(&l).set(info.encoders as i64);
            audio_encodes.with_label_values(&l).set(info.audio_encodes_last_tick as i64);
            frames.with_label_values(&l).inc_by(info.frames_out);
            dropped.with_label_values(&l).inc_by(info.frames_dropped);
            keyframes.with_label_values(&l).inc_by(info.keyframes_forced);
            plis.with_label_values(&l).inc_by(info.plis_sent_total);
            requests.with_label_values(&l).inc_by(info.keyframe_requests_total);
            let rate = match last.insert(info.room.clone(), (now, info.frames_out)) {
                Some((t, n)) if now > t && info.frames_out >= n => {
                    (info.frames_out - n) as f64 / now.duration_since(t).as_secs_f64()
                }
                _ => info.frames_out as f64 / info.age_s.max(1e-3),
            };
            fps.with_label_values(&l).set(rate);
            let tiers = info.participants.iter().filter_map(|p| p.video_tier).map(|t| label(&t));
            for (tier, n) in count_by(&Tier::ALL.map(|t| label(&t)), tiers) {
                by_tier.with_label_values(&[info.room.as_str(), tier.as_str()]).set(n);
            }
            for p in info.participants.iter().filter(|p| p.video_codec.is_some()) {
                let l = [info.room.as_str(), p.id.as_str()];
                if let Some(kbps) = p.bandwidth_kbps {
                    bitrate.with_label_values(&l).set(kbps as f64 * 1000.0);
                }
                if let Some(ratio) = p.loss_ratio {
                    loss.with_label_values(&l).set(ratio);
                }
            }
            recording_states.extend(room.recordings().iter().map(|r| label(&r.state)));
            egress_states.extend(room.egresses().into_iter().map(|e| e.state));
        }
        last.retain(|k, _| rooms.iter().any(|r| r.name() == k));
        drop(last);
        for (state, n) in count_by(&RECORDING_STATES.map(String::from), recording_states.into_iter()) {
            recordings.with_label_values(&[state.as_str()]).set(n);
        }
        for (state, n) in count_by(&EGRESS_STATES.map(String::from), egress_states.into_iter()) {
            egress.with_label_values(&[state.as_str()]).set(n);
        }
    }
}

impl AppState {
    /// The same state with `/metrics` served as `options` say (node label, token, own listener).
    pub fn with_metrics(mut self, options: MetricsOptions) -> Self {
        self.metrics = std::sync::Arc::new(Metrics::new(options));
        self
    }
}

/// The routes of the `--metrics-listen` listener: `/metrics` alone.
pub fn metrics_router(state: AppState) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(handler)).with_state(state)
}

/// `GET /metrics`: 401 without the token when one is configured, else the text format.
pub(super) async fn handler(State(st): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &st.metrics.options.token
        && !bearer_matches(headers.get(header::AUTHORIZATION), token)
    {
        let mut r = (StatusCode::UNAUTHORIZED, "missing or wrong metrics token: send Authorization: Bearer <TOKEN>\n")
            .into_response();
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let mut out = vec![];
    let _ = TextEncoder::new().encode(&st.metrics.gather(&st.rooms, st.directory.as_ref()), &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Whether `authorization` is `Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1), compared
/// in time independent of where the first difference is.
fn bearer_matches(authorization: Option<&HeaderValue>, token: &str) -> bool {
    let Some((scheme, got)) = authorization.and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(' ')) else {
        return false;
    };
    let (got, want) = (got.trim().as_bytes(), token.as_bytes());
    scheme.eq_ignore_ascii_case("bearer")
        && got.len() == want.len()
        && got.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// How many of `seen` equal each of `all`, in `all`'s order (zeros included, so a state's series
/// exists before its first member). Values outside `all` are counted too, after them.
fn count_by(all: &[String], seen: impl Iterator<Item = String>) -> Vec<(String, i64)> {
    let mut counts: Vec<(String, i64)> = all.iter().map(|s| (s.clone(), 0)).collect();
    for s in seen {
        match counts.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    counts
}

/// The API's name of an enum value (its serde name, e.g. `half`, `recording`).
fn label<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// What `/proc/self/stat` says of this process.
#[derive(Debug, PartialEq)]
struct ProcStat {
    /// User + system CPU time, USER_HZ ticks.
    cpu_ticks: u64,
    /// Threads.
    threads: u64,
    /// Virtual memory size, bytes.
    vsize: u64,
}

/// Parses `/proc/self/stat` (proc(5)): the fields after the command name, which is in parentheses
/// and may itself hold spaces and parentheses, so the split is at the last `)`.
fn parse_stat(stat: &str) -> Option<ProcStat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is f[N - 3].
    let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat { cpu_ticks: field(14)? + field(15)?, threads: field(20)?, vsize: field(23)? })
}

/// The resident set size in `/proc/self/status` (`VmRSS: N kB`), bytes.
fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

/// The standard `process_*` metrics (as Prometheus' client libraries name them), from `/proc/self`;
/// nothing where it cannot be read.
fn process_metrics(r: &Registry) {
    if let Some(s) = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(parse_stat) {
        let cpu = Counter::new("process_cpu_seconds_total", "Total user and system CPU time spent, seconds")
            .expect("valid metric");
        r.register(Box::new(cpu.clone())).expect("unique metric");
        cpu.inc_by(s.cpu_ticks as f64 / USER_HZ);
        int_gauge(r, "process_threads", "Threads of the process").set(s.threads as i64);
        int_gauge(r, "process_virtual_memory_bytes", "Virtual memory size, bytes").set(s.vsize as i64);
    }
    if let Some(rss) = std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(parse_rss) {
        int_gauge(r, "process_resident_memory_bytes", "Resident memory size, bytes").set(rss as i64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        int_gauge(r, "process_open_fds", "Open file descriptors").set(fds.count() as i64);
    }
}

/// The HTTP listeners' connections, refusals, timeouts and rate-limited joins.
fn http_metrics(r: &Registry, s: &super::http::HttpStats) {
    use std::sync::atomic::Ordering::Relaxed;
    int_gauge(r, "tessera_http_connections_open", "HTTP connections open").set(s.open.load(Relaxed));
    int_counter(r, "tessera_http_connections_total", "HTTP connections accepted and served")
        .inc_by(s.accepted.load(Relaxed));
    let refused = counter_vec(
        r,
        "tessera_http_connections_refused_total",
        "HTTP connections answered 503 and closed at a cap",
        &["reason"],
    );
    refused.with_label_values(&["max_connections"]).inc_by(s.refused_total.load(Relaxed));
    refused.with_label_values(&["max_connections_per_ip"]).inc_by(s.refused_per_ip.load(Relaxed));
    int_counter(r, "tessera_http_accept_errors_total", "accept() failures such as EMFILE (paused on, not fatal)")
        .inc_by(s.accept_errors.load(Relaxed));
    let timeouts = counter_vec(
        r,
        "tessera_http_timeouts_total",
        "HTTP connections or requests ended by a timeout: header (no complete request headers in time), idle, body (408)",
        &["kind"],
    );
    timeouts.with_label_values(&["header"]).inc_by(s.header_timeouts.load(Relaxed));
    timeouts.with_label_values(&["idle"]).inc_by(s.idle_timeouts.load(Relaxed));
    timeouts.with_label_values(&["body"]).inc_by(s.body_timeouts.load(Relaxed));
    int_counter(r, "tessera_joins_rate_limited_total", "Joins answered 429 (--joins-per-minute-per-ip)")
        .inc_by(s.joins_limited.load(Relaxed));
}

/// What the webhooks (`tessera_webhooks_total{result}`, `tessera_webhooks_pending`) and, with
/// `--recordings-url`, the recording uploads (`tessera_recording_uploads_total{result}`,
/// `tessera_recording_upload_bytes_total`) counted.
fn outputs_metrics(r: &Registry, rooms: &Rooms) {
    use std::sync::atomic::Ordering::Relaxed;
    let deps = rooms.deps();
    if deps.webhooks.enabled() {
        let c = deps.webhooks.counters();
        let hooks = counter_vec(
            r,
            "tessera_webhooks_total",
            "Webhook deliveries: delivered (2xx), failed (every try, or a 4xx), dropped (queue full), retries (tries after the first)",
            &["result"],
        );
        for (result, n) in
            [("delivered", &c.delivered), ("failed", &c.failed), ("dropped", &c.dropped), ("retries", &c.retries)]
        {
            hooks.with_label_values(&[result]).inc_by(n.load(Relaxed));
        }
        int_gauge(r, "tessera_webhooks_pending", "Webhook events queued or being delivered")
            .set(c.pending.load(Relaxed) as i64);
    }
    if let Some(s) = &deps.storage {
        let c = &s.counters;
        let uploads = counter_vec(
            r,
            "tessera_recording_uploads_total",
            "Recording uploads to the object store: part, part_failed (retried), uploaded (a finished file), failed (every try; the local file stays)",
            &["result"],
        );
        for (result, n) in
            [("part", &c.parts), ("part_failed", &c.part_failures), ("uploaded", &c.uploaded), ("failed", &c.failed)]
        {
            uploads.with_label_values(&[result]).inc_by(n.load(Relaxed));
        }
        int_counter(r, "tessera_recording_upload_bytes_total", "Bytes written to the object store, parts and files")
            .inc_by(c.bytes.load(Relaxed));
    }
}

fn int_counter(r: &Registry, name: &str, help: &str) -> prometheus::IntCounter {
    let c = prometheus::IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// With `--redis`: what the room directory counted (`tessera_cluster_*`).
fn cluster_metrics(r: &Registry, s: &crate::cluster::ClusterStats) {
    use std::sync::atomic::Ordering::Relaxed;
    let counter = |name: &str, help: &str, n: &std::sync::atomic::AtomicU64| {
        int_counter(r, name, help).inc_by(n.load(Relaxed));
    };
    counter(
        "tessera_cluster_redis_errors_total",
        "Redis calls that failed or timed out (served here)",
        &s.redis_errors,
    );
    counter("tessera_cluster_forwarded_total", "Requests proxied to the node that runs their room", &s.forwarded);
    counter(
        "tessera_cluster_forward_failures_total",
        "Proxied requests whose node did not answer",
        &s.forward_failures,
    );
    counter(
        "tessera_cluster_lease_conflicts_total",
        "Renewals that found the lease of a room running here held by another node",
        &s.lease_conflicts,
    );
    int_gauge(r, "tessera_cluster_leases", "Room leases this node holds").set(s.leases.load(Relaxed) as i64);
    int_gauge(r, "tessera_cluster_nodes", "Live nodes at the last look, this one included")
        .set(s.nodes.load(Relaxed) as i64);
}

/// The node's admission state: `tessera_load` and `tessera_max_load` (admission cost units, 1.0 =
/// one 720p30 decode; the dashboard's "Load vs max load") and `tessera_draining` (1 while draining).
fn admission_metrics(r: &Registry, rooms: &Rooms) {
    let ready = rooms.readiness();
    let gauge = |name: &str, help: &str, v: f64| {
        let g = prometheus::Gauge::new(name, help).expect("valid metric");
        r.register(Box::new(g.clone())).expect("unique metric");
        g.set(v);
    };
    gauge("tessera_load", "The rooms' summed admission cost, units (1.0 = one 1280x720 30 fps decode)", ready.load);
    gauge("tessera_max_load", "Load past which joins and new rooms are refused (--max-load), units", ready.max_load);
    int_gauge(r, "tessera_draining", "1 while the node drains (takes no new rooms or joins)")
        .set(i64::from(ready.draining));
    let roles = int_gauge_vec(
        r,
        "tessera_role_backend",
        "1 for the backend serving each media role (cpu after a GPU fragment failed; tessera doctor)",
        &["role", "backend"],
    );
    for (role, backend) in rooms.deps().backends.serving() {
        if let Some(b) = backend {
            roles.with_label_values(&[role.name(), b.as_str()]).set(1);
        }
    }
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

#[cfg(test)]
mod tests {

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::signaling::router;

    fn state(options: MetricsOptions) -> AppState {
        crate::signaling::test_state().with_metrics(options)
    }

    async fn get(app: &axum::Router, auth: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::get("/metrics");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn proc_stat_is_split_after_the_last_parenthesis() {
        // proc(5) order; the command name holds a space and a parenthesis.
        let stat = "4242 (tes sera)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 17 0 123 \
                    2147483648 5000 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(ProcStat { cpu_ticks: 325, threads: 17, vsize: 2_147_483_648 }));
        assert_eq!(parse_stat("4242 (x) S 1"), None);
        let status = "Name:\ttessera\nVmPeak:\t  900 kB\nVmRSS:\t   20480 kB\nThreads:\t17\n";
        assert_eq!(parse_rss(status), Some(20480 * 1024));
        assert_eq!(parse_rss("Name:\tx\n"), None);
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert!(bearer_matches(Some(&h("Bearer s3cret")), "s3cret"));
        assert!(bearer_matches(Some(&h("bearer s3cret")), "s3cret"));
        assert!(!bearer_matches(Some(&h("Bearer s3cre")), "s3cret"));
        assert!(!bearer_matches(Some(&h("Bearer s3cretx")), "s3cret"));
        assert!(!bearer_matches(Some(&h("Basic s3cret")), "s3cret"));
        assert!(!bearer_matches(Some(&h("s3cret")), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }

    #[test]
    fn states_are_counted_with_zeros_first() {
        let all = RECORDING_STATES.map(String::from);
        let seen = ["stopped", "recording", "stopped", "odd"].map(String::from);
        let want = [("recording", 1), ("stopped", 2), ("failed", 0), ("odd", 1)].map(|(s, n)| (s.to_string(), n));
        assert_eq!(count_by(&all, seen.into_iter()), want);
        assert_eq!(label(&Tier::Half), "half");
    }

    #[tokio::test]
    async fn a_token_guards_metrics_and_every_sample_names_the_node() {
        let options = MetricsOptions { node: "n1".into(), token: Some("s3cret".into()), own_listener: false };
        let st = state(options);
        st.metrics.observe_join(Duration::from_millis(30));
        let app = router(st);
        let (status, headers, _) = get(&app, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(get(&app, Some("Bearer wrong!")).await.0, StatusCode::UNAUTHORIZED);
        let (status, _, text) = get(&app, Some("Bearer s3cret")).await;
        assert_eq!(status, StatusCode::OK);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.iter().all(|l| l.contains("node=\"n1\"")), "a sample without the node label:\n{text}");
        let has = |name: &str, labels: &[&str], value: &str| {
            samples.iter().any(|l| {
                l.split_once('{').is_some_and(|(n, rest)| {
                    rest.rsplit_once("} ").is_some_and(|(ls, v)| {
                        n == name && v == value && labels.iter().all(|x| ls.split(',').any(|y| y == *x))
                    })
                })
            })
        };
        let n1 = "node=\"n1\"";
        for (name, labels, value) in [
            ("tessera_rooms", vec![n1], "0"),
            ("tessera_udp_peers", vec![n1], "0"),
            ("tessera_join_seconds_count", vec![n1], "1"),
            ("tessera_join_seconds_bucket", vec![n1, "le=\"0.05\""], "1"),
            ("tessera_join_seconds_bucket", vec![n1, "le=\"0.025\""], "0"),
            ("tessera_recordings", vec![n1, "state=\"recording\""], "0"),
            ("tessera_egress", vec![n1, "state=\"streaming\""], "0"),
            ("tessera_udp_datagrams_total", vec![n1, "result=\"routed\""], "0"),
        ] {
            assert!(has(name, &labels, value), "no {name}{{{labels:?}}} {value} in:\n{text}");
        }
        let rss = samples.iter().find_map(|l| l.strip_prefix("process_resident_memory_bytes{node=\"n1\"} "));
        assert!(rss.and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0), "{text}");
    }

    #[tokio::test]
    async fn with_a_listener_of_its_own_the_main_one_has_no_metrics() {
        let st = state(MetricsOptions { own_listener: true, ..MetricsOptions::default() });
        let (status, _, _) = get(&router(st.clone()), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, text) = get(&metrics_router(st), None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("tessera_rooms{node=\"tessera\"} 0"), "{text}");
    }
}
