"""Replaying frontier episodes from reset against replaying them through a `StartCache` (one env a
stage, snapshots along the last start prefix, episodes in the order of their starts), in the same
run, one process, on the same sample of a frozen set (bench/data). Both must give every episode.

    .venv/bin/python bench/replay.py [--set game-eval] [--levels 2-1] [--sample 100] [--seed 0]

A sample of a whole set shares few starts (a stage's episodes are far apart); all the episodes of a
stage, as a full import replays them, share many.

Prints JSON: seconds and episodes/s each way, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mario_kit.datasets.interop.replay import choose_episodes, parse_replay, read_replay, replay_episode, start_order
from mario_kit.emulator import StartCache, parse_levels

DATA = Path(__file__).resolve().parent / "data"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", default="game-eval", help="a folder of bench/data")
    ap.add_argument("--levels", help="only the episodes of these stages (a comma list)")
    ap.add_argument("--sample", type=int, default=100, help="episodes, drawn with --seed")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    path = DATA / args.set / "replay.json.xz"
    levels = parse_levels(args.levels) if args.levels else None
    todo = choose_episodes(parse_replay(read_replay(path), path), levels, args.sample, args.seed)
    frames = sum(int(e["attrs"]["length"]) for e in todo)
    out: dict[str, float | int | str] = {
        "set": args.set,
        "levels": args.levels or "all",
        "episodes": len(todo),
        "steps": frames,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("reset", "cache"):
            (Path(tmp) / d).mkdir()
        t = time.perf_counter()
        for e in todo:
            replay_episode(e, Path(tmp) / "reset")
        out["from_reset_s"] = round(time.perf_counter() - t, 1)
        cache = StartCache()
        t = time.perf_counter()
        for i in start_order(todo):
            replay_episode(todo[i], Path(tmp) / "cache", cache)
        out["start_cache_s"] = round(time.perf_counter() - t, 1)
    out["from_reset_episodes_per_s"] = round(len(todo) / out["from_reset_s"], 2)
    out["start_cache_episodes_per_s"] = round(len(todo) / out["start_cache_s"], 2)
    out["speedup"] = round(out["from_reset_s"] / out["start_cache_s"], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
