#!/usr/bin/env bash
# Idle rooms: what N rooms made by `PUT /v1/rooms/{room}`, with nobody in them, cost a server.
# Starts `tessera serve` on a free loopback port, reads its threads, makes N rooms, waits 2 s,
# then reads threads and CPU seconds (user + system, /proc/PID/stat) over a window.
#
#   bash benches/idle-rooms.sh [BIN] [N] [SECONDS]     # defaults: target/release/tessera 100 30
#
# Prints one line per reading and a summary line:
#   idle-rooms: bin=... rooms=100 threads 12 -> 14 (+2) cpu 0.03 s in 30 s (0.001 cores)
set -euo pipefail
BIN=${1:-target/release/tessera}
N=${2:-100}
SECS=${3:-30}
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
REC=$(mktemp -d)
RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$PORT" --udp-port 0 --tcp-port 0 --recordings-dir "$REC" \
  >/dev/null 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$REC"' EXIT
for _ in $(seq 1 200); do
  curl -fsS -o /dev/null "$URL/healthz" 2>/dev/null && break
  sleep 0.05
done
# Field 20 of /proc/PID/stat: threads; 14 + 15: user + system time in clock ticks (USER_HZ).
threads() { awk '{print $20}' "/proc/$PID/stat"; }
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
HZ=$(getconf CLK_TCK)
T0=$(threads)
echo "server up: $T0 threads"
for i in $(seq 1 "$N"); do
  code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT "$URL/v1/rooms/idle-$i")
  [ "$code" = 201 ] || { echo "PUT idle-$i: $code" >&2; exit 1; }
done
sleep 2
T1=$(threads)
C0=$(ticks)
sleep "$SECS"
C1=$(ticks)
T2=$(threads)
echo "after $N rooms: $T1 threads; after ${SECS} s more: $T2 threads"
python3 - "$BIN" "$N" "$T0" "$T2" "$C0" "$C1" "$HZ" "$SECS" <<'PY'
import sys
b, n, t0, t2, c0, c1, hz, secs = sys.argv[1:]
cpu = (int(c1) - int(c0)) / int(hz)
print(f"idle-rooms: bin={b} rooms={n} threads {t0} -> {t2} (+{int(t2) - int(t0)}) "
      f"cpu {cpu:.2f} s in {secs} s ({cpu / float(secs):.3f} cores)")
PY
