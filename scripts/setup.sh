#!/usr/bin/env bash
# Installs what building, running and testing Tessera needs on Debian 12 (bookworm) or
# Ubuntu 24.04+: a C toolchain, cmake, GStreamer (>= 1.22) with its plugins, and Rust (>= 1.95,
# through rustup, only when `cargo` is missing). Safe to run again: packages that are already
# installed are not touched, and a machine that has everything does not call apt at all.
#
#   bash scripts/setup.sh            # build + run
#   bash scripts/setup.sh --test     # also Chromium + chromedriver for the browser test
#   bash scripts/setup.sh --update   # always `apt-get update` and (re)install every package
#                                    # listed (upgrading any that are out of date); CI uses this
#
# Runs apt as root, through sudo when not root. Rust goes to the invoking user's ~/.cargo
# (the user behind `sudo` when run with sudo).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

MIN_RUST=1.95
MIN_GST=1.22

BASE_PACKAGES=(
  build-essential pkg-config cmake git ca-certificates curl
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-x
)

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

log() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

want_test=0
force_update=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    --update) force_update=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $arg" ;;
  esac
done

# --- Where we are -----------------------------------------------------------------------------

if ! command -v dpkg >/dev/null || ! command -v apt-get >/dev/null; then
  die "this script needs a Debian or Ubuntu system (dpkg and apt-get)"
fi

os_id=unknown os_like="" os_version=""
if [[ -r /etc/os-release ]]; then
  # Sourced in subshells, so its variables stay out of this script.
  # shellcheck disable=SC1091
  os_id=$(. /etc/os-release && printf '%s' "${ID:-unknown}")
  # shellcheck disable=SC1091
  os_like=$(. /etc/os-release && printf '%s' "${ID_LIKE:-}")
  # shellcheck disable=SC1091
  os_version=$(. /etc/os-release && printf '%s' "${VERSION_ID:-}")
fi
is_ubuntu=0
if [[ $os_id == ubuntu || " $os_like " == *" ubuntu "* ]]; then
  is_ubuntu=1
elif [[ $os_id != debian && " $os_like " != *" debian "* ]]; then
  warn "untested distribution '$os_id': trying the Debian package names"
fi
log "system: ${os_id} ${os_version}"

version_lt() { # version_lt A B: A < B (dpkg ordering)
  dpkg --compare-versions "$1" lt "$2"
}
# GStreamer >= 1.22 is needed (the gstreamer crates are built with the v1_22 feature):
# Debian 12 has 1.22, Ubuntu 22.04 only 1.20, Ubuntu 24.04 has 1.24.
if [[ $os_id == ubuntu && -n $os_version ]] && version_lt "$os_version" 23.04; then
  warn "Ubuntu $os_version ships GStreamer older than $MIN_GST; Tessera will not build here (use Ubuntu 24.04+ or Debian 12)"
fi

as_root() { # as_root CMD...: run CMD as root, through sudo when not root
  if [[ $EUID -eq 0 ]]; then
    log "$*"
    "$@"
  elif command -v sudo >/dev/null; then
    log "sudo $*"
    # sudo resets the environment: pass DEBIAN_FRONTEND on explicitly.
    sudo env DEBIAN_FRONTEND=noninteractive "$@"
  else
    die "need root for: $*  (run this script as root, or install sudo)"
  fi
}

# (Outputs are captured whole before matching: `cmd | grep -q` can fail under pipefail.)
installed() { # installed PKG: dpkg knows PKG as fully installed
  local st
  st=$(dpkg -s "$1" 2>/dev/null) || return 1
  grep -q '^Status: .* ok installed$' <<<"$st"
}
available() { # available PKG: apt has an installation candidate for PKG
  local policy c
  policy=$(apt-cache policy "$1" 2>/dev/null) || return 1
  c=$(awk '/Candidate:/ { print $2 }' <<<"$policy")
  [[ -n $c && $c != "(none)" ]]
}

# --- System packages --------------------------------------------------------------------------

# What the tests start for real, each a Debian package:
# - egress: a local RTMP server (nginx with its RTMP module), an SRT listener (srt-tools);
# - clients Tessera did not write: Firefox ESR (the web page; geckodriver comes from crates.io
#   below), GStreamer's webrtcbin driven from Python (gi, the bad plugins' typelibs, libnice);
# - the cloud pieces: coturn (TURN relay), redis-server (the shared room registry);
# - python3-venv for test tools from PyPI (an S3-compatible server, the manifest validator).
TEST_PACKAGES=(
  nginx libnginx-mod-rtmp srt-tools
  firefox-esr python3-gi gir1.2-gst-plugins-bad-1.0 gstreamer1.0-nice
  coturn redis-server python3-venv python3-pip iproute2
)

