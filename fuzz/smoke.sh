#!/usr/bin/env bash
# CI smoke run of every fuzz target: a few seconds each (FUZZ_SMOKE_SECONDS, default 5) over the
# committed corpus. New inputs go to a temporary directory, so the committed corpus is unchanged;
# a crash fails the script and leaves its input in fuzz/artifacts/<target>/.
# Needs a nightly toolchain and cargo-fuzz; without them it says so and exits 0 (the stable replay
# of the corpus, tests/fuzz_corpus.rs, runs in `cargo test` regardless).
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SMOKE_SECONDS:-5}
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz/smoke.sh: skipped: no nightly Rust toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz/smoke.sh: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)"
  exit 0
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# A smoke run needs the targets, not their speed: opt-level 1 without debug info builds in about
# two thirds of the time (6.5 min on 2 cores). Long campaigns (README.md) use the full profile.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=${CARGO_PROFILE_RELEASE_OPT_LEVEL:-1}
export CARGO_PROFILE_RELEASE_DEBUG=${CARGO_PROFILE_RELEASE_DEBUG:-0}
cargo +nightly fuzz build -O
for t in $(cargo +nightly fuzz list); do
  mkdir -p "$scratch/$t"
  echo "fuzz/smoke.sh: $t for ${secs}s"
  status=0
  cargo +nightly fuzz run -O "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$scratch/$t.log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec)' "$scratch/$t.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$scratch/$t.log" >&2
    echo "fuzz/smoke.sh: $t failed (exit $status); the crashing input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "fuzz/smoke.sh: every target ran ${secs}s without a crash"
