#!/usr/bin/env bash
# Mutation testing of the cores that decide correctness (issue 27): every
# mutant cargo-mutants makes in the files `.cargo/mutants.toml` names must be
# caught by `cargo test --lib`, or be listed with its reason in
# docs/mutants.md.
#
#   scripts/mutants.sh                    every core file (hours on 2 cores)
#   scripts/mutants.sh --file FILE        one file (a core or not)
#   scripts/mutants.sh --in-diff BASE     the mutants on lines changed since
#                                         commit BASE (working tree included)
#   scripts/mutants.sh --ci               what CI runs (from `cargo test`, see
#                                         tests/mutants_in_the_last_change.rs):
#                                         --in-diff HEAD^1 in a copy of the
#                                         tree, at most CIOSYNC_MUTANTS_CAP
#                                         mutants (default 20)
#
# Arguments after `--` go to cargo mutants (e.g. `-- --jobs 2`). The output
# goes to CIOSYNC_MUTANTS_OUT (default target/mutants): mutants.out/missed.txt
# and caught.txt, one line per mutant, and a log per mutant. Exits 1 when a
# mutant survives that docs/mutants.md does not list (matched on file and
# mutation, without the line and column, which drift).
set -euo pipefail
cd "$(dirname "$0")/.."

config=.cargo/mutants.toml
listed=docs/mutants.md
out="${CIOSYNC_MUTANTS_OUT:-target/mutants}"
cap="${CIOSYNC_MUTANTS_CAP:-20}"

die() {
  echo "mutants: $*" >&2
  exit 2
}

# The core files, as the config names them (one quoted path per line): the
# daemon's (`src/…`) or a workspace crate's (`crates/NAME/src/…`).
cores() {
  sed -n 's/^ *"\(\(crates\/[^"/]*\/\)\{0,1\}src\/[^"]*\.rs\)",\{0,1\} *$/\1/p' "$config"
}

# Exits 1 if a mutant in missed.txt is not listed in docs/mutants.md.
check_missed() {
  local missed="$out/mutants.out/missed.txt" unlisted=0 line key
  [[ -f "$out/mutants.out/outcomes.json" ]] || die "cargo mutants wrote no outcomes to $out"
  if [[ -s "$out/mutants.out/timeout.txt" ]]; then
    echo "mutants: timed out (counted as caught):"
    sed 's/^/  /' "$out/mutants.out/timeout.txt"
  fi
  [[ -f "$missed" ]] || return 0
  while IFS= read -r line; do
    # `src/x.rs:12:5: replace …` -> `src/x.rs: replace …`
    key="$(sed -E 's/^([^:]+):[0-9]+:[0-9]+:/\1:/' <<<"$line")"
    if ! grep -qF -- "$key" "$listed"; then
      echo "MISSED and not listed in $listed: $line"
      unlisted=$((unlisted + 1))
    fi
  done <"$missed"
  if ((unlisted > 0)); then
    echo "mutants: $unlisted surviving mutant(s) need a test that catches them, or an entry" \
      "with the reason in $listed (as \`file: mutation\`, without the line number)"
    return 1
  fi
  echo "mutants: every surviving mutant is listed in $listed"
}

# The diff of the core files between `$1` and the working tree, into `$2`.
# An empty diff is not an error: the change touched no core.
core_diff() {
  local base=$1 into=$2
  mapfile -t files < <(cores)
  ((${#files[@]} > 0)) || die "no core files found in $config"
  git diff "$base" -- "${files[@]}" >"$into"
}

# HEAD's first parent: CI checks the change HEAD made. A shallow clone
# lacks it, so deepen by one; failing that, stop with a clear message
# rather than check nothing. A root commit is compared to the empty tree.
first_parent() {
  if git rev-parse --verify --quiet 'HEAD^1^{commit}' >/dev/null; then
    echo 'HEAD^1'
    return
  fi
  if [[ "$(git rev-parse --is-shallow-repository)" == true ]]; then
    local deepen="this is a shallow clone without HEAD's parent, and \`git fetch --deepen=1\`"
    local fix="clone with at least two commits of history (--depth 2) so the change can be checked"
    git fetch --quiet --deepen=1 >&2 || die "$deepen failed: $fix"
    git rev-parse --verify --quiet 'HEAD^1^{commit}' >/dev/null ||
      die "$deepen did not bring it: $fix"
    echo 'HEAD^1'
    return
  fi
  git hash-object -t tree /dev/null
}

mode=full
base=
file=
passthrough=()
while (($# > 0)); do
  case $1 in
    --file) file=${2:?--file needs a path}; mode=file; shift 2 ;;
    --in-diff) base=${2:?--in-diff needs a base commit}; mode=diff; shift 2 ;;
    --ci) mode=ci; shift ;;
    --) shift; passthrough=("$@"); break ;;
    *) die "unknown argument $1 (see the comment at the top of $0)" ;;
  esac
done

rm -rf "$out"
mkdir -p "$out"
args=(--output "$out")
case $mode in
  full) ;;
  file)
    # `-f` adds to the config's examine_globs rather than narrowing them:
    # use the config without them (its settings and exclusions stay).
    sed '/^examine_globs = \[/,/^\]/d' "$config" >"$out/one-file.toml"
    args+=(--config "$out/one-file.toml" -f "$file")
    ;;
  diff | ci)
    if [[ $mode == ci ]]; then
      base=$(first_parent)
      # The rest of the suite runs in this checkout meanwhile: mutate a copy
      # (cargo-mutants' default), never the tree itself. Checked clean below.
    fi
    diff="$out/core.diff"
    core_diff "$base" "$diff"
    if [[ ! -s $diff ]]; then
      echo "mutants: no core file changed since $base ($(cores | tr '\n' ' ')): nothing to check"
      exit 0
    fi
    args+=(--in-diff "$diff")
    total=$(cargo mutants --list "${args[@]}" | grep -c . || true)
    echo "mutants: $total mutant(s) on the lines of core files changed since $base"
    ((total > 0)) || exit 0
    if [[ $mode == ci ]] && ((total > cap)); then
      # Bounded: a deterministic share of them, chosen by the commit, so a
      # later commit checks another share. Say so rather than pass quietly.
      shards=$(((total + cap - 1) / cap))
      shard=$((16#$(git rev-parse --short=7 HEAD) % shards))
      echo "mutants: more than $cap: checking shard $shard/$shards (round-robin);" \
        "the rest: scripts/mutants.sh --in-diff $base"
      args+=(--shard "$shard/$shards" --sharding round-robin)
    fi
    ;;
esac

status=0
cargo mutants "${args[@]}" "${passthrough[@]}" || status=$?
if [[ $mode == ci ]] && ! git diff --quiet -- src crates; then
  git diff --stat -- src crates >&2
  die "a source file changed while cargo mutants ran: refusing to go on"
fi
# cargo mutants: 0 all caught, 2 some missed, 3 some timed out, 4 the
# unmutated tree fails its tests; anything else is its own failure.
case $status in
  0 | 2 | 3) check_missed ;;
  4) die "the unmutated tree fails \`cargo test --lib\`: fix that first" ;;
  *) die "cargo mutants failed (exit $status); see $out/mutants.out/debug.log" ;;
esac
