//! ICE-TCP (RFC 6544) on one TCP port for every peer connection: the fallback for clients whose
//! networks block UDP. A client opens a connection to the passive candidate and sends a STUN
//! Binding request framed as RFC 4571 (a 16-bit length, then the message); its `USERNAME` names
//! the connection (the local ICE ufrag), whose driver then accepts the stream from its virtual
//! listener ([`VirtualTcpListener`]) with the bytes already read put back in front.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use webrtc::runtime::{AsyncTcpListener, AsyncTcpStream};

use super::super::stun;

/// How long a new connection may take to send its first Binding request.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Largest first frame accepted, bytes (a Binding request is ~100).
const MAX_FIRST_FRAME: usize = 1500;

/// The shared ICE-TCP port.
pub struct TcpMux {
    local: SocketAddr,
    listeners: Mutex<HashMap<String, Weak<VirtualTcpListener>>>,
    accept_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for TcpMux {
    fn drop(&mut self) {
        if let Some(t) = self.accept_task.lock().unwrap().take() {
            t.abort();
        }
    }
}

impl TcpMux {
    /// Listens on `addr` (port 0: an ephemeral one) and hands each new connection to the peer
    /// connection its first Binding request names. Needs a tokio runtime.
    ///
    /// # Errors
    /// The bind.
    pub fn bind(addr: SocketAddr) -> io::Result<Arc<Self>> {
        let std = std::net::TcpListener::bind(addr)?;
        std.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(std)?;
        let local = listener.local_addr()?;
        let mux = Arc::new(Self { local, listeners: Mutex::default(), accept_task: Mutex::new(None) });
        let weak = Arc::downgrade(&mux);
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors or the like: back off instead of spinning.
                        tracing::warn!("ICE-TCP port: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let weak = weak.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, first_frame(stream)).await {
                        Ok(Ok((stream, frame))) => {
                            if let Some(mux) = weak.upgrade() {
                                mux.hand_over(stream, peer, frame);
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "ICE-TCP port: connection refused: {e}"),
                        Err(_) => tracing::debug!(%peer, "ICE-TCP port: no Binding request in time"),
                    }
                });
            }
        });
        *mux.accept_task.lock().unwrap() = Some(task);
        Ok(mux)
    }

    /// The address the shared listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// A virtual listener for the connection whose local ICE ufrag is `ufrag`; its streams report
    /// `key` (the address the driver's own bind got) as their local address, as the ICE agent
    /// expects of its passive candidate.
    pub fn register(self: &Arc<Self>, ufrag: &str, key: SocketAddr) -> Arc<VirtualTcpListener> {
        let (tx, rx) = mpsc::channel(8);
        let l = Arc::new(VirtualTcpListener {
            key,
            ufrag: ufrag.to_string(),
            mux: self.clone(),
            tx,
            rx: tokio::sync::Mutex::new(rx),
        });
        self.listeners.lock().unwrap().insert(ufrag.to_string(), Arc::downgrade(&l));
        l
    }

    fn hand_over(&self, stream: tokio::net::TcpStream, peer: SocketAddr, first: Vec<u8>) {
        let body = &first[2..];
        let target = stun::local_ufrag(body)
            .filter(|_| stun::kind(body) == stun::Kind::BindingRequest)
            .and_then(|u| self.listeners.lock().unwrap().get(u).and_then(Weak::upgrade));
        let Some(listener) = target else {
            tracing::debug!(%peer, "ICE-TCP port: a connection no peer connection claims");
            return;
        };
        let (read_half, write_half) = stream.into_split();
        let s = VirtualTcpStream { prefix: Mutex::new(first), read_half, write_half, local: listener.key, peer };
        if listener.tx.try_send((Arc::new(s), peer)).is_err() {
            tracing::debug!(%peer, "ICE-TCP port: the peer connection is not accepting");
        }
    }
}

/// Reads the first RFC 4571 frame (length + body) of a new connection; returns the stream and the
/// frame's bytes, length included.
async fn first_frame(mut stream: tokio::net::TcpStream) -> io::Result<(tokio::net::TcpStream, Vec<u8>)> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let n = u16::from_be_bytes(len) as usize;
    if n > MAX_FIRST_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "first frame too long for a Binding request"));
    }
    let mut frame = vec![0u8; 2 + n];
    frame[..2].copy_from_slice(&len);
    stream.read_exact(&mut frame[2..]).await?;
    if !stun::is_stun(&frame[2..]) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "first frame is not STUN"));
    }
    Ok((stream, frame))
}

/// One peer connection's view of the shared ICE-TCP port.
pub struct VirtualTcpListener {
    key: SocketAddr,
    ufrag: String,
    mux: Arc<TcpMux>,
    tx: mpsc::Sender<(Arc<VirtualTcpStream>, SocketAddr)>,
    rx: tokio::sync::Mutex<mpsc::Receiver<(Arc<VirtualTcpStream>, SocketAddr)>>,
}

impl std::fmt::Debug for VirtualTcpListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualTcpListener").field("key", &self.key).field("shared", &self.mux.local).finish()
    }
}

impl Drop for VirtualTcpListener {
    fn drop(&mut self) {
        let mut listeners = self.mux.listeners.lock().unwrap();
        if listeners.get(&self.ufrag).is_some_and(|w| std::ptr::eq(w.as_ptr(), self)) {
            listeners.remove(&self.ufrag);
        }
    }
}

impl AsyncTcpListener for VirtualTcpListener {
    fn accept<'a>(
        &'a self,
    ) -> Pin<Box<dyn Future<Output = io::Result<(Arc<dyn AsyncTcpStream>, SocketAddr)>> + Send + 'a>> {
        Box::pin(async move {
            match self.rx.lock().await.recv().await {
                Some((s, peer)) => Ok((s as Arc<dyn AsyncTcpStream>, peer)),
                None => Err(io::Error::new(io::ErrorKind::NotConnected, "shared ICE-TCP port closed")),
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.key)
    }
}

/// A client's ICE-TCP connection, handed to a peer connection with its first frame put back.
#[derive(Debug)]
pub struct VirtualTcpStream {
    prefix: Mutex<Vec<u8>>,
    read_half: tokio::net::tcp::OwnedReadHalf,
    write_half: tokio::net::tcp::OwnedWriteHalf,
    local: SocketAddr,
    peer: SocketAddr,
}

impl AsyncTcpStream for VirtualTcpStream {
    fn read<'a, 'b>(&'a self, buf: &'b mut [u8]) -> Pin<Box<dyn Future<Output = io::Result<usize>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            {
                let mut prefix = self.prefix.lock().unwrap();
                if !prefix.is_empty() {
                    let n = prefix.len().min(buf.len());
                    buf[..n].copy_from_slice(&prefix[..n]);
                    prefix.drain(..n);
                    return Ok(n);
                }
            }
            loop {
                self.read_half.readable().await?;
                match self.read_half.try_read(buf) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn write_all<'a, 'b>(&'a self, buf: &'b [u8]) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(async move {
            let mut rest = buf;
            while !rest.is_empty() {
                self.write_half.writable().await?;
                match self.write_half.try_write(rest) {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "connection closed")),
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}
