#!/usr/bin/env bash
# The published results are a record: every row validates, and leaderboard.md / leaderboard.csv
# are exactly what `uebench leaderboard` builds from results/ (never edited by hand), and
# leaderboard/ holds exactly the figures it draws.
#   bash scripts/check_published.sh [ROOT]     (ROOT: the folder holding results/; default: the repository)
set -euo pipefail
root=${1:-"$(dirname "$0")/.."}
cd "$root"
UE=${UEBENCH:-uebench}
command -v "$UE" >/dev/null 2>&1 || UE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/uebench"
"$UE" validate results/
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$UE" leaderboard --results-dir results --output "$tmp/leaderboard.md" 2>/dev/null
for f in leaderboard.md leaderboard.csv; do
  if ! cmp -s "$f" "$tmp/$f"; then
    echo "error: $f is not what \`uebench leaderboard\` builds from results/ (edited by hand, or the results changed without it)" >&2
    echo "fix: run \`uebench leaderboard\` and commit $f" >&2
    diff -u "$f" "$tmp/$f" | head -40 >&2 || true
    exit 1
  fi
done
# the figures: the same set of files (their pixels depend on the matplotlib build, their names do not)
if ! figures=$(diff <(cd leaderboard && ls *.png) <(cd "$tmp/leaderboard" && ls *.png)); then
  echo "error: leaderboard/ does not hold the figures \`uebench leaderboard\` draws from results/" >&2
  echo "fix: run \`uebench leaderboard\` and commit leaderboard/ (removed figures too)" >&2
  echo "$figures" >&2
  exit 1
fi
echo "published results: valid, and the leaderboard is what they give" >&2
