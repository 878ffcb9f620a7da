//! Server configuration: one struct built from flags and environment, validated once at start.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Everything `tessera serve` needs. Every field has an embedded default, so `Config::default()`
/// is a working local server (HTTP on 127.0.0.1:8080, media on UDP 7882 and ICE-TCP 7881 of every
/// interface).
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// HTTP listen address (signaling, WHIP/WHEP, rooms API, web client).
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The one UDP port every peer connection's media uses (ICE routes each client by the ufrag
    /// of its STUN checks, then by its address). `0` picks an ephemeral port (shared all the same).
    #[arg(long, env = "TESSERA_UDP_PORT", default_value_t = 7882)]
    pub udp_port: u16,

    /// The one TCP port for ICE-TCP (RFC 6544, passive): the fallback for clients whose networks
    /// block UDP. `0` picks an ephemeral port.
    #[arg(long, env = "TESSERA_TCP_PORT", default_value_t = 7881)]
    pub tcp_port: u16,

    /// Announce no ICE-TCP candidates and open no TCP media port.
    #[arg(long, env = "TESSERA_NO_ICE_TCP")]
    pub no_ice_tcp: bool,

    /// A UDP port range `LOW-HIGH` (inclusive) with one socket per peer connection instead of the
    /// shared `--udp-port` (`0`: an ephemeral port per connection). The range bounds the number of
    /// connections; there is no ICE-TCP then.
    #[arg(long, env = "TESSERA_UDP_PORTS", value_parser = parse_port_range)]
    pub udp_ports: Option<PortRange>,

    /// ICE-lite (RFC 8445 §2.5): answer clients' connectivity checks, never send any — for a
    /// server with a public address, as media servers commonly run. The server then learns a
    /// dead client only from its missing consent checks (browsers send one every ~5 s), so
    /// `--peer-timeout-ms` is at least 15 s.
    #[arg(long, env = "TESSERA_ICE_LITE")]
    pub ice_lite: bool,

    /// A peer connection that has been silent this long (no STUN: no consent, RFC 7675) — or that
    /// never connected — fails, and its participant is removed, ms.
    #[arg(long, env = "TESSERA_PEER_TIMEOUT_MS", default_value_t = 10_000)]
    pub peer_timeout_ms: u64,

    /// IP address the media ports bind to (default 0.0.0.0: every interface). Host candidates
    /// are announced at each non-loopback interface address (plus 127.0.0.1 when `--listen` is
    /// loopback), or at `--public-ip`. Give one address on hosts with several networks.
    #[arg(long, env = "TESSERA_MEDIA_IP")]
    pub media_ip: Option<IpAddr>,

    /// Public IP announced in ICE host candidates instead of the bound one (NAT 1:1, e.g. a cloud
    /// VM's elastic IP). Repeatable.
    #[arg(long = "public-ip", env = "TESSERA_PUBLIC_IP", value_delimiter = ',')]
    pub public_ips: Vec<IpAddr>,

    /// STUN/TURN server URL handed to clients (`GET /v1/config`) and used by the server's own
    /// ICE agent, e.g. `stun:stun.example.org:3478` or `turn:user:pass@turn.example.org:3478`.
    /// Repeatable.
    #[arg(long = "ice-server", env = "TESSERA_ICE_SERVERS", value_delimiter = ',')]
    pub ice_servers: Vec<String>,

    /// Composite width in pixels.
    #[arg(long, env = "TESSERA_WIDTH", default_value_t = 1280)]
    pub width: u32,

    /// Composite height in pixels.
    #[arg(long, env = "TESSERA_HEIGHT", default_value_t = 720)]
    pub height: u32,

    /// Composite frame rate in frames per second.
    #[arg(long, env = "TESSERA_FPS", default_value_t = 30)]
    pub fps: u32,

    /// Target bitrate of the composite video encode, kbit/s.
    #[arg(long, env = "TESSERA_VIDEO_KBPS", default_value_t = 1500)]
    pub video_kbps: u32,

    /// Target bitrate of each Opus mix encode, kbit/s.
    #[arg(long, env = "TESSERA_AUDIO_KBPS", default_value_t = 32)]
    pub audio_kbps: u32,

    /// Encoder/decoder backend: a folder name under `pipelines/` (`cpu`, `nvenc`, `vaapi`).
    /// A backend whose elements are missing falls back to `cpu` with a warning.
    #[arg(long, env = "TESSERA_BACKEND", default_value = "cpu")]
    pub backend: String,

    /// Folder to read pipeline fragments from instead of the copies embedded in the binary.
    #[arg(long, env = "TESSERA_PIPELINES_DIR")]
    pub pipelines_dir: Option<PathBuf>,

    /// Jitter buffer depth for inbound video, ms (`rtpjitterbuffer latency`).
    #[arg(long, env = "TESSERA_JITTER_MS", default_value_t = 50)]
    pub jitter_ms: u32,

    /// Minimum interval between two PLIs sent to one publisher, ms.
    #[arg(long, env = "TESSERA_PLI_INTERVAL_MS", default_value_t = 500)]
    pub pli_interval_ms: u64,

    /// Secret for HS256 access tokens. When set, joins need `Authorization: Bearer <JWT>` with the
    /// right grants and control calls need the admin grant (`tessera token` makes tokens).
    #[arg(long, env = "TESSERA_API_SECRET", hide_env_values = true)]
    pub api_secret: Option<String>,

    /// Folder recordings are written to.
    #[arg(long, env = "TESSERA_RECORDINGS_DIR", default_value = "recordings")]
    pub recordings_dir: PathBuf,

    /// Recordings uploaded to an object store (`--recordings-url`) and its S3 settings.
    #[command(flatten)]
    pub store: StoreConfig,

    /// POST room events as signed JSON to this URL (`http://` or `https://`); repeatable, or
    /// comma-separated in the variable. README, "Webhooks".
    #[arg(long = "webhook", env = "TESSERA_WEBHOOKS", value_delimiter = ',')]
    pub webhooks: Vec<String>,

    /// Allow listening on a non-loopback address without `--api-secret`.
    #[arg(long, env = "TESSERA_INSECURE")]
    pub insecure: bool,

    /// Worker threads of the async runtime (signaling and the WebRTC transport). Default: half
    /// the CPU cores (at least 1): the media work (decoders, encoders, the mixer) has threads of
    /// its own, and fewer workers wake each other less per packet. On 2 cores, 1 worker carries
    /// a 100-receiver room (~0.5 core of transport) without audio gaps and costs a small room
    /// ~5% less than 2.
    #[arg(long, env = "TESSERA_IO_THREADS")]
    pub io_threads: Option<usize>,

    /// This server's name: the `node` label of every metric (default: the hostname).
    #[arg(long, env = "TESSERA_NODE_NAME")]
    pub node_name: Option<String>,

    /// Serve `/metrics` on this address instead of `--listen` (whose `/metrics` then answers 404:
    /// the metrics name rooms and participants).
    #[arg(long, env = "TESSERA_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// When set, `/metrics` (wherever it is served) needs `Authorization: Bearer <TOKEN>`.
    #[arg(long, env = "TESSERA_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Log lines as `text` (for a terminal or journald) or `json` (one object per line, with the
    /// fields of the spans, such as `room` and `participant`, for a log collector).
    #[arg(long, env = "TESSERA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Timeouts, connection caps and join rate limits of the HTTP listeners.
    #[command(flatten)]
    pub http: HttpLimits,

    // --- Admission and drain ---
    /// Most load this node takes, in admission cost units (1.0 = one 1280x720 30 fps decode on
    /// the CPU; README, "Admission and drain"). Joins and new rooms past it get `503` with
    /// `Retry-After`, and `/readyz` answers `503`. Default: 12 per CPU core (15 units a core
    /// carries, times 0.8).
    #[arg(long, env = "TESSERA_MAX_LOAD")]
    pub max_load: Option<f64>,

    /// Most rooms on this node, idle ones (made by `PUT`, nobody in them) included; a new room
    /// past it gets `503` with `Retry-After`. Default: no cap.
    #[arg(long, env = "TESSERA_MAX_ROOMS")]
    pub max_rooms: Option<usize>,

    /// Most participants in one room, viewers included (a room's own `max_participants` may set
    /// fewer); a join past it gets `409` (the room is full, not the node). Default: no cap.
    #[arg(long, env = "TESSERA_MAX_PARTICIPANTS_PER_ROOM")]
    pub max_participants_per_room: Option<usize>,

    /// On SIGTERM (or SIGINT) the server drains: it takes no new rooms or joins and keeps its
    /// rooms until they are empty or this long has passed, then finalizes the recordings and
    /// exits. `300s`, `5m`, `1h` or plain seconds (`300`). A second signal exits at once.
    #[arg(long, env = "TESSERA_DRAIN_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Several nodes sharing rooms through Redis (README, "Running several nodes").
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Several nodes behind one address: a room registry on Redis (`--redis`), how other nodes reach
/// this one (`--advertise-url`) and how long a dead node's rooms stay its own (`--lease-ttl`).
/// Without `--redis` the node is alone and its rooms live in memory only.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ClusterArgs {
    /// Redis URL of the room registry shared by every node, e.g. `redis://:PASSWORD@10.0.0.2:6379`
    /// (or `redis://host:port/DB`). Unset: one node, rooms in memory.
    #[arg(long, env = "TESSERA_REDIS", hide_env_values = true)]
    pub redis: Option<String>,

    /// How other nodes reach this node's HTTP listener, e.g. `http://10.0.0.5:8080` (requests for
    /// a room this node runs are proxied here). Default: `http://` and `--listen`, which must then
    /// not be a wildcard address.
    #[arg(long, env = "TESSERA_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// A room's lease and a node's heartbeat in Redis live this long unless renewed (every third
    /// of it): a node that dies loses its rooms to the next join after at most this long. `10s`,
    /// `500ms` or plain seconds.
    #[arg(long, env = "TESSERA_LEASE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
}

