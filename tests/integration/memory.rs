//! The allocator policy of `src/allocator.rs` is what runs: the `tessera` binary allocates with
//! jemalloc (the C libraries too) and has its purging thread, which gives freed pages back to the
//! kernel (`benches/soak.sh` measures the effect).

use std::process::{Command, Stdio};

use crate::common;

/// Thread names (`/proc/PID/task/*/comm`) of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return vec![] };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_allocates_with_jemalloc_and_purges_in_the_background() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("tessera-memory-{port}"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--udp-port",
            "0",
            "--tcp-port",
            "0",
            "--media-ip",
            "127.0.0.1",
        ])
        .arg("--recordings-dir")
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .env_remove("MALLOC_CONF")
        .stdout(Stdio::null())
        .spawn()
        .expect("tessera binary");
    common::wait_healthy(&format!("http://127.0.0.1:{port}"), "server").await;
    let names = thread_names(child.id());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        names.iter().any(|n| n.starts_with("jemalloc_bg_thd")),
        "no jemalloc background thread among the server's threads: {names:?}"
    );
}