missing=()
for p in "${BASE_PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done
if [[ $want_test -eq 1 ]]; then
  for p in "${TEST_PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
  done
fi

# The browser test needs a Chromium and a matching chromedriver. Debian: chromium +
# chromium-driver. Ubuntu: `chromium` if some archive has it, else chromium-browser /
# chromium-chromedriver, which are shims that install the snap (they need snapd).
if [[ $is_ubuntu -eq 1 ]]; then
  browser_choices=(chromium chromium-browser)
  driver_choices=(chromium-driver chromium-chromedriver)
else
  browser_choices=(chromium)
  driver_choices=(chromium-driver)
fi
need_browser=0 need_driver=0
if [[ $want_test -eq 1 ]]; then
  need_browser=1 need_driver=1
  for p in "${browser_choices[@]}"; do installed "$p" && need_browser=0 && break; done
  for p in "${driver_choices[@]}"; do installed "$p" && need_driver=0 && break; done
fi

if [[ ${#missing[@]} -eq 0 && $need_browser -eq 0 && $need_driver -eq 0 && $force_update -eq 0 ]]; then
  log "system packages: all present, apt not needed"
else
  as_root apt-get update

  to_install=("${missing[@]}")
  if [[ $force_update -eq 1 ]]; then
    to_install=("${BASE_PACKAGES[@]}")
    [[ $want_test -eq 1 ]] && to_install+=("${TEST_PACKAGES[@]}")
  fi
  if [[ ${#to_install[@]} -gt 0 ]]; then
    log "installing: ${to_install[*]}"
    as_root apt-get install -y --no-install-recommends "${to_install[@]}"
  fi

  if [[ $want_test -eq 1 ]]; then
    test_pkgs=()
    if [[ $need_browser -eq 1 || $force_update -eq 1 ]]; then
      pick=""
      for p in "${browser_choices[@]}"; do
        if installed "$p" || available "$p"; then pick=$p; break; fi
      done
      [[ -n $pick ]] || die "no Chromium package available from apt (tried: ${browser_choices[*]})"
      if [[ $pick == chromium-browser ]]; then
        warn "chromium-browser on Ubuntu is a shim that installs the Chromium snap: it needs a running snapd"
      fi
      test_pkgs+=("$pick")
    fi
    if [[ $need_driver -eq 1 || $force_update -eq 1 ]]; then
      pick=""
      for p in "${driver_choices[@]}"; do
        if installed "$p" || available "$p"; then pick=$p; break; fi
      done
      if [[ -n $pick ]]; then
        test_pkgs+=("$pick")
      else
        warn "chromedriver is NOT available from apt here (tried: ${driver_choices[*]})."
        warn "The browser integration test needs it: put a chromedriver matching your Chromium on PATH."
      fi
    fi
    if [[ ${#test_pkgs[@]} -gt 0 ]]; then
      log "installing (tests): ${test_pkgs[*]}"
      as_root apt-get install -y --no-install-recommends "${test_pkgs[@]}" \
        || die "could not install ${test_pkgs[*]} (on Ubuntu these need snapd; Debian 12 has plain packages)"
    fi
  fi
fi

gst_version=$(pkg-config --modversion gstreamer-1.0 2>/dev/null || true)
if [[ -z $gst_version ]]; then
  die "pkg-config cannot find gstreamer-1.0 after installing libgstreamer1.0-dev"
elif version_lt "$gst_version" "$MIN_GST"; then
  die "GStreamer $gst_version is too old: Tessera needs >= $MIN_GST (Debian 12 or Ubuntu 24.04+)"
fi
log "GStreamer $gst_version"

if [[ $want_test -eq 1 ]]; then
  for c in chromium chromium-browser; do
    if command -v "$c" >/dev/null; then log "browser: $(command -v "$c")"; break; fi
  done
  if command -v chromedriver >/dev/null; then
    log "chromedriver: $(command -v chromedriver)"
  else
    warn "no chromedriver on PATH: the browser integration test cannot run"
  fi
fi

# --- Rust -------------------------------------------------------------------------------------

# With sudo, Rust belongs to the user who ran sudo, not to root.
rust_user="" rust_home=${HOME:-/root}
if [[ $EUID -eq 0 && -n ${SUDO_USER:-} && ${SUDO_USER} != root ]]; then
  rust_user=$SUDO_USER
  rust_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
  [[ -n $rust_home ]] || die "cannot find the home directory of $SUDO_USER"
fi
as_rust_user() {
  if [[ -n $rust_user ]]; then sudo -u "$rust_user" -H "$@"; else "$@"; fi
}

cargo_bin=""
if [[ -z $rust_user ]] && command -v cargo >/dev/null; then
  cargo_bin=$(command -v cargo)
elif [[ -x $rust_home/.cargo/bin/cargo ]]; then
  cargo_bin=$rust_home/.cargo/bin/cargo
elif command -v cargo >/dev/null; then
  cargo_bin=$(command -v cargo)
fi

rust_note=""
if [[ -z $cargo_bin ]]; then
  log "cargo not found: installing Rust (stable) with rustup into $rust_home/.cargo"
  rustup_init=$(mktemp /tmp/rustup-init.XXXXXX)
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs -o "$rustup_init" \
    || { rm -f "$rustup_init"; die "could not download the rustup installer"; }
  chmod a+r "$rustup_init"
  as_rust_user sh "$rustup_init" -y --profile minimal --default-toolchain stable
  rm -f "$rustup_init"
  cargo_bin=$rust_home/.cargo/bin/cargo
  rust_note="Rust was installed into $rust_home/.cargo/bin, which this shell does not have on PATH yet: open a new shell, or run  . \"\$HOME/.cargo/env\"  before cargo."
elif [[ -z $rust_user ]] && [[ $(command -v cargo || true) != "$cargo_bin" ]]; then
  rust_note="cargo is at $cargo_bin but not on PATH: run  . \"\$HOME/.cargo/env\"  first."
fi

cargo_version=$(as_rust_user "$cargo_bin" --version | awk '{ print $2 }') \
  || die "$cargo_bin does not run (with rustup: rustup default stable)"
log "cargo $cargo_version ($cargo_bin)"
if version_lt "${cargo_version%%-*}" "$MIN_RUST"; then
  warn "Tessera needs Rust $MIN_RUST or newer; this cargo is $cargo_version."
  warn "With rustup: rustup update stable. A distribution's cargo is usually too old: use rustup."
fi

# Firefox's WebDriver (the Firefox test): not in Debian; built from crates.io once (~2.5 min).
GECKODRIVER_VERSION=0.37.1
if [[ $want_test -eq 1 ]] && ! command -v geckodriver >/dev/null && [[ ! -x $rust_home/.cargo/bin/geckodriver ]]; then
  log "installing geckodriver $GECKODRIVER_VERSION with cargo install"
  as_rust_user "$cargo_bin" install --locked --quiet geckodriver --version "$GECKODRIVER_VERSION"
fi

# The S3-compatible server the object-storage test starts (moto, from PyPI) goes into a venv of
# its own (Debian's Python is externally managed), where the test looks for it:
# ${XDG_CACHE_HOME:-~/.cache}/tessera-test-venv/bin/moto_server (or set TESSERA_MOTO_SERVER).
MOTO_REQUIREMENT='moto[server]==5.2.1'
if [[ $want_test -eq 1 ]]; then
  test_venv=${TESSERA_TEST_VENV:-${XDG_CACHE_HOME:-$rust_home/.cache}/tessera-test-venv}
  stamp=$test_venv/.tessera-requirements
  if [[ ! -x $test_venv/bin/moto_server || ! -f $stamp || $(cat "$stamp") != "$MOTO_REQUIREMENT" ]]; then
    if [[ -e $test_venv && ! -f $test_venv/pyvenv.cfg ]]; then
      die "$test_venv exists and is not a Python venv: set TESSERA_TEST_VENV elsewhere"
    fi
    log "making the test venv $test_venv ($MOTO_REQUIREMENT)"
    rm -rf "$test_venv"
    as_rust_user mkdir -p "$(dirname "$test_venv")"
    as_rust_user python3 -m venv "$test_venv" || die "python3 -m venv failed: install python3-venv"
    as_rust_user "$test_venv/bin/python" -m pip install --quiet --disable-pip-version-check "$MOTO_REQUIREMENT" \
      || die "could not install $MOTO_REQUIREMENT from PyPI"
    printf '%s' "$MOTO_REQUIREMENT" | as_rust_user tee "$stamp" >/dev/null
  fi
  log "moto_server: $test_venv/bin/moto_server"
fi

# The tests' lint step (.ci/run) needs rustfmt and clippy; rustup's minimal profile has neither.
if [[ $want_test -eq 1 ]]; then
  if ! as_rust_user "$cargo_bin" fmt --version >/dev/null 2>&1 || ! as_rust_user "$cargo_bin" clippy --version >/dev/null 2>&1; then
    rustup_bin=$(dirname "$cargo_bin")/rustup
    if [[ -x $rustup_bin ]]; then
      log "adding rustfmt and clippy"
      as_rust_user "$rustup_bin" component add rustfmt clippy
    else
      warn "cargo fmt / cargo clippy are missing and there is no rustup next to cargo: install them to lint"
    fi
  fi
fi

log "setup done"
if [[ -n $rust_note ]]; then
  printf '\nNOTE: %s\n' "$rust_note"
fi
