#!/usr/bin/env bash
# Rooms per GPU: R rooms x 9 publishers (640x360 VP8 in, 1280x720 out) on `--backend nvenc` and on
# `cpu`, driven by the same load generator, for an NVIDIA machine.
#
#   bash benches/gpu.sh                      # ROOMS="1 2 4 8 16 32", BACKENDS="nvenc cpu"
#   ROOMS="4 8 12" BACKENDS=nvenc bash benches/gpu.sh
#   bash benches/gpu.sh --quick              # ROOMS="1 2", WINDOW=6, WARMUP=2: a smoke test
#   ./run.sh                                 # the same from the bundle of benches/gpu-bundle.sh
#
# Per backend and R: one `tessera serve --backend B` (1280x720 @ 1500 kbit/s), one
# `tessera loadgen --rooms R --publishers 9 --media MEDIA --publishers-count-only --latency` (every
# publisher replays a pre-encoded VP8 file and receives the composite, counting frames; one WHEP
# probe in the first room decodes it for latency). Over a WINDOW s steady window (after everyone
# joined + WARMUP s): the server's user+sys CPU from /proc/PID/stat (cores), and nvidia-smi sampled
# every 500 ms (GPU, encoder and decoder utilisation, memory, encoder sessions and fps). From the
# load generator's summary line: receiver fps (median, min), freezes, latency. A backend's series
# stops at the first R that is not real time (median fps < 28), and the largest R that is, is
# reported. Prints a Markdown table; writes it to OUT/results.md, with the logs and samples.
#
# Decode sessions: nvidia-smi counts no NVDEC sessions; the table gives the decoders Tessera runs
# on the GPU (R x 9 when `tessera doctor` says the VP8 decode role is on nvenc) and NVDEC load.
# Receivers get what the load generator offers: VP8 first (libvpx encodes on the CPU, NVENC idles)
# unless `tessera loadgen` has `--video-codec` (then CODEC=h264 makes them take the NVENC encode).
#
# Needs bash, coreutils, awk, sed, grep; nvidia-smi for the GPU columns; no curl, no python.
# Env: BIN (tessera; default target/release/tessera, built when missing), MEDIA (v0.webm.. from
# shared/reference/gen-media.sh; default target/bench-media, made when missing), OUT (default
# target/bench-gpu), ROOMS, BACKENDS, PUBLISHERS (9), WINDOW (20), WARMUP (5), JOIN_TIMEOUT (s,
# 300), GPU (nvidia-smi index, 0), CODEC (vp8|h264), REALTIME_FPS (28).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
QUICK=0
for a in "$@"; do
  case $a in
    --quick) QUICK=1 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $a" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then ROOMS=${ROOMS:-"1 2"}; WINDOW=${WINDOW:-6}; WARMUP=${WARMUP:-2}; fi
ROOMS=${ROOMS:-"1 2 4 8 16 32"}; BACKENDS=${BACKENDS:-"nvenc cpu"}; PUBLISHERS=${PUBLISHERS:-9}
WINDOW=${WINDOW:-20}; WARMUP=${WARMUP:-5}; JOIN_TIMEOUT=${JOIN_TIMEOUT:-300}; GPU=${GPU:-0}
CODEC=${CODEC:-vp8}; REALTIME_FPS=${REALTIME_FPS:-28}
if [ -z "${BIN:-}" ]; then
  # In the repository: build the release binary and the reference media when missing.
  cd "$HERE/.."
  BIN=target/release/tessera
  [ -x "$BIN" ] || cargo build --release --quiet
  MEDIA=${MEDIA:-target/bench-media}
  [ -s "$MEDIA/v0.webm" ] || bash "${SHARED:-../shared}/reference/gen-media.sh" "$MEDIA" >/dev/null
  OUT=${OUT:-target/bench-gpu}
fi
MEDIA=${MEDIA:?MEDIA: a folder with v0.webm..}; OUT=${OUT:-./gpu-results}
[ -s "$MEDIA/v0.webm" ] || { echo "no v0.webm in $MEDIA" >&2; exit 2; }
mkdir -p "$OUT"
tck=$(getconf CLK_TCK)
HAVE_SMI=0; command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && HAVE_SMI=1

