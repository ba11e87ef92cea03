#!/usr/bin/env bash
# Benchmark of the initial copy: N users in a throwaway PostgreSQL cluster,
# copied by `ciosync run` to the Customer.io emulator.
#
#   bench/initial-copy.sh               # 1,000,000 users
#   bench/initial-copy.sh --rows 50000  # or ROWS=50000 bench/initial-copy.sh
#
# Needs: cargo, the PostgreSQL server binaries (initdb, pg_ctl; PG_BIN=dir to
# choose them), psql, GNU time (/usr/bin/time), python3, pgrep. As root the
# server runs as the `postgres` OS user. Everything lives in one mktemp
# directory, removed on exit (also on failure or Ctrl-C).
#
# The daemon reads CIOSYNC_<SECTION>_<KEY> overrides as usual, e.g.
# CIOSYNC_CUSTOMERIO_MAX_BATCH_OPS=1000 to measure bigger batches.
# Optional: TOP_LOG=file appends a `top -b -n1` snapshot every 10 s during the
# copy; TIMEOUT=secs (default 3600) gives up waiting for the copy.
set -euo pipefail

ROWS="${ROWS:-1000000}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rows) ROWS="${2:?--rows needs a number}"; shift 2 ;;
        --rows=*) ROWS="${1#--rows=}"; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ "$ROWS" =~ ^[0-9]+$ && "$ROWS" -gt 0 ]] || { echo "--rows must be a positive integer, got '$ROWS'" >&2; exit 2; }
TIMEOUT="${TIMEOUT:-3600}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# --- tools ------------------------------------------------------------------
if [[ -n "${PG_BIN:-}" ]]; then
    :
elif [[ -x /usr/lib/postgresql/15/bin/initdb ]]; then
    PG_BIN=/usr/lib/postgresql/15/bin
elif command -v initdb >/dev/null; then
    PG_BIN="$(dirname "$(readlink -f "$(command -v initdb)")")"
else
    echo "initdb not found: install the PostgreSQL server (apt-get install postgresql-15) or set PG_BIN" >&2
    exit 1
fi
for tool in psql python3 pgrep cargo; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time (GNU time) not found: apt-get install time" >&2; exit 1; }

if [[ $EUID -eq 0 ]]; then
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- cleanup ----------------------------------------------------------------
TMP=""
TIME_PID=""
CIO_PID=""
EMU_PID=""
TOP_PID=""
PG_STARTED=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [[ $rc -ne 0 && -n "$TMP" ]]; then
        for f in ciosync.log emulator.log postgres.log; do
            [[ -s "$TMP/$f" ]] && { echo "--- last lines of $f ---" >&2; tail -n 15 "$TMP/$f" >&2; }
        done
    fi
    [[ -n "$TOP_PID" ]] && kill "$TOP_PID" 2>/dev/null
    [[ -n "$CIO_PID" ]] && kill -TERM "$CIO_PID" 2>/dev/null
    [[ -n "$TIME_PID" ]] && wait "$TIME_PID" 2>/dev/null
    [[ -n "$EMU_PID" ]] && { kill "$EMU_PID" 2>/dev/null; wait "$EMU_PID" 2>/dev/null; }
    [[ $PG_STARTED -eq 1 ]] && as_pg "$PG_BIN/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1
    [[ -n "$TMP" ]] && rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. build ---------------------------------------------------------------
log "building release binaries in $REPO"
(cd "$REPO" && cargo build --release --quiet)
CIOSYNC="$REPO/target/release/ciosync"
EMULATOR="$REPO/target/release/ciosync-emulator"

# --- 2. throwaway PostgreSQL ------------------------------------------------
TMP="$(mktemp -d -t ciosync-bench.XXXXXX)"
chmod 755 "$TMP"
[[ $EUID -eq 0 ]] && chown postgres "$TMP"
PG_PORT="$(free_port)"
log "initdb in $TMP/data ($PG_BIN), port $PG_PORT"
as_pg "$PG_BIN/initdb" -D "$TMP/data" -U postgres --auth=trust -E UTF8 --no-sync >"$TMP/initdb.log" 2>&1 \
    || { cat "$TMP/initdb.log" >&2; exit 1; }
cat >>"$TMP/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP'
wal_level = logical
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
EOF
# postgres.log is written by the server, so it must be able to create it.
as_pg "$PG_BIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 start >/dev/null
PG_STARTED=1
PG_VERSION="$(as_pg "$PG_BIN/postgres" --version)"

