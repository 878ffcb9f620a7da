//! One UDP socket for every peer connection. Each connection's webrtc-rs driver gets a virtual
//! socket ([`VirtualUdp`]); datagrams arriving on the real socket are routed to one:
//! - from a remote address already known → that connection (almost every packet: one map lookup);
//! - a STUN Binding request → the connection whose ICE ufrag opens its `USERNAME` (RFC 8445
//!   §7.2.2), and the remote address is remembered for it (also when a NAT rebinding moved the
//!   client, or it reused an address: the newest request wins);
//! - a STUN response to a check the connection sent → by its transaction id;
//! - anything else is counted and dropped.
//!
//! Sends go straight out of the real socket from the caller's task (one `sendto`, as with a
//! socket per connection); when the kernel's send buffer is full the datagram is dropped and
//! counted, as a congested link would.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use webrtc::runtime::{AsyncUdpSocket, RecvMeta, Transmit};

use super::super::stun;

/// Datagrams a connection's inbox holds before new ones are dropped (~1 s of a 1280x720 stream).
const INBOX: usize = 1024;
/// How long a connectivity check's transaction id routes its response.
const TXID_TTL: Duration = Duration::from_secs(10);
/// Largest datagram read, bytes (WebRTC stays under the path MTU; loopback allows more).
const MAX_DATAGRAM: usize = 4096;
/// Kernel buffer size asked for on the shared socket, bytes: every connection's bursts meet here.
const SOCKET_BUFFER: usize = 4 << 20;

/// Counters of the shared UDP port, for metrics.
#[derive(Debug, Default)]
pub struct UdpStats {
    /// Datagrams received and routed to a connection.
    pub routed: AtomicU64,
    /// Datagrams from an unknown address that no connection claimed (not a Binding request with a
    /// known ufrag, nor a response to a check sent).
    pub unroutable: AtomicU64,
    /// Datagrams dropped because a connection's inbox was full.
    pub inbox_full: AtomicU64,
    /// Datagrams not sent because the socket's send buffer was full.
    pub send_dropped: AtomicU64,
}

/// The routes of the shared socket.
#[derive(Default)]
struct Routes {
    by_ufrag: HashMap<String, Weak<VirtualUdp>>,
    by_remote: HashMap<SocketAddr, Weak<VirtualUdp>>,
    /// Checks sent, by transaction id: the sender's ufrag.
    by_txid: HashMap<[u8; 12], (String, Instant)>,
}

