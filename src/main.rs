//! `tessera`: the command line. `tessera serve` runs the MCU.

use clap::{Parser, Subcommand};
use tessera::config::Config;
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
enum Command {
    /// Run the server (HTTP signaling + web client + media).
    Serve(Config),
    /// Join a running server with N publishers and M viewers (real WebRTC peers) and report
    /// frame rate, freezes and join time per receiver.
    Loadgen(tessera::client::loadgen::cli::LoadgenArgs),
    /// Print an access token (HS256 JWT) signed with the server's secret.
    Token(TokenArgs),
    /// Record a room of a running server until Ctrl-C, with a progress line.
    Record(tessera::client::record::RecordArgs),
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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn,webrtc_ice=warn".into()),
        )
        .init();
    let cli = Cli::parse();
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
            let server = Server::start(cfg).await?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; tracing::info!("shutting down"); server.shutdown().await; }
                _ = terminate() => { tracing::info!("SIGTERM: shutting down"); server.shutdown().await; }
            }
            Ok(())
        }
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

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
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
