"""The training store (zarr v3): what the trainer reads, built from an episode folder.

Layout of STORE.zarr (documented in docs/FORMAT.md):
  low      (N, 60, 64, 3) uint8   every frame of every episode, 4x4 area mean (rounded), chunks of 512
  full     (N, 240, 256, 3) uint8 optional (--full-res), one frame a chunk (random access)
  actions  (N,) int16             the action taken at each frame; -1 at an episode's last frame
  weights  (N,) float32           balancing weight of each step (1 without a weights file; 0 at last frames)
  attrs["mario_kit_store"]        manifest: schema, action set, frame skip, resize, per-channel sums, and
                                  one entry per episode (file, size, mtime, xxh3 checksum, start, frames, split)

Every chunk is zstd-compressed with zstd's content checksum, so a corrupted chunk fails to decode
instead of feeding garbage to training. Building is incremental (new episodes are appended) and
resumable: an episode counts only once the manifest lists it; arrays longer than the manifest (a
killed build) are cut back on the next run. zarr's local store writes each chunk atomically.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from mario_kit import UserError
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode

STORE_SCHEMA = 1
ATTR = "mario_kit_store"
FACTOR = 4
LOW_SHAPE = (F.FRAME_SHAPE[0] // FACTOR, F.FRAME_SHAPE[1] // FACTOR, 3)  # (60, 64, 3)
LOW_CHUNK = 512
RESIZE = "area: mean of each 4x4 block per channel, rounded half up (exact, integer)"
_BLOCK = 256  # frames read from an episode at a time
COMMIT_EVERY_S = 2.0  # manifest writes: at most every 2 s (it lists every episode, so one per episode is quadratic)


def downsample(frames: np.ndarray) -> np.ndarray:
    """(n, 240, 256, 3) -> (n, 60, 64, 3) uint8 by exact 4x4 area mean, rounded half up.

    Computed with torch's avg_pool2d in float32, which is exact here (sums of 16 bytes, divided by
    16) and ten times faster than numpy's strided sum; OpenCV's INTER_AREA rounds differently."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    y = torch.nn.functional.avg_pool2d(x, FACTOR).add_(0.5).floor_().to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().numpy()


def file_checksum(path: Path) -> str:
    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _codecs():
    from zarr.codecs import ZstdCodec

    return [ZstdCodec(level=3, checksum=True)]


@dataclass
class BuildResult:
    added: int
    kept: int
    frames: int
    store: Path


def read_manifest(store: Path) -> dict[str, Any]:
    import zarr

    try:
        g = zarr.open_group(str(store), mode="r")
        m = dict(g.attrs[ATTR])
    except Exception:  # noqa: BLE001  (anything that is not our store)
        raise UserError(f"{store} is not a mario-kit training store") from None
    if m.get("schema_version") != STORE_SCHEMA:
        raise UserError(f"{store}: store schema {m.get('schema_version')} (this mario-kit reads {STORE_SCHEMA})")
    return m


def _load_weights(path: Path | None) -> dict[str, np.ndarray]:
    if path is None:
        return {}
    try:
        with np.load(path) as z:
            return {k: z[k].astype(np.float32) for k in z.files if k != "__meta__"}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read weights file {path}: {e}") from None


