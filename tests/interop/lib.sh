# shellcheck shell=bash
# Helpers shared by the interop scripts that start a homeserver. Source it.

# free_port: print a TCP port that was free on 127.0.0.1 a moment ago.
# (The kernel picks it; another process could take it before the server
# binds, which the start-up wait below then reports.)
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for_versions URL PID [SECONDS]: wait until GET URL/_matrix/client/versions
# answers 200, at most SECONDS (default 30), giving up early if PID dies.
# Polling is acceptable here: it only covers process start-up.
wait_for_versions() {
  local url=$1 pid=$2 seconds=${3:-30} i
  for (( i = 0; i < seconds * 4; i++ )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "interop: the server (pid $pid) exited during start-up" >&2
      return 1
    fi
    if curl -fsS -o /dev/null --max-time 2 "$url/_matrix/client/versions" 2>/dev/null; then
      return 0
    fi
    sleep 0.25
  done
  echo "interop: $url/_matrix/client/versions did not answer within ${seconds}s" >&2
  return 1
}

# stop_pid PID: SIGTERM, then SIGKILL after 10 s if it is still there.
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for (( i = 0; i < 40; i++ )); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.25
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