impl Default for ClusterArgs {
    fn default() -> Self {
        Self { redis: None, advertise_url: None, lease_ttl: Duration::from_secs(10) }
    }
}

impl ClusterArgs {
    /// The URL other nodes reach this node at, without a trailing `/`: `--advertise-url`, else
    /// `http://{listen}` (`listen` being the bound address, so port 0 works).
    ///
    /// # Errors
    /// [`ConfigError::Cluster`] for a wildcard `listen` and no `--advertise-url`, or an advertise
    /// URL that is not `http://host[:port]`.
    pub fn advertise(&self, listen: SocketAddr) -> Result<String, ConfigError> {
        match &self.advertise_url {
            Some(u) => {
                let u = u.trim_end_matches('/');
                let rest = u.strip_prefix("http://").unwrap_or("");
                if rest.is_empty() || rest.contains('/') {
                    return Err(ConfigError::Cluster(format!(
                        "--advertise-url {u:?}: need http://HOST[:PORT] (no path; https is not spoken between nodes)"
                    )));
                }
                Ok(u.to_string())
            }
            None if listen.ip().is_unspecified() => Err(ConfigError::Cluster(format!(
                "--listen {listen} is every interface: give --advertise-url (how other nodes reach this one)"
            ))),
            None => Ok(format!("http://{listen}")),
        }
    }
}

