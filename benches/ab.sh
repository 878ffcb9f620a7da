#!/usr/bin/env bash
# A/B of two Tessera builds under the same load at the same time, to see changes smaller than this
# VM's run-to-run swing (10-30%: everything in a run gets faster or slower together).
#
#   bash benches/ab.sh OLD_BINARY NEW_BINARY [PAIRS] [-- LOADGEN ARGS...]
#   e.g.  cp target/release/tessera /tmp/old; <change, cargo build --release>;
#         bash benches/ab.sh /tmp/old target/release/tessera 3
#
# Each pair runs the two servers side by side, each driven by its own `tessera loadgen` (NEW's
# binary; default: 9 publishers, --publishers-count-only --join-concurrency 1 --latency, as the
# pubs9-720 scenario of scale.sh), and reads both servers' user+sys CPU (/proc/PID/stat) over the
# same WINDOW seconds after everyone joined + WARMUP. Pairs alternate which build starts first (an
# A/A run showed ~2% in favour of the second). Prints each pair and the median of NEW/OLD.
# Env: MEDIA (default target/bench-media, made by scale.sh), WINDOW (20), WARMUP (4).
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: ab.sh OLD_BINARY NEW_BINARY [PAIRS] [-- LOADGEN ARGS]}; NEW=${2:?new binary}; shift 2
PAIRS=1
if [ $# -gt 0 ] && [ "$1" != -- ]; then PAIRS=$1; shift; fi
[ "${1:-}" = -- ] && shift
LGARGS=("$@")
[ ${#LGARGS[@]} -gt 0 ] || LGARGS=(--publishers 9 --publishers-count-only --join-concurrency 1 --latency)
MEDIA=${MEDIA:-target/bench-media}; WINDOW=${WINDOW:-20}; WARMUP=${WARMUP:-4}
[ -s "$MEDIA/v0.webm" ] || { echo "no reference media in $MEDIA (run benches/scale.sh --quick once)" >&2; exit 2; }
OUT=target/bench-ab; mkdir -p "$OUT"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
# pair FIRST SECOND: sets PR to "cpu_first cpu_second" (cores)
pair() {
  local bins=("$1" "$2") ports=() spids=() lpids=() i
  for i in 0 1; do
    ports[i]=$((20000 + RANDOM % 20000))
    TESSERA_DRAIN_TIMEOUT=0s TESSERA_MAX_LOAD=1000 RUST_LOG=warn "${bins[i]}" serve --listen "127.0.0.1:${ports[i]}" --udp-ports 0 --media-ip 127.0.0.1 >"$OUT/server-$i.log" 2>&1 &
    spids[i]=$!; PIDS+=("${spids[i]}")
  done
  for i in 0 1; do
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:${ports[i]}/healthz" >/dev/null && break; sleep 0.1; done
  done
  for i in 0 1; do
    "$NEW" loadgen --url "http://127.0.0.1:${ports[i]}" --room ab --media "$MEDIA" --duration $((WARMUP + WINDOW + 8)) \
      "${LGARGS[@]}" >"$OUT/loadgen-$i.log" 2>&1 &
    lpids[i]=$!; PIDS+=("${lpids[i]}")
  done
  for i in 0 1; do
    until grep -q '^joined:' "$OUT/loadgen-$i.log" 2>/dev/null; do
      kill -0 "${lpids[i]}" 2>/dev/null || { echo "loadgen $i ended before joining (see $OUT/loadgen-$i.log)" >&2; exit 1; }
      sleep 0.2
    done
  done
  sleep "$WARMUP"
  local a0 b0 a1 b1
  a0=$(ticks "${spids[0]}"); b0=$(ticks "${spids[1]}"); sleep "$WINDOW"; a1=$(ticks "${spids[0]}"); b1=$(ticks "${spids[1]}")
  wait "${lpids[0]}" "${lpids[1]}" || true
  kill "${spids[0]}" "${spids[1]}" 2>/dev/null || true; wait "${spids[0]}" "${spids[1]}" 2>/dev/null || true
  PIDS=()
  local tck; tck=$(getconf CLK_TCK)
  PR=$(awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v t="$tck" -v w="$WINDOW" 'BEGIN {printf "%.3f %.3f", a / t / w, b / t / w}')
}

ratios=()
for n in $(seq 1 "$PAIRS"); do
  for order in old-first new-first; do
    if [ $order = old-first ]; then pair "$OLD" "$NEW"; read -r o nw <<<"$PR"; else pair "$NEW" "$OLD"; read -r nw o <<<"$PR"; fi
    r=$(awk -v a="$o" -v b="$nw" 'BEGIN {printf "%.3f", b / a}')
    ratios+=("$r")
    echo "pair $n ($order): old $o cores, new $nw cores, new/old $r"
  done
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END {m = NR % 2 ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2; printf "median new/old over %d runs: %.3f\n", NR, m}'
