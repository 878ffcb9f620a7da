#!/usr/bin/env bash
# Runs every property target of tests/fuzz.rs (SDP offers, inbound RTP and RTCP, STUN routing,
# the audio jitter buffer, simulcast switching, data-channel messages, tokens) for SECS seconds
# each with fresh random seeds, one after another, and prints the cases run per target. A
# failure prints the shrunk input (add it to the regression tests at the end of tests/fuzz.rs).
#
#   benches/fuzz.sh [SECS=120]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-120}
cargo test --release --test fuzz --no-run 2>&1 | tail -1
out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$(date +%s)
if FUZZ_SECS=$SECS cargo test --release --test fuzz -- --test-threads 1 --nocapture >"$out" 2>&1; then
  status="no failure"
else
  status="FAILED"
fi
grep -oE 'FUZZ .*' "$out" || true
grep -E 'panicked|minimal failing input|Test failed' "$out" || true
echo "fuzz: $status, $(( $(date +%s) - start )) s in all ($SECS s per target)"
[ "$status" = "no failure" ]
