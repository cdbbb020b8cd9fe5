#!/usr/bin/env bash
# What a new user gets: clone HEAD into a temp folder with no data/ folder, point DWT_DATA_DIR at an
# empty folder, switch the Hub off (HF_HUB_OFFLINE=1), then run the README's two commands there:
# `make test` and `make reproduce` (smoke). Passes only if both succeed on the sample shipped in
# dwt_lib/sample_data and every smoke figure is drawn. Uncommitted changes are not in the clone.
#
#   tools/check_fresh_clone.sh [VENV]     # VENV: an installed environment to reuse (default: .venv here)
#
# The clone reuses VENV (no download: the check itself runs offline); `make -o` keeps make from
# reinstalling into it, and PYTHONPATH makes that environment import the clone's dwt_lib.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$(cd "${1:-$repo/.venv}" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
git clone -q "$repo" "$tmp/clone"
mkdir "$tmp/empty-mirror"
cd "$tmp/clone"
test ! -e data || { echo "fresh clone has a data/ folder" >&2; exit 1; }
ln -s "$venv" .venv
export DWT_DATA_DIR="$tmp/empty-mirror" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH="$tmp/clone"
unset DWT_OUTPUTS_DIR DWT_CACHE_DIR
make -o .venv/.installed test
make -o .venv/.installed reproduce PROFILE=smoke
# every figure of the committed mini run (outputs/mini/figures) must be drawn for smoke too
want=$(cd outputs/mini/figures && ls *.png *.svg)
missing=0
for f in $want; do
  [ -s "outputs/smoke/figures/$f" ] || { echo "missing figure outputs/smoke/figures/$f" >&2; missing=1; }
done
[ "$missing" = 0 ]
echo "fresh clone OK: make test and make reproduce (smoke) passed with no mirror and no Hub;" \
     "$(echo "$want" | wc -l) figures drawn"
