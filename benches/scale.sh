#!/usr/bin/env bash
# Tessera at scale, beside the bare GStreamer pipeline doing the same video work, in one run.
#
#   bash benches/scale.sh             # RUNS=3 runs, WINDOW=20 s steady window after WARMUP=5 s
#   bash benches/scale.sh --quick     # smoke test: 1 run, 6 s window after 2 s warm-up
#   SCENARIOS="pubs4-720 room100" bash benches/scale.sh   # a subset
#   bash benches/scale.sh --readme    # also copy the table into README.md's Performance section
#
# Scenarios (each its own `tessera serve` process, driven by `tessera loadgen` on the same machine;
# publishers replay the 640x360 VP8 files of shared/reference/gen-media.sh, so they do not encode):
#   pubsN-720     one room, N = 4 / 9 / 16 sendrecv publishers (decoding the composite), 1280x720 out
#   pubsN-360     the same with a 640x360 composite at 600 kbit/s (the reference's bitrate below 1280)
#   room100       one room of 100 publishers: 16 send video, all send audio, 3 talk at a time;
#                 every one receives the composite and the mix (--publishers-count-only: the load
#                 generator counts frames instead of decoding 100 streams)
#   room100-range the same with one UDP socket per connection (--udp-ports 0) instead of the one
#                 shared UDP port every other scenario uses (as shipped)
#   pubs16-720-sim  16 publishers sending simulcast (640x360, 320x180, 160x90 layers, made from
#                 the reference files once): each 320x180 tile decodes the 320x180 layer
#   rooms10x4     10 rooms of 4 sendrecv publishers, 640x360 out (10 x 720p is more than 2 cores)
#   pubs4+50whep  one room of 4 publishers plus 50 WHEP viewers that count packets (no decode)
# Every scenario runs with --latency: publisher 0 (of the first room) sends a live-encoded marker
# and one more WHEP viewer, the latency probe, decodes the composite and reads it.
#
# Per scenario and run: the server's user+sys CPU from /proc/PID/stat over the steady window (cores =
# CPU seconds per second), the load generator's too, the server's peak RSS (VmHWM), and the loadgen's
# summary (receiver fps median/min, freezes, latency median/p95, join time) over its --duration.
# Per run, the reference shared/reference/composite-reference.sh (N 640x360 VP8 decodes -> grid ->
# one VP8 encode, CPU seconds per media second), plain and PRESCALE=bilinear, for each N and output
# size used: room100 is compared with N=16 (the visible tiles), rooms10x4 with 10 x the N=4
# reference (one reference run, multiplied), pubs4+50whep with N=4 (the reference has no fan-out).
#
# Writes benches/results.md (medians over RUNS) and benches/cpu-vs-participants.png (gnuplot,
# installed with apt-get when missing). Raw per-run figures and logs: target/bench-scale/.
# Env: SHARED (default ../shared), MEDIA (default target/bench-media), RUNS, WINDOW, WARMUP,
# SCENARIOS, JOIN_TIMEOUT (s, default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
CMDLINE="bash benches/scale.sh${*:+ $*}"
[ -n "${SCENARIOS:-}" ] && CMDLINE="SCENARIOS=\"$SCENARIOS\" $CMDLINE"
QUICK=0; README=0
for a in "$@"; do
  case $a in
    --quick) QUICK=1 ;;
    --readme) README=1 ;;
    -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $a" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then RUNS=${RUNS:-1}; WINDOW=${WINDOW:-6}; WARMUP=${WARMUP:-2}; fi
RUNS=${RUNS:-3}; WINDOW=${WINDOW:-20}; WARMUP=${WARMUP:-5}; JOIN_TIMEOUT=${JOIN_TIMEOUT:-300}
SHARED=${SHARED:-../shared}; MEDIA=${MEDIA:-target/bench-media}
SCENARIOS=${SCENARIOS:-"pubs4-720 pubs9-720 pubs16-720 pubs4-360 pubs9-360 pubs16-360 room100 rooms10x4 pubs4+50whep"}
BIN=target/release/tessera
OUT=target/bench-scale; mkdir -p "$OUT"
RAW=$OUT/raw.tsv

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo env DEBIAN_FRONTEND=noninteractive "$@"; fi; }
if ! command -v gnuplot >/dev/null; then
  echo "installing gnuplot-nox for the chart" >&2
  as_root apt-get install -y --no-install-recommends gnuplot-nox >/dev/null || as_root sh -c 'apt-get update && apt-get install -y --no-install-recommends gnuplot-nox' >/dev/null
