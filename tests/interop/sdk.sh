#!/usr/bin/env bash
# Two myelin-sdk clients chat through a running homeserver: the ignored
# test `sdk_homeserver::two_sdk_clients_chat_through_any_homeserver`.
#
#   tests/interop/sdk.sh URL
#   tests/interop/synapse.sh tests/interop/sdk.sh      # against a throwaway Synapse
#   tests/interop/with-server.sh tests/interop/sdk.sh  # against a Myelin binary
#
# Builds the test binary if needed (cargo, with CARGO_TARGET_DIR as set).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
url=${1:-${HOMESERVER_URL:-}}
[[ -n "$url" ]] || { echo "sdk: usage: $0 HOMESERVER_URL" >&2; exit 2; }

cd "$repo"
MYELIN_SDK_HOMESERVER=$url exec cargo test -p myelin-tests --locked --test it \
  -- --ignored --nocapture --exact sdk_homeserver::two_sdk_clients_chat_through_any_homeserver
