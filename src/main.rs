//! `tessera`: the command line. `tessera serve` runs the MCU.

mod allocator;

use clap::{Parser, Subcommand};
use tessera::config::{Config, LogFormat};
use tessera::server::Server;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "A WebRTC MCU: one composited video and one mix-minus audio per participant"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start; `Serve`'s Config is the big one
enum Command {
    /// Run the server (HTTP signaling + web client + media).
    Serve(Box<Config>),
    /// Join a running server with N publishers and M viewers (real WebRTC peers) and report
    /// frame rate, freezes and join time per receiver.
    Loadgen(tessera::client::loadgen::cli::LoadgenArgs),
    /// Print an access token (HS256 JWT) signed with the server's secret.
    Token(TokenArgs),
    /// Record a room of a running server until Ctrl-C, with a progress line.
    Record(tessera::client::record::RecordArgs),
    /// Drain a running server: it takes no new rooms or joins, and each room ends when its last
    /// participant leaves (the process keeps running; SIGTERM drains and exits). With `--wait`,
    /// return once the server holds no rooms (exit 1 if `--timeout` passes first).
    Drain(DrainArgs),
    /// Print which backend runs each media role on this machine (GPU encoders and decoders are
    /// probed by running them), the GPUs, and the codec policy that follows.
    Doctor(DoctorArgs),
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// Backend to report on: a folder of `pipelines/` (`cpu`, `nvenc`, `vaapi`), as `serve --backend`.
    #[arg(long, env = "TESSERA_BACKEND", default_value = "cpu")]
    backend: String,
    /// Read pipeline fragments from this folder instead of the embedded copies.
    #[arg(long, env = "TESSERA_PIPELINES_DIR")]
    pipelines_dir: Option<std::path::PathBuf>,
    /// Print the report as JSON (its shape: `tessera::doctor`'s docs).
    #[arg(long)]
    json: bool,
    /// Only check element names and parsing; run no probe pipelines.
    #[arg(long)]
    no_probe: bool,
    /// Longest a probe pipeline may run, ms.
    #[arg(long, default_value_t = 10_000)]
    probe_timeout_ms: u64,
}

#[derive(clap::Args)]
struct DrainArgs {
    /// The server's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Wait until the server holds no rooms.
    #[arg(long)]
    wait: bool,
    /// Longest `--wait` waits: the server's drain timeout (`300s`, `5m` or plain seconds).
    #[arg(long, env = "TESSERA_DRAIN_TIMEOUT", default_value = "300s", value_parser = tessera::config::parse_duration)]
    timeout: std::time::Duration,
    /// The server's secret: `POST /v1/drain` needs an admin token, minted from it (unset: a server
    /// without tokens).
    #[arg(long, env = "TESSERA_API_SECRET", hide_env_values = true)]
    api_secret: Option<String>,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Room the token is for (`*`: every room).
    #[arg(long)]
    room: String,
    /// Identity of the holder (the JWT `sub`).
    #[arg(long)]
    identity: String,
    /// Display name shown in the room; overrides the join's `?name=` (default: none, so `?name=` is used).
    #[arg(long)]
    name: Option<String>,
    /// Grant control of the room (layout, mute, kick, end, recordings).
    #[arg(long)]
    admin: bool,
    /// Do not grant publishing.
    #[arg(long)]
    no_publish: bool,
    /// Do not grant receiving.
    #[arg(long)]
    no_subscribe: bool,
    /// Lifetime, e.g. `30m`, `1h`, `7d`, `3600s`.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    ttl: std::time::Duration,
    /// The secret the server uses.
    #[arg(long, env = "TESSERA_API_SECRET", hide_env_values = true)]
    api_secret: String,
}

fn parse_ttl(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number and a unit (s, m, h, d)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("{s:?}: unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// The log filter when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "info,webrtc=warn,rtc=warn,webrtc_ice=warn";

/// The subscriber for `format`: text lines, or one JSON object per line with the event's fields
/// at the top level (`message`, ...), the innermost span's fields under `span` and every open
/// span's under `spans` (so each line of a participant carries its `room` and `participant`).
fn log_subscriber<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => Box::new(fmt.finish()),
        LogFormat::Json => Box::new(
            fmt.json().with_ansi(false).flatten_event(true).with_current_span(true).with_span_list(true).finish(),
        ),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Serve(cfg) => cfg.log_format,
        _ => LogFormat::Text,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    tracing_subscriber::util::SubscriberInitExt::init(log_subscriber(format, filter, std::io::stdout));
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(cfg) = &cli.command {
        rt.worker_threads(cfg.runtime_threads());
    }
    rt.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(cfg) => {
            if std::env::var_os("TESSERA_LAG_PROBE").is_some() {
                spawn_lag_probes();
            }
            let timeout = cfg.drain_timeout;
            let mut signals = Signals::new()?;
            let server = Server::start(*cfg).await?;
            let first = signals.next().await;
            let rooms = server.rooms.len();
            tracing::info!(signal = first, rooms, ?timeout, "draining: no new rooms or joins, rooms run until empty");
            tokio::select! {
                all = server.drain(timeout) => {
                    if !all {
                        let rooms = server.rooms.len();
                        tracing::warn!(rooms, ?timeout, "drain timeout passed: ending the rooms left");
                    }
                }
                again = signals.next() => {
                    tracing::warn!(signal = again, "second signal: exiting now");
                    std::process::exit(1);
                }
            }
            tokio::select! {
                () = server.shutdown() => {}
                again = signals.next() => {
                    tracing::warn!(signal = again, "second signal: exiting now");
                    std::process::exit(1);
                }
            }
            tracing::info!("stopped");
            Ok(())
        }
        Command::Drain(a) => drain(a).await,
        Command::Loadgen(args) => tessera::client::loadgen::cli::run(args).await,
        Command::Record(args) => tessera::client::record::run(args).await,
        Command::Doctor(a) => {
            let opts = tessera::doctor::Options {
                backend: a.backend,
                pipelines_dir: a.pipelines_dir,
                probe: (!a.no_probe).then(|| std::time::Duration::from_millis(a.probe_timeout_ms)),
            };
            let report = tokio::task::spawn_blocking(move || tessera::doctor::report(&opts)).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", tessera::doctor::render_text(&report));
            }
            Ok(())
        }
        Command::Token(t) => {
            let auth = tessera::signaling::auth::Auth::new(Some(&t.api_secret));
            let grants =
                tessera::signaling::auth::Grants { publish: !t.no_publish, subscribe: !t.no_subscribe, admin: t.admin };
            println!("{}", auth.mint(&t.room, &t.identity, t.name.as_deref(), grants, t.ttl));
            Ok(())
        }
    }
}

