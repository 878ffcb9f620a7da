//! Webhooks: room events POSTed as JSON to every `--webhook` URL, signed, retried, never in a
//! room's way.
//!
//! [`Webhooks::send`] only puts the event in a bounded queue ([`QUEUE`]); a full queue drops it
//! (counted and logged), so a slow or dead receiver never blocks a room. A task takes events from
//! the queue and delivers each to every URL on a task of its own (at most [`IN_FLIGHT`] at once):
//! `POST` with `Content-Type: application/json` and [`SIGNATURE_HEADER`]`: sha256=<hex>`, the
//! HMAC-SHA256 of the exact body bytes under `--api-secret` (no header without a secret). A
//! `2xx` is delivered; a connection error, a timeout ([`TIMEOUT`]), `408`, `429` or `5xx` is
//! tried again after [`backoff`] (0.5, 1, 2, 4 s: [`TRIES`] tries in about 8 s); another `4xx`
//! is the receiver refusing it and is not retried. Deliveries may arrive out of order when one
//! is retried: order by `at_ms`, and drop duplicates by `id`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};

/// Events waiting to be sent, at most; one more is dropped.
pub const QUEUE: usize = 1024;
/// Deliveries (an event to one URL, with its retries) running at once, at most.
pub const IN_FLIGHT: usize = 32;
/// Tries of one delivery.
pub const TRIES: u32 = 5;
/// Wait before the second try; doubled for each later one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// One try's time limit, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The signature's header: `sha256=` and the lowercase hex HMAC-SHA256 of the body.
pub const SIGNATURE_HEADER: &str = "x-tessera-signature";

/// Installs rustls' ring provider as the process default, once (reqwest is built without one:
/// no aws-lc-rs to compile). Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The [`SIGNATURE_HEADER`] value for `body` under `secret`: `sha256=<64 lowercase hex>`
/// (HMAC-SHA256, RFC 2104 with SHA-256 of FIPS 180-4).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Whether `header` is a valid [`SIGNATURE_HEADER`] value for `body` under `secret` (compared in
/// constant time): what a receiver checks.
pub fn verify(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else { return false };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    let tag: Vec<u8> = (0..32).filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, body, &tag).is_ok()
}

/// Whether a delivery answered `status` is tried again: `408`, `429` and `5xx`.
pub fn retryable(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// What the webhooks counted since start (`/metrics`: `tessera_webhooks_total{result}`).
#[derive(Debug, Default)]
pub struct WebhookCounters {
    /// Deliveries answered `2xx`.
    pub delivered: AtomicU64,
    /// Tries after the first.
    pub retries: AtomicU64,
    /// Deliveries that failed every try, or were refused with a `4xx`.
    pub failed: AtomicU64,
    /// Events dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Events queued or being delivered now.
    pub pending: AtomicU64,
}

/// The webhook sender of this node (cheap to clone; disabled without URLs).
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
    counters: Arc<WebhookCounters>,
}

struct Inner {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    node: String,
    seq: AtomicU64,
}

impl Webhooks {
    /// Webhooks to `urls` (checked by `Config::validate`), signed with `secret` when there is
    /// one, each event naming `node`. Starts the sender task: call within a Tokio runtime.
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS roots).
    pub fn new(urls: &[String], secret: Option<&str>, node: &str) -> Result<Self, reqwest::Error> {
        let counters = Arc::new(WebhookCounters::default());
        if urls.is_empty() {
            return Ok(Self { inner: None, counters });
        }
        install_tls_provider();
        let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let send = Sender {
            client,
            urls: urls.to_vec(),
            secret: secret.filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec()),
            counters: counters.clone(),
        };
        if send.secret.is_none() {
            tracing::warn!("webhooks are unsigned: no --api-secret");
        }
        tokio::spawn(send.run(rx));
        let inner = Inner { tx, node: node.to_string(), seq: AtomicU64::new(0) };
        Ok(Self { inner: Some(Arc::new(inner)), counters })
    }

    /// Whether any URL is configured.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// What was counted.
    pub fn counters(&self) -> &WebhookCounters {
        &self.counters
    }

    /// Queues event `event` of room `room` with `fields` (`participant`, `recording`, `egress`):
    /// `{"id", "event", "room", "at_ms", "node", ...fields}`. Never blocks: a full queue drops
    /// the event (counted, logged).
    pub fn send(&self, event: &str, room: &str, fields: Map<String, Value>) {
        let Some(inner) = &self.inner else { return };
        let n = inner.seq.fetch_add(1, Ordering::Relaxed);
        let mut body = Map::new();
        body.insert("id".into(), format!("{}-{:x}-{n}", inner.node, crate::ids::now_ms()).into());
        body.insert("event".into(), event.into());
        body.insert("room".into(), room.into());
        body.insert("at_ms".into(), crate::ids::now_ms().into());
        body.insert("node".into(), inner.node.clone().into());
        body.extend(fields);
        let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        if inner.tx.try_send(bytes).is_err() {
            self.counters.pending.fetch_sub(1, Ordering::Relaxed);
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(room, event, "webhook queue full ({QUEUE} events): event dropped");
        }
    }

    /// Waits until every queued event has been delivered or given up, or `timeout` has passed
    /// (a shutdown, so that `room_finished` gets out); returns whether none is left.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.counters.pending.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// The sender task's side.
