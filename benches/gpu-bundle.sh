#!/usr/bin/env bash
# Packs one folder (<= 64 MiB) that runs benches/gpu.sh as one command on an NVIDIA host that has
# only the driver: no GStreamer, no network, any Linux distribution (x86-64).
#
#   bash benches/gpu-bundle.sh             # -> target/gpu-bundle/tessera-gpu-bench/ (+ .tar.gz), then checks it
#   scp -r target/gpu-bundle/tessera-gpu-bench gpu-host:          # or the .tar.gz
#   gpu-host$ ./tessera-gpu-bench/run.sh --check                   # libraries, elements, tessera doctor
#   gpu-host$ ./tessera-gpu-bench/run.sh                           # the benchmark (gpu.sh options and env work)
#
# What goes in, all from Debian bookworm's .deb packages (`apt-get download` + `dpkg -x` into a
# staging prefix, the versions installed here): the stripped release binary; GStreamer's core, the
# plugins the cpu and nvenc fragments, the RTP (de)payloaders, the jitter buffer, the labels
# (pango) and the load generator use (`PLUGINS` below; no libav: its dependencies are ~200 MB, and
# the cpu H.264 decoder falls back to OpenH264); every shared library they need (found with `ldd`,
# their packages with `dpkg -S`), glibc and its loader included: the programs run through the
# bundled `ld-linux-x86-64.so.2 --library-path`, so the host's glibc version does not matter and
# the host's programs (nvidia-smi, bash) never see the bundled libraries; one font; a few of the
# reference media files (shared/reference/gen-media.sh; run.sh fills v0..v15 from them).
# The NVIDIA driver's libraries (libcuda, libnvidia-encode, libnvcuvid) come from the host at run
# time: the wrappers append the host folders that hold libcuda.so.1.
#
# Then it unpacks the tarball into a temporary folder and runs its `run.sh --check` there with
# `env -i PATH=/usr/bin:/bin`. Needs: a machine set up by scripts/setup.sh (GStreamer installed:
# the packages are looked up from the installed files), apt package lists (`apt-get update`).
# Env: OUTDIR (target/gpu-bundle), DEBS (downloaded packages, kept: target/gpu-bundle-debs),
# MEDIA (target/bench-media), MEDIA_FILES (which of them to ship), SKIP_CHECK=1.
set -euo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${OUTDIR:-target/gpu-bundle}; DEBS=${DEBS:-target/gpu-bundle-debs}; MEDIA=${MEDIA:-target/bench-media}
MEDIA_FILES=${MEDIA_FILES:-"v1 v2 v13 v14"}
NAME=tessera-gpu-bench
B=$OUTDIR/$NAME; STAGE=$OUTDIR/stage
LIMIT=$((64 * 1024 * 1024))
PLUGINDIR=/usr/lib/x86_64-linux-gnu/gstreamer-1.0
# Element -> plugin: queue tee valve capsfilter fakesink filesrc identity (coreelements), appsrc
# appsink (app), videoconvert videoscale (videoconvertscale), videotestsrc, audioconvert,
# audioresample, audiotestsrc, opusdec (opus), opusparse (opusparse, for recordings), textrender textoverlay (pango), rtpvp8pay
# rtpvp8depay rtph264pay rtph264depay rtpopusdepay (rtp), rtpjitterbuffer (rtpmanager), vp8enc vp8dec
# (vpx), matroskademux (matroska), x264enc (x264), openh264dec (openh264), h264parse av1parse
# (videoparsersbad), errorignore, the GPU fragments' guard (debugutilsbad), nv*/cuda* (nvcodec).
PLUGINS="coreelements app videoconvertscale videotestsrc audioconvert audioresample audiotestsrc opus opusparse pango rtp rtpmanager vpx matroska x264 openh264 videoparsersbad debugutilsbad nvcodec"
GLIBC="ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libresolv.so.2 libanl.so.1 libutil.so.1"
FONTS="/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"

say() { echo "gpu-bundle: $*" >&2; }
cargo build --release --quiet
[ -s "$MEDIA/v0.webm" ] || bash "${SHARED:-../shared}/reference/gen-media.sh" "$MEDIA" >/dev/null
rm -rf "$B" "$STAGE"; mkdir -p "$B"/{bin,libexec,lib/glibc,lib/gstreamer-1.0,lib/gio,share/fonts,media} "$STAGE" "$DEBS"

# ---- what is needed: the programs, the plugins, and what they link -------------------------------
ELFS=(/usr/lib/x86_64-linux-gnu/gstreamer1.0/gstreamer-1.0/gst-plugin-scanner /usr/bin/gst-inspect-1.0)
for p in $PLUGINS; do
  [ -f "$PLUGINDIR/libgst$p.so" ] || { say "plugin $p is not installed here ($PLUGINDIR/libgst$p.so)"; exit 1; }
  ELFS+=("$PLUGINDIR/libgst$p.so")
