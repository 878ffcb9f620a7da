//! A lossy, jittery link for a test peer, in user space (this project's kernels have no `netem`):
//! a UDP relay between the peer and the server that drops a share of the datagrams and delays each
//! of the others by a random 0..=jitter ms, in both directions (what the peer sends and what it
//! receives). Packets keep their order (a packet never leaves before the one sent ahead of
//! it), as through a queue whose delay varies; `netem`'s jitter also reorders, which real paths
//! seldom do. It sits on the wire,
//! below SRTP, so NACK retransmissions, TWCC, receiver reports and keyframe requests all meet the
//! loss as they would on a real path (an interceptor above SRTP would make every retransmission
//! a replay that SRTP refuses).
//!
//! [`Impairment`] is the decision (pure: a seeded generator and the packet's time in, a verdict
//! out); [`Relay`] applies it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// How bad the link is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSpec {
    /// Share of datagrams dropped, 0.0..=1.0, each independently (uniform, no bursts).
    pub loss: f64,
    /// Each delivered packet is delayed by a uniform random 0..=`jitter`, but never past the
    /// packet ahead of it.
    pub jitter: Duration,
}

/// What becomes of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Lost.
    Drop,
    /// Delivered at this time.
    At(Instant),
}

/// The decision: a [`LinkSpec`] and a xorshift64* generator (seeded, so a test can replay it).
#[derive(Debug, Clone)]
pub struct Impairment {
    spec: LinkSpec,
    state: u64,
    /// When the last delivered packet leaves: the next one does not leave before it.
    last: Option<Instant>,
}

impl Impairment {
    /// A link as `spec` says, its randomness from `seed` (any value; 0 is replaced).
    pub fn new(spec: LinkSpec, seed: u64) -> Self {
        Self { spec, state: seed.max(1), last: None }
    }

    /// A uniform random number in [0, 1).
    fn next(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The fate of a packet that reaches the link at `now` (times never go backwards).
    pub fn fate(&mut self, now: Instant) -> Fate {
        if self.spec.loss > 0.0 && self.next() < self.spec.loss {
            return Fate::Drop;
        }
        let at = (now + self.spec.jitter.mul_f64(self.next())).max(self.last.unwrap_or(now));
        self.last = Some(at);
        Fate::At(at)
    }
}

/// A UDP relay on loopback between one peer and the server that applies an [`Impairment`] to
/// every datagram in each direction (STUN, DTLS, SRTP and SRTCP alike, as a lossy network does):
/// the peer is given the relay's port in place of the server's host candidate. Below SRTP, so a
/// retransmission answering a NACK arrives as a packet the receiver has not seen, as on a real
/// path. Stops when dropped.
pub struct Relay {
    /// The address the peer sends to (the server's stand-in).
    pub addr: SocketAddr,
    /// Datagrams dropped, both directions.
    pub dropped: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Relay {
    /// A relay to `server` (a UDP address) with `spec` in both directions, randomness from `seed`.
    ///
    /// # Errors
    /// When a loopback UDP socket cannot be bound.
    pub async fn start(server: SocketAddr, spec: LinkSpec, seed: u64) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        back.connect(server).await?;
        let addr = front.local_addr()?;
        let dropped = Arc::new(AtomicU64::new(0));
        let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (up_tx, up_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let (down_tx, down_rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
        let mut tasks = vec![];
        // Peer → server.
        {
            let (front, peer, dropped) = (front.clone(), peer.clone(), dropped.clone());
            let mut link = Impairment::new(spec, seed);
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *peer.lock().unwrap() = Some(from);
                    match link.fate(Instant::now()) {
                        Fate::Drop => _ = dropped.fetch_add(1, Ordering::Relaxed),
                        Fate::At(at) => _ = up_tx.send((at, buf[..n].to_vec())),
                    }
                }
            }));
        }
        // Server → peer.
        {
            let (back, dropped) = (back.clone(), dropped.clone());
            let mut link = Impairment::new(spec, seed.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15);
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = back.recv(&mut buf).await {
                    match link.fate(Instant::now()) {
                        Fate::Drop => _ = dropped.fetch_add(1, Ordering::Relaxed),
                        Fate::At(at) => _ = down_tx.send((at, buf[..n].to_vec())),
                    }
                }
            }));
        }
        // The delayed sends, in order (the fates' times never go backwards).
        tasks.push(tokio::spawn(deliver(up_rx, move |d| {
            let back = back.clone();
            async move { _ = back.send(&d).await }
        })));
        tasks.push(tokio::spawn(deliver(down_rx, move |d| {
            let (front, peer) = (front.clone(), *peer.lock().unwrap());
            async move {
                if let Some(to) = peer {
                    _ = front.send_to(&d, to).await;
                }
            }
        })));
        Ok(Self { addr, dropped, tasks })
    }
}

async fn deliver<F, Fut>(mut rx: mpsc::UnboundedReceiver<(Instant, Vec<u8>)>, send: F)
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    while let Some((at, d)) = rx.recv().await {
        tokio::time::sleep_until(at.into()).await;
        send(d).await;
    }
}

