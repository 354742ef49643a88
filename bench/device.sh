#!/usr/bin/env bash
# The GPU checks in one call of a lent GPU machine (docs/BENCHMARKS.md, "On a GPU"):
#   1. play speed (bench/play.py): denoiser alone and with each upsampler, eager;
#   2. a short upsampler training on the GPU, DIAMOND's 51 M and the `cpu` preset's 3.5 M side by
#      side, each scored against bicubic on the test split (`mario-kit evaluate`);
#   3. denoiser training throughput (bench/train.py): eager, channels_last, bf16, compile;
#   4. play speed and training throughput with torch.compile (slow to start);
#   5. wm: the world model's GPU recipe (`--config gpu`) trained from a carried store for T_WM
#      seconds (at most 8 minutes; `time_limit` ends its learning-rate decay there), evaluated with the
#      arguments of the CPU figures (docs/BENCHMARKS.md): the carried evaluation set (bench/evalset.py)
#      in full, then 256 rollouts of 32 steps on it and on the fresh episodes; its denoiser.pt (16-bit
#      weights) and the reward and end model (rewend.pt) come back in $OUT/wm/, with run.tar: wm/
#      (config.json, log.csv, summary.json), rewend/rewend.json and the evaluations (eval-*/
#      evaluation.json; what comes back from $OUT is at most 8 files); device.log holds the synthetic
#      rate of the recipe's step (bench/train.py, variant tf32) beside the run's own; WM_BASE=RUN
#      scores another model (the shipped one) on the same set in the same call; WM_B_SET="--set ..."
#      trains a second run beside the first for the same time, differing only by these settings
#      (an A/B at equal GPU time: e.g. `--set weighted=true` on a store built with place weights),
#      scored on the same set (its denoiser.pt in $OUT/wm-b/). What to carry is
#      made by bench/device_carry.sh (.whl/ and runs/carry/; it checks that they and the repository fit
#      the device tool's 64 MiB):
#        carry [".whl", "runs/carry"], command: PARTS=wm OUT=$OUT bash bench/device.sh
#   6. diamond: DIAMOND's own denoiser training step beside ours at batch 32 and 128
#      (bench/diamond_step.py; carry ".diamond" too), into device.log.
# Each part has its own time limit, so a slow one cannot take the others' results with it.
#
#   OUT=out/device bash bench/device.sh    # defaults: PY=python3 DEV=cuda T_UP=120 PARTS=play,up,train,compile
#
# Needs runs/up-data (an episode folder with a split; the recipe is in docs/BENCHMARKS.md) for part 2.
# Where zarr is missing (the lent machines have torch but not zarr), wheels in .whl/ are installed first.
set -u
OUT=${OUT:-out/device}
PY=${PY:-python3}
DEV=${DEV:-cuda}
T_UP=${T_UP:-120}       # seconds of upsampler training (both runs at once)
FRAMES=${FRAMES:-100}   # play frames timed per variant
STEPS=${STEPS:-20}      # training steps timed per variant
DATA=${DATA:-runs/up-data}
PLAY_ONLY=${PLAY_ONLY:-}  # bench/play.py --only (default: every variant, eager and CUDA graph)
PARTS=${PARTS:-play,up,train,compile}  # which parts to run (a rerun can take the missing ones); wm: part 5
T_WM=${T_WM:-360}       # seconds of world-model training in part 5 (at most 480; 360 leaves the call time for start-up and evaluations)
WM_SET=${WM_SET:-}      # more --set overrides for part 5's training
WM_STORE=${WM_STORE:-runs/carry/train.zarr}  # training store for part 5 (bench/device_carry.sh)
WM_EVAL=${WM_EVAL:-runs/carry/eval.zarr}     # evaluation store for part 5 (bench/device_carry.sh)
WM_FRESH=${WM_FRESH:-runs/carry/fresh.zarr}  # fresh episodes for part 5's 256 rollouts (bench/device_carry.sh)
WM_EVAL_ARGS=${WM_EVAL_ARGS:---windows 256 --rollouts 64 --horizons 8,32,64}  # part 5's full evaluation
WM_ROLL_ARGS=${WM_ROLL_ARGS:---windows 16 --rollouts 256 --horizons 32 --place-windows 0}  # and its set and fresh 32-step ones
WM_BASE=${WM_BASE:-}    # a run (or the shipped folder) scored with WM_EVAL_ARGS on the same set, the baseline of the same call
WM_B_SET=${WM_B_SET:-}  # a second run trained at the same time with these --set overrides on top of WM_SET (A/B)
WM_REWEND=${WM_REWEND:-1}  # 0: no reward and end model in part 5 (two minutes of the call kept for the rest)
DIAMOND=${DIAMOND:-.diamond}  # part diamond: a checkout of github.com/eloialonso/diamond (carried, not vendored)
TMP=${TMP_DIR:-/tmp/mk-device}
mkdir -p "$OUT" "$TMP"
if ! $PY -c "import zarr" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TMP/site" .whl/*.whl
    export PYTHONPATH="$TMP/site"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
