#!/usr/bin/env bash
# A Myelin server and a throwaway Synapse federate: myelin-sdk users on each
# share an end-to-end encrypted room, each side creating it in turn (the
# ignored test `federation_chat::myelin_and_synapse_users_chat_end_to_end_encrypted`).
#
#   tests/interop/federation-synapse.sh
#
# Synapse runs with MYELIN_SYNAPSE_FEDERATION=1 (tests/interop/synapse.sh);
# the Myelin server is the test's own, on loopback. Builds the test binary
# if needed (cargo, with CARGO_TARGET_DIR as set).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

if [[ $# -eq 0 ]]; then
  MYELIN_SYNAPSE_FEDERATION=1 exec "$here/synapse.sh" "$0"
fi
cd "$repo"
MYELIN_SYNAPSE_URL=$1 exec cargo test -p myelin-tests --locked --test it \
  -- --ignored --nocapture --exact federation_chat::myelin_and_synapse_users_chat_end_to_end_encrypted