fi
cargo build --release --quiet
bash "$SHARED/reference/gen-media.sh" "$MEDIA" >/dev/null
# Simulcast layers of each reference file (the `-sim` scenarios): 320x180 (`-h`) and 160x90 (`-q`)
# beside the 640x360 original, made once.
for f in "$MEDIA"/v[0-9]*.webm; do
  case $f in *-h.webm|*-q.webm) continue ;; esac
  for layer in h:320:180:400000 q:160:90:150000; do
    IFS=: read -r rid w h bps <<<"$layer"
    out=${f%.webm}-$rid.webm
    [ -s "$out" ] && continue
    gst-launch-1.0 -q filesrc location="$f" ! matroskademux ! vp8dec ! videoscale \
      ! "video/x-raw,width=$w,height=$h" ! vp8enc deadline=1 cpu-used=4 end-usage=cbr target-bitrate="$bps" \
      keyframe-max-dist=60 threads=1 ! webmmux ! filesink location="$out" >/dev/null
  done
done
tck=$(getconf CLK_TCK)

SPID=""; LPID=""
# stop_server: SIGTERM, then SIGKILL after 15 s (sets HUNG=1 then)
stop_server() {
  HUNG=0
  [ -z "$SPID" ] && return
  kill "$SPID" 2>/dev/null || true
  for _ in $(seq 150); do
    [ "$(awk '{print $3}' "/proc/$SPID/stat" 2>/dev/null || echo Z)" = Z ] && break; sleep 0.1
  done
  if [ "$(awk '{print $3}' "/proc/$SPID/stat" 2>/dev/null || echo Z)" != Z ]; then HUNG=1; kill -KILL "$SPID" 2>/dev/null || true; fi
  wait "$SPID" 2>/dev/null || true; SPID=""
}
cleanup() {
  [ -n "$LPID" ] && kill "$LPID" 2>/dev/null || true
  [ -n "$LPID" ] && wait "$LPID" 2>/dev/null || true
  stop_server
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# scenario NAME: sets PARTS (participants, for the chart), RES (720|360), REFN, REFMUL, LGARGS,
# SARGS (server media ports: the shared UDP/TCP ports, as shipped, unless the scenario says)
scenario() {
  REFMUL=1; RES=720; LGARGS=(); SARGS=(--udp-port 0 --tcp-port 0)
  case $1 in
    pubs[0-9]*-720|pubs[0-9]*-360)
      REFN=${1#pubs}; REFN=${REFN%-*}; RES=${1##*-}; PARTS=$REFN
      LGARGS=(--publishers "$REFN" --publishers-count-only --join-concurrency 1) ;;
    pubs[0-9]*-720-sim)
      REFN=${1#pubs}; REFN=${REFN%%-*}; PARTS=$REFN
      LGARGS=(--publishers "$REFN" --publishers-count-only --join-concurrency 1 --simulcast) ;;
    room100) PARTS=100; REFN=16
      LGARGS=(--publishers 100 --video-publishers 16 --talkers 3 --publishers-count-only) ;;
    room100-range) PARTS=100; REFN=16; SARGS=(--udp-ports 0)
      LGARGS=(--publishers 100 --video-publishers 16 --talkers 3 --publishers-count-only) ;;
    rooms10x4) PARTS=40; REFN=4; REFMUL=10; RES=360; LGARGS=(--rooms 10 --publishers 4) ;;
    pubs4+50whep) PARTS=54; REFN=4
      LGARGS=(--publishers 4 --publishers-count-only --viewers 50 --viewers-count-only --join-concurrency 1) ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}
