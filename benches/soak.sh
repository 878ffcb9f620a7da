#!/usr/bin/env bash
# Soak: does a long-running server give back what its rooms took?
#
#   bash benches/soak.sh [CYCLES=30] [IDLE_S=60]
#
# One `tessera serve` (its own process); CYCLES rooms one after the other, each joined by
# `tessera loadgen` for DURATION seconds and then left (the load generator DELETEs its peers), in a
# rotation of four kinds of room so every path that allocates is exercised:
#   av        8 publishers, audio + video (the reference VP8 files), receiving the composite
#   audio     8 publishers, audio only (no video at all)
#   whep      4 publishers + 4 WHEP viewers
#   record    4 publishers + a WebM recording of the room
# After each cycle (once the room is gone from GET /v1/rooms) it samples the server's RSS
# (VmRSS, MiB), threads, open fds and CPU seconds (utime+stime); after the last one it waits
# IDLE_S seconds with no room and samples again.
#
# Prints a table per cycle, then:
#   joins            participant joins in all (publishers + viewers)
#   rss_first        RSS after the first cycle, MiB
#   rss_idle         RSS after the last cycle and IDLE_S idle seconds, MiB
#   slope_last_half  least-squares slope of RSS over joins in the last half of the cycles,
#                    MiB per 1000 joins
# and writes target/bench-soak/soak.tsv and target/bench-soak/soak.png (gnuplot: RSS and threads
# against joins). Issue 14's bar: >= 200 joins, rss_idle - rss_first <= 20 MiB, slope_last_half
# < 10 MiB per 1000 joins.
#
# Env: MEDIA (default target/bench-media, made by ../shared/reference/gen-media.sh), SHARED
# (default ../shared), DURATION (s per room, default 5), SERVER_ENV (extra environment for the
# server, e.g. "TESSERA_ALLOCATOR_TRIM=false" to see the allocator keep its pages), BIN (default
# target/release/tessera).
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${1:-30}; IDLE_S=${2:-60}
DURATION=${DURATION:-5}; SHARED=${SHARED:-../shared}; MEDIA=${MEDIA:-target/bench-media}
BIN=${BIN:-target/release/tessera}
OUT=target/bench-soak; mkdir -p "$OUT"
TSV=$OUT/soak.tsv
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo env DEBIAN_FRONTEND=noninteractive "$@"; fi; }
if ! command -v gnuplot >/dev/null; then
  echo "installing gnuplot-nox for the chart" >&2
  as_root apt-get install -y --no-install-recommends gnuplot-nox >/dev/null \
    || as_root sh -c 'apt-get update && apt-get install -y --no-install-recommends gnuplot-nox' >/dev/null
fi
[ "${BIN}" = target/release/tessera ] && cargo build --release --quiet
bash "$SHARED/reference/gen-media.sh" "$MEDIA" >/dev/null
tck=$(getconf CLK_TCK)

port=$((20000 + RANDOM % 20000)); rec=$(mktemp -d)
# shellcheck disable=SC2086
env TESSERA_DRAIN_TIMEOUT=0s ${SERVER_ENV:-} RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" --media-ip 127.0.0.1 \
  --recordings-dir "$rec" >"$OUT/server.log" 2>&1 &
spid=$!
trap 'kill $spid 2>/dev/null || true; rm -rf "$rec"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port"