psql_() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres "$@"; }
psql_ -d postgres -c "CREATE DATABASE bench"

# --- 3. users ---------------------------------------------------------------
log "loading $ROWS users"
psql_ -d bench <<EOF
CREATE TABLE users (
    id bigint PRIMARY KEY,
    email text,
    first_name text,
    plan text,
    created_at timestamptz
);
ALTER TABLE users REPLICA IDENTITY FULL;
INSERT INTO users
SELECT g,
       'user' || g || '@example.com',
       'First' || g,
       (ARRAY['free', 'starter', 'pro', 'enterprise'])[1 + g % 4],
       timestamptz '2020-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, $ROWS) AS g;
VACUUM ANALYZE users;
CHECKPOINT;
EOF

# --- 4. emulator and daemon -------------------------------------------------
"$EMULATOR" --listen 127.0.0.1:0 --site-id bench-site --api-key bench-key >"$TMP/emulator.log" 2>&1 &
EMU_PID=$!
EMU_URL=""
for _ in $(seq 100); do
    EMU_URL="$(sed -n 's/^ciosync-emulator listening on \(http:\/\/[^ ]*\).*/\1/p' "$TMP/emulator.log" | head -n1)"
    [[ -n "$EMU_URL" ]] && break
    kill -0 "$EMU_PID" 2>/dev/null || { echo "emulator exited" >&2; exit 1; }
    sleep 0.1
done
[[ -n "$EMU_URL" ]] || { echo "emulator did not announce its address" >&2; exit 1; }
log "emulator at $EMU_URL"

cat >"$TMP/ciosync.toml" <<EOF
[postgres]
url = "postgres://postgres@127.0.0.1:$PG_PORT/bench?sslmode=disable"
slot = "ciosync_bench"
publication = "ciosync_bench"

[customerio]
site_id = "bench-site"
api_key = "bench-key"
track_url = "$EMU_URL"

[pipeline]
initial_sync = true

[[sync]]
table = "public.users"
id_column = "id"

[sync.attributes]
email = "email"
first_name = "first_name"
plan = "plan"
created_at = "created_at"
EOF

if [[ -n "${TOP_LOG:-}" ]]; then
    (while :; do { date +%T; top -b -n1 -w 160 | head -n 15; echo; } >>"$TOP_LOG"; sleep 10; done) &
    TOP_PID=$!
fi

log "starting ciosync run"
START_NS="$(date +%s%N)"
/usr/bin/time -v -o "$TMP/time.txt" "$CIOSYNC" run --config "$TMP/ciosync.toml" --log-format json \
    >"$TMP/ciosync.log" 2>&1 &
TIME_PID=$!
for _ in $(seq 100); do
    CIO_PID="$(pgrep -P "$TIME_PID" || true)"
    [[ -n "$CIO_PID" ]] && break
    sleep 0.05
done
[[ -n "$CIO_PID" ]] || { echo "ciosync did not start" >&2; exit 1; }

# --- 5. wait for the copy ---------------------------------------------------
STATE=""
COPIED=0
LAST_LOG=0
while :; do
    if ! kill -0 "$CIO_PID" 2>/dev/null; then
        echo "ciosync exited before the copy was done" >&2
        exit 1
    fi
    LINE="$(psql_ -d bench -At -F ' ' -c "SELECT state, rows_copied FROM ciosync.initial_copy" 2>/dev/null || true)"
    if [[ -n "$LINE" ]]; then
        read -r STATE COPIED <<<"$LINE"
        [[ "$STATE" == done ]] && break
    fi
    NOW_NS="$(date +%s%N)"
    ELAPSED=$(( (NOW_NS - START_NS) / 1000000000 ))
    [[ $ELAPSED -ge $TIMEOUT ]] && { echo "copy not done after ${TIMEOUT}s (state '$STATE', $COPIED rows)" >&2; exit 1; }
    if [[ $ELAPSED -ge $((LAST_LOG + 10)) ]]; then
        LAST_LOG=$ELAPSED
        log "${ELAPSED}s: state '${STATE:-none}', $COPIED rows copied"
    fi
    sleep 0.2
done
END_NS="$(date +%s%N)"
[[ -n "$TOP_PID" ]] && { kill "$TOP_PID" 2>/dev/null || true; wait "$TOP_PID" 2>/dev/null || true; TOP_PID=""; }