/// Where finished recordings go beyond `--recordings-dir`: an object store spoken to with the S3
/// API (AWS S3, MinIO, Ceph RGW, Garage, moto, ...). The AWS variables are the standard ones;
/// any other `AWS_*` variable `object_store` knows (session token, web identity for IRSA, ...) is
/// read too. README, "Recordings to object storage".
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct StoreConfig {
    /// Upload recordings to `s3://BUCKET/PREFIX`: in parts while they record, then whole
    /// (`PREFIX/ROOM/ID/FILE`). Without it recordings stay in `--recordings-dir`.
    #[arg(long = "recordings-url", env = "TESSERA_RECORDINGS_URL")]
    pub url: Option<String>,

    /// S3 endpoint of an S3-compatible store (`http://` allowed, path-style requests); default:
    /// AWS's for the region.
    #[arg(long = "s3-endpoint", env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,

    /// S3 region (default `us-east-1`).
    #[arg(long = "s3-region", env = "AWS_REGION")]
    pub region: Option<String>,

    /// S3 access key id (prefer the variable: flags show in `ps`).
    #[arg(long = "s3-access-key-id", env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub access_key_id: Option<String>,

    /// S3 secret access key (prefer the variable: flags show in `ps`).
    #[arg(long = "s3-secret-access-key", env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
}