sample() { # prints "rss_mib threads fds cpu_s"
  local rss thr fds cpu
  rss=$(awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$spid/status")
  thr=$(awk '/^Threads/ {print $2}' "/proc/$spid/status")
  fds=$(find "/proc/$spid/fd" -mindepth 1 -maxdepth 1 | wc -l)
  cpu=$(awk -v t="$tck" '{printf "%.1f", ($14+$15)/t}' "/proc/$spid/stat")
  echo "$rss $thr $fds $cpu"
}
rooms_gone() { # waits until the server lists no room (15 s at most)
  for _ in $(seq 150); do
    curl -sf "$url/v1/rooms" | tr -d ' \n' | grep -q '"rooms":\[\]' && return 0
    sleep 0.1
  done
  echo "warning: rooms still listed: $(curl -sf "$url/v1/rooms")" >&2
}

settled() { # waits until the thread count holds still for a second (a room's threads end after it is unlisted; 15 s at most)
  local prev=-1 now
  for _ in $(seq 15); do
    now=$(awk '/^Threads/ {print $2}' "/proc/$spid/status")
    [ "$now" = "$prev" ] && return 0
    prev=$now; sleep 1
  done
}

printf 'cycle\tkind\tjoins\trss_mib\tthreads\tfds\tcpu_s\n' >"$TSV"
printf 'start\t-\t0\t%s\n' "$(sample | tr ' ' '\t')" >>"$TSV"
joins=0
for c in $(seq 1 "$CYCLES"); do
  case $(((c - 1) % 4)) in
    0) kind=av; args=(--publishers 8); n=8 ;;
    1) kind=audio; args=(--publishers 8 --video-publishers 0); n=8 ;;
    2) kind=whep; args=(--publishers 4 --viewers 4 --viewers-count-only); n=8 ;;
    3) kind=record; args=(--publishers 4 --record webm); n=4 ;;
  esac
  "$BIN" loadgen --url "$url" --room "soak$c" --media "$MEDIA" --duration "$DURATION" \
    --publishers-count-only "${args[@]}" >"$OUT/loadgen-$c.log" 2>&1 \
    || echo "warning: cycle $c ($kind): loadgen failed, see $OUT/loadgen-$c.log" >&2
  # A room made by a join ends with its last participant.
  curl -sf -X DELETE "$url/v1/rooms/soak$c" >/dev/null 2>&1 || true
  rooms_gone
  settled
  joins=$((joins + n))
  printf '%s\t%s\t%s\t%s\n' "$c" "$kind" "$joins" "$(sample | tr ' ' '\t')" >>"$TSV"
  tail -1 "$TSV"
done
sleep "$IDLE_S"
printf 'idle\t-\t%s\t%s\n' "$joins" "$(sample | tr ' ' '\t')" >>"$TSV"
tail -1 "$TSV"

python3 - "$TSV" "$CYCLES" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
cycles = [r for r in rows if r[0].isdigit()]
first, idle = float(cycles[0][3]), float(rows[-1][3])
half = cycles[len(cycles) // 2:]
xs = [float(r[2]) for r in half]; ys = [float(r[3]) for r in half]
mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
den = sum((x - mx) ** 2 for x in xs)
slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 1000 if den else 0.0
print(f"joins={int(float(rows[-1][2]))} rss_start={float(rows[0][3]):.1f} rss_first={first:.1f} "
      f"rss_max={max(float(r[3]) for r in cycles):.1f} rss_idle={idle:.1f} "
      f"idle_minus_first={idle - first:+.1f} slope_last_half_mib_per_1000_joins={slope:.2f} "
      f"threads_start={rows[0][4]} threads_idle={rows[-1][4]} fds_start={rows[0][5]} fds_idle={rows[-1][5]}")
EOF

grep -v idle "$TSV" | grep -v '^start' >"$OUT/cycles.tsv"
gnuplot <<EOF
set terminal pngcairo size 900,500 font "Sans,10"
set output "$OUT/soak.png"
set title "Tessera soak: RSS and threads after each room (rooms of 4-8 joins, in turn av / audio / whep / record)"
set xlabel "participant joins"
set ylabel "RSS (MiB)"
set y2label "threads"
set ytics nomirror; set y2tics
set yrange [0:*]; set y2range [0:*]
set key top left
set grid
plot "$OUT/cycles.tsv" using 3:4 with linespoints lw 2 pt 7 title "RSS after the room ended", \
     "" using 3:5 axes x1y2 with linespoints pt 6 title "threads"
EOF
echo "wrote $TSV and $OUT/soak.png"
