#!/usr/bin/env bash
# Schema-driven fuzzing of every Client-Server endpoint with schemathesis,
# checking that no generated request gets a 5xx.
#
#   tests/interop/with-server.sh tests/fuzz-api/run.sh   against a fresh debug server
#   tests/fuzz-api/run.sh URL                            against a running server
#
# Environment:
#   MYELIN_FUZZ_SECONDS  time budget (default 120)
#   MYELIN_FUZZ_CACHE    where the schemathesis venv lives
#                        (default ~/.cache/myelin-fuzz; installed on first use)
#
# client-server.json is the spec's Client-Server API as one OpenAPI document
# (see README.md beside it). setup.py first makes a user who is in a room
# with a message, a filter, an upload and a key backup, and names them in the
# path parameters, so that requests get past "unknown room" to the logic.
# Paths that would end the fuzzing user's session (logout, device deletion,
# password change, deactivation) are left out, else every later request is
# a 401.
set -euo pipefail

schemathesis_version=4.32.5

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
url=${1:?usage: run.sh URL}
seconds=${MYELIN_FUZZ_SECONDS:-120}
cache=${MYELIN_FUZZ_CACHE:-$HOME/.cache/myelin-fuzz}
venv=$cache/venv-$schemathesis_version

log() { echo "fuzz-api: $*" >&2; }

if [[ ! -f "$venv/.installed" ]]; then
  log "installing schemathesis==$schemathesis_version into $venv"
  mkdir -p "$cache"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version" >&2 ||
    { rm -rf "$venv"; log "pip install failed"; exit 1; }
  touch "$venv/.installed"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/myelin-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

python3 "$here/setup.py" "$url" > "$work/schemathesis.toml" 2> "$work/setup.err" ||
  { cat "$work/setup.err" >&2; exit 1; }
token=$(sed -n 's/^TOKEN=//p' "$work/setup.err")

log "fuzzing $url for ${seconds}s"
status=0
# From the scratch directory: schemathesis keeps a cache in its working directory.
cd "$work"
"$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$here/client-server.json" \
  --url "$url" -H "Authorization: Bearer $token" \
  --checks not_a_server_error --max-time "$seconds" --workers 1 \
  --exclude-path-regex 'logout|delete_devices|account/password|account/deactivate|/devices/' \
  --suppress-health-check all --no-color \
  > "$work/report.txt" 2>&1 || status=$?
[[ -n "${MYELIN_FUZZ_REPORT:-}" ]] && cp "$work/report.txt" "$MYELIN_FUZZ_REPORT"
# The summary: operations, test cases, and any failure.
grep -E 'Operations:|generated,|Failures|not_a_server_error|Server error' "$work/report.txt" >&2 || true
if (( status != 0 )); then
  log "schemathesis reported failures (exit $status); full report:"
  cat "$work/report.txt" >&2
fi
exit "$status"
