"""DreamEnv steps/s of the shipped model on this CPU by its `threads` setting, on an idle machine and
with a busy process beside it (one CPU-bound process per core but one: what an agent training next to
the dream does), both in the same run.

    .venv/bin/python bench/dream_env.py [--steps 60] [--record]

Prints JSON: steps/s per (load, threads) and, per load, the ratio of one thread to torch's default;
`--record` also writes them as bench/results/dream_env.json (docs/BENCHMARKS.md: bench/tables.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

import torch

from mario_kit.world_model import DreamEnv


def _spin() -> None:
    while True:
        pass


def _rate(threads: int, steps: int) -> float:
    env = DreamEnv(device="cpu", threads=threads, upsampler=False)
    env.reset(seed=0)
    for _ in range(5):  # warm-up
        env.step(1)
    t = time.perf_counter()
    for _ in range(steps):
        env.step(1)
    return round(steps / (time.perf_counter() - t), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--record", action="store_true", help="write bench/results/dream_env.json")
    args = ap.parse_args()
    out: dict = {"cpus": os.cpu_count(), "torch_default_threads": torch.get_num_threads()}
    for load in ("idle", "busy"):
        spinners = (
            [mp.Process(target=_spin, daemon=True) for _ in range(max(1, (os.cpu_count() or 2) - 1))]
            if load == "busy"
            else []
        )
        for p in spinners:
            p.start()
        try:
            rates = {t: _rate(t, args.steps) for t in (1, 0)}
        finally:
            for p in spinners:
                p.terminate()
        out[load] = {
            "threads_1": rates[1],
            "threads_default": rates[0],
            "ratio_1_to_default": round(rates[1] / rates[0], 2),
        }
    print(json.dumps(out, indent=2))
    if args.record:
        _record(out, args.steps)


def _record(out: dict, steps: int) -> None:
    from tables import record

    cols = ["load", "threads=1 (the default)", "threads=0 (torch's default)", "1 / default"]
    rows = [
        [name, out[load]["threads_1"], out[load]["threads_default"], out[load]["ratio_1_to_default"]]
        for load, name in (("idle", "idle"), ("busy", "one core busy"))
    ]
    idle, busy = out["idle"]["ratio_1_to_default"], out["busy"]["ratio_1_to_default"]
    headline = (
        f"1 thread (the default) at {idle:.2f}x torch's 2 threads on an idle machine, {busy:.2f}x with a core busy"
    )
    note = "the shipped model, 64x60, no upsampler; idle, then with a CPU-bound process on the other core"
    record("dream_env", cols, rows, f".venv/bin/python bench/dream_env.py --steps {steps} --record", headline, note)


if __name__ == "__main__":
    main()
