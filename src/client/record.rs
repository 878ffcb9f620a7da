//! `tessera record`: record a room of a running server from the command line.

use std::time::{Duration, Instant};

use clap::Args;

use crate::client::loadgen::http_auth;

/// Options of `tessera record`.
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Room to record.
    #[arg(long)]
    pub room: String,
    /// File name on the server (under its `--recordings-dir`); the extension picks the format
    /// (`.mp4`, `.webm`, `.mkv`; default `.webm`).
    #[arg(long)]
    pub out: Option<String>,
    /// Admin token for a server with `--api-secret`.
    #[arg(long, env = "TESSERA_TOKEN")]
    pub token: Option<String>,
}

fn format_of(out: Option<&str>) -> &'static str {
    match out.and_then(|o| o.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase()) {
        Some(e) if e == "mp4" => "mp4",
        Some(e) if e == "mkv" => "mkv",
        _ => "webm",
    }
}

/// Starts a recording, prints a progress line every second (duration, size, bitrate) until
/// Ctrl-C, then stops it and prints where the finalized file is.
///
/// # Errors
/// The server refuses or cannot be reached.
pub async fn run(a: RecordArgs) -> anyhow::Result<()> {
    let base = format!("{}/v1/rooms/{}/recordings", a.url.trim_end_matches('/'), a.room);
    let mut body = serde_json::json!({ "format": format_of(a.out.as_deref()) });
    if let Some(out) = &a.out {
        body["file"] = out.clone().into();
    }
    let token = a.token.as_deref();
    let r = http_auth("POST", &base, Some("application/json"), body.to_string().into_bytes(), token).await?;
    anyhow::ensure!(r.status == 201, "cannot start recording: HTTP {}: {}", r.status, r.body.trim());
    let rec: serde_json::Value = serde_json::from_str(&r.body)?;
    let id = rec["id"].as_str().unwrap_or_default().to_string();
    eprintln!("recording {id} to {} (Ctrl-C to stop)", rec["file"].as_str().unwrap_or_default());
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                let r = http_auth("GET", &format!("{base}/{id}"), None, vec![], token).await?;
                if r.status != 200 {
                    anyhow::bail!("recording is gone: HTTP {}: {}", r.status, r.body.trim());
                }
                let info: serde_json::Value = serde_json::from_str(&r.body)?;
                let (d, size) = (info["duration_s"].as_f64().unwrap_or(0.0), info["size_bytes"].as_u64().unwrap_or(0));
                let kbps = if d > 0.0 { size as f64 * 8.0 / d / 1000.0 } else { 0.0 };
                eprint!("\r{:>8.1} s  {:>10.1} KiB  {:>7.0} kbit/s  ", d, size as f64 / 1024.0, kbps);
                if info["state"] != "recording" {
                    eprintln!();
                    anyhow::bail!("recording stopped on the server: {}", info["state"]);
                }
            }
        }
    }
    eprintln!();
    let r = http_auth("DELETE", &format!("{base}/{id}"), None, vec![], token).await?;
    anyhow::ensure!(r.status == 200, "cannot stop recording: HTTP {}: {}", r.status, r.body.trim());
    let info: serde_json::Value = serde_json::from_str(&r.body)?;
    println!(
        "{} {:.1} s {} bytes ({}) after {:.1} s",
        info["file"].as_str().unwrap_or_default(),
        info["duration_s"].as_f64().unwrap_or(0.0),
        info["size_bytes"],
        info["state"].as_str().unwrap_or_default(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn format_from_extension() {
        assert_eq!(super::format_of(Some("a.MP4")), "mp4");
        assert_eq!(super::format_of(Some("a.mkv")), "mkv");
        assert_eq!(super::format_of(Some("a")), "webm");
        assert_eq!(super::format_of(None), "webm");
    }
}