/// Splits `s3://BUCKET/PREFIX` into the bucket and the prefix (no leading or trailing `/`; may be
/// empty).
///
/// # Errors
/// The one-line reason for another scheme or an empty bucket.
pub fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest =
        url.strip_prefix("s3://").ok_or_else(|| format!("--recordings-url {url:?}: expected s3://BUCKET/PREFIX"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() || bucket.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(format!("--recordings-url {url:?}: expected s3://BUCKET/PREFIX with a bucket name"));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

/// What the HTTP listeners (`--listen` and `--metrics-listen`) allow a client: how long it may
/// take to send a request, how long it may sit idle, how many connections it may hold, and how
/// often it may join. Enforced by `signaling::http`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct HttpLimits {
    /// A request's headers must arrive whole within this time of the connection opening or of the
    /// previous response on it, else the connection is closed (slowloris; on a keep-alive
    /// connection this also bounds the wait for the next request), ms. `0`: none.
    #[arg(long = "http-header-timeout-ms", env = "TESSERA_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// A connection on which no byte has moved either way for this long, with no request being
    /// handled, is closed (idle keep-alives, clients that stop reading a response), ms. `0`: none.
    #[arg(long = "http-idle-timeout-ms", env = "TESSERA_HTTP_IDLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub idle_timeout_ms: u64,

    /// A request body must arrive whole within this time of its headers, else `408` and the
    /// connection is closed, ms. `0`: none.
    #[arg(long = "http-body-timeout-ms", env = "TESSERA_HTTP_BODY_TIMEOUT_MS", default_value_t = 10_000)]
    pub body_timeout_ms: u64,

    /// Most HTTP connections open at once, all clients together; one more is answered `503` and
    /// closed. Lowered at start to the open-file limit less 1024 (kept for media and pipelines).
    /// `0`: as many as that limit allows.
    #[arg(long = "http-max-connections", env = "TESSERA_HTTP_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,

    /// Most HTTP connections open at once from one client IP address (behind a reverse proxy,
    /// every client has the proxy's address: raise it there). `0`: no cap.
    #[arg(long = "http-max-connections-per-ip", env = "TESSERA_HTTP_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Joins (`POST` of an offer to a room's participants, WHIP or WHEP) one client IP address may
    /// make per minute, in bursts of up to as many; more get `429` with `Retry-After`. `0`: no limit.
    #[arg(long = "joins-per-minute-per-ip", env = "TESSERA_JOINS_PER_MINUTE_PER_IP", default_value_t = 600)]
    pub joins_per_minute_per_ip: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            body_timeout_ms: 10_000,
            max_connections: 8192,
            max_connections_per_ip: 256,
            joins_per_minute_per_ip: 600,
        }
    }
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            udp_port: 7882,
            tcp_port: 7881,
            no_ice_tcp: false,
            udp_ports: None,
            ice_lite: false,
            peer_timeout_ms: 10_000,
            media_ip: None,
            public_ips: vec![],
            ice_servers: vec![],
            width: 1280,
            height: 720,
            fps: 30,
            video_kbps: 1500,
            audio_kbps: 32,
            backend: "cpu".into(),
            pipelines_dir: None,
            jitter_ms: 50,
            pli_interval_ms: 500,
            api_secret: None,
            insecure: false,
            recordings_dir: PathBuf::from("recordings"),
            store: StoreConfig::default(),
            webhooks: vec![],
            io_threads: None,
            node_name: None,
            metrics_listen: None,
            metrics_token: None,
            log_format: LogFormat::Text,
            http: HttpLimits::default(),
            max_load: None,
            max_rooms: None,
            max_participants_per_room: None,
            drain_timeout: Duration::from_secs(300),
            cluster: ClusterArgs::default(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Output size or rate out of range (width/height must be even, 64..=3840 x 64..=2160, fps 1..=60).
    #[error("invalid output format: {0}")]
    Output(String),
    /// A zero or negative admission cap.
    #[error("invalid admission limit: {0}")]
    Admission(String),
    /// A bad `--recordings-url` or `--webhook`.
    #[error("{0}")]
    Outputs(String),
    /// A non-loopback listen address with no `--api-secret` and no `--insecure`.
    #[error(
        "refusing to listen on {0} without --api-secret: anyone could join and control rooms (pass --insecure to allow)"
    )]
    Insecure(SocketAddr),
    /// A cluster setting (`--redis`, `--advertise-url`, `--lease-ttl`) that cannot work.
    #[error("invalid cluster setting: {0}")]
    Cluster(String),
}

