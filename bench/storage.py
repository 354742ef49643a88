"""Frame storage choices: bytes/frame, write and random-read frames/s per HDF5 filter.

    .venv/bin/python bench/storage.py [--steps 1000] [--record]

Frames come from a real sticky-random collection (1-1, frame skip 4). Prints JSON; `--record` also
writes bench/results/storage.json (docs/BENCHMARKS.md, through bench/tables.py).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from mario_kit.collectors import CollectConfig, collect
from mario_kit.datasets import format as F
from mario_kit.datasets.episode import Episode


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--record", action="store_true", help="write bench/results/storage.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        res = collect(
            CollectConfig(
                out=Path(tmp) / "eps",
                policy="sticky",
                policy_kwargs={"p": 0.9},
                action_set="right",
                steps=args.steps,
                seed=0,
            ),
            progress=False,
        )
        frames = np.concatenate([Episode(p).frames[()] for p in res.paths])
        n = len(frames)
        rng = np.random.default_rng(0)
        order = rng.permutation(n)
        for name, kw in [
            ("none", {}),
            ("gzip-1", {"compression": "gzip", "compression_opts": 1}),
            ("gzip-3", {"compression": "gzip", "compression_opts": 3}),
            ("gzip-6", {"compression": "gzip", "compression_opts": 6}),
            ("lzf", {"compression": "lzf"}),
        ]:
            path = Path(tmp) / f"{name}.h5"
            t = time.perf_counter()
            with h5py.File(path, "w") as f:
                ds = f.create_dataset("frames", shape=frames.shape, dtype=np.uint8, chunks=(1, 240, 256, 3), **kw)
                for i in range(n):
                    ds[i] = frames[i]
            write = n / (time.perf_counter() - t)
            with h5py.File(path, "r") as f:
                ds = f["frames"]
                t = time.perf_counter()
                for i in order:
                    ds[int(i)]
                read = n / (time.perf_counter() - t)
            rows.append(
                {
                    "filter": name,
                    "bytes_per_frame": round(os.path.getsize(path) / n),
                    "write_frames_per_s": round(write),
                    "random_read_frames_per_s": round(read),
                }
            )
    print(json.dumps({"frames": n, "raw_bytes_per_frame": 240 * 256 * 3, "rows": rows}, indent=2))
    if args.record:
        _record(rows, n, args.steps)


def _record(rows: list[dict], n: int, steps: int) -> None:
    from tables import record

    chosen = f"{F.FRAME_COMPRESSION}-{F.FRAME_COMPRESSION_OPTS}"  # what episode files use

    def name(r: dict) -> str:
        label = r["filter"].replace("-", " ")
        return f"**{label} (chosen)**" if r["filter"] == chosen else label

    table = [
        [name(r), f"{r['bytes_per_frame']:,}", f"{r['write_frames_per_s']:,}", f"{r['random_read_frames_per_s']:,}"]
        for r in rows
    ]
    pick = next(r for r in rows if r["filter"] == chosen)
    record(
        "storage",
        ["filter", "bytes/frame", "write frames/s", "random-read frames/s"],
        table,
        f".venv/bin/python bench/storage.py --steps {steps} --record",
        f"{pick['bytes_per_frame']:,} B a frame (gzip 3)",
    )


if __name__ == "__main__":
    main()