size() { if [ "$1" = 720 ]; then echo "1280 720 1500"; else echo "640 360 600"; fi; }

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
kv() { sed -n "s/.*[ :]$1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }

# measure NAME: runs one scenario and sets M to its raw TSV fields (after run and name), or fail
measure() {
  scenario "$1"
  local w h kbps port dir room lg slog
  read -r w h kbps < <(size "$RES")
  port=$((20000 + RANDOM % 20000)); dir=$(mktemp -d)
  slog=$OUT/server-$1.log; lg=$OUT/loadgen-$1.log
  # No drain on stop, and no admission cap: the benchmark measures the server past any --max-load.
  TESSERA_DRAIN_TIMEOUT=0s TESSERA_MAX_LOAD=1000 RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" "${SARGS[@]}" --media-ip 127.0.0.1 --recordings-dir "$dir" \
    --width "$w" --height "$h" --video-kbps "$kbps" >"$slog" 2>&1 &
  SPID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  "$BIN" loadgen --url "http://127.0.0.1:$port" --room bench --media "$MEDIA" --latency \
    --duration $((WARMUP + WINDOW + 3)) "${LGARGS[@]}" >"$lg" 2>&1 &
  LPID=$!
  local t=0
  until grep -q '^joined:' "$lg" 2>/dev/null; do
    if ! kill -0 "$LPID" 2>/dev/null || [ "$t" -ge $((JOIN_TIMEOUT * 5)) ]; then
      echo "  $1: loadgen did not report joined (see $lg)" >&2
      kill "$LPID" 2>/dev/null || true; wait "$LPID" 2>/dev/null || true; LPID=""; stop_server
      rm -rf "$dir"; M=fail; return
    fi
    sleep 0.2; t=$((t + 1))
  done
  sleep "$WARMUP"
  local s0 l0 t0 s1 l1 t1 rss enc
  s0=$(cpu_ticks "$SPID"); l0=$(cpu_ticks "$LPID"); t0=$(date +%s.%N)
  sleep "$(awk "BEGIN {print $WINDOW / 2}")"
  room=bench; [ "$1" = rooms10x4 ] && room=bench-0
  enc=$(curl -sf "http://127.0.0.1:$port/v1/rooms/$room" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(",".join("%dx%d:%d" % (b["size"][0], b["size"][1], b["receivers"]) for b in r.get("encoder_branches", [])) or "none")' 2>/dev/null || echo "?")
  sleep "$(awk "BEGIN {print $WINDOW / 2}")"
  s1=$(cpu_ticks "$SPID"); l1=$(cpu_ticks "$LPID"); t1=$(date +%s.%N)
  rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$SPID/status" 2>/dev/null || echo 0)
  wait "$LPID" || true; LPID=""
  stop_server
  if [ "$HUNG" = 1 ]; then echo "  $1: the server did not exit within 15 s of SIGTERM; killed" >&2; fi
  rm -rf "$dir"
  local sum j; sum=$(grep '^summary:' "$lg" || true); j=$(grep '^joined:' "$lg")
  local secs; secs=$(awk "BEGIN {print $t1 - $t0}")
  printf -v M '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' \
    "$(awk "BEGIN {printf \"%.3f\", ($s1 - $s0) / $tck / $secs}")" \
    "$(awk "BEGIN {printf \"%.3f\", ($l1 - $l0) / $tck / $secs}")" "$rss" \
    "$(kv fps_median "$sum")" "$(kv fps_min "$sum")" "$(kv freezes "$sum")" \
    "$(kv latency_ms_median "$sum")" "$(kv latency_ms_p95 "$sum")" "$(kv latency_samples "$sum")" \
    "$(kv join_ms_median "$sum")" "$(kv join_ms_max "$sum")" "$(kv peers "$j")/$(kv expected "$j")" \
    "$(kv seconds "$j")" "$(kv receivers "$sum")" "$(kv audio_gaps "$sum")" "$enc" "$HUNG"
}

declare -A REF
# reference N RES [PRESCALE]: sets RV to the reference's cores, cached per run
reference() {
  local key="$1-$2-${3:-}" w h kbps
  if [ -z "${REF[$key]:-}" ]; then
    read -r w h kbps < <(size "$2")
    REF[$key]=$(PRESCALE=${3:-} bash "$SHARED/reference/composite-reference.sh" "$MEDIA" "$1" "$w" "$h" vp8 | sed 's/.*=//')
    echo "  reference N=$1 ${w}x$h ${3:-plain}: ${REF[$key]} cores" >&2
  fi
  RV=${REF[$key]}
}

printf 'run\tscenario\tcpu\tloadgen_cpu\trss_mb\tfps_median\tfps_min\tfreezes\tlat_median\tlat_p95\tlat_samples\tjoin_ms_median\tjoin_ms_max\tjoined\tjoin_s\treceivers\taudio_gaps\tencoders\tshutdown_hung\tparticipants\tres\tref\tref_prescaled\n' >"$RAW"
START=$(date +%s)
for run in $(seq 1 "$RUNS"); do
  REF=()
  for sc in $SCENARIOS; do
    scenario "$sc"
    reference "$REFN" "$RES"; r=$RV; reference "$REFN" "$RES" bilinear; rp=$RV
    r=$(awk "BEGIN {printf \"%.3f\", $r * $REFMUL}"); rp=$(awk "BEGIN {printf \"%.3f\", $rp * $REFMUL}")
    echo "run $run/$RUNS $sc ..." >&2
    measure "$sc"
    if [ "$M" = fail ]; then continue; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$run" "$sc" "$M" "$PARTS" "$RES" "$r" "$rp" >>"$RAW"
    echo "  $(tail -1 "$RAW" | cut -f3-)" >&2
  done
done
ELAPSED=$(( $(date +%s) - START ))

# Table (medians over runs) and chart data.
MACHINE="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo)"
GST=$(gst-launch-1.0 --version | sed -n 's/.*version //p' | head -1)
COMMIT=$(git rev-parse --short HEAD)$(git diff --quiet -- src || echo "+dirty")
CMDLINE="$CMDLINE" MACHINE="$MACHINE" GST="$GST" COMMIT="$COMMIT" RUNS="$RUNS" WINDOW="$WINDOW" WARMUP="$WARMUP" \
  ELAPSED="$ELAPSED" OUT="$OUT" python3 - "$RAW" <<'EOF'
import csv, datetime, os, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
env = os.environ
def num(v):
    try: return float(v)
    except (TypeError, ValueError): return None
def med(sc, k):
    v = [num(r[k]) for r in rows if r["scenario"] == sc]
    v = [x for x in v if x is not None]
    return statistics.median(v) if v else None
def f(v, d=2):
    return "-" if v is None else f"{v:.{d}f}"
order = []
for r in rows:
    if r["scenario"] not in order: order.append(r["scenario"])
label = {
    "room100": "1 room: 100 participants (16 video, all audio, 3 talking; all receive)",
    "room100-range": "the same 100, one UDP socket per connection (--udp-ports)",
    "pubs16-720-sim": "1 room: 16 simulcast publishers (640x360, 320x180, 160x90 layers)",
    "rooms10x4": "10 rooms x 4 publishers (640x360 out)",
    "pubs4+50whep": "1 room: 4 publishers + 50 WHEP viewers (counting)",
}
out = lambda res: "1280x720 @1500k" if res == "720" else "640x360 @600k"
lines = [
    f"Tessera at scale: `{env['CMDLINE']}`, {datetime.date.today().isoformat()}, commit {env['COMMIT']}, "
    f"machine: {env['MACHINE']}, GStreamer {env['GST']}. Medians of {env['RUNS']} run(s); server CPU over a "
    f"{env['WINDOW']} s window after everyone joined + {env['WARMUP']} s; the load generator runs on the same machine. "
    f"Took {int(env['ELAPSED']) // 60} min {int(env['ELAPSED']) % 60} s.",
    "",
    "| scenario | participants | out (VP8) | Tessera cores | bare GStreamer cores (prescaled) | ratio (to prescaled) | loadgen cores | peak RSS MB | fps median (min) | freezes | latency ms median / p95 (samples) | join ms median (max) | audio gaps | encoders (size:receivers) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]
chart = []
for sc in order:
    last = [r for r in rows if r["scenario"] == sc][-1]
    res, parts = last["res"], last["participants"]
    cpu, ref, refp = med(sc, "cpu"), med(sc, "ref"), med(sc, "ref_prescaled")
    name = label.get(sc, f"1 room: {parts} publishers")
    refn = {"room100": " (N=16)", "room100-range": " (N=16)", "rooms10x4": " (10 x N=4)"}.get(sc, "")
    lines.append(
        f"| {name} | {parts} + probe | {out(res)} | {f(cpu, 3)} | {f(ref, 3)} ({f(refp, 3)}){refn} | "
        f"{f(cpu / ref if cpu and ref else None)} ({f(cpu / refp if cpu and refp else None)}) | {f(med(sc, 'loadgen_cpu'))} | "
        f"{f(med(sc, 'rss_mb'), 0)} | {f(med(sc, 'fps_median'), 1)} ({f(med(sc, 'fps_min'), 1)}) | {f(med(sc, 'freezes'), 0)} | "
        f"{f(med(sc, 'lat_median'), 0)} / {f(med(sc, 'lat_p95'), 0)} ({f(med(sc, 'lat_samples'), 0)}) | {f(med(sc, 'join_ms_median'), 0)} ({f(med(sc, 'join_ms_max'), 0)}) | {f(med(sc, 'audio_gaps'), 0)} | {last['encoders']} |")
    chart.append((sc, int(parts), res, cpu, ref))
hung = sum(r["shutdown_hung"] == "1" for r in rows)
lines += [
    "",
    "Cores: user+sys CPU seconds per second of the server process (all its threads, GStreamer included), from "
    "`/proc/PID/stat`. Bare GStreamer: `composite-reference.sh` with the same N and output size, measured in the same "
    "run (N=16 for the 100-person room, whose grid shows 16; 10 x the N=4 figure for 10 rooms; the reference does no "
    "RTP, SRTP, audio or fan-out). \"+ probe\": every scenario adds one decoding WHEP viewer (the latency probe) in the "
    "first room, and publisher 0 there sends a live-encoded marker instead of a file. fps (median and lowest receiver) "
    "and freezes (gaps over 200 ms between frames, summed over receivers) cover every receiver: the publishers unless "
    "send-only, the WHEP viewers (counting frames from RTP marker bits) and the probe; latency is the probe's. "
    "Join: POST to the first frame per receiver; audio gaps: more than 100 ms without an audio packet, summed over receivers. "
    "Encoders: the composite's encoder branches in the (first) room at mid-window, size:receivers."
    + (f" The server did not exit within 15 s of SIGTERM after {hung} of {len(rows)} measurements (killed)." if hung else ""),
]
open("benches/results.md", "w").write("\n".join(lines) + "\n")
with open(os.path.join(env["OUT"], "chart.dat"), "w") as d:
    for res in ("720", "360"):
        d.write(f"# tessera {res}p out: participants cores ref\n")
        for sc, parts, r, cpu, ref in sorted(chart, key=lambda c: c[1]):
            if sc.startswith("pubs") and sc.endswith("-" + res) and cpu is not None:
                d.write(f"{parts} {cpu} {ref}\n")
        d.write("\n\n")
    d.write("# other scenarios: participants cores ref label\n")
    for sc, parts, r, cpu, ref in chart:
        if not (sc.endswith("-720") or sc.endswith("-360")) and cpu is not None:
            d.write(f'{parts} {cpu} {ref} "{sc}, {f(med(sc, "fps_median"), 1)} fps"\n')
    d.write("\n")
print("\n".join(lines))
EOF

cat >"$OUT/chart.gp" <<EOF
set terminal pngcairo size 1200,600 font "Sans,11"
set output "benches/cpu-vs-participants.png"
set title "Tessera server CPU vs participants ($(nproc)-core machine, $(date +%F), medians of $RUNS run(s))"
set xlabel "participants"
set ylabel "CPU (cores = CPU seconds per second)"
set logscale x
set xrange [3:130]
set xtics ("4" 4, "9" 9, "16" 16, "40" 40, "54" 54, "100" 100)
set yrange [0:*]
set grid
set key outside right top vertical Left reverse
set offsets 0, 0, graph 0.08, 0
plot $(nproc) with lines dt 3 lw 2 lc rgb "gray40" title "this machine: $(nproc) cores", \
     "$OUT/chart.dat" index 0 using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "Tessera, 1 room, 1280x720 out", \
     "" index 0 using 1:3 with linespoints lw 2 dt 2 pt 6 lc rgb "#1f77b4" title "bare GStreamer, 1280x720 out", \
     "" index 1 using 1:2 with linespoints lw 2 pt 5 lc rgb "#2ca02c" title "Tessera, 1 room, 640x360 out", \
     "" index 1 using 1:3 with linespoints lw 2 dt 2 pt 4 lc rgb "#2ca02c" title "bare GStreamer, 640x360 out", \
     "" index 2 using 1:2 with points pt 9 ps 2 lc rgb "#d62728" title "Tessera: room100, 4+50 WHEP (720p); 10x4 rooms (360p)", \
     "" index 2 using 1:3 with points pt 8 ps 2 lc rgb "#d62728" title "bare GStreamer for those", \
     "" index 2 using 1:2:4 with labels offset 0,1.2 font "Sans,9" notitle
EOF
gnuplot "$OUT/chart.gp" 2>"$OUT/gnuplot.err" || { cat "$OUT/gnuplot.err" >&2; echo "gnuplot failed (see $OUT/chart.gp)" >&2; }

if [ "$README" = 1 ]; then
  python3 - <<'EOF'
import re
readme = open("README.md").read()
table = open("benches/results.md").read().strip()
start, end = "<!-- scale-results -->", "<!-- /scale-results -->"
if start not in readme:
    raise SystemExit("README.md has no " + start + " marker in its Performance section")
readme = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda m: start + "\n" + table + "\n" + end, readme, flags=re.S)
open("README.md", "w").write(readme)
print("README.md updated")
EOF
fi
echo "wrote benches/results.md and benches/cpu-vs-participants.png (raw: $RAW)" >&2
