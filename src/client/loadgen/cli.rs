//! `tessera loadgen`: N publishers and M viewers in each of R rooms against a running server, with
//! a report: frame rate, freezes, join time, audio gaps and (with `--latency`) latency.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use super::analysis::percentile;
use super::{IcePath, Peer, PeerOpts, ReceiveStats, TalkTurn, Via, VideoSource};

/// Options of `tessera loadgen`.
#[derive(Debug, Clone, Args)]
pub struct LoadgenArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Room to join.
    #[arg(long, default_value = "load")]
    pub room: String,
    /// Publishers per room (sendrecv participants: each sends audio, video if among the first
    /// `--video-publishers`, and receives the room).
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Only the first K publishers of a room send video; the others are audio-only participants.
    /// Default: all.
    #[arg(long)]
    pub video_publishers: Option<usize>,
    /// Publishers talking at any time in a room (pre-encoded speech-like Opus with RFC 6464 levels;
    /// the others send silence packets); the talkers change every 3 s.
    #[arg(long, default_value_t = 3)]
    pub talkers: usize,
    /// Publishers send a live GStreamer-encoded sine tone each (the old audio: about 1/57 of a core
    /// per publisher) instead of pre-encoded talk turns.
    #[arg(long)]
    pub tones: bool,
    /// Measure latency: publisher 0 of the first room sends the latency marker (a live 640x360 VP8
    /// encode of a frame counter, and a permanent talker so it stays on screen) and a WHEP
    /// `latency-probe` viewer decodes the composite and reads it. A sample is marker frame pushed
    /// to the publisher's encoder → the composite showing it decoded at the probe: client encode +
    /// network + the server's jitter buffer, decode, composite and encode + network + client
    /// jitter buffer and decode.
    #[arg(long)]
    pub latency: bool,
    /// Rooms: with R > 1, rooms `{room}-0`..`{room}-(R-1)`, each with the given publishers and
    /// viewers.
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Peers joining at once (in join order, batch by batch).
    #[arg(long, default_value_t = 10)]
    pub join_concurrency: usize,
    /// WHEP viewers per room (recvonly).
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
    /// Publishers receive the composite and the mix but only count frames and packets instead of
    /// decoding (every participant a real receiver, at little client CPU).
    #[arg(long, conflicts_with = "publishers_send_only")]
    pub publishers_count_only: bool,
    /// Viewers only count frames and packets instead of decoding (so many viewers cost the load
    /// generator little).
    #[arg(long)]
    pub viewers_count_only: bool,
    /// Start a recording in this format (`webm`, `mkv`, `mp4`) in every room once everyone joined.
    #[arg(long)]
    pub record: Option<String>,
    /// Access token for a server with `--api-secret` (needs publish and subscribe grants).
    #[arg(long, env = "TESSERA_TOKEN")]
    pub token: Option<String>,
    /// STUN/TURN server for every peer (`turn:user:pass@host:3478`); peers then send from every
    /// interface instead of loopback. Repeatable.
    #[arg(long = "ice-server")]
    pub ice_servers: Vec<String>,
    /// Publishers send simulcast (RFC 8853, rids q/h/f): with `--media`, the files
    /// `v{i}-q.webm`, `v{i}-h.webm` and `v{i}.webm` (160x90, 320x180, 640x360) as three layers;
    /// without, a colour encoded live at those sizes.
    #[arg(long)]
    pub simulcast: bool,
    /// Peers use ICE-TCP only (as clients on networks that block UDP).
    #[arg(long, conflicts_with = "ice_servers")]
    pub ice_tcp_only: bool,
    /// Every peer's link drops this share of its RTP and RTCP packets, percent, in both directions
    /// (independent losses; user space, see `loadgen::lossy`).
    #[arg(long, default_value_t = 0.0, value_parser = percent)]
    pub loss: f64,
    /// Every peer's link delays each packet by a uniform random 0..=MS ms, in both directions
    /// (which reorders packets, as `netem` jitter does).
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// The codec receivers ask the composite in: `vp8` (the default) or `h264` (what a GPU
    /// encodes). WHEP viewers and the latency probe offer only it; publishers put it first where
    /// their offer lists it (webrtc-rs offers a VP8 sender's section with VP8 alone, so they
    /// receive VP8).
    #[arg(long, default_value = "vp8", value_parser = ["vp8", "h264"])]
    pub video_codec: String,
}

/// The offered video codecs (MIME types) of a publisher and of a viewer, from `--video-codec`.
fn video_codecs(a: &LoadgenArgs) -> (Vec<&'static str>, Vec<&'static str>) {
    let (vp8, h264) = (crate::codec::VP8.mime, crate::codec::H264.mime);
    if a.video_codec == "h264" { (vec![h264, vp8], vec![h264]) } else { (vec![vp8, h264], vec![vp8, h264]) }
}