def build_store(src: str | Path, out: str | Path, full_res: bool = False, weights: str | Path | None = None,
                force: bool = False, verify: bool = False, progress: bool = True) -> BuildResult:
    """Build or extend `out` from the episodes in `src`. See the module docstring."""
    import zarr

    from mario_kit.datasets.split import read_split
    from mario_kit.progress import make_progress

    src, out = Path(src), Path(out)
    ds = Dataset(src).require_episodes()
    if ds.skipped:
        p, why = ds.skipped[0]
        raise UserError(f"{p} is not a valid episode ({why}); run `mario-kit dataset validate {src}`")
    sets = set(ds.index["action_set"])
    skips = set(ds.index["frame_skip"])
    if len(sets) > 1 or len(skips) > 1:
        raise UserError(f"{src} mixes action sets {sorted(sets)} or frame skips {sorted(skips)}; a store needs one of each")
    first = Episode(ds.paths[0])
    aset, frame_skip = first.action_set, int(first.attrs["frame_skip"])
    first.close()
    wmap = _load_weights(Path(weights) if weights else None)
    split = read_split(src)

    if out.exists() and force:
        import shutil

        if not (out / "zarr.json").exists():
            raise UserError(f"{out} exists and is not a zarr store; refusing to delete it")
        shutil.rmtree(out)
    if out.exists():
        m = read_manifest(out)
        if m["action_set"] != aset.name or m["frame_skip"] != frame_skip:
            raise UserError(f"{out} was built from {m['action_set']}/frame skip {m['frame_skip']} episodes")
        if m["full_res"] != full_res:
            raise UserError(f"{out} was built {'with' if m['full_res'] else 'without'} --full-res; use --force to rebuild")
        g = zarr.open_group(str(out), mode="r+")
    else:
        g = zarr.open_group(str(out), mode="w")
        g.create_array("low", shape=(0, *LOW_SHAPE), chunks=(LOW_CHUNK, *LOW_SHAPE), dtype="uint8", compressors=_codecs())
        if full_res:
            # flat chunk names ("c.N.0.0.0"): zarr's default nests each one-frame chunk three folders
            # deep, and those folders cost 12 KB of disk a frame against 2.3 KB of data
            g.create_array("full", shape=(0, *F.FRAME_SHAPE), chunks=(1, *F.FRAME_SHAPE), dtype="uint8", compressors=_codecs(),
                           chunk_key_encoding={"name": "default", "separator": "."})
        g.create_array("actions", shape=(0,), chunks=(1 << 16,), dtype="int16", compressors=_codecs())
        g.create_array("weights", shape=(0,), chunks=(1 << 16,), dtype="float32", compressors=_codecs())
        m = {
            "schema_version": STORE_SCHEMA, "action_set": aset.name, "action_buttons": [list(b) for b in aset.buttons],
            "frame_skip": frame_skip, "low_shape": list(LOW_SHAPE), "resize": RESIZE, "full_res": full_res,
            "source": str(src.resolve()), "sums": [0.0] * 3, "sumsq": [0.0] * 3, "count": 0, "episodes": [],
        }
        g.attrs[ATTR] = m
    arrays = ["low", "actions", "weights"] + (["full"] if full_res else [])
    committed = sum(e["frames"] for e in m["episodes"])
    for name in arrays:  # cut back what a killed build left beyond the manifest
        a = g[name]
        if a.shape[0] != committed:
            a.resize((committed, *a.shape[1:]))

    known = {e["file"]: e for e in m["episodes"]}
    todo = []
    for p in ds.paths:
        e = known.get(p.name)
        st = p.stat()
        if e is None:
            todo.append(p)
            continue
        if verify or e["size"] != st.st_size or e["mtime_ns"] != st.st_mtime_ns:
            if file_checksum(p) != e["checksum"]:
                raise UserError(f"episode {p.name} changed since it was added to {out}; rebuild with --force")
            e["mtime_ns"], e["size"] = st.st_mtime_ns, st.st_size
    for e in m["episodes"]:
        e["split"] = split.get(e["file"], "train")

    committed_at = time.monotonic()
    try:
        with make_progress(enabled=progress) as bar:
            task = bar.add_task("building store", total=int(ds.index.set_index("file").loc[[p.name for p in todo], "frames"].sum()) if todo else 0)
            for p in todo:
                with Episode(p) as ep:
                    n = ep.length + 1
                    start = g["low"].shape[0]
                    for name in arrays:
                        g[name].resize((start + n, *g[name].shape[1:]))
                    sums = np.zeros(3)
                    sumsq = np.zeros(3)
                    for i in range(0, n, _BLOCK):
                        block = ep.frames[i : i + _BLOCK]
                        low = downsample(block)
                        g["low"][start + i : start + i + len(block)] = low
                        if full_res:
                            g["full"][start + i : start + i + len(block)] = block
                        lf = low.reshape(-1, 3).astype(np.int64)
                        sums += lf.sum(0) / 255.0
                        sumsq += (lf * lf).sum(0) / 255.0**2
                        bar.update(task, advance=len(block))
                    acts = np.full(n, -1, np.int16)
                    acts[:-1] = ep.actions
                    g["actions"][start : start + n] = acts
                    w = np.zeros(n, np.float32)
                    w[:-1] = wmap.get(p.name, np.ones(ep.length, np.float32))[: ep.length]
                    g["weights"][start : start + n] = w
                    source, level = ep.attrs["source"], ep.attrs["level"]
                st = p.stat()
                m["episodes"].append({
                    "file": p.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "checksum": file_checksum(p),
                    "start": start, "frames": n, "split": split.get(p.name, "train"),
                    "source": source, "level": level,
                })
                m["sums"] = (np.array(m["sums"]) + sums).tolist()
                m["sumsq"] = (np.array(m["sumsq"]) + sumsq).tolist()
                m["count"] += n * LOW_SHAPE[0] * LOW_SHAPE[1]
                if time.monotonic() - committed_at >= COMMIT_EVERY_S:  # the commit point of these episodes
                    g.attrs[ATTR] = m
                    committed_at = time.monotonic()
    finally:  # Ctrl-C or an error: the finished episodes stay committed (a hard kill loses <= 2 s)
        g.attrs[ATTR] = m
    total = sum(e["frames"] for e in m["episodes"])
    return BuildResult(added=len(todo), kept=len(known), frames=total, store=out)


def channel_stats(m: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the low-res frames, in [0, 1]."""
    c = max(m["count"], 1)
    mean = np.array(m["sums"]) / c
    std = np.sqrt(np.maximum(np.array(m["sumsq"]) / c - mean**2, 0))
    return mean.round(5).tolist(), std.round(5).tolist()


def store_info(store: Path) -> dict[str, Any]:
    m = read_manifest(store)
    mean, std = channel_stats(m)
    eps = m["episodes"]
    return {
        "store": str(store), "episodes": len(eps), "frames": sum(e["frames"] for e in eps),
        "train_episodes": sum(e["split"] == "train" for e in eps), "test_episodes": sum(e["split"] == "test" for e in eps),
        "action_set": m["action_set"], "frame_skip": m["frame_skip"], "full_res": m["full_res"],
        "channel_mean": mean, "channel_std": std, "bytes": _du(store),
    }


def _du(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)