# CPU of the emulator and of the cluster (postmaster, its live children, and
# the children it has reaped) up to "done".
clk_tck="$(getconf CLK_TCK)"
cpu_of() { # pids... -> "user sys" seconds
    local u=0 s=0 pid f
    for pid in "$@"; do
        f="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null)" || continue
        read -r -a a <<<"$f"
        # utime, stime, cutime, cstime (fields 14-17): the last two count
        # children already reaped, e.g. backends that have exited.
        u=$((u + a[11] + a[13])); s=$((s + a[12] + a[14]))
    done
    python3 -c "print(f'{$u/$clk_tck:.2f} {$s/$clk_tck:.2f}')"
}
PM_PID="$(head -n1 "$TMP/data/postmaster.pid")"
read -r EMU_USER EMU_SYS <<<"$(cpu_of "$EMU_PID")"
read -r PG_USER PG_SYS <<<"$(cpu_of "$PM_PID" $(pgrep -P "$PM_PID" || true))"
EMU_HWM_KB="$(awk '/^VmHWM:/ {print $2}' "/proc/$EMU_PID/status")"

kill -TERM "$CIO_PID"
CIO_RC=0
wait "$TIME_PID" || CIO_RC=$?
TIME_PID=""
CIO_PID=""
[[ $CIO_RC -eq 0 ]] || log "warning: ciosync exited with status $CIO_RC after SIGTERM"

CUSTOMERS="$(python3 -c 'import json, sys, urllib.request
print(len(json.load(urllib.request.urlopen(sys.argv[1] + "/_emulator/customers"))))' "$EMU_URL")"
# The log keeps the last 10,000 requests; the last one's seq is the total.
REQUESTS="$(python3 -c 'import json, sys, urllib.request
r = json.load(urllib.request.urlopen(sys.argv[1] + "/_emulator/requests"))
print(r[-1]["seq"] if r else 0)' "$EMU_URL")"
COMMIT="$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
[[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ]] && COMMIT="$COMMIT (uncommitted changes)"

# --- 6. report --------------------------------------------------------------
tv() { sed -n "s/^[[:space:]]*$1: //p" "$TMP/time.txt"; }
CIO_RSS_KB="$(tv 'Maximum resident set size (kbytes)')"
python3 - "$ROWS" "$START_NS" "$END_NS" "$CIO_RSS_KB" "$EMU_HWM_KB" "$(tv 'User time (seconds)')" \
    "$(tv 'System time (seconds)')" "$EMU_USER" "$EMU_SYS" "$PG_USER" "$PG_SYS" "$CUSTOMERS" \
    "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" "$(nproc)" "$PG_VERSION" "$COPIED" "$REQUESTS" "$COMMIT" <<'EOF'
import sys
(rows, start, end, cio_kb, emu_kb, cu, cs, eu, es, pu, ps, customers,
 date, nproc, pgv, copied, requests, commit) = sys.argv[1:]
rows = int(rows)
secs = (int(end) - int(start)) / 1e9
print("ciosync initial-copy benchmark")
print(f"  rows                 {rows:,} (rows_copied {int(copied):,}; emulator holds {int(customers):,} customers)")
print(f"  seconds              {secs:.1f} (daemon start -> state 'done')")
print(f"  rows/s               {rows / secs:,.0f}")
print(f"  requests             {int(requests):,} ({int(requests) / secs:.0f}/s, {rows / max(int(requests), 1):.0f} rows each)")
print(f"  ciosync peak RSS     {int(cio_kb) / 1024:.1f} MB")
print(f"  emulator peak RSS    {int(emu_kb) / 1024:.1f} MB ({int(emu_kb) * 1024 / rows:.0f} B/customer)")
print(f"  ciosync CPU          user {float(cu):.2f} s, sys {float(cs):.2f} s")
print(f"  emulator CPU         user {float(eu):.2f} s, sys {float(es):.2f} s")
print(f"  postgres CPU         user {float(pu):.2f} s, sys {float(ps):.2f} s (all server processes)")
print(f"  date                 {date}")
print(f"  nproc                {nproc}")
print(f"  postgres             {pgv}")
print(f"  ciosync commit       {commit}")
ok = int(customers) == rows and int(copied) == rows
print("  check                " + ("ok" if ok else "MISMATCH"))
sys.exit(0 if ok else 1)
EOF