MK="$PY -m mario_kit"
LOG="$OUT/device.log"

want() { [[ ",$PARTS," == *",$1,"* ]]; }

SETSID=$(command -v setsid || true)  # util-linux; without it a part's leftovers are not ended
part() {  # part NAME LIMIT_S CMD...: run with a time limit, log to device.log, say rc and seconds
    local name=$1 lim=$2 t=$SECONDS rc
    shift 2
    echo "== $name (limit $lim s): $*" | tee -a "$LOG"
    # in a process group of its own, ended whole: a `sh -c "A & B & wait"` part's jobs ignore SIGINT
    # (a shell's background jobs do) and would outlive the limit, taking the GPU from the next parts
    $SETSID timeout -s INT -k 20 "$lim" "$@" >>"$LOG" 2>&1 &
    local pid=$!
    wait $pid
    rc=$?
    kill -KILL -- -$pid 2>/dev/null
    echo "== $name: rc $rc in $((SECONDS - t)) s" | tee -a "$LOG"
}

{ nvidia-smi -L; $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"; } 2>&1 | tee -a "$LOG"

want play && part play 90 sh -c "$PY bench/play.py --device $DEV --frames $FRAMES --only '$PLAY_ONLY' > $OUT/play.json"

if want up && [ -d "$DATA" ]; then
    part build 90 $MK dataset build "$DATA" --out "$TMP/up.zarr" --full-res --force
    common="--store $TMP/up.zarr --force -q --set stage=upsampler --set device=$DEV --set compile=off --set upsampler_batch_size=16"
    part upsamplers $((T_UP + 45)) sh -c "timeout -s INT $T_UP $MK train $common --config cpu --out $TMP/up-small & \
        timeout -s INT $T_UP $MK train $common --config seed --out $TMP/up-big & wait"
    part evals 75 sh -c "$MK evaluate $TMP/up-small --store $TMP/up.zarr --device $DEV --out $TMP/eval-small & \
        $MK evaluate $TMP/up-big --store $TMP/up.zarr --device $DEV --out $TMP/eval-big & wait"
    for r in small big; do
        cp "$TMP/up-$r/log.csv" "$OUT/up-$r.csv" 2>/dev/null
        { echo "-- up-$r"; cat "$TMP/up-$r/summary.json" "$TMP/eval-$r/evaluation.json"; } >>"$LOG" 2>&1
    done
fi

want train && part train 120 sh -c "$PY bench/train.py --device $DEV --batch 32,128 --steps $STEPS \
    --variants eager,cl,bf16,cl+bf16 > $OUT/train.json"
want compile && part play-compile 120 sh -c "$PY bench/play.py --device $DEV --frames $FRAMES --compile --only low_3steps_fp32,compile > $OUT/play-compile.json"
want compile && part train-compile 90 sh -c "$PY bench/train.py --device $DEV --batch 128 --steps $STEPS \
    --variants cl+bf16,cl+bf16+compile > $OUT/train-compile.json"

if want wm && [ -d "$WM_STORE" ] && [ -d "$WM_EVAL" ]; then
    mkdir -p "$OUT/wm"
    # the synthetic rate of the recipe's own step (fp32 with TF32, batch 128), for train/synthetic
    part wm-synth 60 sh -c "$PY bench/train.py --device $DEV --batch 128 --steps $STEPS --variants tf32 > $TMP/synth.json"
    { echo "-- synth.json"; cat "$TMP/synth.json"; } >>"$LOG" 2>&1
    # the stores' frames decoded once, before runs that would each decode them at the same time
    $PY -c "import sys; from pathlib import Path; from mario_kit.datasets.loader import materialize_low as m; [m(Path(a)) for a in sys.argv[1:]]" \
        "$WM_STORE" "$WM_EVAL" >>"$LOG" 2>&1
    train="$MK train --store $WM_STORE --config gpu --set device=$DEV --set time_limit=$T_WM $WM_SET --force -q"
    runs="wm"
    if [ -n "$WM_B_SET" ]; then
        runs="wm wm-b"
        part wm-train $((T_WM + 120)) sh -c "$train --out $TMP/wm & $train $WM_B_SET --out $TMP/wm-b & wait"
    else
        part wm-train $((T_WM + 120)) $train --out "$TMP/wm"
    fi
    # the weights alone in 16 bits (~9 MB; a training checkpoint, ~70 MB, is over what comes back from
    # $OUT), copied before the evaluations so that a failed one cannot take them with it
    for r in $runs; do
        mkdir -p "$OUT/$r"
        $PY -c "import sys; from mario_kit.world_model.model.shipped import slim; slim(sys.argv[1], sys.argv[2])" \
            "$TMP/$r/denoiser.pt" "$OUT/$r/denoiser.pt" 2>>"$LOG"
    done
    pack() {  # the small files in one archive, remade after each part (a later part may not finish)
        (cd "$TMP" && tar -cf "$OUT/wm/run.tar" $(ls -d wm*/log.csv wm*/summary.json wm*/config.json \
            rewend/rewend.json eval-*/evaluation.json 2>/dev/null) 2>>"$LOG")
    }
    pack
    # the reward and end model from the same store (issue 44), beside the denoiser
    if [ "$WM_REWEND" != 0 ]; then
        part wm-rewend 120 $MK train --store "$WM_STORE" --config gpu --set device=$DEV --set stage=rewend \
            --out "$TMP/rewend" --force -q
        cp "$TMP/rewend/rewend.pt" "$OUT/wm/" 2>>"$LOG"
        pack
    fi
    evals=""
    for r in $runs; do evals="$evals $MK evaluate $TMP/$r --store $WM_EVAL --device $DEV $WM_EVAL_ARGS --out $TMP/eval-$r &"; done
    lim=150; [ -n "$WM_B_SET" ] && lim=240  # two evaluations share the GPU
    part wm-eval $lim sh -c "$evals wait"
    pack
    for pair in "eval:$WM_EVAL" "fresh:$WM_FRESH"; do  # the 32-step target's figure: 256 rollouts, set and fresh
        s=${pair%%:*} store=${pair#*:}
        [ -d "$store" ] || continue
        part wm-$s-256 120 $MK evaluate "$TMP/wm" --store "$store" --device $DEV $WM_ROLL_ARGS --out "$TMP/eval-$s-256"
        pack
    done
    if [ -n "$WM_BASE" ]; then
        part wm-base 150 $MK evaluate "$WM_BASE" --store "$WM_EVAL" --device $DEV $WM_EVAL_ARGS --out "$TMP/eval-base"
        pack
    fi
elif want wm; then
    echo "== wm: skipped, $WM_STORE or $WM_EVAL is missing (make them with bench/device_carry.sh)" | tee -a "$LOG"
fi

# DIAMOND's own training step beside ours (bench/diamond_step.py), from a checkout carried in .diamond/
# (not vendored: `git -C <diamond checkout> archive HEAD src config LICENSE | tar -x -C .diamond`); into
# device.log, as the files that come back from $OUT are at most 8
if want diamond && [ -d "$DIAMOND" ]; then
    part diamond 90 sh -c "$PY bench/diamond_step.py --diamond $DIAMOND --device $DEV --batch 32,128 --steps $STEPS > $TMP/diamond.json"
    { echo "-- diamond.json"; cat "$TMP/diamond.json"; } >>"$LOG" 2>&1
fi

for f in "$OUT"/*.json "$OUT"/wm/*.json; do [ -f "$f" ] && { echo "-- $f"; cat "$f"; }; done
