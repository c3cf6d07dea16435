#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 20) and fails if any
# crashes, panics, hangs or runs out of memory. Installs cargo-fuzz into
# ~/.cache/myelin-cargo-fuzz on first use; builds and grows the corpora
# in ~/.cache/myelin-fuzz-target, so later runs rebuild quickly and start
# from what earlier runs found. The committed seeds in corpus/ are read,
# never written. See README.md.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds="${1:-20}"
shift || true

tools="$HOME/.cache/myelin-cargo-fuzz"
export PATH="$tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2 --root "$tools"
fi
export CARGO_TARGET_DIR="${MYELIN_FUZZ_TARGET_DIR:-$HOME/.cache/myelin-fuzz-target}"
export CARGO_TERM_COLOR=never

# cargo fuzz has no --locked: check the committed lock file holds first.
cargo metadata --locked --format-version 1 >/dev/null
# Stable Rust: no AddressSanitizer (`-s address` needs nightly's -Z flags).
# MYELIN_FUZZ_DEV=1 builds without optimisations: a short run (CI's) spends
# less time compiling the workspace's crates anew than it loses in speed.
build=(-s none)
if [ "${MYELIN_FUZZ_DEV:-0}" = 1 ]; then
  build+=(--dev)
fi
cargo fuzz build "${build[@]}"

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

failed=()
printf '%-24s %12s %8s\n' target executions seconds
for target in "${targets[@]}"; do
  work="$CARGO_TARGET_DIR/corpus/$target"
  log="$CARGO_TARGET_DIR/logs/$target.log"
  mkdir -p "$work" "$(dirname "$log")" "corpus/$target"
  # New inputs go to the first directory; the committed seeds are read only.
  if cargo fuzz run "${build[@]}" "$target" "$work" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    printf '%-24s %12s %8s\n' "$target" "${runs:-?}" "$seconds"
  else
    printf '%-24s %12s %8s\n' "$target" CRASHED "$seconds"
    tail -n 40 "$log"
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs under fuzz/artifacts/, logs under $CARGO_TARGET_DIR/logs/)" >&2
  exit 1
fi