/// The shared UDP port.
pub struct UdpMux {
    /// The real socket (non-blocking); sends use it directly.
    socket: UdpSocket,
    local: SocketAddr,
    routes: Mutex<Routes>,
    /// Counters.
    pub stats: UdpStats,
    recv_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for UdpMux {
    fn drop(&mut self) {
        if let Some(t) = self.recv_task.lock().unwrap().take() {
            t.abort();
        }
    }
}

impl UdpMux {
    /// Binds `addr` (port 0: an ephemeral one) and starts routing what arrives. Needs a tokio
    /// runtime.
    ///
    /// # Errors
    /// The bind, or registering the socket with the runtime.
    pub fn bind(addr: SocketAddr) -> io::Result<Arc<Self>> {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        socket.bind(&addr.into())?;
        socket.set_nonblocking(true)?;
        let socket: UdpSocket = socket.into();
        let local = socket.local_addr()?;
        let reader = tokio::net::UdpSocket::from_std(socket.try_clone()?)?;
        let mux = Arc::new(Self {
            socket,
            local,
            routes: Mutex::default(),
            stats: UdpStats::default(),
            recv_task: Mutex::new(None),
        });
        let weak = Arc::downgrade(&mux);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let (n, from) = match reader.recv_from(&mut buf).await {
                    Ok(r) => r,
                    // ICMP errors from an earlier send surface here on some systems: not fatal.
                    Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused) => {
                        continue;
                    }
                    Err(e) => {
                        tracing::error!("shared UDP port: receive failed: {e}");
                        return;
                    }
                };
                let Some(mux) = weak.upgrade() else { return };
                mux.route(from, &buf[..n]);
            }
        });
        *mux.recv_task.lock().unwrap() = Some(task);
        Ok(mux)
    }

    /// The address the shared socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Connections with at least one remote address routed to them now.
    pub fn peers(&self) -> usize {
        let routes = self.routes.lock().unwrap();
        let mut v: Vec<*const VirtualUdp> = routes.by_remote.values().map(Weak::as_ptr).collect();
        v.sort_unstable();
        v.dedup();
        v.len()
    }

    /// A virtual socket for the connection whose local ICE ufrag is `ufrag`; the driver knows it
    /// by `key` (the address its own bind got, used only as a name).
    pub fn register(self: &Arc<Self>, ufrag: &str, key: SocketAddr) -> Arc<VirtualUdp> {
        let v = Arc::new(VirtualUdp {
            key,
            ufrag: ufrag.to_string(),
            mux: self.clone(),
            inbox: Mutex::new(Inbox { queue: VecDeque::new(), waker: None }),
        });
        self.routes.lock().unwrap().by_ufrag.insert(ufrag.to_string(), Arc::downgrade(&v));
        v
    }

    fn route(&self, from: SocketAddr, data: &[u8]) {
        let target = {
            let mut routes = self.routes.lock().unwrap();
            let known = routes.by_remote.get(&from).and_then(Weak::upgrade);
            if stun::is_stun(data) {
                match stun::kind(data) {
                    stun::Kind::BindingRequest => {
                        let claimed =
                            stun::local_ufrag(data).and_then(|u| routes.by_ufrag.get(u)).and_then(Weak::upgrade);
                        match claimed {
                            Some(v) => {
                                if known.as_ref().is_some_and(|k| !Arc::ptr_eq(k, &v)) {
                                    tracing::debug!(%from, "shared UDP port: a remote address moved to another connection");
                                }
                                routes.by_remote.insert(from, Arc::downgrade(&v));
                                Some(v)
                            }
                            None => known,
                        }
                    }
                    stun::Kind::BindingResponse => known.or_else(|| {
                        let (ufrag, _) = routes.by_txid.remove(&stun::transaction_id(data))?;
                        routes.by_ufrag.get(&ufrag).and_then(Weak::upgrade)
                    }),
                    stun::Kind::Other => known,
                }
            } else {
                known
            }
        };
        match target {
            Some(v) => {
                self.stats.routed.fetch_add(1, Ordering::Relaxed);
                if !v.deliver(from, data) {
                    self.stats.inbox_full.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                if self.stats.unroutable.fetch_add(1, Ordering::Relaxed).is_multiple_of(1000) {
                    tracing::debug!(%from, len = data.len(), "shared UDP port: a datagram no connection claims");
                }
            }
        }
    }

    /// Remembers that the connection of `ufrag` sent a connectivity check with `txid` (its
    /// response may come from an address that never sent a request).
    fn expect_response(&self, ufrag: &str, txid: [u8; 12]) {
        let now = Instant::now();
        let mut routes = self.routes.lock().unwrap();
        if routes.by_txid.len() > 4096 {
            routes.by_txid.retain(|_, (_, at)| now.duration_since(*at) < TXID_TTL);
        }
        routes.by_txid.insert(txid, (ufrag.to_string(), now));
    }

    fn unregister(&self, v: *const VirtualUdp, ufrag: &str) {
        let mut routes = self.routes.lock().unwrap();
        if routes.by_ufrag.get(ufrag).is_some_and(|w| w.as_ptr() == v) {
            routes.by_ufrag.remove(ufrag);
        }
        routes.by_remote.retain(|_, w| w.as_ptr() != v);
        routes.by_txid.retain(|_, (u, _)| u != ufrag);
    }
}

struct Inbox {
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    waker: Option<Waker>,
}

/// One connection's view of the shared UDP port.
pub struct VirtualUdp {
    key: SocketAddr,
    ufrag: String,
    mux: Arc<UdpMux>,
    inbox: Mutex<Inbox>,
}

impl std::fmt::Debug for VirtualUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualUdp").field("key", &self.key).field("shared", &self.mux.local).finish()
    }
}

impl Drop for VirtualUdp {
    fn drop(&mut self) {
        self.mux.unregister(self, &self.ufrag);
    }
}