done
LIBS=$(for e in target/release/tessera "${ELFS[@]}"; do
  if ldd "$e" | grep -q 'not found'; then say "$e: $(ldd "$e" | grep 'not found')"; exit 1; fi
  ldd "$e" | awk '/=>/ {print $3} /ld-linux/ && !/=>/ {print $1}'
done | sort -u)

# pkg_of PATH: the installed package (name=version) that ships PATH (usrmerge: /lib and /usr/lib)
pkg_of() {
  local p=$1 alt q
  alt=$([[ $p == /usr/* ]] && echo "${p#/usr}" || echo "/usr$p")
  for q in "$p" "$alt" "$(readlink -f "$p")"; do
    local pkg
    pkg=$(dpkg -S "$q" 2>/dev/null | head -1 | cut -d: -f1) || true
    if [ -n "$pkg" ]; then echo "$pkg=$(dpkg-query -W -f='${Version}' "$pkg")"; return; fi
  done
  say "no package ships $p"; return 1
}
declare -A PKGS
for f in $LIBS "${ELFS[@]}" $FONTS; do k=$(pkg_of "$f"); PKGS[$k]=1; done
say "${#PKGS[@]} packages: ${!PKGS[*]}"

# ---- the packages: download (kept in $DEBS) and unpack into the staging prefix -------------------
(
  cd "$DEBS"
  for pv in "${!PKGS[@]}"; do
    pkg=${pv%%=*}; ver=${pv#*=}
    ls "${pkg}_"*.deb >/dev/null 2>&1 && continue
    apt-get download -q "$pv" >/dev/null 2>&1 || apt-get download -q "$pkg" >/dev/null 2>&1 \
      || { echo "gpu-bundle: apt-get download $pv failed (apt-get update?)" >&2; exit 1; }
    [ "$(dpkg-deb -f "${pkg}_"*.deb Version)" = "$ver" ] || echo "gpu-bundle: $pkg: $ver is no longer in the archive; took $(dpkg-deb -f "${pkg}_"*.deb Version)" >&2
  done
)
for pv in "${!PKGS[@]}"; do
  for deb in "$DEBS/${pv%%=*}_"*.deb; do dpkg -x "$deb" "$STAGE"; echo "${pv%%=*} $(dpkg-deb -f "$deb" Version)" >>"$B/MANIFEST.tmp"; done
done
sort -u "$B/MANIFEST.tmp" >"$B/MANIFEST"; rm "$B/MANIFEST.tmp"

# staged PATH: PATH's file in the staging prefix (the library folders first), symlinks followed
staged() {
  local n base c r root
  n=$(basename "$1"); base=${1#/usr}; root=$(readlink -f "$STAGE")
  for c in "$STAGE/usr/lib/x86_64-linux-gnu/$n" "$STAGE/lib/x86_64-linux-gnu/$n" "$STAGE/usr$base" "$STAGE$base"; do
    [ -e "$c" ] || continue
    r=$(readlink -f "$c")
    [[ $r == "$root"/* ]] && { echo "$r"; return; }
  done
  say "$1 is not in the unpacked packages"; return 1
}
for f in $LIBS; do
  n=$(basename "$f"); src=$(staged "$f")
  if [[ " $GLIBC " == *" $n "* ]]; then cp "$src" "$B/lib/glibc/$n"; else cp "$src" "$B/lib/$n"; fi
done
# glibc's loader and the libraries a dlopen may want from it (NVIDIA's libraries link these).
for n in $GLIBC; do
  if [ ! -e "$B/lib/glibc/$n" ] && f=$(staged "/lib/x86_64-linux-gnu/$n" 2>/dev/null); then cp "$f" "$B/lib/glibc/$n"; fi
done
for p in $PLUGINS; do src=$(staged "$PLUGINDIR/libgst$p.so"); cp "$src" "$B/lib/gstreamer-1.0/libgst$p.so"; done
src=$(staged "${ELFS[0]}"); cp "$src" "$B/libexec/gst-plugin-scanner.bin"
src=$(staged "${ELFS[1]}"); cp "$src" "$B/libexec/gst-inspect-1.0.bin"
for f in $FONTS; do src=$(staged "$f"); cp "$src" "$B/share/fonts/$(basename "$f")"; done
strip -o "$B/libexec/tessera.bin" target/release/tessera
for m in $MEDIA_FILES; do cp "$MEDIA/$m.webm" "$B/media/"; done
cp benches/gpu.sh "$B/gpu.sh"
rm -rf "$STAGE"

# ---- the wrappers ---------------------------------------------------------------------------------
cat >"$B/lib/env.sh" <<'EOF'
# Sourced by the bundle's wrappers: where everything is, for the bundled loader and GStreamer.
B=${BUNDLE:-$(cd "$(dirname "$0")/.." && pwd)}
# The host folders with the NVIDIA driver's libraries (after the bundle's own).
DRIVER_DIRS=""
for d in $( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) | awk '/libcuda\.so\.1 / {sub(/\/[^\/]*$/, "", $NF); print $NF}') \
  /usr/lib64 /usr/lib/x86_64-linux-gnu /usr/local/nvidia/lib64 /usr/lib/wsl/lib /run/opengl-driver/lib; do
  if [ -e "$d/libcuda.so.1" ]; then case ":$DRIVER_DIRS:" in *":$d:"*) ;; *) DRIVER_DIRS="$DRIVER_DIRS:$d" ;; esac; fi
done
LIBRARY_PATH_BUNDLE="$B/lib:$B/lib/glibc$DRIVER_DIRS"
export LD_LIBRARY_PATH="$B/lib"   # for dlopen in a process started without the loader; glibc stays out
export GST_PLUGIN_SYSTEM_PATH="$B/lib/gstreamer-1.0" GST_PLUGIN_PATH=""
export GST_PLUGIN_SCANNER="$B/libexec/gst-plugin-scanner"
STATE=${TMPDIR:-/tmp}/tessera-gpu-bench-$(id -u)
mkdir -p "$STATE"
export GST_REGISTRY="${GST_REGISTRY:-$STATE/registry.bin}"
if [ -z "${FONTCONFIG_FILE:-}" ]; then
  printf '<?xml version="1.0"?>\n<fontconfig><dir>%s</dir><cachedir>%s</cachedir></fontconfig>\n' \
    "$B/share/fonts" "$STATE/fontconfig" >"$STATE/fonts.conf"
  export FONTCONFIG_FILE="$STATE/fonts.conf"
fi
export GIO_MODULE_DIR="$B/lib/gio" LC_ALL=C.UTF-8
# bundled NAME ARGS...: runs libexec/NAME.bin with the bundled glibc and libraries
bundled() {
  n=$1; shift
  exec "$B/lib/glibc/ld-linux-x86-64.so.2" --library-path "$LIBRARY_PATH_BUNDLE" --argv0 "$n" "$B/libexec/$n.bin" "$@"
}
EOF
for n in tessera gst-inspect-1.0 gst-plugin-scanner; do
  dir=bin; [ "$n" = gst-plugin-scanner ] && dir=libexec
  # shellcheck disable=SC2016 # the wrapper expands them
  printf '#!/bin/sh\n# %s from the bundle, with its own glibc, libraries and GStreamer plugins.\n. "$(dirname "$0")/../lib/env.sh"\nbundled %s "$@"\n' "$n" "$n" >"$B/$dir/$n"
  chmod +x "$B/$dir/$n"
done

cat >"$B/run.sh" <<'EOF'
#!/bin/sh
# Tessera's GPU benchmark, self-contained: ./run.sh [--check] [gpu.sh options]; gpu.sh's environment
# variables work (ROOMS, BACKENDS, WINDOW, OUT, ...). --check: are the bundled libraries complete
# here, which elements are registered (the GPU ones only with a driver), and `tessera doctor`.
set -eu
B=$(cd "$(dirname "$0")" && pwd)
STATE=${TMPDIR:-/tmp}/tessera-gpu-bench-$(id -u)
mkdir -p "$STATE"
# A fresh plugin registry for every run: nvcodec registers what the GPUs it sees at scan time offer.
GST_REGISTRY=$(mktemp "$STATE/registry-XXXXXX"); rm -f "$GST_REGISTRY"; export GST_REGISTRY
trap 'rm -f "$GST_REGISTRY"' EXIT
# The media folder gpu.sh reads: v0..v15, from the few files shipped.
M=$STATE/media; mkdir -p "$M"
i=0
for f in "$B"/media/*.webm; do i=$((i + 1)); done
j=0
while [ $j -lt 16 ]; do
  k=0; for f in "$B"/media/*.webm; do [ $k -eq $((j % i)) ] && ln -sf "$f" "$M/v$j.webm"; k=$((k + 1)); done
  j=$((j + 1))
done
if [ "${1:-}" = --check ]; then
  BUNDLE=$B
  . "$B/lib/env.sh"
  fail=0
  echo "bundle: $B ($(du -sh "$B" | cut -f1)); host: $(uname -srm); driver folders:${DRIVER_DIRS:- none}"
  # 1. Every bundled program and library resolves its libraries inside the bundle.
  n=0
  for e in "$B"/libexec/*.bin "$B"/lib/*.so* "$B"/lib/gstreamer-1.0/*.so; do
    out=$("$B/lib/glibc/ld-linux-x86-64.so.2" --library-path "$LIBRARY_PATH_BUNDLE" --list "$e" 2>&1) || { echo "FAIL $e: $out"; fail=1; continue; }
    bad=$(echo "$out" | awk -v b="$B/" '/=>/ && ($3 == "not" || index($3, b) != 1) {print $1 " => " $3}')
    [ -z "$bad" ] || { echo "FAIL $e resolves outside the bundle: $bad"; fail=1; }
    n=$((n + 1))
  done
  echo "libraries: $n programs and libraries resolve inside the bundle"
  # 2. The elements the benchmark needs, and the GPU ones (registered only with a driver and GPU).
  miss=""
  for el in queue tee valve capsfilter fakesink filesrc identity appsrc appsink videoconvert videoscale videotestsrc \
      audioconvert audioresample opusdec opusparse textrender textoverlay rtpvp8pay rtpvp8depay rtph264pay rtph264depay \
      rtpopusdepay rtpjitterbuffer vp8enc vp8dec matroskademux x264enc openh264dec h264parse; do
    "$B/bin/gst-inspect-1.0" "$el" >/dev/null 2>&1 || miss="$miss $el"
  done
  if [ -n "$miss" ]; then echo "FAIL elements missing:$miss"; fail=1; else echo "elements: every CPU element the benchmark uses is registered"; fi
  gpu=""
  for el in nvh264enc nvcudah264enc nvh264dec nvvp8dec cudaupload cudadownload cudaconvertscale cudacompositor; do
    if "$B/bin/gst-inspect-1.0" "$el" >/dev/null 2>&1; then gpu="$gpu $el:yes"; else gpu="$gpu $el:no"; fi
  done
  echo "GPU elements:$gpu"
  command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | sed 's/^/nvidia-smi: /' || echo "nvidia-smi: not found"
  # 3. tessera doctor through the bundle.
  "$B/bin/tessera" doctor --backend nvenc || { echo "FAIL tessera doctor"; fail=1; }
  "$B/bin/tessera" doctor --backend nvenc --json >"$STATE/doctor.json" || fail=1
  roles=$(grep -c '"wanted": "nvenc"' "$STATE/doctor.json" || true)
  none=$(awk '/"wanted": "nvenc"/ {getline; if ($0 ~ /null/) print}' "$STATE/doctor.json" | wc -l)
  [ "$roles" -ge 5 ] && [ "$none" -le 2 ] || { echo "FAIL doctor --json: $roles roles, $none without a backend"; fail=1; }
  [ $fail = 0 ] && echo "check: ok" || echo "check: FAILED"
  exit $fail
fi
BIN="$B/bin/tessera" MEDIA="$M" OUT="${OUT:-$B/results}" exec bash "$B/gpu.sh" "$@"
EOF
chmod +x "$B/run.sh" "$B/gpu.sh"
cat >"$B/README.txt" <<'EOF'
Tessera's GPU benchmark (benches/gpu.sh), self-contained for an x86-64 Linux host with the NVIDIA
driver: no GStreamer, no network, no Debian needed.
  ./run.sh --check     bundled libraries complete? elements registered? tessera doctor
  ./run.sh             R rooms x 9 publishers on --backend nvenc and cpu; Markdown table in results/
  ROOMS="1 4 8 16" BACKENDS=nvenc ./run.sh      (gpu.sh's variables: see the top of gpu.sh)
Packages inside: MANIFEST (Debian bookworm).
EOF

size=$(du -sb "$B" | cut -f1)
tar -C "$OUTDIR" -czf "$OUTDIR/$NAME.tar.gz" "$NAME"
say "$B: $((size / 1024 / 1024)) MiB ($size bytes), $(find "$B" -type f | wc -l) files; $OUTDIR/$NAME.tar.gz: $(( $(stat -c %s "$OUTDIR/$NAME.tar.gz") / 1024 / 1024 )) MiB"
[ "$size" -le "$LIMIT" ] || { say "over 64 MiB"; exit 1; }

# ---- check it as a GPU host would see it: unpacked elsewhere, a bare environment -----------------
if [ "${SKIP_CHECK:-0}" != 1 ]; then
  T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
  tar -C "$T" -xzf "$OUTDIR/$NAME.tar.gz"
  env -i PATH=/usr/bin:/bin HOME="$T" TMPDIR="$T" "$T/$NAME/run.sh" --check
fi
