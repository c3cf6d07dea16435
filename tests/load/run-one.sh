#!/usr/bin/env bash
# Run myelin-load against the homeserver at URL (the last argument, as the
# interop harnesses pass it), with --server-pid set to whichever process
# listens on URL's port, so the run reports the server's resident memory.
#
#   tests/load/run-one.sh LABEL OUT.json [MYELIN-LOAD ARGS...] URL
#
#   e.g. tests/interop/synapse.sh tests/load/run-one.sh synapse /tmp/synapse.json
#
# MYELIN_LOAD_BIN: the tool (default ${CARGO_TARGET_DIR:-<repo>/target}/release/myelin-load).
# Exits with the tool's status (0 all scenarios passed, 1 some failed, 2 could not run).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "run-one: error: $*" >&2; exit 2; }

(( $# >= 3 )) || die "usage: $0 LABEL OUT.json [MYELIN-LOAD ARGS...] URL"
label=$1 out=$2
shift 2
url=${*: -1}
args=("${@:1:$#-1}")

bin=${MYELIN_LOAD_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/myelin-load}
[[ -x "$bin" ]] || die "no load tool at $bin (cargo build --release -p myelin-tests --bin myelin-load, or set MYELIN_LOAD_BIN)"

# The listening process of URL's port (ss shows pids of our own processes).
port=${url##*:}
port=${port%%/*}
pid_args=()
if [[ "$port" =~ ^[0-9]+$ ]] && command -v ss >/dev/null; then
  pid=$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2 || true)
  if [[ -n "$pid" ]]; then
    pid_args=(--server-pid "$pid")
    echo "run-one: server pid $pid listens on port $port" >&2
  fi
fi
(( ${#pid_args[@]} )) || echo "run-one: no server pid found for $url; memory is not reported" >&2

exec "$bin" --homeserver "$url" --label "$label" --json "$out" "${pid_args[@]}" "${args[@]}"