impl VirtualUdp {
    /// Queues one datagram for the driver; `false` when the inbox is full (dropped).
    fn deliver(&self, from: SocketAddr, data: &[u8]) -> bool {
        let waker = {
            let mut inbox = self.inbox.lock().unwrap();
            if inbox.queue.len() >= INBOX {
                return false;
            }
            inbox.queue.push_back((from, data.to_vec()));
            inbox.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }
}

impl AsyncUdpSocket for VirtualUdp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.key)
    }

    fn poll_send(&self, _cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        let data = transmit.contents;
        if stun::is_stun(data) && stun::kind(data) == stun::Kind::BindingRequest {
            self.mux.expect_response(&self.ufrag, stun::transaction_id(data));
        }
        match self.mux.socket.send_to(data, transmit.destination) {
            Ok(n) => Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.mux.stats.send_dropped.fetch_add(1, Ordering::Relaxed);
                Poll::Ready(Ok(data.len()))
            }
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut inbox = self.inbox.lock().unwrap();
        if inbox.queue.is_empty() {
            inbox.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((from, data)) = inbox.queue.pop_front() else { break };
            let len = data.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&data[..len]);
            let mut m = RecvMeta::default();
            m.addr = from;
            m.len = len;
            m.stride = len.max(1);
            meta[n] = m;
            n += 1;
        }
        Poll::Ready(Ok(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(user: &str, txid: u8) -> Vec<u8> {
        let mut attrs = vec![0x00, 0x06];
        attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attrs.extend_from_slice(user.as_bytes());
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        p.extend_from_slice(&[txid; 12]);
        p.extend_from_slice(&attrs);
        p
    }

    async fn recv(v: &VirtualUdp) -> (SocketAddr, Vec<u8>) {
        let mut buf = vec![0u8; 2048];
        let (n, from) =
            tokio::time::timeout(Duration::from_secs(2), v.recv_from(&mut buf)).await.expect("a datagram").unwrap();
        (from, buf[..n].to_vec())
    }

    #[tokio::test]
    async fn datagrams_reach_the_connection_whose_ufrag_they_name_then_follow_their_address() {
        let mux = UdpMux::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = mux.register("ufragA", "127.0.0.1:1".parse().unwrap());
        let b = mux.register("ufragB", "127.0.0.1:2".parse().unwrap());
        let client1 = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client2 = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = mux.local_addr();
        // Media from an address nobody knows yet is dropped.
        client1.send_to(&[0x80; 30], to).await.unwrap();
        client1.send_to(&request("ufragB:c1", 1), to).await.unwrap();
        client2.send_to(&request("ufragA:c2", 2), to).await.unwrap();
        let (from, data) = recv(&b).await;
        assert_eq!((from, stun::local_ufrag(&data)), (client1.local_addr().unwrap(), Some("ufragB")));
        assert_eq!(recv(&a).await.0, client2.local_addr().unwrap());
        // Now their RTP follows the address.
        client1.send_to(&[0x80; 30], to).await.unwrap();
        assert_eq!(recv(&b).await.1, vec![0x80; 30]);
        assert_eq!(mux.peers(), 2);
        assert!(mux.stats.unroutable.load(Ordering::Relaxed) >= 1);
        // A closed connection's routes go with it.
        drop(b);
        assert_eq!(mux.peers(), 1);
        // Sends go out of the shared socket.
        a.send_to(b"hello", client2.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = client2.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"hello"[..], to));
    }

    #[tokio::test]
    async fn a_response_to_a_check_is_routed_by_its_transaction_id() {
        let mux = UdpMux::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = mux.register("ufragA", "127.0.0.1:1".parse().unwrap());
        let remote = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // The connection checks the remote first (it never sent us a request).
        a.send_to(&request("remote:ufragA", 7), remote.local_addr().unwrap()).await.unwrap();
        let mut buf = [0u8; 256];
        let (n, _) = remote.recv_from(&mut buf).await.unwrap();
        let mut response = buf[..n].to_vec();
        response[0] = 0x01;
        response[1] = 0x01;
        remote.send_to(&response, mux.local_addr()).await.unwrap();
        assert_eq!(recv(&a).await.0, remote.local_addr().unwrap());
    }
}
