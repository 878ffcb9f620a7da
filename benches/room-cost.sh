#!/usr/bin/env bash
# Server CPU of one Tessera room beside the bare GStreamer pipeline doing the same video work, in one run.
#
#   bash benches/room-cost.sh [N_PUBLISHERS=4] [RUNS=3]
#
# For each run: (1) shared/reference/composite-reference.sh decodes N 640x360 VP8 streams, composites a
# 1280x720 grid and encodes VP8 once (CPU seconds per media second; with and without prescaling);
# (2) `tessera serve` runs as its own process while `tessera loadgen` joins N sendrecv publishers that
# replay the same VP8 files (no client-side encode) and receive the composite; the server's user+sys CPU
# comes from /proc/PID/stat over a steady window. Prints a Markdown table of medians and ratios.
# Env: SHARED (default ../shared), MEDIA (default target/bench-media), WINDOW seconds (default 20).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4}; RUNS=${2:-3}
SHARED=${SHARED:-../shared}; MEDIA=${MEDIA:-target/bench-media}; WINDOW=${WINDOW:-20}; WARMUP=5
BIN=target/release/tessera
cargo build --release --quiet
bash "$SHARED/reference/gen-media.sh" "$MEDIA" >/dev/null
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

port=$((20000 + RANDOM % 20000))
ref=(); refp=(); srv=(); fps=(); joins=(); freezes=()
for run in $(seq 1 "$RUNS"); do
  r=$(bash "$SHARED/reference/composite-reference.sh" "$MEDIA" "$N" 1280 720 vp8 | sed 's/.*=//')
  rp=$(PRESCALE=bilinear bash "$SHARED/reference/composite-reference.sh" "$MEDIA" "$N" 1280 720 vp8 | sed 's/.*=//')
  ref+=("$r"); refp+=("$rp")
  RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" --udp-ports 0 --media-ip 127.0.0.1 >/tmp/tessera-bench-server.log 2>&1 &
  spid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  "$BIN" loadgen --url "http://127.0.0.1:$port" --room bench --publishers "$N" --media "$MEDIA" \
    --duration $((WINDOW + WARMUP)) >/tmp/tessera-bench-loadgen.log 2>&1 &
  lpid=$!
  # Wait until the room has N publishers, then let it settle.
  for _ in $(seq 200); do
    c=$(curl -sf "http://127.0.0.1:$port/v1/rooms/bench" | grep -o '"video":true' | wc -l || true)
    [ "${c:-0}" -ge "$((N * 2))" ] && break; sleep 0.1
  done
  sleep "$WARMUP"
  t0=$(cpu_ticks "$spid"); s0=$(date +%s.%N)
  sleep "$WINDOW"
  t1=$(cpu_ticks "$spid"); s1=$(date +%s.%N)
  wait "$lpid" || true
  kill "$spid"; wait "$spid" 2>/dev/null || true
  s=$(python3 -c "print(f'{($t1-$t0)/$tck/($s1-$s0):.3f}')")
  srv+=("$s")
  sum=$(grep '^summary:' /tmp/tessera-bench-loadgen.log || echo "summary: fps_median=0 join_ms_median=0 freezes=0")
  fps+=("$(sed 's/.*fps_median=\([0-9.]*\).*/\1/' <<<"$sum")")
  joins+=("$(sed 's/.*join_ms_median=\([0-9]*\).*/\1/' <<<"$sum")")
  freezes+=("$(sed 's/.*freezes=\([0-9]*\).*/\1/' <<<"$sum")")
  echo "run $run: reference $r (prescaled $rp), tessera $s cores; $sum" >&2
done
R=$(printf '%s\n' "${ref[@]}" | median); RP=$(printf '%s\n' "${refp[@]}" | median); S=$(printf '%s\n' "${srv[@]}" | median)
F=$(printf '%s\n' "${fps[@]}" | median); J=$(printf '%s\n' "${joins[@]}" | median); Z=$(printf '%s\n' "${freezes[@]}" | median)
echo
echo "| scenario | tessera CPU (cores) | bare GStreamer (cores) | ratio | bare prescaled | ratio | receiver fps | join ms | freezes |"
echo "|---|---|---|---|---|---|---|---|---|"
python3 -c "print(f'| {$N} x 360p VP8 in, 1280x720 VP8 out, {$N} receivers (median of $RUNS) | $S | $R | {$S/$R:.2f} | $RP | {$S/$RP:.2f} | $F | $J | $Z |')"
