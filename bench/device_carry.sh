#!/usr/bin/env bash
# What bench/device.sh's part `wm` needs on a lent GPU machine, made here (CPU) and small enough to
# carry (the device tool carries at most 64 MiB of ignored paths):
#   .whl/                   zarr and its small dependencies as cp312 wheels (the machine has Python 3.12
#                           and torch, not zarr; device.sh installs them into a temporary folder)
#   runs/carry/train.zarr   the world model's training store, low-res only (about 130 B a frame)
#   runs/carry/eval.zarr    the fixed evaluation set's store (bench/evalset.py), low-res only
#   runs/carry/fresh.zarr   fresh episodes nobody tuned on (bench/wm_data.py's eval-fresh), low-res only
# A store's _cache/ (decompressed frames, rebuilt where missing) and full-res frames stay behind.
#
#   bash bench/device_carry.sh [TRAIN_EPISODES] [EVAL_EPISODES] [FRESH_EPISODES]
#       defaults: runs/mix/episodes runs/eval/episodes runs/eval-fresh/episodes (the frozen training
#       mix, the evaluation set and the fresh episodes:
#       .venv/bin/python bench/wm_data.py rebuilds them from bench/data/)
#   WEIGHTS=W.npz builds the training store with sampling weights of TRAIN_EPISODES (`mario-kit balance
#   TRAIN_EPISODES --strategy place --out W.npz`), which a run uses with `--set weighted=true`.
# Then, with the device tool: carry [".whl", "runs/carry"], command
#   PARTS=wm OUT=$OUT bash bench/device.sh
# or the place-weights A/B at equal GPU time (docs/BENCHMARKS_LOG.md, "On a GPU"):
#   PARTS=wm WM_B_SET="--set weighted=true" OUT=$OUT bash bench/device.sh
set -eu
TRAIN=${1:-runs/mix/episodes}
EVAL=${2:-runs/eval/episodes}
FRESH=${3:-runs/eval-fresh/episodes}
PY=${PY:-.venv/bin/python}
WEIGHTS=${WEIGHTS:-}
MK="$PY -m mario_kit"
mkdir -p runs/carry .whl
# a store already there takes in new episodes; with weights it is built anew (--force), as they change
$MK dataset build "$TRAIN" --out runs/carry/train.zarr -q ${WEIGHTS:+--force --weights "$WEIGHTS"}
$MK dataset build "$EVAL" --out runs/carry/eval.zarr -q
$MK dataset build "$FRESH" --out runs/carry/fresh.zarr -q
# the versions this checkout runs with, as wheels for the lent machine's Python (numpy comes with its torch)
pins=$($PY -m pip list --format=freeze 2>/dev/null | grep -iE '^(zarr|numcodecs|donfig|google-crc32c|msgspec|pyyaml|packaging|typing.extensions)==')
$PY -m pip download -q --only-binary=:all: --no-deps --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl $pins
rm -rf runs/carry/*.zarr/_cache
du -sh .whl runs/carry
