#!/usr/bin/env bash
# PostgreSQL and Redis on loopback for the benchmark comparison and the
# drivers' smoke tests. Source it, then:
#
#   peers_install   # apt-get install postgresql redis-server (and the search
#                   # corpus wordnet-base, the charts' fonts-dejavu-core), if missing
#   peers_start     # both servers on free loopback ports, data in a temp folder;
#                   # exports OMNISHARD_PEER_POSTGRES and OMNISHARD_PEER_REDIS
#   peers_stop      # stops both and removes the folder (peers_start traps EXIT)
#
# PostgreSQL refuses to run as root, so as root it runs as the `postgres`
# user that Debian's package creates.

peers_install() {
  local missing=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  [ -f /usr/share/wordnet/data.noun ] || missing+=(wordnet-base)
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "peers: installing ${missing[*]}" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    # The packages try to start their system services; that may fail in a
    # container and does not matter: our own servers run from a temp folder.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null || true
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v redis-server >/dev/null 2>&1
  fi
}

_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

peers_start() {
  local pgbin
  pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
  PEERS_DIR=$(mktemp -d /tmp/omnishard-peers.XXXXXX)
  chmod 755 "$PEERS_DIR"
  mkdir -p "$PEERS_DIR/pg" "$PEERS_DIR/redis"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$PEERS_DIR/pg"; fi
  trap peers_stop EXIT

  local pg_port redis_port
  pg_port=$(_free_port)
  _as_postgres "$pgbin/initdb" -D "$PEERS_DIR/pg/data" -A trust -U postgres >/dev/null
  # Defaults otherwise: synchronous_commit=on, fsync=on. Enough connections
  # for a pool of one per benchmark client; a buffer pool that holds the data.
  _as_postgres "$pgbin/pg_ctl" -D "$PEERS_DIR/pg/data" -l "$PEERS_DIR/pg/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $PEERS_DIR/pg -c max_connections=300 -c shared_buffers=1GB" \
    start >/dev/null
  export OMNISHARD_PEER_POSTGRES="host=127.0.0.1 port=$pg_port user=postgres dbname=postgres"

  redis_port=$(_free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$PEERS_DIR/redis" --save "" \
    --appendonly yes --appendfsync always --daemonize yes \
    --pidfile "$PEERS_DIR/redis/pid" --logfile "$PEERS_DIR/redis/log"
  for _ in $(seq 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  export OMNISHARD_PEER_REDIS="redis://127.0.0.1:$redis_port"
  echo "peers: postgres on 127.0.0.1:$pg_port, redis on 127.0.0.1:$redis_port ($PEERS_DIR)" >&2
}

peers_stop() {
  [ -n "${PEERS_DIR:-}" ] || return 0
  local pgbin
  pgbin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
  _as_postgres "$pgbin/pg_ctl" -D "$PEERS_DIR/pg/data" -m immediate stop >/dev/null 2>&1 || true
  if [ -f "$PEERS_DIR/redis/pid" ]; then
    local pid
    pid=$(cat "$PEERS_DIR/redis/pid")
    kill "$pid" 2>/dev/null || true
    # Redis writes its files while it shuts down; wait before removing them.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$PEERS_DIR" || true
  PEERS_DIR=""
}
