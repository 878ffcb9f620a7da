#!/usr/bin/env bash
# A bad network beside a clean one, in one run: what receivers get when every peer's path drops
# datagrams and delays them.
#
#   bash benches/loss.sh [RUNS=3] [DURATION=30]
#
# Each run, back to back: one `tessera serve` per row, and `tessera loadgen` with 4 publishers
# (replaying the reference VP8 files, counting the composite's frames) and 2 WHEP viewers that
# decode it. The loss is made in user space (this kernel has no netem): `loadgen --loss --jitter-ms`
# puts each peer behind a UDP relay on loopback that drops that share of the datagrams and delays
# each of the others by a uniform 0..=MS ms, in both directions (src/client/loadgen/lossy.rs).
# Rows:
#   clean            no loss
#   5%+30ms          --loss 5 --jitter-ms 30
#   10%+30ms         --loss 10 --jitter-ms 30
# The server runs as configured by default (--jitter-ms 50, which its jitter buffers raise while
# they lose packets: src/media/jitter_target.rs).
# Prints a Markdown table of medians over RUNS: receivers' median and lowest fps, freezes (frame
# gaps over 200 ms, per receiver per minute) and audio gaps (over 100 ms without an audio packet,
# per receiver per minute). Env: MEDIA (default target/bench-media), SHARED (default ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}; DURATION=${2:-30}
SHARED=${SHARED:-../shared}; MEDIA=${MEDIA:-target/bench-media}
BIN=${BIN:-target/release/tessera}
OUT=target/bench-loss; mkdir -p "$OUT"
[ "$BIN" = target/release/tessera ] && cargo build --release --quiet
bash "$SHARED/reference/gen-media.sh" "$MEDIA" >/dev/null
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { sed -n "s/.* $1=\([0-9.-]*\).*/\1/p" <<<"$2"; }

# row NAME SERVER_ARGS -- LOADGEN_ARGS: prints "fps_median fps_min freezes/min audio_gaps/min"
row() {
  local sargs=() largs=() seen=0
  for x in "$@"; do
    if [ "$x" = -- ]; then seen=1; elif [ $seen = 0 ]; then sargs+=("$x"); else largs+=("$x"); fi
  done
  local port=$((20000 + RANDOM % 20000))
  TESSERA_DRAIN_TIMEOUT=0s RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" --media-ip 127.0.0.1 --udp-port 0 --tcp-port 0 \
    --recordings-dir "$OUT" "${sargs[@]}" >"$OUT/server.log" 2>&1 &
  local spid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  RUST_LOG=error "$BIN" loadgen --url "http://127.0.0.1:$port" --room loss --publishers 4 --viewers 2 \
    --publishers-count-only --media "$MEDIA" --duration "$DURATION" "${largs[@]}" >"$OUT/loadgen.log" 2>&1 || true
  kill "$spid"; wait "$spid" 2>/dev/null || true
  local s; s=$(grep '^summary:' "$OUT/loadgen.log" || echo "summary: fps_median=0 fps_min=0 freezes=0 audio_gaps=0 receivers=1")
  local n; n=$(field receivers "$s")
  python3 -c "
n, d = max(int('$n' or 1), 1), $DURATION / 60
print('$(field fps_median "$s")', '$(field fps_min "$s")', f'{int(\"$(field freezes "$s")\") / n / d:.1f}', f'{int(\"$(field audio_gaps "$s")\") / n / d:.1f}')"
}

names=("clean" "5% loss + 30 ms jitter" "10% loss + 30 ms jitter")
declare -A res
for run in $(seq 1 "$RUNS"); do
  res[0]+="$(row --)"$'\n'
  res[1]+="$(row -- --loss 5 --jitter-ms 30)"$'\n'
  res[2]+="$(row -- --loss 10 --jitter-ms 30)"$'\n'
  echo "run $run done" >&2
done
echo "| link | fps median | fps min | freezes /min/receiver | audio gaps /min/receiver |"
echo "|---|---:|---:|---:|---:|"
for i in 0 1 2; do
  rows=$(sed '/^$/d' <<<"${res[$i]}")
  printf '| %s | %s | %s | %s | %s |\n' "${names[$i]}" \
    "$(awk '{print $1}' <<<"$rows" | median)" "$(awk '{print $2}' <<<"$rows" | median)" \
    "$(awk '{print $3}' <<<"$rows" | median)" "$(awk '{print $4}' <<<"$rows" | median)"
done
echo
echo "medians of $RUNS runs of $DURATION s; 4 publishers (count frames) + 2 decoding WHEP viewers; bash benches/loss.sh $RUNS $DURATION"
