"""Training-window loader speed against an in-memory numpy baseline (same run), store sizes, build speed.

    .venv/bin/python bench/loader.py [--steps 4000] [--batches 300]

Collects a sticky-random dataset, builds the store (with full-res frames), then times batches of
32 windows (4 context frames + 1 target at 64x60) read as training reads them (`epoch_batches`,
then `fetch` and `gather`), and how long a process takes to verify the store's cache against the
store (`materialize_low` on a cache it has not checked) per 1,000 frames. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mario_kit.collectors import CollectConfig, collect
from mario_kit.datasets import loader
from mario_kit.datasets.loader import WindowDataset, epoch_batches
from mario_kit.datasets.store import build_store, store_info


def _du(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    B = args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        eps, store = Path(tmp) / "eps", Path(tmp) / "s.zarr"
        collect(
            CollectConfig(out=eps, policy="sticky", policy_kwargs={"p": 0.8}, steps=args.steps, seed=0, workers=2),
            progress=False,
        )
        t = time.perf_counter()
        build_store(eps, Path(tmp) / "low-only.zarr", progress=False)
        build_low_s = time.perf_counter() - t
        t = time.perf_counter()
        build_store(eps, store, full_res=True, progress=False)
        build_s = time.perf_counter() - t
        info = store_info(store)
        n = info["frames"]
        ds = WindowDataset(store, split=None)
        # baseline: the same frames as a plain in-memory array, same window indexing
        low = np.array(ds.low)
        rng = np.random.default_rng(0)
        offs = np.arange(-4, 1)
        t = time.perf_counter()
        for _ in range(args.batches):
            g = ds.targets[rng.integers(len(ds), size=B)]
            low[np.maximum(g[:, None] + offs, 0)]
        baseline = args.batches * B / (time.perf_counter() - t)
        order = epoch_batches(len(ds), B, args.batches, seed=0, epoch=0)
        ds.gather(ds.fetch(order[0]))  # the one-time cache decode is not timed
        t = time.perf_counter()
        for idx in order:
            ds.gather(ds.fetch(idx))
        training = args.batches * B / (time.perf_counter() - t)
        loader._verified.clear()  # as a new process finds it
        t = time.perf_counter()
        loader.materialize_low(store)
        verify_ms = (time.perf_counter() - t) * 1000
        print(
            json.dumps(
                {
                    "frames": n,
                    "build_frames_per_s_low_res_only": round(n / build_low_s),
                    "build_frames_per_s_with_full_res": round(n / build_s),
                    "store_low_bytes_per_frame": round(_du(store / "low") / n, 1),
                    "store_full_bytes_per_frame": round(_du(store / "full") / n, 1),
                    "baseline_numpy_windows_per_s": round(baseline),
                    "training_path_windows_per_s": round(training),
                    "ratio_training_path_to_baseline": round(training / baseline, 3),
                    "cache_verify_ms_per_1000_frames": round(verify_ms / n * 1000, 2),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
