"""Collection speed: raw emulator vs `collect --random` (same run), bytes/frame, 2-worker speed-up.

    .venv/bin/python bench/collect.py [--frames 8000]

Prints one JSON object. Targets (issue 3): ratio >= 0.85, speed-up >= 1.7x, <= 4 KB/frame.
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
    res = collect(CollectConfig(out=out, policy="random", steps=frames // 4, max_steps=1000, seed=1,
                                workers=workers), progress=False)
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = raw_fps(args.frames)
        one, bpf = collect_fps(Path(tmp) / "w1", args.frames, 1)
        two, _ = collect_fps(Path(tmp) / "w2", 2 * args.frames, 2)
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "frames": args.frames,
        "raw_env_frames_per_s": round(raw, 1),
        "collect_frames_per_s": round(one, 1),
        "ratio_collect_to_raw": round(one / raw, 3),
        "bytes_per_frame": round(bpf, 1),
        "collect_2_workers_frames_per_s": round(two, 1),
        "speedup_2_workers": round(two / one, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
