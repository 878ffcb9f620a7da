//! What the HTTP listeners allow one client, as pure decisions the serve loop
//! (`signaling::http`) calls: how many connections are open (all clients, and per IP address),
//! how often an address may join (a token bucket per address), and how long to pause after an
//! accept error such as `EMFILE`. None of them reads a clock: callers pass `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `--http-max-connections` connections are open.
    Total,
    /// `--http-max-connections-per-ip` connections are open from this address.
    PerIp,
}

impl Refusal {
    /// The label of `tessera_http_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Total => "max_connections",
            Refusal::PerIp => "max_connections_per_ip",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The open connections, all together and per client address, against two caps (`0`: none).
#[derive(Debug)]
pub struct ConnTable {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct ConnSlot {
    table: Arc<ConnTable>,
    ip: IpAddr,
}

impl ConnTable {
    /// A table with at most `max_total` connections and `max_per_ip` from one address (`0`: no cap).
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self { max_total, max_per_ip, counts: Mutex::default() })
    }

    /// Admits a connection from `ip`, or says which cap it would pass.
    ///
    /// # Errors
    /// The [`Refusal`] when a cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, Refusal> {
        let mut c = self.counts.lock().unwrap();
        if self.max_total != 0 && c.total >= self.max_total {
            return Err(Refusal::Total);
        }
        let n = c.per_ip.entry(ip).or_default();
        if self.max_per_ip != 0 && *n >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *n += 1;
        c.total += 1;
        Ok(ConnSlot { table: self.clone(), ip })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap().total
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.table.counts.lock().unwrap();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Most addresses the join limiter remembers; past it, addresses whose bucket has refilled are
/// forgotten (a full bucket is what a new address gets anyway).
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Joins per client address: a token bucket per address holding `per_minute` tokens, refilled at
/// `per_minute` per 60 s. A join takes one token; without one it is refused with the time until
/// the next token.
#[derive(Debug)]
pub struct JoinRate {
    per_minute: u32,
    buckets: HashMap<IpAddr, Bucket>,
}

impl JoinRate {
    /// A limiter allowing `per_minute` joins per address per minute (`0`: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, buckets: HashMap::new() }
    }

    /// Joins allowed per address per minute (`0`: no limit).
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let cap = f64::from(self.per_minute);
        b.tokens = (b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * cap / 60.0).min(cap);
        b.last = now;
    }

    /// Takes a join token of `ip` at `now`.
    ///
    /// # Errors
    /// The wait until `ip` has a token again (whole milliseconds, at least 1 ms), when it has none.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&ip) {
            let cap = f64::from(self.per_minute);
            let mut buckets = std::mem::take(&mut self.buckets);
            buckets.retain(|_, b| {
                self.refill(b, now);
                b.tokens < cap
            });
            self.buckets = buckets;
        }
        let cap = f64::from(self.per_minute);
        let mut b = *self.buckets.entry(ip).or_insert(Bucket { tokens: cap, last: now });
        self.refill(&mut b, now);
        let verdict = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let secs = (1.0 - b.tokens) * 60.0 / cap;
            Err(Duration::from_millis(((secs * 1000.0).ceil() as u64).max(1)))
        };
        self.buckets.insert(ip, b);
        verdict
    }

    /// Addresses remembered now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// First pause after an accept error, doubled on each error in a row up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after accept errors.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Accept errors are logged at most once per this interval.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// Pauses after accept errors (`EMFILE`, `ENFILE`, `ENOBUFS`): an error that lasts must not
/// spin the accept loop or flood the log. The pause doubles per error in a row (10 ms … 1 s) and
/// is reset by a successful accept; a log line is due at most once a second, with the count of
/// errors since the last one.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    pause: Option<Duration>,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    /// An accept failed at `now`: how long to pause, and `Some(errors since the last line)` when a
    /// log line is due.
    pub fn failed(&mut self, now: Instant) -> (Duration, Option<u64>) {
        let pause = self.pause.map_or(BACKOFF_MIN, |p| (p * 2).min(BACKOFF_MAX));
        self.pause = Some(pause);
        self.unlogged += 1;
        let due = self.last_log.is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if due {
            self.last_log = Some(now);
            let n = std::mem::take(&mut self.unlogged);
            (pause, Some(n))
        } else {
            (pause, None)
        }
    }

    /// An accept succeeded: the next error pauses briefly again.
    pub fn succeeded(&mut self) {
        self.pause = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn connections_are_capped_in_total_and_per_address_and_given_back_on_drop() {
        let t = ConnTable::new(3, 2);
        let a1 = t.admit(ip(1)).unwrap();
        let _a2 = t.admit(ip(1)).unwrap();
        assert_eq!(t.admit(ip(1)).unwrap_err(), Refusal::PerIp);
        let _b1 = t.admit(ip(2)).unwrap();
        assert_eq!(t.admit(ip(3)).unwrap_err(), Refusal::Total);
        assert_eq!(t.open(), 3);
        drop(a1);
        assert_eq!(t.open(), 2);
        let _c1 = t.admit(ip(3)).expect("a place was given back");
        let unlimited = ConnTable::new(0, 0);
        let held: Vec<_> = (0..1000).map(|_| unlimited.admit(ip(1)).unwrap()).collect();
        assert_eq!(unlimited.open(), held.len());
    }

    #[test]
    fn joins_past_the_rate_wait_for_the_next_token() {
        let t0 = Instant::now();
        let mut r = JoinRate::new(6); // one token per 10 s, bursts of 6
        for _ in 0..6 {
            assert!(r.check(ip(1), t0).is_ok());
        }
        assert_eq!(r.check(ip(1), t0), Err(Duration::from_secs(10)));
        assert!(r.check(ip(2), t0).is_ok(), "another address has its own bucket");
        assert_eq!(r.check(ip(1), t0 + Duration::from_secs(4)), Err(Duration::from_secs(6)));
        assert!(r.check(ip(1), t0 + Duration::from_secs(10)).is_ok(), "a token after 10 s");
        assert!(r.check(ip(1), t0 + Duration::from_secs(10)).is_err());
        let mut off = JoinRate::new(0);
        assert!((0..10_000).all(|_| off.check(ip(1), t0).is_ok()));
    }

    #[test]
    fn the_join_limiter_forgets_addresses_that_refilled() {
        let t0 = Instant::now();
        let mut r = JoinRate::new(60);
        for i in 0..MAX_TRACKED as u32 {
            assert!(r.check(IpAddr::from(i.to_be_bytes()), t0).is_ok());
        }
        assert_eq!(r.tracked(), MAX_TRACKED);
        // A second later every bucket has its token back: the next new address clears them.
        assert!(r.check(ip(200), t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(r.tracked(), 1);
    }

    #[test]
    fn accept_errors_back_off_and_log_once_a_second() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut b = AcceptBackoff::default();
        assert_eq!(b.failed(t0), (ms(10), Some(1)));
        assert_eq!(b.failed(t0 + ms(10)), (ms(20), None));
        assert_eq!(b.failed(t0 + ms(30)), (ms(40), None));
        assert_eq!(b.failed(t0 + ms(1000)), (ms(80), Some(3)), "one line for the three errors since the last");
        let pauses: Vec<Duration> = (0..8).map(|i| b.failed(t0 + ms(1001 + i)).0).collect();
        assert_eq!(pauses[..3], [ms(160), ms(320), ms(640)]);
        assert!(pauses[3..].iter().all(|p| *p == BACKOFF_MAX), "{pauses:?}");
        b.succeeded();
        assert_eq!(b.failed(t0 + ms(1100)).0, ms(10));
    }
}