SPID=""; LPID=""; SMIPID=""
cleanup() {
  for p in $SMIPID $LPID $SPID; do kill "$p" 2>/dev/null || true; done
  for p in $SMIPID $LPID $SPID; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# http_ok PORT PATH: whether GET answers 200 (bash's /dev/tcp: no curl needed)
http_ok() {
  local line
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  IFS= read -r -t 2 line <&3 || true
  exec 3<&- 3>&-
  [[ $line == *" 200"* ]]
}
# http_body PORT PATH: the body of a GET (bash's /dev/tcp)
http_body() {
  { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 0
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  timeout 3 cat <&3 | sed '1,/^\r*$/d' || true
  exec 3<&- 3>&-
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
kv() { sed -n "s/.*[ :]$1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }
# role_backend JSON_FILE ROLE: the backend `tessera doctor --json` gives ROLE
role_backend() {
  awk -v role="\"$2\"" '$1 == "\"role\":" && $2 ~ role {hit = 1} hit && $1 == "\"backend\":" {gsub(/[",]/, "", $2); print $2; exit}' "$1"
}
# stats FILE COL: "mean max" of a numeric column of the nvidia-smi CSV samples ("-" when none)
stats() {
  awk -F', *' -v c="$2" '$c ~ /^[0-9.]+$/ {s += $c; n++; if ($c > m) m = $c} END {if (n) printf "%.0f %.0f", s / n, m; else print "- -"}' "$1"
}

LGHELP=$("$BIN" loadgen --help 2>&1 || true)
CODEC_ARGS=()
if grep -q -- '--video-codec' <<<"$LGHELP"; then
  CODEC_ARGS=(--video-codec "$CODEC")
elif [ "$CODEC" != vp8 ]; then
  echo "note: this tessera loadgen has no --video-codec: receivers take VP8 (CODEC=$CODEC ignored)" >&2
fi

GPUNAME="none"; DRIVER="-"
if [ "$HAVE_SMI" = 1 ]; then
  IFS=, read -r GPUNAME DRIVER < <(nvidia-smi -i "$GPU" --query-gpu=name,driver_version --format=csv,noheader | sed 's/, */,/')
fi
GSTV=$("$BIN" doctor --no-probe --json 2>/dev/null | sed -n 's/.*"gstreamer": "\([^"]*\)".*/\1/p' | head -1)
ROWS=$OUT/rows.md; : >"$ROWS"
declare -A BEST

# measure BACKEND R: one run; appends a table row, returns 1 when not real time (or failed)
measure() {
  local b=$1 r=$2 port dir slog lg
  port=$((20000 + RANDOM % 20000)); dir=$(mktemp -d)
  slog=$OUT/server-$b-$r.log; lg=$OUT/loadgen-$b-$r.log
  TESSERA_DRAIN_TIMEOUT=0s TESSERA_MAX_LOAD=1000 RUST_LOG=${RUST_LOG:-warn} "$BIN" serve --backend "$b" --listen "127.0.0.1:$port" --udp-ports 0 --media-ip 127.0.0.1 \
    --recordings-dir "$dir" --width 1280 --height 720 --video-kbps 1500 >"$slog" 2>&1 &
  SPID=$!
  for _ in $(seq 100); do http_ok "$port" /healthz && break; sleep 0.1; done
  "$BIN" loadgen --url "http://127.0.0.1:$port" --room gpu --rooms "$r" --publishers "$PUBLISHERS" --media "$MEDIA" \
    --publishers-count-only --latency --duration $((WARMUP + WINDOW + 3)) "${CODEC_ARGS[@]}" >"$lg" 2>&1 &
  LPID=$!
  local t=0
  until grep -q '^joined:' "$lg" 2>/dev/null; do
    if ! kill -0 "$LPID" 2>/dev/null || [ "$t" -ge $((JOIN_TIMEOUT * 5)) ]; then
      echo "  $b R=$r: loadgen did not report joined (see $lg)" >&2
      kill "$LPID" "$SPID" 2>/dev/null || true; wait "$LPID" "$SPID" 2>/dev/null || true; LPID=""; SPID=""
      rm -rf "$dir"; printf '| %s | | %s | %s | failed to join | | | | | | | | | | no |\n' "$b" "$r" "$((r * PUBLISHERS))" >>"$ROWS"
      return 1
    fi
    sleep 0.2; t=$((t + 1))
  done
  sleep "$WARMUP"
  local smi=$OUT/smi-$b-$r.csv
  : >"$smi"
  if [ "$HAVE_SMI" = 1 ]; then
    nvidia-smi -i "$GPU" --format=csv,noheader,nounits -lms 500 \
      --query-gpu=utilization.gpu,utilization.encoder,utilization.decoder,memory.used,encoder.stats.sessionCount,encoder.stats.averageFps \
      >"$smi" 2>/dev/null &
    SMIPID=$!
  fi
  local s0 l0 t0 s1 l1 t1
  s0=$(cpu_ticks "$SPID"); l0=$(cpu_ticks "$LPID"); t0=$(date +%s.%N)
  sleep "$(awk "BEGIN {print $WINDOW / 2}")"
  if [ "$HAVE_SMI" = 1 ]; then nvidia-smi -i "$GPU" -q -d ENCODER_STATS >"$OUT/encoder-stats-$b-$r.txt" 2>&1 || true; fi
  sleep "$(awk "BEGIN {print $WINDOW / 2}")"
  s1=$(cpu_ticks "$SPID"); l1=$(cpu_ticks "$LPID"); t1=$(date +%s.%N)
  # Which backend composites the first room now (cpu after a run-time fallback).
  local room0=gpu comp; [ "$r" -gt 1 ] && room0=gpu-0
  comp=$(http_body "$port" "/v1/rooms/$room0" | sed -n 's/.*"compositor":"\([^"]*\)".*/\1/p' | head -1)
  if [ -n "$SMIPID" ]; then kill "$SMIPID" 2>/dev/null || true; wait "$SMIPID" 2>/dev/null || true; SMIPID=""; fi
  wait "$LPID" || true; LPID=""
  kill "$SPID" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$SPID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; SPID=""
  rm -rf "$dir"
  local sum cores lcores gu gm eu em du dm mm sess efps fpsm fpsmin frz lat dec rt
  sum=$(grep '^summary:' "$lg" || true)
  cores=$(awk "BEGIN {printf \"%.2f\", ($s1 - $s0) / $tck / ($t1 - $t0)}")
  lcores=$(awk "BEGIN {printf \"%.2f\", ($l1 - $l0) / $tck / ($t1 - $t0)}")
  read -r gu gm < <(stats "$smi" 1); read -r eu em < <(stats "$smi" 2); read -r du dm < <(stats "$smi" 3)
  read -r _ mm < <(stats "$smi" 4); read -r _ sess < <(stats "$smi" 5); read -r efps _ < <(stats "$smi" 6)
  fpsm=$(kv fps_median "$sum"); fpsmin=$(kv fps_min "$sum"); frz=$(kv freezes "$sum")
  lat="$(kv latency_ms_median "$sum") / $(kv latency_ms_p95 "$sum")"
  dec=0; [ "${DEC_ON_GPU[$b]}" = 1 ] && dec=$((r * PUBLISHERS))
  rt=no; awk "BEGIN {exit !(${fpsm:-0} >= $REALTIME_FPS)}" && rt=yes
  printf '| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s | %s | %s (%s fps) | %s | %s (%s) | %s | %s | %s |\n' \
    "$b" "${comp:-?}" "$r" "$((r * PUBLISHERS))" "$cores" "$(awk "BEGIN {printf \"%.3f\", $cores / $r}")" "$lcores" \
    "$gu" "$gm" "$eu" "$em" "$du" "$dm" "$mm" "$sess" "$efps" "$dec" "${fpsm:--}" "${fpsmin:--}" "${frz:--}" "$lat" "$rt" >>"$ROWS"
  echo "  $(tail -1 "$ROWS")" >&2
  [ "$rt" = yes ]
}

declare -A DEC_ON_GPU
START=$(date +%s)
for b in $BACKENDS; do
  "$BIN" doctor --backend "$b" >"$OUT/doctor-$b.txt" 2>&1 || true
  "$BIN" doctor --backend "$b" --json >"$OUT/doctor-$b.json" 2>/dev/null || true
  DEC_ON_GPU[$b]=0; [ "$(role_backend "$OUT/doctor-$b.json" vp8-decode)" = "$b" ] && [ "$b" != cpu ] && DEC_ON_GPU[$b]=1
  echo "$b: vp8-decode on $(role_backend "$OUT/doctor-$b.json" vp8-decode), composite on $(role_backend "$OUT/doctor-$b.json" composite), vp8-encode on $(role_backend "$OUT/doctor-$b.json" vp8-encode), h264-encode on $(role_backend "$OUT/doctor-$b.json" h264-encode) (doctor: $OUT/doctor-$b.txt)" >&2
  BEST[$b]=0
  for r in $ROOMS; do
    echo "$b: $r room(s) x $PUBLISHERS publishers ..." >&2
    if measure "$b" "$r"; then BEST[$b]=$r; else break; fi
  done
done
ELAPSED=$(( $(date +%s) - START ))

{
  echo "Rooms per GPU: \`bash benches/gpu.sh\`, $(date +%F), machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), GPU $GPUNAME (driver $DRIVER), GStreamer ${GSTV:-?}. Each room: $PUBLISHERS publishers (640x360 VP8 replayed), composite 1280x720 @ 1500 kbit/s to every publisher (counting frames) + one decoding latency probe in the first room. Server CPU and nvidia-smi over a $WINDOW s window after everyone joined + $WARMUP s. Took $((ELAPSED / 60)) min $((ELAPSED % 60)) s."
  echo
  echo "| backend | composites on | rooms | publishers | server cores | cores per room | loadgen cores | GPU util % mean / max | NVENC util % mean / max | NVDEC util % mean / max | GPU MiB max | encoder sessions max (fps) | GPU decoders | fps median (min) | freezes | latency ms median / p95 | real time |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  cat "$ROWS"
  echo
  for b in $BACKENDS; do echo "- **$b**: largest real-time R (median fps >= $REALTIME_FPS): **${BEST[$b]}** room(s) of $PUBLISHERS."; done
  echo "- Receivers' codec: $([ ${#CODEC_ARGS[@]} -gt 0 ] && echo "$CODEC (--video-codec)" || echo "VP8 (the load generator's first offer): the composite is encoded by libvpx on the CPU on every backend").  Roles per backend: $OUT/doctor-*.txt."
} >"$OUT/results.md"
cat "$OUT/results.md"