impl Config {
    /// The async runtime's worker threads: `--io-threads`, or half the cores (at least 1).
    pub fn runtime_threads(&self) -> usize {
        self.io_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()) / 2).max(1)
    }

    /// Checks the values that flags cannot check alone.
    ///
    /// # Errors
    /// [`ConfigError::Output`] for an odd or out-of-range size, or a frame rate outside 1..=60.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (w, h) = (self.width, self.height);
        if !(64..=3840).contains(&w) || !(64..=2160).contains(&h) || w % 2 != 0 || h % 2 != 0 {
            return Err(ConfigError::Output(format!("{w}x{h}: need even sizes within 64x64..3840x2160")));
        }
        if !(1..=60).contains(&self.fps) {
            return Err(ConfigError::Output(format!("fps {}: need 1..=60", self.fps)));
        }
        if let Some(l) = self.max_load
            && !(l.is_finite() && l > 0.0)
        {
            return Err(ConfigError::Admission(format!("--max-load {l}: need a positive number of units")));
        }
        if self.max_rooms == Some(0) || self.max_participants_per_room == Some(0) {
            return Err(ConfigError::Admission("--max-rooms and --max-participants-per-room: need at least 1".into()));
        }
        if self.cluster.redis.is_some() {
            if self.cluster.lease_ttl < Duration::from_millis(300) {
                return Err(ConfigError::Cluster("--lease-ttl: need at least 300ms".into()));
            }
            self.cluster.advertise(self.listen)?;
        }
        if let Some(url) = &self.store.url {
            parse_s3_url(url).map_err(ConfigError::Outputs)?;
        }
        for w in &self.webhooks {
            let ok = reqwest::Url::parse(w)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()));
            if !ok {
                return Err(ConfigError::Outputs(format!("--webhook {w:?}: expected an http:// or https:// URL")));
            }
        }
        if self.api_secret.as_deref().is_none_or(str::is_empty) && !self.listen.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::Insecure(self.listen));
        }
        Ok(())
    }

    /// The `node` label of the metrics: `--node-name`, else the hostname, else `tessera`.
    pub fn node(&self) -> String {
        let hostname =
            || std::fs::read_to_string("/proc/sys/kernel/hostname").ok().or_else(|| std::env::var("HOSTNAME").ok());
        self.node_name
            .clone()
            .or_else(hostname)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "tessera".into())
    }

    /// The metrics token, if a non-empty one was given.
    pub fn metrics_token(&self) -> Option<&str> {
        self.metrics_token.as_deref().filter(|t| !t.is_empty())
    }

    /// The IP media sockets bind to: `--media-ip`, else the IPv4 wildcard. (Firefox neither
    /// gathers nor pairs loopback candidates: media on 127.0.0.1 only would shut it out even on
    /// the same machine.)
    pub fn media_bind_ip(&self) -> IpAddr {
        self.media_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

/// An inclusive UDP port range; `low == high == 0` means "ephemeral".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port, inclusive.
    pub high: u16,
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.low == 0 { write!(f, "ephemeral ports") } else { write!(f, "{}-{}", self.low, self.high) }
    }
}

