//! The server: wires configuration, rooms and the HTTP router, and runs until shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::cluster::RoomDirectory;
use crate::cluster::redis::RedisDirectory;
use crate::config::Config;
use crate::media::tiers::OutputFormat;
use crate::pipelines::Backends;
use crate::room::{RoomDeps, Rooms};
use crate::signaling::{AppState, MetricsOptions, http, metrics_router, router};
use crate::transport::Transport;

/// A running server.
pub struct Server {
    /// The bound HTTP address (useful with port 0).
    pub addr: SocketAddr,
    /// The bound address of the `/metrics` listener, with `--metrics-listen`.
    pub metrics_addr: Option<SocketAddr>,
    /// Every room.
    pub rooms: Arc<Rooms>,
    /// Where requests for a room run (this node alone, or the nodes sharing Redis).
    pub directory: Arc<dyn RoomDirectory>,
    /// The lease keeper, with `--redis`.
    keeper: Option<Keeper>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The `--metrics-listen` server, aborted once the main one has finished.
    metrics_task: Option<tokio::task::JoinHandle<()>>,
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
            storage: match cfg.store.url {
                Some(_) => Some(crate::outputs::storage::ObjectStorage::new(&cfg.store)?),
                None => None,
            },
            webhooks: crate::outputs::webhook::Webhooks::new(&cfg.webhooks, cfg.api_secret.as_deref(), &cfg.node())?,
        };
        log_backends(&deps.backends).await?;
        if let Some(url) = &cfg.store.url {
            tracing::info!(%url, "recordings are uploaded to the object store");
        }
        let rooms = Arc::new(Rooms::with_limits(deps, admission_limits(&cfg)));
        tracing::info!(limits = %rooms.limits(), "admission");
        let auth = crate::signaling::auth::Auth::new(cfg.api_secret.as_deref().filter(|s| !s.is_empty()));
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        let addr = listener.local_addr()?;
        let (directory, keeper) = directory(&cfg, addr, &rooms)?;
        let state = AppState::new(rooms.clone(), auth).with_directory(directory.clone()).with_metrics(MetricsOptions {
            node: cfg.node(),
            token: cfg.metrics_token().map(str::to_string),
            own_listener: cfg.metrics_listen.is_some(),
        });
        let (metrics_addr, metrics_task) = match cfg.metrics_listen {
            Some(at) => {
                let listener = tokio::net::TcpListener::bind(at).await?;
                let bound = listener.local_addr()?;
                let app = metrics_router(state.clone());
                let (limits, stats, auth) = (cfg.http.clone(), state.http_stats(), state.auth.clone());
                let task = tokio::spawn(async move {
                    if let Err(e) = http::serve(listener, app, limits, stats, auth, std::future::pending()).await {
                        tracing::error!(addr = %bound, "metrics listener failed: {e}");
                    }
                });
                if cfg.metrics_token().is_none() && !bound.ip().is_loopback() {
                    tracing::warn!(addr = %bound, "/metrics names rooms and participants and needs no --metrics-token");
                }
                tracing::info!(addr = %bound, "metrics listening");
                (Some(bound), Some(task))
            }
            None => (None, None),
        };
        let (limits, stats, auth) = (cfg.http.clone(), state.http_stats(), state.auth.clone());
        let app = router(state);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(listener, app, limits, stats, auth, async {
            let _ = rx.await;
        }));
        tracing::info!(%addr, media_ip = %cfg.media_bind_ip(), "tessera listening");
        Ok(Self { addr, metrics_addr, rooms, directory, keeper, shutdown: Some(tx), task, metrics_task })
    }

    /// Drains: takes no new rooms or joins from now on (`503`, `/readyz` `503`) and waits until
    /// every room has ended — each ends when its last participant leaves — or `timeout` has
    /// passed. Returns whether every room ended. HTTP keeps serving the rooms meanwhile.
    pub async fn drain(&self, timeout: std::time::Duration) -> bool {
        self.rooms.start_drain();
        self.rooms.wait_empty(tokio::time::Instant::now() + timeout).await
    }

    /// Stops accepting requests, ends every room (its participants leave with `server shutting
    /// down`), finalizes every recording — those of rooms that ended before too —, waits up to
    /// [`FINALIZE_WAIT`] for their uploads and webhooks, and for the HTTP server to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.rooms.end_all("server shutting down", FINALIZE_WAIT).await;
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
        self.directory.close().await;
        let deps = self.rooms.deps();
        if let Some(s) = &deps.storage
            && !s.wait_uploads(FINALIZE_WAIT).await
        {
            tracing::error!("recording uploads still running at exit: their local files stay");
        }
        if !deps.webhooks.flush(FINALIZE_WAIT).await {
            tracing::error!("webhooks still undelivered at exit");
        }
        let _ = (&mut self.task).await;
        if let Some(t) = self.metrics_task.take() {
            t.abort();
        }
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

/// Longest a start-up probe of a GPU fragment may run (a GPU's first use takes 0.2-2 s).
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Checks which backend serves each media role — by running a small pipeline through each GPU
/// candidate (`tessera doctor`'s probe), by parsing on `cpu` — so that rooms never start on a
/// fragment that cannot run here, and logs one line per role and the codec policy that follows.
async fn log_backends(backends: &Backends) -> anyhow::Result<()> {
    let check = if backends.backend() == "cpu" {
        crate::pipelines::Check::Parse
    } else {
        crate::pipelines::Check::Probe(PROBE_TIMEOUT)
    };
    let b = backends.clone();
    let roles = tokio::task::spawn_blocking(move || b.verify(check)).await?;
    for r in &roles {
        let backend = r.backend.as_deref().unwrap_or("none");
        if r.fell_back() {
            tracing::warn!(role = r.role.name(), wanted = %r.wanted, %backend, reason = %r.reason, "media role");
        } else {
            tracing::info!(role = r.role.name(), %backend, "media role");
        }
    }
    let policy = crate::doctor::policy(&roles);
    tracing::info!(video_codec_order = ?policy.video_codec_order, "{}", policy.summary);
    Ok(())
}

/// Longest a shutdown waits for recordings of rooms that ended before it to be finalized.
const FINALIZE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The node's admission caps from the configuration (`--max-load` defaults to the cores').
fn admission_limits(cfg: &Config) -> crate::room::admission::Limits {
    let defaults = crate::room::admission::Limits::default();
    crate::room::admission::Limits {
        max_load: cfg.max_load.unwrap_or(defaults.max_load),
        max_rooms: cfg.max_rooms,
        max_participants_per_room: cfg.max_participants_per_room,
    }
}

/// The task that renews a node's room leases.
type Keeper = tokio::task::JoinHandle<()>;

/// The room directory: alone, or with `--redis` a [`RedisDirectory`] reachable at the advertise
/// URL (`addr` being the bound HTTP address) and its running lease keeper.
fn directory(
    cfg: &Config,
    addr: SocketAddr,
    rooms: &Arc<Rooms>,
) -> anyhow::Result<(Arc<dyn RoomDirectory>, Option<Keeper>)> {
    let node = cfg.node();
    let Some(redis) = &cfg.cluster.redis else {
        return Ok((Arc::new(crate::cluster::Alone::new(&node)), None));
    };
    let url = cfg.cluster.advertise(addr)?;
    let dir = Arc::new(RedisDirectory::new(&node, &url, redis, cfg.cluster.lease_ttl, rooms.clone())?);
    tracing::info!(node, url, lease_ttl = ?cfg.cluster.lease_ttl, "rooms shared through Redis");
    let keeper = dir.spawn_keeper();
    Ok((dir, Some(keeper)))
}
