#!/usr/bin/env bash
# HTTP hygiene under abuse: IDLE idle connections (nothing sent), SLOW slowloris connections (a
# header line every second, never the end of the headers) and STALLED stalled bodies (headers
# with Content-Length, then a few bytes and silence), all opened at once against a release
# `tessera serve`, while /healthz is fetched on a fresh connection every 50 ms by a separate
# process from another address. Prints /healthz latency percentiles per phase (opening,
# holding, after the timeouts) and how long the server took to close each kind of connection.
#
#   benches/http-hygiene.sh [IDLE=10000] [SLOW=500] [STALLED=500]
#   (env: PORT, HEADER_MS, IDLE_MS, BODY_MS: the server's timeouts)
#
# Raises `ulimit -n` (the client holds every connection too). The attack connections come from
# 127.0.0.2 and up (500 per address, loopback), the probe from 127.0.0.1; the server gets caps
# that let it hold every attack connection, so what is measured is the timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${1:-10000}
SLOW=${2:-500}
STALLED=${3:-500}
PORT=${PORT:-18480}
HEADER_MS=${HEADER_MS:-10000}
IDLE_MS=${IDLE_MS:-30000}
BODY_MS=${BODY_MS:-10000}

ulimit -n "$(ulimit -Hn)"
echo "ulimit -n: $(ulimit -n); server timeouts: header ${HEADER_MS} ms, idle ${IDLE_MS} ms, body ${BODY_MS} ms"
[ -x target/release/tessera ] || cargo build --release --bin tessera
log=$(mktemp)
probes=$(mktemp)
target/release/tessera serve --listen "127.0.0.1:$PORT" --udp-port 0 --tcp-port 0 \
  --http-header-timeout-ms "$HEADER_MS" --http-idle-timeout-ms "$IDLE_MS" --http-body-timeout-ms "$BODY_MS" \
  --http-max-connections $((IDLE + SLOW + STALLED + 1000)) --http-max-connections-per-ip 1000 \
  >"$log" 2>&1 &
server=$!
prober=
trap 'kill $prober $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log" "$probes"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.1
done

# The probe: its own process, so the attack's event loop cannot delay it.
python3 - "$PORT" "$probes" <<'PY' &
import socket, sys, time
port, out = int(sys.argv[1]), open(sys.argv[2], "w", buffering=1)
while True:
    start = time.time()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        s.close()
        out.write(f"{start} {time.time() - start if data.startswith(b'HTTP/1.1 200') else -1}\n")
    except OSError:
        out.write(f"{start} -1\n")
    time.sleep(0.05)
PY
prober=$!

python3 - "$PORT" "$IDLE" "$SLOW" "$STALLED" "$probes" <<'PY'
import asyncio, resource, socket, sys, time

port, n_idle, n_slow, n_stalled = (int(x) for x in sys.argv[1:5])
probe_file = sys.argv[5]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
PER_ADDR = 500
t0, wall0 = time.monotonic(), time.time()
closed = {"idle": [], "slowloris": [], "stalled": []}
opened = {"idle": 0, "slowloris": 0, "stalled": 0}
marks = {}

async def connect(i):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.bind((f"127.0.0.{2 + i // PER_ADDR}", 0))
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
    return s

async def until_closed(s, kind, start):
    loop = asyncio.get_running_loop()
    try:
        while await loop.sock_recv(s, 4096):
            pass
    except OSError:
        pass
    closed[kind].append(time.monotonic() - start)
    s.close()

async def idle(i):
    s = await connect(i)
    opened["idle"] += 1
    await until_closed(s, "idle", time.monotonic())

async def slowloris(i):
    s = await connect(i)
    opened["slowloris"] += 1
    loop = asyncio.get_running_loop()
    reader = asyncio.ensure_future(until_closed(s, "slowloris", time.monotonic()))
    try:
        await loop.sock_sendall(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        n = 0
        while not reader.done():
            await asyncio.sleep(1.0)
            await loop.sock_sendall(s, f"X-Slow-{n}: 1\r\n".encode())
            n += 1
    except OSError:
        pass
    await reader

async def stalled(i):
    s = await connect(i)
    opened["stalled"] += 1
    start = time.monotonic()
    await asyncio.get_running_loop().sock_sendall(
        s, b"POST /whip/bench HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\n")
    await until_closed(s, "stalled", start)

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")

def report(probes, name, lo, hi):
    lat = [l for t, l in probes if lo <= t < hi and l is not None]
    failed = sum(1 for t, l in probes if lo <= t < hi and l is None)
    if lat or failed:
        print(f"/healthz {name:<27} n={len(lat):4d} failed={failed:3d}  p50={pct(lat,50)*1000:6.1f} ms  "
              f"p90={pct(lat,90)*1000:6.1f} ms  p99={pct(lat,99)*1000:6.1f} ms  max={max(lat or [float('nan')])*1000:6.1f} ms")

async def main():
    await asyncio.sleep(1.0)
    marks["open"] = time.monotonic() - t0
    tasks, i = [], 0
    for n, f in [(n_idle, idle), (n_slow, slowloris), (n_stalled, stalled)]:
        for _ in range(n):
            tasks.append(asyncio.ensure_future(f(i)))
            i += 1
            if i % 200 == 0:
                await asyncio.sleep(0)
    while sum(opened.values()) < n_idle + n_slow + n_stalled and time.monotonic() - t0 < 120:
        await asyncio.sleep(0.05)
    marks["held"] = time.monotonic() - t0
    print(f"opened {opened} in {marks['held'] - marks['open']:.1f} s")
    done, pending = await asyncio.wait(tasks, timeout=120)
    marks["closed"] = time.monotonic() - t0
    await asyncio.sleep(2.0)
    for t in pending:
        t.cancel()
    probes = []  # (seconds since start, latency in s or None)
    for line in open(probe_file):
        t, l = line.split()
        probes.append((float(t) - wall0, float(l) if float(l) >= 0 else None))
    report(probes, "before", -1e9, marks["open"])
    report(probes, "while opening", marks["open"], marks["held"])
    report(probes, "all open, until all closed", marks["held"], marks["closed"])
    report(probes, "after", marks["closed"], 1e9)
    report(probes, "whole run", -1e9, 1e9)
    for kind, ts in closed.items():
        if ts:
            print(f"closed by the server: {kind:<9} {len(ts):5d}/{opened[kind]:5d} after "
                  f"min={min(ts):5.1f} s  p50={pct(ts,50):5.1f} s  max={max(ts):5.1f} s")
    print(f"still open after 120 s: {len(pending)}")

asyncio.run(main())
PY
echo "server metrics:"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^tessera_http|^process_open_fds' || true
