//! `tessera`: the command line. `tessera serve` runs the MCU.

use clap::{Parser, Subcommand};
use tessera::config::Config;
use tessera::server::Server;

#[derive(Parser)]
#[command(name = "tessera", version, about = "A WebRTC MCU: one composited video and one mix-minus audio per participant")]
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
    Loadgen(tessera::loadgen::cli::LoadgenArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=warn,rtc=warn,webrtc_ice=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(cfg) => {
            let server = Server::start(cfg).await?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; tracing::info!("shutting down"); server.shutdown().await; }
                _ = terminate() => { tracing::info!("SIGTERM: shutting down"); server.shutdown().await; }
            }
            Ok(())
        }
        Command::Loadgen(args) => tessera::loadgen::cli::run(args).await,
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
