#!/usr/bin/env bash
# Start a throwaway Synapse on loopback, as a reference homeserver to compare
# Myelin against.
#
#   tests/interop/synapse.sh CMD [ARGS...]   start Synapse, run `CMD ARGS... URL`,
#                                            stop Synapse, exit with CMD's status
#   tests/interop/synapse.sh                 start Synapse and wait until Ctrl-C
#
#   e.g. tests/interop/synapse.sh tests/interop/run.sh
#
# The command also gets HOMESERVER_URL and MYELIN_INTEROP_SERVER_NAME=localhost
# in its environment. Synapse (pinned
# below) is installed from PyPI into a venv under
# ${MYELIN_SYNAPSE_CACHE:-$HOME/.cache/myelin-synapse}, reused while the pin is
# unchanged. Each run gets a fresh data directory (SQLite, a generated signing
# key, server_name localhost) on a free 127.0.0.1 port, with open registration
# (m.login.dummy) and rate limits raised out of the way; it is removed on exit
# unless MYELIN_SYNAPSE_KEEP=1.
#
# With MYELIN_SYNAPSE_FEDERATION=1, Synapse also federates: its server name is
# localhost:FEDPORT, served over TLS with a fresh self-signed certificate on
# that port; it accepts self-signed peers and may connect to loopback (test
# set-ups only). MYELIN_INTEROP_SERVER_NAME then carries that name.
set -euo pipefail

synapse_version=1.163.2

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"

cache=${MYELIN_SYNAPSE_CACHE:-$HOME/.cache/myelin-synapse}
python=${MYELIN_SYNAPSE_PYTHON:-python3}
venv=$cache/venv-$synapse_version

log() { echo "synapse: $*" >&2; }
die() { echo "synapse: error: $*" >&2; exit 1; }

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "$python is $("$python" --version 2>&1); Synapse $synapse_version needs Python >= 3.10 (set MYELIN_SYNAPSE_PYTHON)"

if [[ ! -f "$venv/.installed" ]]; then
  log "installing matrix-synapse==$synapse_version into $venv"
  mkdir -p "$cache"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "matrix-synapse==$synapse_version" >&2 ||
    { rm -rf "$venv"; die "pip install matrix-synapse==$synapse_version failed"; }
  touch "$venv/.installed"
fi

data=$(mktemp -d "${TMPDIR:-/tmp}/myelin-synapse.XXXXXX")
pid=
# shellcheck disable=SC2329 # run by the EXIT trap
cleanup() {
  [[ -n "$pid" ]] && stop_pid "$pid"
  if [[ "${MYELIN_SYNAPSE_KEEP:-0}" == 1 ]]; then
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
server_name=localhost
federation_config=
if [[ "${MYELIN_SYNAPSE_FEDERATION:-0}" == 1 ]]; then
  federation_port=$(free_port)
  server_name=localhost:$federation_port
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost \
    -keyout "$data/tls.key" -out "$data/tls.crt" 2>/dev/null
  federation_config="
  - port: $federation_port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: true
    resources:
      - names: [federation]
tls_certificate_path: $data/tls.crt
tls_private_key_path: $data/tls.key
federation_verify_certificates: false
ip_range_whitelist: ['127.0.0.0/8']"
fi
secret() { "$python" -c 'import secrets; print(secrets.token_hex(32))'; }

# rc_* values: high enough that no test ever meets them.
lots='{per_second: 100000, burst_count: 1000000}'
cat > "$data/homeserver.yaml" <<EOF
server_name: $server_name
public_baseurl: $url/
pid_file: $data/homeserver.pid
report_stats: false
listeners:
  - port: $port
    bind_addresses: ['127.0.0.1']
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client, federation]
        compress: false$federation_config
database:
  name: sqlite3
  args:
    database: $data/homeserver.db
log_config: $data/log.yaml
media_store_path: $data/media_store
signing_key_path: $data/signing.key
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: $(secret)
macaroon_secret_key: $(secret)
form_secret: $(secret)
url_preview_enabled: false
# The spec lets anyone read GET /publicRooms without an access token;
# Synapse asks for one unless told otherwise.
allow_public_rooms_without_auth: true
# createRoom with visibility public must publish the room (spec); Synapse's
# default rules quietly keep every room out of the directory.
room_list_publication_rules:
  - action: allow
rc_message: $lots
rc_registration: $lots
rc_registration_token_validity: $lots
rc_login:
  address: $lots
  account: $lots
  failed_attempts: $lots
rc_admin_redaction: $lots
rc_joins:
  local: $lots
  remote: $lots
rc_joins_per_room: $lots
rc_3pid_validation: $lots
rc_invites:
  per_room: $lots
  per_user: $lots
  per_issuer: $lots
rc_key_requests: $lots
rc_presence:
  per_user: $lots
rc_delayed_event_mgmt: $lots
rc_room_creation: $lots
rc_reports: $lots
rc_federation:
  window_size: 1000
  sleep_limit: 100000
  sleep_delay: 0
  reject_limit: 100000
  concurrent: 1000
EOF
cat > "$data/log.yaml" <<EOF
version: 1
formatters:
  plain:
    format: '%(asctime)s %(name)s %(levelname)s %(message)s'
handlers:
  file:
    class: logging.FileHandler
    filename: $data/homeserver.log
    formatter: plain
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
EOF
"$venv/bin/python" -m synapse._scripts.generate_signing_key -o "$data/signing.key"

log "starting Synapse $synapse_version on $url (data in $data)"
"$venv/bin/python" -m synapse.app.homeserver -c "$data/homeserver.yaml" \
  > "$data/stdout.log" 2>&1 &
pid=$!
if ! wait_for_versions "$url" "$pid" 60; then
  tail -n 40 "$data/stdout.log" "$data/homeserver.log" >&2 2>/dev/null || true
  exit 1
fi
log "Synapse is up on $url"

if [[ $# -eq 0 ]]; then
  log "press Ctrl-C to stop"
  wait "$pid"
else
  status=0
  HOMESERVER_URL=$url MYELIN_INTEROP_SERVER_NAME=$server_name "$@" "$url" || status=$?
  exit "$status"
fi
