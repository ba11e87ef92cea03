#!/usr/bin/env bash
# The fault soak, longer than CI's minute: a mixed workload against a
# throwaway Postgres while the daemon is killed with SIGKILL, Postgres is
# restarted (fast and immediate) and Customer.io (the emulator) fails,
# throttles, slows down or refuses connections; then every customer must
# equal its row and every event row must have produced exactly one event.
# The test is tests/fault_soak/; its summary is printed at the end.
#
#   scripts/soak.sh               # 30 minutes
#   scripts/soak.sh 7200          # two hours
#   SEED=123 scripts/soak.sh 600  # replay a seed's schedule of faults and writes
#
# Needs what `cargo test` needs (cargo, the PostgreSQL server binaries).
# A failure keeps the daemon's logs and names their directory.
set -euo pipefail

SECS="${1:-1800}"
[[ "$SECS" =~ ^[0-9]+$ && "$SECS" -gt 0 ]] || { echo "usage: $0 [seconds] (got '$SECS')" >&2; exit 2; }
cd "$(dirname "$0")/.."

export CIOSYNC_SOAK_SECS="$SECS"
if [[ -n "${SEED:-}" ]]; then
    export CIOSYNC_SOAK_SEED="$SEED"
fi
exec cargo test --test integration fault_soak:: -- --nocapture
