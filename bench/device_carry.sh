#!/usr/bin/env bash
# What bench/device.sh's part `wm` needs on a lent GPU machine, made here (CPU) and small enough to
# carry (the device tool sends the working tree and the carried paths, 64 MiB in all):
#   .whl/                   zarr and its small dependencies as cp312 wheels (the machine has Python 3.12
#                           and torch, not zarr; device.sh installs them into a temporary folder)
#   runs/carry/train.zarr   the world model's training store, low-res only
#   runs/carry/eval.zarr    the held-out episodes it is scored on, low-res only
#   runs/carry/fresh.zarr   1-1 episodes for device.sh's 256-rollout figure (the frozen `eval` set), low-res only
# The stores are rebuilt (--force) at zstd level 19 (LEVEL=N for another): about 0.6x the bytes of
# level 3, as fast to read. A store's _cache/ (decompressed frames, rebuilt where missing) and
# full-res frames stay behind. Last, the size of what would travel is checked against the limit.
#
#   bash bench/device_carry.sh [TRAIN_EPISODES] [EVAL_EPISODES] [FRESH_EPISODES]
#       defaults: the whole game (bench/data/README.md, `game` and 850 episodes of `game-eval`:
#       runs/game/episodes runs/game-eval/sample runs/eval/episodes)
#   bash bench/device_carry.sh --check     # only the size check (a local run fills runs/carry/*/_cache)
#   WEIGHTS=W.npz builds the training store with sampling weights of TRAIN_EPISODES (`mario-kit balance
#   TRAIN_EPISODES --strategy place --out W.npz`), which a run uses with `--set weighted=true`.
# Then, with the device tool: carry [".whl", "runs/carry"], command
#   PARTS=wm OUT=$OUT bash bench/device.sh
# or the place-weights A/B at equal GPU time (docs/BENCHMARKS_LOG.md, "On a GPU"):
#   PARTS=wm WM_B_SET="--set weighted=true" OUT=$OUT bash bench/device.sh
set -eu
LIMIT=$((64 << 20))
check() {  # what the device tool sends: tracked and untracked-not-ignored files, and the carried paths
    local tree carried
    # one du over every file (xargs could split the list into several du runs, each with its own total)
    tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --apparent-size --files0-from=- | tail -1 | cut -f1)
    carried=$(du -cb --apparent-size .whl runs/carry | tail -1 | cut -f1)
    echo "travels: $((tree + carried)) B (tree $tree, .whl and runs/carry $carried) of $LIMIT"
    if [ $((tree + carried)) -gt $LIMIT ]; then
        echo "over the device tool's limit: carry less (or rm -rf runs/carry/*.zarr/_cache)" >&2
        exit 1
    fi
}
if [ "${1:-}" = --check ]; then check; exit; fi
TRAIN=${1:-runs/game/episodes}
EVAL=${2:-runs/game-eval/sample}
FRESH=${3:-runs/eval/episodes}
PY=${PY:-.venv/bin/python}
WEIGHTS=${WEIGHTS:-}
LEVEL=${LEVEL:-19}
MK="$PY -m mario_kit"
mkdir -p runs/carry .whl
build() { $MK dataset build "$1" --out "$2" -q --force --compression-level "$LEVEL" "${@:3}"; }
build "$TRAIN" runs/carry/train.zarr ${WEIGHTS:+--weights "$WEIGHTS"}
build "$EVAL" runs/carry/eval.zarr
build "$FRESH" runs/carry/fresh.zarr
# the versions this checkout runs with, as wheels for the lent machine's Python (numpy comes with its torch)
pins=$($PY -m pip list --format=freeze 2>/dev/null | grep -iE '^(zarr|numcodecs|donfig|google-crc32c|msgspec|pyyaml|packaging|typing.extensions)==')
$PY -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl $pins
rm -rf runs/carry/*.zarr/_cache
check