/// SIGTERM and SIGINT, as they arrive: the first drains, a second one stops at once.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// `tessera drain`: `POST /v1/drain` with an admin token, then with `--wait` polls `/readyz` once
/// a second until the server holds no rooms.
async fn drain(a: DrainArgs) -> anyhow::Result<()> {
    use tessera::client::loadgen::{http, http_auth};
    let base = a.url.trim_end_matches('/');
    let token = a.api_secret.filter(|s| !s.is_empty()).map(|secret| {
        let grants = tessera::signaling::auth::Grants { publish: false, subscribe: false, admin: true };
        let ttl = a.timeout + std::time::Duration::from_secs(60);
        tessera::signaling::auth::Auth::new(Some(&secret)).mint("*", "tessera-drain", None, grants, ttl)
    });
    let r = http_auth("POST", &format!("{base}/v1/drain"), None, vec![], token.as_deref()).await?;
    if r.status != 202 {
        anyhow::bail!("POST {base}/v1/drain: {} {}", r.status, r.body.trim());
    }
    let state = |body: &str| -> anyhow::Result<(u64, u64)> {
        let v: serde_json::Value = serde_json::from_str(body)?;
        Ok((v["rooms"].as_u64().unwrap_or(0), v["participants"].as_u64().unwrap_or(0)))
    };
    let (rooms, participants) = state(&r.body)?;
    println!("{base}: draining; {rooms} rooms, {participants} participants");
    if !a.wait {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + a.timeout;
    let mut last = (rooms, participants);
    loop {
        let r = http("GET", &format!("{base}/readyz"), None, vec![]).await?;
        let now = state(&r.body)?;
        if now.0 == 0 {
            println!("{base}: drained, no rooms left");
            return Ok(());
        }
        if now != last {
            println!("{base}: {} rooms, {} participants", now.0, now.1);
            last = now;
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!("{base}: {} rooms still running after {:?}", now.0, a.timeout);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Diagnostics (`TESSERA_LAG_PROBE=1`): four async tasks and one thread that sleep 10 ms in a
/// loop and log a warning when one takes over 40 ms. Async lag alone means a task
/// held a runtime worker (blocking work on the transport); both together mean the box is short
/// of CPU.
fn spawn_lag_probes() {
    const NAP: std::time::Duration = std::time::Duration::from_millis(10);
    const LATE_MS: u128 = 40;
    for probe in 0..4 {
        tokio::spawn(async move {
            loop {
                let t = std::time::Instant::now();
                tokio::time::sleep(NAP).await;
                let lag_ms = t.elapsed().as_millis();
                if lag_ms > LATE_MS {
                    tracing::warn!(probe, lag_ms = lag_ms as u64, "TOKIO LAG");
                }
            }
        });
    }
    let _ = std::thread::Builder::new().name("lag-probe".into()).spawn(|| {
        loop {
            let t = std::time::Instant::now();
            std::thread::sleep(NAP);
            let lag_ms = t.elapsed().as_millis();
            if lag_ms > LATE_MS {
                tracing::warn!(lag_ms = lag_ms as u64, "THREAD LAG");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn json_lines_carry_the_fields_of_the_spans() {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let out = buf.clone();
        let writer = move || Writer(out.clone());
        let sub = log_subscriber(LogFormat::Json, "info".into(), writer);
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("participant", room = "demo", participant = "p1-3f9a2c");
            let _in = span.enter();
            tracing::info!(kbps = 910, "tier switched");
        });
        let text = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
        assert_eq!(line["message"], "tier switched");
        assert_eq!(line["kbps"], 910);
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["span"]["room"], "demo");
        assert_eq!(line["span"]["participant"], "p1-3f9a2c");
        assert_eq!(line["spans"][0]["name"], "participant");
    }

    /// A writer into a shared buffer.
    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