fn percent(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

/// The link every peer gets from `--loss` and `--jitter-ms`; `None` for a clean one.
fn link(a: &LoadgenArgs) -> Option<super::lossy::LinkSpec> {
    (a.loss > 0.0 || a.jitter_ms > 0)
        .then(|| super::lossy::LinkSpec { loss: a.loss / 100.0, jitter: Duration::from_millis(a.jitter_ms) })
}

fn median(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// `-` for a missing figure, else one decimal.
fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn ice_path(a: &LoadgenArgs) -> IcePath {
    if a.ice_tcp_only {
        IcePath::TcpOnly
    } else if a.ice_servers.is_empty() {
        IcePath::Loopback
    } else {
        IcePath::Servers(a.ice_servers.clone())
    }
}

/// Who joins, in join order: each room's publishers, then its viewers, then (first room, with
/// `--latency`) the latency probe.
fn plan(a: &LoadgenArgs) -> Vec<(String, PeerOpts)> {
    let rooms: Vec<String> =
        if a.rooms <= 1 { vec![a.room.clone()] } else { (0..a.rooms).map(|r| format!("{}-{r}", a.room)).collect() };
    let video_publishers = a.video_publishers.unwrap_or(a.publishers);
    let mut plan = vec![];
    for (r, room) in rooms.iter().enumerate() {
        let prefix = if rooms.len() > 1 { format!("r{r}-") } else { String::new() };
        let marker = a.latency && r == 0;
        for i in 0..a.publishers {
            let video = if marker && i == 0 {
                VideoSource::Marker
            } else if i >= video_publishers {
                VideoSource::None
            } else {
                let colour = ((i * 67 % 256) as u8, (i * 131 % 256) as u8, (i * 197 % 256) as u8);
                match (&a.media, a.simulcast) {
                    (Some(dir), false) => VideoSource::File(dir.join(format!("v{}.webm", i % 16))),
                    (Some(dir), true) => VideoSource::SimulcastFiles(
                        ["-q", "-h", ""].iter().map(|l| dir.join(format!("v{}{l}.webm", i % 16))).collect(),
                    ),
                    (None, false) => VideoSource::Colour(colour),
                    (None, true) => VideoSource::SimulcastColour(colour),
                }
            };
            let mut o = PeerOpts::publisher(&format!("{prefix}pub{i}"), (0, 0, 0), 300.0 + 50.0 * i as f64);
            o.video = video;
            o.receive = !a.publishers_send_only;
            o.decode = !a.publishers_count_only;
            o.token = a.token.clone();
            o.ice = ice_path(a);
            o.link = link(a);
            o.video_codecs = video_codecs(a).0;
            if !a.tones {
                // The marker publisher keeps one of the talkers' seats, so the server's last-N
                // speaker selection keeps its tile on screen.
                o.talk = Some(match (marker, i) {
                    (true, 0) => TalkTurn::new(0, 1, a.talkers.min(1)),
                    (true, _) => TalkTurn::new(i - 1, a.publishers - 1, a.talkers.saturating_sub(1)),
                    _ => TalkTurn::new(i, a.publishers, a.talkers),
                });
            }
            plan.push((room.clone(), o));
        }
        for i in 0..a.viewers {
            let mut o = PeerOpts::viewer(&format!("{prefix}viewer{i}"));
            o.via = Via::Whep;
            o.token = a.token.clone();
            o.decode = !a.viewers_count_only;
            o.ice = ice_path(a);
            o.link = link(a);
            o.video_codecs = video_codecs(a).1;
            plan.push((room.clone(), o));
        }
        if marker {
            let mut o = PeerOpts::viewer(&format!("{prefix}latency-probe"));
            o.token = a.token.clone();
            o.latency_probe = true;
            o.ice = ice_path(a);
            o.link = link(a);
            o.video_codecs = video_codecs(a).1;
            plan.push((room.clone(), o));
        }
    }
    plan
}

/// Runs the load and prints a `joined:` line, one line per receiver and a `summary:` line:
///
/// `summary: receivers=N fps_median=F fps_min=F freezes=N join_ms_median=MS join_ms_max=MS
/// joined=N expected=N audio_gaps=N latency_ms_median=MS latency_ms_p95=MS latency_samples=N`
///
/// (frame rates per second, times in ms, counts over the `--duration` window; `-` when there is no
/// latency sample).
///
/// # Errors
/// Peers that could not join (after the report), or a recording the server refused.
pub async fn run(a: LoadgenArgs) -> anyhow::Result<()> {
    let plan = plan(&a);
    let expected = plan.len();
    let t0 = Instant::now();
    let mut peers: Vec<Arc<Peer>> = vec![];
    let mut failed = 0usize;
    for batch in plan.chunks(a.join_concurrency.max(1)) {
        let mut set = tokio::task::JoinSet::new();
        for (k, (room, o)) in batch.iter().cloned().enumerate() {
            let url = a.url.clone();
            set.spawn(async move { (k, o.name.clone(), Peer::join(&url, &room, o, false).await) });
        }
        let mut joined: Vec<(usize, Peer)> = vec![];
        while let Some(r) = set.join_next().await {
            match r {
                Ok((k, _, Ok(p))) => joined.push((k, p)),
                Ok((_, name, Err(e))) => {
                    eprintln!("{name}: {e}");
                    failed += 1;
                }
                Err(e) => {
                    eprintln!("join task: {e}");
                    failed += 1;
                }
            }
        }
        joined.sort_by_key(|(k, _)| *k);
        peers.extend(joined.into_iter().map(|(_, p)| Arc::new(p)));
    }
    println!("joined: peers={} expected={expected} seconds={:.1}", peers.len(), t0.elapsed().as_secs_f64());
    if let Some(format) = &a.record {
        let mut rooms: Vec<&str> = plan.iter().map(|(r, _)| r.as_str()).collect();
        rooms.dedup();
        for room in rooms {
            let r = super::http_auth(
                "POST",
                &format!("{}/v1/rooms/{room}/recordings", a.url),
                Some("application/json"),
                serde_json::json!({ "format": format }).to_string().into_bytes(),
                a.token.as_deref(),
            )
            .await?;
            anyhow::ensure!(r.status == 201, "recording refused: HTTP {}: {}", r.status, r.body.trim());
        }
    }
    let start: Vec<(ReceiveStats, usize)> = peers.iter().map(|p| (p.stats(), p.latency_ms().len())).collect();
    tokio::time::sleep(Duration::from_secs(a.duration)).await;
    let (mut fps, mut joins, mut freezes, mut audio_gaps, mut latency) = (vec![], vec![], 0u64, 0u64, vec![]);
    println!(
        "{:<14} {:>7} {:>7} {:>8} {:>9} {:>8} {:>10} {:>8} {:>8}",
        "peer", "fps", "freezes", "max_gap", "join_ms", "audio_s", "audio_gaps", "lat_med", "lat_p95"
    );
    for (p, (s0, l0)) in peers.iter().zip(&start) {
        if !p.opts.receive {
            continue;
        }
        let s = p.stats();
        let f = (s.frames - s0.frames) as f64 / a.duration as f64;
        let frz = s.freezes - s0.freezes;
        let gaps = s.audio_gaps - s0.audio_gaps;
        let mut lat: Vec<f64> = p.latency_ms().into_iter().skip(*l0).collect();
        println!(
            "{:<14} {:>7.1} {:>7} {:>8} {:>9} {:>8.1} {:>10} {:>8} {:>8}",
            p.opts.name,
            f,
            frz,
            s.max_gap_ms,
            s.join_ms.map(|j| j.to_string()).unwrap_or("-".into()),
            (s.audio_samples - s0.audio_samples) as f64 / 48000.0,
            gaps,
            ms(percentile(&mut lat, 50.0)),
            ms(percentile(&mut lat, 95.0)),
        );
        fps.push((f * 10.0) as u64);
        joins.extend(s.join_ms);
        freezes += frz;
        audio_gaps += gaps;
        latency.extend(lat);
    }
    let n = fps.len();
    let fps_median = median(&mut fps) as f64 / 10.0;
    let fps_min = fps.first().copied().unwrap_or(0) as f64 / 10.0;
    let join_median = median(&mut joins);
    let join_max = joins.last().copied().unwrap_or(0);
    println!(
        "summary: receivers={n} fps_median={fps_median:.1} fps_min={fps_min:.1} freezes={freezes} join_ms_median={join_median} join_ms_max={join_max} \
         joined={} expected={expected} audio_gaps={audio_gaps} latency_ms_median={} latency_ms_p95={} latency_samples={}",
        peers.len(),
        ms(percentile(&mut latency, 50.0)),
        ms(percentile(&mut latency, 95.0)),
        latency.len(),
    );
    for batch in peers.chunks(a.join_concurrency.max(1)) {
        let mut set = tokio::task::JoinSet::new();
        for p in batch {
            let p = Arc::clone(p);
            set.spawn(async move { p.leave().await });
        }
        while set.join_next().await.is_some() {}
    }
    anyhow::ensure!(failed == 0, "{failed} of {expected} peers could not join");
    Ok(())
}
