"""Training-window loader speed against an in-memory numpy baseline (same run), store sizes, build speed.

    .venv/bin/python bench/loader.py [--steps 4000] [--batches 300] [--record]

Collects a sticky-random dataset, builds the store (with full-res frames), then times batches of
32 windows (4 context frames + 1 target at 64x60) read as training reads them (`epoch_batches`,
then `fetch` and `gather`), and how long a process takes to verify the store's cache against the
store (`materialize_low` on a cache it has not checked) per 1,000 frames; and low-res stores at zstd
levels 3 (the default) and 19 (`--compression-level`, for carrying a store): size, build speed, and the
one-time decode of every frame into the cache. Prints JSON; `--record`
also writes bench/results/loader.json (docs/BENCHMARKS.md, through bench/tables.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
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


LEVELS = (3, 19)


def _low_only(eps: Path, store: Path, level: int) -> tuple[float, int, float]:
    """(build seconds, bytes of the low-res frames, seconds to decode them all into the cache)."""
    t = time.perf_counter()
    build_store(eps, store, progress=False, compression_level=level)
    build_s = time.perf_counter() - t
    decode_s = []
    for _ in range(3):  # the best of three: a process's first zarr reads are slower whatever the level
        shutil.rmtree(store / loader.CACHE_DIR, ignore_errors=True)
        loader._verified.clear()
        t = time.perf_counter()
        loader.materialize_low(store)
        decode_s.append(time.perf_counter() - t)
    return build_s, _du(store / "low"), min(decode_s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batches", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--record", action="store_true", help="write bench/results/loader.json")
    args = ap.parse_args()
    B = args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        eps, store = Path(tmp) / "eps", Path(tmp) / "s.zarr"
        collect(
            CollectConfig(out=eps, policy="sticky", policy_kwargs={"p": 0.8}, steps=args.steps, seed=0, workers=2),
            progress=False,
        )
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
        verify = []
        for _ in range(3):  # the best of three (a single timing of these few frames swings 10-40x)
            loader._verified.clear()  # as a new process finds it
            t = time.perf_counter()
            loader.materialize_low(store)
            verify.append(time.perf_counter() - t)
        verify_ms = min(verify) * 1000
        levels = {level: _low_only(eps, Path(tmp) / f"low-{level}.zarr", level) for level in LEVELS}
        r: dict = {"frames": n, "build_frames_per_s_with_full_res": round(n / build_s)}
        for level, (build_low_s, nbytes, decode_s) in levels.items():
            r |= {f"zstd{level}_build_frames_per_s_low_res_only": round(n / build_low_s)}
            r |= {f"zstd{level}_low_bytes_per_frame": round(nbytes / n, 1)}
            r |= {f"zstd{level}_cache_decode_ms_per_1000_frames": round(decode_s / n * 1e6, 1)}
        r |= {"store_full_bytes_per_frame": round(_du(store / "full") / n, 1)}
        r |= {"baseline_numpy_windows_per_s": round(baseline), "training_path_windows_per_s": round(training)}
        r |= {"ratio_training_path_to_baseline": round(training / baseline, 3)}
        r |= {"cache_verify_ms_per_1000_frames": round(verify_ms / n * 1000, 2)}
    print(json.dumps(r, indent=2))
    if args.record:
        _record(r, args)


def _record(r: dict, args: argparse.Namespace) -> None:
    from tables import record

    rows = [
        [
            "plain numpy array in RAM, same indexing (baseline, same run)",
            f"{r['baseline_numpy_windows_per_s']:,} windows/s",
            "",
        ],
        [
            "training's batch path",
            f"{r['training_path_windows_per_s']:,} windows/s (**{r['ratio_training_path_to_baseline']:.2f}** of baseline)",
            ">= 0.5",
        ],
        ["store size, full-res", f"{r['store_full_bytes_per_frame']:,} B/frame (raw 184,320)", ""],
        ["build speed, with full-res", f"{r['build_frames_per_s_with_full_res']:,} frames/s", ""],
    ]
    for level in LEVELS:
        name = "the default" if level == 3 else "`--compression-level`"
        rows.append(
            [
                f"low-res only, zstd level {level} ({name}): size / build / decoding into the cache",
                f"{r[f'zstd{level}_low_bytes_per_frame']:,} B/frame (raw 11,520) / {r[f'zstd{level}_build_frames_per_s_low_res_only']:,} "
                f"frames/s / {r[f'zstd{level}_cache_decode_ms_per_1000_frames']} ms per 1,000 frames",
                "",
            ]
        )
    rows += [
        [
            "a process verifying the store's cache against the store",
            f"{r['cache_verify_ms_per_1000_frames']} ms per 1,000 frames",
            "",
        ],
    ]
    command = f".venv/bin/python bench/loader.py --steps {args.steps} --batches {args.batches} --record"
    headline = f"training's batch path at {r['ratio_training_path_to_baseline']:.2f} of an in-memory array"
    note = f"{r['frames']:,} frames of sticky-random play; batches of {args.batch_size} windows, read as training reads them"
    record("loader", ["figure", "value", "target"], rows, command, headline, note)


if __name__ == "__main__":
    main()