/// The fields of an `a=candidate` line that is a UDP host candidate (RFC 8839 §5.1:
/// `a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ host …`).
fn udp_host(line: &str) -> Option<Vec<&str>> {
    let f: Vec<&str> = line.trim_end().split(' ').collect();
    (f.len() >= 8 && f[0].starts_with("a=candidate:") && f[2].eq_ignore_ascii_case("udp") && f[7] == "host")
        .then_some(f)
}

/// The ports of `answer`'s UDP host candidates, each once.
pub fn udp_host_ports(answer: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = answer.lines().filter_map(udp_host).filter_map(|f| f[5].parse().ok()).collect();
    ports.dedup();
    ports
}

/// `answer` with the port of each UDP host candidate replaced by `port_of` (the server's port →
/// its relay's), for a peer that must reach the server through a [`Relay`]; candidates that
/// `port_of` returns `None` for, and every other line, are kept.
pub fn redirect_candidates(answer: &str, mut port_of: impl FnMut(u16) -> Option<u16>) -> String {
    let mut out = String::with_capacity(answer.len());
    for line in answer.split_inclusive('\n') {
        match udp_host(line).and_then(|f| Some((f[5].parse().ok().and_then(&mut port_of)?, f))) {
            Some((port, mut f)) => {
                let port = port.to_string();
                f[5] = &port;
                out.push_str(&f.join(" "));
                out.push_str(if line.ends_with("\r\n") { "\r\n" } else { "\n" });
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_about_the_share_asked_and_delays_within_the_jitter() {
        let spec = LinkSpec { loss: 0.05, jitter: Duration::from_millis(30) };
        let mut link = Impairment::new(spec, 42);
        let t0 = Instant::now();
        let (mut dropped, mut max_delay, mut sum) = (0, Duration::ZERO, Duration::ZERO);
        let n = 100_000;
        for i in 0..n {
            // 40 ms apart: more than the jitter, so keeping the order never adds delay.
            let now = t0 + Duration::from_millis(40 * i as u64);
            match link.fate(now) {
                Fate::Drop => dropped += 1,
                Fate::At(at) => {
                    let d = at - now;
                    max_delay = max_delay.max(d);
                    sum += d;
                }
            }
        }
        let share = dropped as f64 / n as f64;
        assert!((0.045..0.055).contains(&share), "dropped {share}");
        assert!(max_delay <= spec.jitter, "{max_delay:?}");
        let mean = sum / (n - dropped);
        assert!((13..17).contains(&mean.as_millis()), "mean delay {mean:?}, uniform 0..30 ms has 15");
    }

    #[test]
    fn packets_keep_their_order() {
        let mut link = Impairment::new(LinkSpec { loss: 0.0, jitter: Duration::from_millis(30) }, 3);
        let t0 = Instant::now();
        let times: Vec<Instant> = (0..1000u64)
            .map(|i| match link.fate(t0 + Duration::from_millis(i * 7)) {
                Fate::At(at) => at,
                Fate::Drop => unreachable!("no loss asked"),
            })
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn a_clean_link_delivers_everything_at_once() {
        let mut link = Impairment::new(LinkSpec { loss: 0.0, jitter: Duration::ZERO }, 7);
        let now = Instant::now();
        assert!((0..1000).all(|_| link.fate(now) == Fate::At(now)));
    }

    #[test]
    fn the_same_seed_replays_the_same_fates() {
        let spec = LinkSpec { loss: 0.3, jitter: Duration::from_millis(10) };
        let now = Instant::now();
        let (mut a, mut b) = (Impairment::new(spec, 9), Impairment::new(spec, 9));
        assert!((0..1000).all(|_| a.fate(now) == b.fate(now)));
    }

    #[test]
    fn only_udp_host_candidates_of_the_server_port_are_redirected() {
        let answer = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host\r\n\
                      a=candidate:2 1 tcp 1671430143 127.0.0.1 7881 typ host tcptype passive\r\n\
                      a=candidate:3 1 udp 1694498815 203.0.113.7 7882 typ srflx raddr 0.0.0.0 rport 7882\r\n";
        let out = redirect_candidates(answer, |p| (p == 7882).then_some(40000));
        assert!(out.contains("a=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n"), "{out}");
        assert!(out.contains("127.0.0.1 7881 typ host tcptype passive"), "{out}");
        assert!(out.contains("203.0.113.7 7882 typ srflx"), "{out}");
    }

    #[tokio::test]
    async fn the_relay_carries_datagrams_both_ways_and_drops_its_share() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let spec = LinkSpec { loss: 0.5, jitter: Duration::from_millis(2) };
        let relay = Relay::start(server.local_addr().unwrap(), spec, 11).await.unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 16];
        let mut up = 0;
        for i in 0..200u8 {
            peer.send_to(&[i], relay.addr).await.unwrap();
        }
        while let Ok(Ok((_, from))) = tokio::time::timeout(Duration::from_millis(300), server.recv_from(&mut buf)).await
        {
            up += 1;
            server.send_to(&buf[..1], from).await.unwrap();
        }
        let mut down = 0;
        while tokio::time::timeout(Duration::from_millis(300), peer.recv(&mut buf)).await.is_ok() {
            down += 1;
        }
        assert!((70..130).contains(&up), "{up} of 200 crossed at 50% loss");
        assert!(down > 0 && down < up, "{down} of {up} came back");
        assert_eq!(relay.dropped.load(Ordering::Relaxed), 200 - down, "every datagram is delivered or counted");
    }
}
