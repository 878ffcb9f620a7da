//! `tessera loadgen`: N publishers and M viewers against a running server, with a report.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{Peer, PeerOpts, ReceiveStats, VideoSource, Via};

/// Options of `tessera loadgen`.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Room to join.
    #[arg(long, default_value = "load")]
    pub room: String,
    /// Publishers (sendrecv participants: each sends video + a tone and receives the room).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// WHEP viewers (recvonly).
    #[arg(long, default_value_t = 0)]
    pub viewers: usize,
    /// Seconds to run after everyone joined.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Folder with `v0.webm`..`v15.webm` (VP8, e.g. from `shared/reference/gen-media.sh`): publishers
    /// replay these instead of encoding solid colours, so the load generator costs little CPU.
    #[arg(long)]
    pub media: Option<PathBuf>,
    /// Publishers do not decode what they receive (only viewers do); halves the client's CPU.
    #[arg(long)]
    pub publishers_send_only: bool,
    /// Viewers only count frames and packets instead of decoding (so many viewers cost the load
    /// generator little).
    #[arg(long)]
    pub viewers_count_only: bool,
    /// Start a recording in this format (`webm`, `mkv`, `mp4`) once everyone joined.
    #[arg(long)]
    pub record: Option<String>,
    /// Access token for a server with `--api-secret` (needs publish and subscribe grants).
    #[arg(long, env = "TESSERA_TOKEN")]
    pub token: Option<String>,
}

fn median(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Runs the load and prints one line per receiver and a `summary:` line.
///
/// # Errors
/// A peer that cannot join.
pub async fn run(a: LoadgenArgs) -> anyhow::Result<()> {
    let mut peers = vec![];
    for i in 0..a.publishers {
        let video = match &a.media {
            Some(dir) => VideoSource::File(dir.join(format!("v{}.webm", i % 16))),
            None => VideoSource::Colour(((i * 67 % 256) as u8, (i * 131 % 256) as u8, (i * 197 % 256) as u8)),
        };
        let mut o = PeerOpts::publisher(&format!("pub{i}"), (0, 0, 0), 300.0 + 50.0 * i as f64);
        o.video = video;
        o.receive = !a.publishers_send_only;
        o.token = a.token.clone();
        peers.push(Peer::join(&a.url, &a.room, o, false).await?);
    }
    for i in 0..a.viewers {
        let mut o = PeerOpts::viewer(&format!("viewer{i}"));
        o.via = Via::Whep;
        o.token = a.token.clone();
        o.decode = !a.viewers_count_only;
        peers.push(Peer::join(&a.url, &a.room, o, false).await?);
    }
    if let Some(format) = &a.record {
        let r = super::http_auth(
            "POST",
            &format!("{}/v1/rooms/{}/recordings", a.url, a.room),
            Some("application/json"),
            serde_json::json!({ "format": format }).to_string().into_bytes(),
            a.token.as_deref(),
        )
        .await?;
        anyhow::ensure!(r.status == 201, "recording refused: HTTP {}: {}", r.status, r.body.trim());
    }
    let start: Vec<ReceiveStats> = peers.iter().map(|p| p.stats()).collect();
    tokio::time::sleep(Duration::from_secs(a.duration)).await;
    let (mut fps, mut joins, mut freezes) = (vec![], vec![], 0u64);
    println!("{:<10} {:>7} {:>7} {:>8} {:>9} {:>8}", "peer", "fps", "freezes", "max_gap", "join_ms", "audio_s");
    for (p, s0) in peers.iter().zip(&start) {
        if !p.opts.receive {
            continue;
        }
        let s = p.stats();
        let f = (s.frames - s0.frames) as f64 / a.duration as f64;
        let frz = s.freezes - s0.freezes;
        println!(
            "{:<10} {:>7.1} {:>7} {:>8} {:>9} {:>8.1}",
            p.opts.name,
            f,
            frz,
            s.max_gap_ms,
            s.join_ms.map(|j| j.to_string()).unwrap_or("-".into()),
            (s.audio_samples - s0.audio_samples) as f64 / 48000.0
        );
        fps.push((f * 10.0) as u64);
        joins.extend(s.join_ms);
        freezes += frz;
    }
    let n = fps.len();
    let fps_median = median(&mut fps) as f64 / 10.0;
    let fps_min = fps.first().copied().unwrap_or(0) as f64 / 10.0;
    let join_median = median(&mut joins);
    let join_max = joins.last().copied().unwrap_or(0);
    println!(
        "summary: receivers={n} fps_median={fps_median:.1} fps_min={fps_min:.1} freezes={freezes} join_ms_median={join_median} join_ms_max={join_max}"
    );
    for p in &peers {
        let _ = p.leave().await;
    }
    Ok(())
}