/// Parses a duration: plain seconds (`300`), or a number with a unit `ms`, `s`, `m`, `h` (`300s`,
/// `5m`, `1.5h`).
///
/// # Errors
/// The one-line reason for anything else (a negative or unknown unit, an empty string).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 =
        n.parse().map_err(|_| format!("{s:?}: expected a number of seconds, or a number and ms, s, m or h"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn parse_port_range(s: &str) -> Result<PortRange, String> {
    if s.trim() == "0" {
        return Ok(PortRange { low: 0, high: 0 });
    }
    let (a, b) = s.split_once('-').ok_or_else(|| format!("expected LOW-HIGH, got {s:?}"))?;
    let low: u16 = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
    let high: u16 = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
    if low == 0 || low > high {
        return Err(format!("{s:?}: need 0 < LOW <= HIGH"));
    }
    Ok(PortRange { low, high })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("40000-40010").unwrap(), PortRange { low: 40000, high: 40010 });
        assert_eq!(parse_port_range("0").unwrap(), PortRange { low: 0, high: 0 });
        assert!(parse_port_range("5-4").is_err());
        assert!(parse_port_range("x").is_err());
    }

    #[test]
    fn open_addresses_need_a_secret() {
        let open = Config { listen: "0.0.0.0:8080".parse().unwrap(), ..Config::default() };
        assert!(matches!(open.validate(), Err(ConfigError::Insecure(_))));
        assert!(Config { insecure: true, ..open.clone() }.validate().is_ok());
        assert!(Config { api_secret: Some("x".into()), ..open }.validate().is_ok());
    }

    #[test]
    fn the_http_limits_defaults_are_the_flags_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            http: HttpLimits,
        }
        assert_eq!(Flags::parse_from(["tessera"]).http, HttpLimits::default());
        let f = Flags::parse_from(["tessera", "--http-header-timeout-ms", "5", "--joins-per-minute-per-ip", "0"]);
        assert_eq!((f.http.header_timeout_ms, f.http.joins_per_minute_per_ip), (5, 0));
    }

    #[test]
    fn drain_timeouts_take_seconds_and_units() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "s", "5d", "-3s", "5 minutes"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn admission_caps_must_be_positive() {
        assert!(Config { max_load: Some(0.0), ..Config::default() }.validate().is_err());
        assert!(Config { max_load: Some(f64::NAN), ..Config::default() }.validate().is_err());
        assert!(Config { max_rooms: Some(0), ..Config::default() }.validate().is_err());
        assert!(Config { max_load: Some(0.5), max_rooms: Some(3), ..Config::default() }.validate().is_ok());
    }

    #[test]
    fn recordings_urls_and_webhooks_are_checked() {
        assert_eq!(parse_s3_url("s3://b/p/q/"), Ok(("b".into(), "p/q".into())));
        assert_eq!(parse_s3_url("s3://b"), Ok(("b".into(), String::new())));
        for bad in ["s3:///p", "http://b/p", "b/p", "s3:// x/p"] {
            assert!(parse_s3_url(bad).is_err(), "{bad}");
        }
        let store = |url: &str| StoreConfig { url: Some(url.into()), ..StoreConfig::default() };
        assert!(Config { store: store("s3://b/p"), ..Config::default() }.validate().is_ok());
        assert!(Config { store: store("gs://b/p"), ..Config::default() }.validate().is_err());
        let hooks = |w: &str| Config { webhooks: vec![w.into()], ..Config::default() };
        assert!(hooks("https://app.example.org/hook").validate().is_ok());
        for bad in ["ftp://x/y", "not a url", "http://"] {
            assert!(hooks(bad).validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn odd_sizes_are_refused() {
        let c = Config { width: 1281, ..Config::default() };
        assert!(c.validate().is_err());
        assert!(Config::default().validate().is_ok());
    }
}
