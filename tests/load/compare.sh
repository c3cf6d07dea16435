#!/usr/bin/env bash
# Measure Synapse and Myelin with the same myelin-load run, one after the
# other on this machine, and print the figures side by side with ratios.
#
#   tests/load/compare.sh [MYELIN-LOAD ARGS...]    e.g. --messages 500 --scenarios delivery
#
# Synapse: the throwaway one from tests/interop/synapse.sh (rate limits raised).
# Myelin:  $MYELIN_SERVER_BIN (default ${CARGO_TARGET_DIR:-<repo>/target}/release/myelin-server)
#          on a free loopback port, fresh data dir, embedded SQLite (or
#          --database-url $MYELIN_LOAD_DATABASE_URL), --registration open, rate limits off.
# Results: $MYELIN_LOAD_OUT/{synapse,myelin}.json (default: a new temporary directory, kept).
#
# Neither binary is built here:
#   cargo build --release -p myelin-server
#   cargo build --release -p myelin-tests --bin myelin-load
#
# A scenario that fails on one server (an endpoint missing, a bad answer) is
# reported as failed with the endpoint, status and errcode; the others still
# run and are compared. Exit status: 0 when every scenario passed on both.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../interop/lib.sh
source "$repo/tests/interop/lib.sh"

log() { echo "compare: $*" >&2; }
die() { echo "compare: error: $*" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-$repo/target}
load_bin=${MYELIN_LOAD_BIN:-$target/release/myelin-load}
server_bin=${MYELIN_SERVER_BIN:-$target/release/myelin-server}
[[ -x "$load_bin" ]] || die "no load tool at $load_bin (cargo build --release -p myelin-tests --bin myelin-load)"
[[ -x "$server_bin" ]] || die "no server at $server_bin (cargo build --release -p myelin-server)"
export MYELIN_LOAD_BIN=$load_bin

out=${MYELIN_LOAD_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/myelin-load.XXXXXX")}
mkdir -p "$out"
log "results go to $out"

status=0

log "== Synapse =="
"$repo/tests/interop/synapse.sh" "$here/run-one.sh" synapse "$out/synapse.json" "$@" || status=1

log "== Myelin =="
data=$(mktemp -d "${TMPDIR:-/tmp}/myelin-load-server.XXXXXX")
pid=
# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  [[ -n "$pid" ]] && stop_pid "$pid"
  rm -rf "$data"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=$(free_port)
url=http://127.0.0.1:$port
printf '[rate_limits]\nenabled = false\n' > "$data/load.toml"
args=(--config "$data/load.toml" --bind "127.0.0.1:$port" --server-name localhost
      --data-dir "$data/server" --registration open --log warn)
if [[ -n "${MYELIN_LOAD_DATABASE_URL:-}" ]]; then
  args+=(--database-url "$MYELIN_LOAD_DATABASE_URL")
fi
# Keep this script's own MYELIN_* variables away from the server's configuration.
unset_args=()
while IFS= read -r name; do
  unset_args+=(-u "$name")
done < <(compgen -e | grep -E '^MYELIN_(LOAD_|SERVER_BIN$|INTEROP_|TEST_)' || true)
env "${unset_args[@]}" "$server_bin" "${args[@]}" > "$data/server.log" 2>&1 &
pid=$!
if wait_for_versions "$url" "$pid" 30; then
  log "Myelin is up on $url"
  "$here/run-one.sh" myelin "$out/myelin.json" "$@" "$url" || {
    status=1
    log "Myelin run had failures; last lines of the server log:"
    tail -n 20 "$data/server.log" >&2 || true
  }
else
  tail -n 40 "$data/server.log" >&2 || true
  status=1
fi
stop_pid "$pid"
pid=

if [[ -f "$out/synapse.json" && -f "$out/myelin.json" ]]; then
  "$load_bin" --compare "$out/synapse.json" "$out/myelin.json"
else
  log "no comparison: a result file is missing (see above)"
fi
log "results: $out/synapse.json $out/myelin.json"
exit "$status"
