"""Collection speed: raw emulator vs `collect --random` (same run), bytes/frame, 2-worker speed-up.

    .venv/bin/python bench/collect.py [--frames 8000] [--record]

Prints one JSON object; `--record` also writes bench/results/collect.json (docs/BENCHMARKS.md, through
bench/tables.py). Targets (issue 3): ratio >= 0.85, speed-up >= 1.7x, <= 4 KB/frame.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from mario_kit.collectors import CollectConfig, collect
from mario_kit.emulator import MarioEnv
from mario_kit.datasets import format as F
from mario_kit.datasets.episode import Episode


def raw_fps(frames: int, seed: int = 0) -> float:
    """Emulator frames/s stepping random action-set bytes, nothing copied or recorded."""
    env = MarioEnv("1-1")
    joypad = F.get_action_set("simple").joypad
    rng = np.random.default_rng(seed)
    env.reset()
    t = time.perf_counter()
    for _ in range(frames):
        _, term, trunc, _ = env.step_frame(int(joypad[rng.integers(len(joypad))]))
        if term or trunc:
            env.reset()
    return frames / (time.perf_counter() - t)


def collect_fps(out: Path, frames: int, workers: int) -> tuple[float, float]:
    """(emulator frames/s, bytes per recorded frame) of `collect --random` with writing."""
    t = time.perf_counter()
    res = collect(
        CollectConfig(out=out, policy="random", steps=frames // 4, max_steps=1000, seed=1, workers=workers),
        progress=False,
    )
    dt = time.perf_counter() - t
    emu = recorded = size = 0
    for p in res.paths:
        with Episode(p) as ep:
            emu += int(ep.step_frames.sum())
            recorded += ep.length + 1
        size += os.path.getsize(p)
    return emu / dt, size / recorded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8000)
    ap.add_argument("--record", action="store_true", help="write bench/results/collect.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = raw_fps(args.frames)
        one, bpf = collect_fps(Path(tmp) / "w1", args.frames, 1)
        two, _ = collect_fps(Path(tmp) / "w2", 2 * args.frames, 2)
    r = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", "frames": args.frames}
    r |= {"raw_env_frames_per_s": round(raw, 1), "collect_frames_per_s": round(one, 1)}
    r |= {"ratio_collect_to_raw": round(one / raw, 3), "bytes_per_frame": round(bpf, 1)}
    r |= {"collect_2_workers_frames_per_s": round(two, 1), "speedup_2_workers": round(two / one, 2)}
    print(json.dumps(r, indent=2))
    if args.record:
        _record(r)


def _record(r: dict) -> None:
    from tables import record

    rows = [
        ["raw emulator, random actions, nothing recorded", f"{r['raw_env_frames_per_s']:,.0f} frames/s", ""],
        [
            "`collect --random` (frame skip 4, writing episodes)",
            f"{r['collect_frames_per_s']:,.0f} emulator frames/s",
            "",
        ],
        ["ratio collect / raw", f"**{r['ratio_collect_to_raw']:.2f}**", ">= 0.85"],
        ["bytes per recorded frame (file overhead included)", f"**{r['bytes_per_frame']:,.0f}**", "<= 4,096"],
        ["`collect --random --workers 2`", f"{r['collect_2_workers_frames_per_s']:,.0f} frames/s", ""],
        ["speed-up of 2 workers over 1", f"**{r['speedup_2_workers']:.2f}x**", ">= 1.7x"],
    ]
    headline = (
        f"`collect` at {r['ratio_collect_to_raw']:.2f} of the raw emulator; 2 workers {r['speedup_2_workers']:.2f}x"
    )
    record(
        "collect",
        ["figure", "value", "target"],
        rows,
        f".venv/bin/python bench/collect.py --frames {r['frames']} --record",
        headline,
    )


if __name__ == "__main__":
    main()
