#!/usr/bin/env bash
# Server CPU of one Tessera room beside the bare GStreamer pipeline doing the same video work, in one run.
#
#   bash benches/room-cost.sh [N_PUBLISHERS=4] [RUNS=3]
#
# Each run measures, back to back on this machine:
#   reference  shared/reference/composite-reference.sh: N 640x360 VP8 decodes -> 1280x720 grid -> one VP8
#              encode, as fast as it goes (CPU seconds per media second), with and without prescaling;
#   room       `tessera serve` (its own process) while `tessera loadgen` joins N sendrecv publishers that
#              replay the same VP8 files (no client-side encode) and receive the composite: the server's
#              user+sys CPU from /proc/PID/stat over a steady window, per second;
#   +record    the same room plus one WebM recording (the room's VP8 and shared Opus: a mux, no encode);
#   +50 WHEP   the same room plus 50 WHEP viewers (they count packets instead of decoding).
# Prints a Markdown table of medians and ratios. Env: SHARED (default ../shared), MEDIA (default
# target/bench-media), WINDOW seconds (default 20), VIEWERS (default 50).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-4}; RUNS=${2:-3}
SHARED=${SHARED:-../shared}; MEDIA=${MEDIA:-target/bench-media}; WINDOW=${WINDOW:-20}; WARMUP=5; VIEWERS=${VIEWERS:-50}
BIN=target/release/tessera
cargo build --release --quiet
bash "$SHARED/reference/gen-media.sh" "$MEDIA" >/dev/null
tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# measure NAME LOADGEN_ARGS...: prints "cpu fps join freezes rss_mb"
measure() {
  local port=$((20000 + RANDOM % 20000)) dir; dir=$(mktemp -d)
  TESSERA_DRAIN_TIMEOUT=0s TESSERA_MAX_LOAD=1000 RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" --udp-ports 0 --media-ip 127.0.0.1 --recordings-dir "$dir" \
    >/tmp/tessera-bench-server.log 2>&1 &
  local spid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  "$BIN" loadgen --url "http://127.0.0.1:$port" --room bench --publishers "$N" --media "$MEDIA" \
    --duration $((WINDOW + WARMUP)) "$@" >/tmp/tessera-bench-loadgen.log 2>&1 &
  local lpid=$!
  for _ in $(seq 300); do
    c=$(curl -sf "http://127.0.0.1:$port/v1/rooms/bench" | grep -o '"video":true' | wc -l || true)
    [ "${c:-0}" -ge "$((N * 2))" ] && break; sleep 0.1
  done
  sleep "$WARMUP"
  local t0 s0 t1 s1 rss
  t0=$(cpu_ticks "$spid"); s0=$(date +%s.%N)
  sleep "$WINDOW"
  t1=$(cpu_ticks "$spid"); s1=$(date +%s.%N)
  rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$spid/status")
  wait "$lpid" || true
  kill "$spid"; wait "$spid" 2>/dev/null || true
  rm -rf "$dir"
  local sum; sum=$(grep '^summary:' /tmp/tessera-bench-loadgen.log || echo "summary: fps_median=0 join_ms_median=0 freezes=0")
  python3 -c "print(f'{($t1-$t0)/$tck/($s1-$s0):.3f}', end=' ')"
  echo "$(sed 's/.*fps_median=\([0-9.]*\).*/\1/' <<<"$sum") $(sed 's/.*join_ms_median=\([0-9]*\).*/\1/' <<<"$sum") $(sed 's/.*freezes=\([0-9]*\).*/\1/' <<<"$sum") $rss"
}

declare -A col
for run in $(seq 1 "$RUNS"); do
  r=$(bash "$SHARED/reference/composite-reference.sh" "$MEDIA" "$N" 1280 720 vp8 | sed 's/.*=//')
  rp=$(PRESCALE=bilinear bash "$SHARED/reference/composite-reference.sh" "$MEDIA" "$N" 1280 720 vp8 | sed 's/.*=//')
  col[ref]+="$r "; col[refp]+="$rp "
  for sc in room record viewers; do
    case $sc in
      room) out=$(measure) ;;
      record) out=$(measure --record webm) ;;
      viewers) out=$(measure --viewers "$VIEWERS" --viewers-count-only) ;;
    esac
    read -r cpu fps join frz rss <<<"$out"
    col[$sc.cpu]+="$cpu "; col[$sc.fps]+="$fps "; col[$sc.join]+="$join "; col[$sc.frz]+="$frz "; col[$sc.rss]+="$rss "
    echo "run $run $sc: cpu $cpu cores, fps $fps, join $join ms, freezes $frz, peak RSS $rss MB (reference $r, prescaled $rp)" >&2
  done
done
m() { tr ' ' '\n' <<<"${col[$1]}" | grep -v '^$' | median; }
R=$(m ref); RP=$(m refp)
echo
echo "$N publishers, 640x360 VP8 in, 1280x720 VP8 out; medians of $RUNS runs; cores = user+sys CPU seconds per second."
echo
echo "| scenario | tessera (cores) | bare GStreamer (cores) | ratio | receiver fps | join ms | freezes | peak RSS MB |"
echo "|---|---|---|---|---|---|---|---|"
for sc in room record viewers; do
  case $sc in room) label="room: $N publishers receiving the composite";; record) label="+ 1 WebM recording";; viewers) label="+ $VIEWERS WHEP viewers";; esac
  python3 -c "print(f'| $label | $(m $sc.cpu) | $R (prescaled $RP) | {$(m $sc.cpu)/$R:.2f} | $(m $sc.fps) | $(m $sc.join) | $(m $sc.frz) | $(m $sc.rss) |')"
done
python3 -c "print(); print(f'recording: +{$(m record.cpu)-$(m room.cpu):.3f} cores; $VIEWERS WHEP viewers: +{$(m viewers.cpu)-$(m room.cpu):.3f} cores ({($(m viewers.cpu)-$(m room.cpu))/$VIEWERS*100:.2f}% of a core each)')"
