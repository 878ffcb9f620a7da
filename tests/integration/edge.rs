//! The WebRTC edge: every peer connection on one UDP port; a client that can use ICE-TCP only
//! (RFC 6544); a client that reaches Tessera only through a TURN relay (a real coturn, the client
//! in a network namespace whose only route is to the TURN server's address).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tessera::client::loadgen::IcePath;
use tessera::config::Config;

use crate::common::{self, PeerOpts, close, tone_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_peers_share_one_udp_port() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    let shared = srv.rooms.deps().transport.shared_udp().expect("media on one shared UDP port").local_addr();
    let a = common::join(srv.addr, "many", PeerOpts::publisher("a", (200, 40, 40), 500.0)).await;
    let mut viewers = vec![];
    for i in 0..12 {
        let mut o = PeerOpts::viewer(&format!("v{i}"));
        o.decode = false;
        viewers.push(common::join(srv.addr, "many", o).await);
    }
    for v in &viewers {
        assert!(v.wait_frames(30, Duration::from_secs(15)).await, "{} receives the composite", v.opts.name);
    }
    let f = a.wait_frame(Duration::from_secs(10), |f| close(f.colour_at(640, 360, 40), (200, 40, 40), 45)).await;
    assert!(f.is_some_and(|f| close(f.colour_at(640, 360, 40), (200, 40, 40), 45)));
    let udp = srv.rooms.deps().transport.shared_udp().unwrap();
    assert_eq!(udp.peers(), 13, "13 peer connections routed on {shared}");
    assert_eq!(udp.stats.inbox_full.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_tcp_only_client_joins_and_plays() {
    let _serial = common::serial().await;
    let srv = common::server().await;
    assert!(srv.rooms.deps().transport.shared_tcp_addr().is_some(), "ICE-TCP is on by default");
    let _a = common::join(srv.addr, "tcp", PeerOpts::publisher("a", (40, 200, 40), 600.0)).await;
    let mut o = PeerOpts::viewer("tcp-only");
    o.ice = IcePath::TcpOnly;
    let v = common::join(srv.addr, "tcp", o).await;
    let f = v.wait_frame(Duration::from_secs(15), |f| close(f.colour_at(640, 360, 40), (40, 200, 40), 45)).await;
    assert!(f.is_some_and(|f| close(f.colour_at(640, 360, 40), (40, 200, 40), 45)), "the composite over ICE-TCP");
    let s = v.audio_window(48000, Duration::from_secs(10)).await;
    assert!(tone_db(&s, 600.0) > -30.0, "the mix over ICE-TCP: {:.1} dB", tone_db(&s, 600.0));
}

/// A network namespace with one veth link to the host (`10.213.N.1` host side, `.2` inside), and
/// no other route: from inside, only the host's `.1` address is reachable. Removed on drop.
struct Netns {
    name: String,
    host_if: String,
    host_ip: String,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Netns {
    fn new() -> Self {
        let n = std::process::id() % 200 + 20;
        let (name, host_if, ns_if) = (format!("tessera-turn-{n}"), format!("tt{n}h"), format!("tt{n}n"));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let host_ip = format!("10.213.{n}.1");
        run(&["ip", "netns", "add", &name]);
        let ns = Self { name: name.clone(), host_if: host_if.clone(), host_ip: host_ip.clone() };
        run(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        run(&["ip", "link", "set", &ns_if, "netns", &name]);
        run(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        run(&["ip", "link", "set", &host_if, "up"]);
        run(&["ip", "netns", "exec", &name, "ip", "addr", "add", &format!("10.213.{n}.2/30"), "dev", &ns_if]);
        run(&["ip", "netns", "exec", &name, "ip", "link", "set", &ns_if, "up"]);
        run(&["ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
    }
}

/// Waits (up to 10 s) until a STUN server answers a Binding request at `addr`.
fn wait_for_stun(addr: SocketAddr) {
    let sock = std::net::UdpSocket::bind((addr.ip(), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    // Binding request: type 0x0001, length 0, magic cookie, transaction id.
    let mut req = vec![0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&[7; 12]);
    let mut buf = [0u8; 512];
    for _ in 0..50 {
        let _ = sock.send_to(&req, addr);
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && n >= 20
            && buf[0] == 0x01
        {
            return;
        }
    }
    panic!("no STUN answer from coturn at {addr} within 10 s");
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reaches_tessera_only_through_turn_joins_and_plays() {
    let _serial = common::serial().await;
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    assert_eq!(uid.as_deref().ok(), Some("0"), "this test makes a network namespace: run it as root (CI does)");
    let ns = Netns::new();
    // coturn on the host side of the link, relaying to Tessera's loopback media (a relay that
    // may reach loopback peers: Tessera is on this machine).
    let turn_port = 3478 + (std::process::id() % 500) as u16;
    let turn = Proc(
        Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--lt-cred-mech", "--fingerprint"])
            .args(["--user=u:p", "--realm=tessera", "--allow-loopback-peers", "--no-software-attribute"])
            .arg(format!("--listening-ip={}", ns.host_ip))
            .arg("--relay-ip=127.0.0.1")
            .arg(format!("--listening-port={turn_port}"))
            .args(["--min-port=49152", "--max-port=49999", "--log-file=stdout", "--simple-log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("coturn (`turnserver`, Debian package coturn) starts"),
    );
    // Signaling on the link's host address (the namespace's only route), media on loopback only:
    // from the namespace, Tessera's candidates are unreachable.
    let cfg = Config {
        listen: format!("{}:0", ns.host_ip).parse::<SocketAddr>().unwrap(),
        insecure: true,
        ..Config::default()
    };
    let srv = tessera::server::Server::start(Config {
        udp_port: 0,
        tcp_port: 0,
        media_ip: Some("127.0.0.1".parse().unwrap()),
        ..cfg
    })
    .await
    .expect("server starts");
    let _a = common::join(srv.addr, "turn", PeerOpts::publisher("a", (40, 40, 200), 500.0)).await;
    let turn_addr: SocketAddr = format!("{}:{turn_port}", ns.host_ip).parse().unwrap();
    tokio::task::spawn_blocking(move || wait_for_stun(turn_addr)).await.unwrap();
    let url = format!("http://{}", srv.addr);
    let ice = format!("turn:u:p@{}:{turn_port}?transport=udp", ns.host_ip);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("ip")
            .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_tessera"), "loadgen", "--url", &url])
            .args(["--room", "turn", "--publishers", "0", "--viewers", "1", "--duration", "4", "--ice-server", &ice])
            .env("RUST_LOG", "warn")
            .output()
            .expect("tessera loadgen runs in the namespace")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout.lines().find(|l| l.starts_with("summary:")).unwrap_or_default().to_string();
    let field = |k: &str| -> f64 {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(
        out.status.success() && field("joined") == 1.0 && field("fps_median") >= 20.0,
        "the relayed viewer joins and plays: {summary}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(turn);
}
