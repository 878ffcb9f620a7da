//! One UDP port (and one ICE-TCP port) for every peer connection, as LiveKit and mediasoup do:
//! firewalls, Kubernetes Services and security groups open two ports, not a range, and the
//! number of connections is not bounded by it.
//!
//! webrtc-rs 0.21 reaches the network only through its `Runtime` trait, and its UDP mux is still
//! a to-do, so each peer connection gets a [`MuxRuntime`] that delegates everything to tokio but
//! hands the connection's driver virtual sockets on the shared ones ([`udp`], [`tcp`]) instead of
//! its own. The driver still binds a throwaway loopback socket first (it derives its local
//! candidate from that address); the answer's candidates are rewritten to the shared ports on the
//! addresses Tessera announces (`transport::answer`). Datagrams are routed to a connection by the
//! ICE ufrag in a Binding request's `USERNAME` — each connection's ufrag is set by Tessera
//! (`SettingEngine::with_ice_credentials`) — and then by the client's address.

pub mod tcp;
pub mod udp;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime, TokioRuntime,
};

/// The shared ports of this server.
pub struct Mux {
    /// The shared UDP port.
    pub udp: Arc<udp::UdpMux>,
    /// The shared ICE-TCP port, when enabled.
    pub tcp: Option<Arc<tcp::TcpMux>>,
}

impl Mux {
    /// Binds the shared UDP port `udp` and, when given, the ICE-TCP port `tcp`. Needs a tokio
    /// runtime.
    ///
    /// # Errors
    /// A bind failing (the port taken, no permission).
    pub fn bind(udp: SocketAddr, tcp: Option<SocketAddr>) -> io::Result<Self> {
        let udp_mux = udp::UdpMux::bind(udp).map_err(|e| io::Error::new(e.kind(), format!("UDP {udp}: {e}")))?;
        let tcp_mux = match tcp {
            Some(a) => Some(tcp::TcpMux::bind(a).map_err(|e| io::Error::new(e.kind(), format!("TCP {a}: {e}")))?),
            None => None,
        };
        Ok(Self { udp: udp_mux, tcp: tcp_mux })
    }

    /// The runtime for one peer connection whose local ICE ufrag is `ufrag`.
    pub fn runtime(&self, ufrag: &str) -> Arc<MuxRuntime> {
        Arc::new(MuxRuntime { udp: self.udp.clone(), tcp: self.tcp.clone(), ufrag: ufrag.to_string() })
    }
}

/// Random ICE credentials for one peer connection (RFC 8445 §5.3: a ufrag of at least 4 and a
/// password of at least 22 characters from `ice-char`): 16 and 32 alphanumerics.
pub fn ice_credentials() -> (String, String) {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let random = |n: usize| -> String {
        (0..n).map(|_| CHARS[crate::ids::random_u32() as usize % CHARS.len()] as char).collect()
    };
    (random(16), random(32))
}

/// A peer connection's runtime: tokio, with its sockets on the shared ports.
#[derive(Debug)]
pub struct MuxRuntime {
    udp: Arc<udp::UdpMux>,
    tcp: Option<Arc<tcp::TcpMux>>,
    ufrag: String,
}

impl std::fmt::Debug for udp::UdpMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpMux").field("local", &self.local_addr()).finish()
    }
}

impl std::fmt::Debug for tcp::TcpMux {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpMux").field("local", &self.local_addr()).finish()
    }
}

impl Runtime for MuxRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let key = socket.local_addr()?;
        // The driver's own socket only named the local candidate: the shared one carries it.
        drop(socket);
        Ok(self.udp.register(&self.ufrag, key))
    }

    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        match &self.tcp {
            Some(tcp) => {
                let key = listener.local_addr()?;
                drop(listener);
                Ok(tcp.register(&self.ufrag, key))
            }
            None => TokioRuntime.wrap_tcp_listener(listener),
        }
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        TokioRuntime.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        TokioRuntime.resolve_host(host)
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        TokioRuntime.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        TokioRuntime.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        TokioRuntime.yield_now()
    }

    fn name(&self) -> &'static str {
        "tessera-mux"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_long_enough_and_differ() {
        let (u, p) = ice_credentials();
        assert_eq!((u.len(), p.len()), (16, 32));
        assert!(u.chars().chain(p.chars()).all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(ice_credentials().0, u);
    }
}
