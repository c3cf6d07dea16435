#!/usr/bin/env bash
# Start a Myelin server on a free loopback port with a fresh data directory,
# run the interop smoke test (or CMD) against it, and stop it again.
#
#   tests/interop/with-server.sh                  runs tests/interop/run.sh URL
#   tests/interop/with-server.sh CMD [ARGS...]    runs CMD ARGS... URL instead
#
# Environment:
#   MYELIN_SERVER_BIN            the server binary (default
#                                ${CARGO_TARGET_DIR:-<repo>/target}/debug/myelin-server);
#                                this script does not build it
#   MYELIN_INTEROP_DATABASE_URL  if set, passed as --database-url (e.g. PostgreSQL);
#                                otherwise the server's embedded SQLite in the data dir
#   MYELIN_INTEROP_KEEP=1        keep the data directory and server log
#
# The server runs with a generated config file that switches rate limits off.
#
# The command also gets HOMESERVER_URL, MYELIN_INTEROP_SERVER_NAME=localhost
# and MYELIN_INTEROP_E2E_ONLY_POLICY=1 (the server enforces E2E-only rooms,
# which the crypto test then checks) in its environment. The server is stopped and the data directory removed on
# every exit path.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"

log() { echo "with-server: $*" >&2; }
die() { echo "with-server: error: $*" >&2; exit 1; }

bin=${MYELIN_SERVER_BIN:-${CARGO_TARGET_DIR:-$repo/target}/debug/myelin-server}
[[ -x "$bin" ]] || die "no server binary at $bin (build it with: cargo build -p myelin-server, or set MYELIN_SERVER_BIN)"
command -v curl >/dev/null || die "curl is needed to wait for the server"

if [[ $# -eq 0 ]]; then
  set -- "$here/run.sh"
fi

data=$(mktemp -d "${TMPDIR:-/tmp}/myelin-interop.XXXXXX")
pid=
# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  [[ -n "$pid" ]] && stop_pid "$pid"
  if [[ "${MYELIN_INTEROP_KEEP:-0}" == 1 ]]; then
    log "kept $data"
  else
    rm -rf "$data"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port=$(free_port)
url=http://127.0.0.1:$port
# Rate limits off, as synapse.sh raises Synapse's: the test registers three
# accounts in a row, more than the default registration burst allows.
cat > "$data/server.toml" <<'EOF'
[rate_limits]
enabled = false
EOF
args=(--config "$data/server.toml" --bind "127.0.0.1:$port" --server-name localhost --data-dir "$data/server")
if [[ -n "${MYELIN_INTEROP_DATABASE_URL:-}" ]]; then
  args+=(--database-url "$MYELIN_INTEROP_DATABASE_URL")
fi

# Everything the server needs is on its command line. Keep this harness's own
# variables (MYELIN_INTEROP_*, MYELIN_TEST_*, MYELIN_SERVER_BIN) away from
# its MYELIN_* configuration.
unset_args=()
while IFS= read -r name; do
  unset_args+=(-u "$name")
done < <(compgen -e | grep -E '^MYELIN_(INTEROP_|TEST_|SERVER_BIN$)' || true)

log "starting $bin on $url ($( [[ -n "${MYELIN_INTEROP_DATABASE_URL:-}" ]] && echo "database from MYELIN_INTEROP_DATABASE_URL" || echo "SQLite in $data/server"))"
env "${unset_args[@]}" "$bin" "${args[@]}" > "$data/server.log" 2>&1 &
pid=$!
if ! wait_for_versions "$url" "$pid" 30; then
  log "last lines of the server log:"
  tail -n 40 "$data/server.log" >&2 || true
  exit 1
fi
log "server is up on $url"

status=0
HOMESERVER_URL=$url MYELIN_INTEROP_SERVER_NAME=localhost MYELIN_INTEROP_E2E_ONLY_POLICY=1 \
  "$@" "$url" || status=$?
if (( status != 0 )); then
  log "command failed ($status); last lines of the server log:"
  tail -n 40 "$data/server.log" >&2 || true
fi
exit "$status"