struct Sender {
    client: reqwest::Client,
    urls: Vec<String>,
    secret: Option<Vec<u8>>,
    counters: Arc<WebhookCounters>,
}

impl Sender {
    async fn run(self, mut rx: tokio::sync::mpsc::Receiver<Vec<u8>>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let me = Arc::new(self);
        while let Some(body) = rx.recv().await {
            let body = bytes::Bytes::from(body);
            let sig = me.secret.as_deref().map(|s| signature(s, &body));
            let left = Arc::new(AtomicU64::new(me.urls.len() as u64));
            for url in &me.urls {
                let Ok(slot) = slots.clone().acquire_owned().await else { return };
                let (me, url, body, sig, left) = (me.clone(), url.clone(), body.clone(), sig.clone(), left.clone());
                tokio::spawn(async move {
                    me.deliver(&url, body, sig.as_deref()).await;
                    drop(slot);
                    if left.fetch_sub(1, Ordering::Relaxed) == 1 {
                        me.counters.pending.fetch_sub(1, Ordering::Relaxed);
                    }
                });
            }
        }
    }

    /// Delivers `body` to `url`, with up to [`TRIES`] tries.
    async fn deliver(&self, url: &str, body: bytes::Bytes, sig: Option<&str>) {
        let c = &self.counters;
        for attempt in 1..=TRIES {
            if attempt > 1 {
                c.retries.fetch_add(1, Ordering::Relaxed);
            }
            let mut req =
                self.client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
            if let Some(s) = sig {
                req = req.header(SIGNATURE_HEADER, s);
            }
            let why = match req.send().await {
                Ok(r) if r.status().is_success() => {
                    c.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(r) if !retryable(r.status().as_u16()) => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(url, status = r.status().as_u16(), "webhook refused by the receiver");
                    return;
                }
                Ok(r) => format!("HTTP {}", r.status().as_u16()),
                Err(e) => e.to_string(),
            };
            if attempt == TRIES {
                c.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(url, "webhook not delivered after {TRIES} tries: {why}");
                return;
            }
            tracing::debug!(url, attempt, "webhook try failed: {why}");
            tokio::time::sleep(super::backoff(FIRST_BACKOFF, attempt)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231 test case 2.
        let s = signature(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(s, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &s));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", &s));
        assert!(!verify(b"jefe", b"what do ya want for nothing?", &s));
        assert!(!verify(b"Jefe", b"what do ya want for nothing?", "sha256=zz"));
    }

    #[test]
    fn retries_back_off_twice_as_long_each_time() {
        let waits: Vec<f64> = (1..TRIES).map(|a| super::super::backoff(FIRST_BACKOFF, a).as_secs_f64()).collect();
        assert_eq!(waits, [0.5, 1.0, 2.0, 4.0]);
        assert!([408, 429, 500, 503].into_iter().all(retryable));
        assert!(![200, 400, 401, 404, 410].into_iter().any(retryable));
    }

    /// A receiver that is down: sending never waits, and past the queue and the deliveries in
    /// flight events are dropped and counted.
    #[tokio::test]
    async fn a_dead_receiver_never_blocks_the_sender() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let hooks = Webhooks::new(&[format!("http://127.0.0.1:{port}/down")], Some("k"), "n").unwrap();
        let n = QUEUE + IN_FLIGHT + 200;
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            hooks.send("participant_joined", "r", Map::new());
        }
        let took = t0.elapsed();
        let dropped = hooks.counters().dropped.load(Ordering::Relaxed);
        assert!(took < Duration::from_millis(500), "{n} sends took {took:?}");
        assert!(dropped >= 150, "dropped {dropped} of {n}");
        assert_eq!(hooks.counters().pending.load(Ordering::Relaxed) + dropped, n as u64);
    }

    /// A receiver that answers 503 twice, then 200: the event arrives on the third try, signed.
    #[tokio::test]
    async fn a_failing_receiver_gets_the_event_on_a_later_try() {
        use axum::http::{HeaderMap, StatusCode};
        type Got = Arc<std::sync::Mutex<Vec<(Option<String>, bytes::Bytes)>>>;
        let got: Got = Arc::default();
        let g = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |h: HeaderMap, body: bytes::Bytes| async move {
                let mut v = g.lock().unwrap();
                v.push((h.get(SIGNATURE_HEADER).and_then(|s| s.to_str().ok()).map(str::to_string), body));
                if v.len() < 3 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::NO_CONTENT }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let hooks = Webhooks::new(&[url], Some("s3cret"), "n1").unwrap();
        let mut fields = Map::new();
        fields.insert("participant".into(), serde_json::json!({"id": "p1", "name": "ann"}));
        hooks.send("participant_joined", "r", fields);
        assert!(hooks.flush(Duration::from_secs(10)).await, "not delivered in time");
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 3);
        let (sig, body) = &got[2];
        assert!(verify(b"s3cret", body, sig.as_deref().unwrap()));
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            (v["event"].as_str(), v["room"].as_str(), v["node"].as_str()),
            (Some("participant_joined"), Some("r"), Some("n1"))
        );
        assert_eq!(v["participant"]["name"], "ann");
        let c = hooks.counters();
        assert_eq!((c.delivered.load(Ordering::Relaxed), c.retries.load(Ordering::Relaxed)), (1, 2));
    }
}
