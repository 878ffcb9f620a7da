//! The server: wires configuration, rooms and the HTTP router, and runs until shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::media::tiers::OutputFormat;
use crate::pipelines::Backends;
use crate::room::{RoomDeps, Rooms};
use crate::signaling::{AppState, router};
use crate::transport::Transport;

/// A running server.
pub struct Server {
    /// The bound HTTP address (useful with port 0).
    pub addr: SocketAddr,
    /// Every room.
    pub rooms: Arc<Rooms>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Validates `cfg`, initializes GStreamer, binds the HTTP listener and starts serving.
    ///
    /// # Errors
    /// An invalid configuration, GStreamer failing to initialize, or the address being taken.
    pub async fn start(cfg: Config) -> anyhow::Result<Self> {
        cfg.validate()?;
        gstreamer::init()?;
        let deps = RoomDeps {
            transport: Transport::new(&cfg)?,
            backends: Backends::new(&cfg.backend, cfg.pipelines_dir.clone()),
            format: OutputFormat { width: cfg.width, height: cfg.height, fps: cfg.fps, kbps: cfg.video_kbps },
            audio_kbps: cfg.audio_kbps,
            jitter_ms: cfg.jitter_ms,
            recordings_dir: cfg.recordings_dir.clone(),
        };
        let rooms = Arc::new(Rooms::new(deps));
        let auth = crate::signaling::auth::Auth::new(cfg.api_secret.as_deref().filter(|s| !s.is_empty()));
        let app = router(AppState::new(rooms.clone(), auth));
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        tracing::info!(%addr, media_ip = %cfg.media_bind_ip(), "tessera listening");
        Ok(Self { addr, rooms, shutdown: Some(tx), task })
    }

    /// Stops accepting requests, finalizes every recording, and waits for the HTTP server to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for room in self.rooms.all() {
            room.stop_recordings().await;
        }
        let _ = (&mut self.task).await;
    }

    /// Serves until the HTTP task ends.
    ///
    /// # Errors
    /// The HTTP server's I/O error.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }
}
