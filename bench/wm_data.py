"""Rebuild the world model's frozen data from bench/data/ (replay files kept in the repository): the
fixed evaluation set, fresh episodes nobody tuned on, and the training mix, each with its store.

    .venv/bin/python bench/wm_data.py [--root runs] [--only eval,eval-fresh,mix] [--levels 1-1,2-1] [--sample N --seed 0]
        [--keep-going] [--workers 2]

Writes ROOT/<name>/episodes and ROOT/<name>/store.zarr (the two evaluation sets with full-res frames,
for the upsampler's figures). Every frame is replayed in the emulator and checked against the digest
recorded with it, so the data is the same on any machine, without the PPO agent that played part of
it. A second call keeps what is there (the import skips episodes it finds, the build adds only new
ones). How the data was recorded: docs/BENCHMARKS_LOG.md, "World model quality". Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mario_kit import UserError
from mario_kit.datasets.interop.replay import import_replay
from mario_kit.datasets.store import build_store, store_info
from mario_kit.emulator import parse_levels

DATA = Path(__file__).resolve().parent / "data"
# name -> full-res frames in the store; world1, world1-eval: the whole-stage recipe, game, game-eval: the
# whole-game one (frontier collector)
SETS = {
    "eval": True,
    "eval-fresh": True,
    "mix": False,
    "world1": False,
    "world1-eval": True,
    "game": False,
    "game-eval": False,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("runs"))
    ap.add_argument("--only", default="eval,eval-fresh,mix", help="comma list of " + ", ".join(SETS))
    ap.add_argument("--levels", help="replay only the episodes of these stages (W-S, a comma list)")
    ap.add_argument("--sample", type=int, help="replay this many episodes of a set, drawn with --seed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep-going", action="store_true", help="leave out episodes that replay to other frames")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    levels = parse_levels(args.levels) if args.levels else None  # a bad stage: one line, exit 2 (below)
    out = {}
    for name in args.only.split(","):
        if name not in SETS:
            ap.error(f"unknown set {name!r}; sets: {', '.join(SETS)}")
        d = args.root / name
        t0 = time.perf_counter()
        r = import_replay(
            DATA / name,
            d / "episodes",
            workers=args.workers,
            progress=True,
            levels=levels,
            keep_going=args.keep_going,
            sample=args.sample,
            seed=args.seed,
        )
        t1 = time.perf_counter()
        build_store(d / "episodes", d / "store.zarr", full_res=SETS[name], progress=True)
        info = store_info(d / "store.zarr")
        out[name] = {
            "replayed_episodes": r.episodes,
            "replayed_steps": r.steps,
            "kept_episodes": len(r.skipped),
            "differ": r.differ,
            "replay_s": round(t1 - t0, 1),
            "replay_steps_per_s": round(r.steps / max(t1 - t0, 1e-9), 1),
            "build_s": round(time.perf_counter() - t1, 1),
            "episodes": info["episodes"],
            "frames": info["frames"],
            "test_episodes": info["test_episodes"],
            "store": str(d / "store.zarr"),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    try:
        main()
    except UserError as e:  # one line, exit 2 (a set that does not replay, a folder in the way)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
