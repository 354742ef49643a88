"""The seed project's (Super Mario DIAMOND) HDF5 layout: one file per episode with, for i in 0..N-1,
  frame_{i}_x          (240, 256, 3) uint8   the frame before action i
  frame_{i}_y          (7,) one-hot over SIMPLE_MOVEMENT, or (3,) multi-hot [jump, left, right]
  frame_{i}_helperarr  (2,) [reward of the previous step, life lost before step i]
recorded at frame skip 4 on level 1-1. The last action has no frame after it.

Import: N frames become N - 1 steps (frame i+1 follows action i; reward of step i = helperarr[i+1][0];
terminated = helperarr[i+1][1]). Actions are mapped to our action set by their buttons; the
original y vectors and helper arrays are kept in the episode's `extra/` group, so an imported
episode exports back byte-identical. Imported episodes have no per-frame joypad record: `joypad`
holds each action's byte repeated 4 times, and `extra.replayable` is false.

Export: frames 0..T, y one-hot over SIMPLE_MOVEMENT (actions mapped by buttons; the last frame
gets NOOP), helperarr = [previous step's reward, previous step's terminated].
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from mario_kit import UserError
from mario_kit.atomic import atomic_path, output_dir
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset, check_output_dir
from mario_kit.datasets.episode import Episode, EpisodeMeta, EpisodeWriter
from mario_kit.trust import open_h5

FRAME_SKIP = 4
LEVEL = "1-1"
MULTIHOT = ("A", "left", "right")  # [jump, left, right]
_KEY = re.compile(r"frame_(\d+)_x")


def _seed_files(src: Path) -> list[Path]:
    if not src.is_dir():
        raise UserError(f"{src} is not a folder")
    files = sorted(p for p in src.iterdir() if p.suffix in (".h5", ".hdf5") and p.is_file())
    if not files:
        raise UserError(f"{src} holds no .hdf5/.h5 files")
    return files


def _y_to_buttons(y: np.ndarray) -> tuple[str, ...]:
    if y.shape == (7,):
        return F.ACTION_SETS["simple"].buttons[int(np.argmax(y))]
    if y.shape == (3,):
        return tuple(b for b, on in zip(MULTIHOT, y) if on) or ("NOOP",)
    raise ValueError(f"frame_y of shape {y.shape}: expected (7,) one-hot or (3,) multi-hot")


def import_seed(src: str | Path, out: str | Path, action_set: str = "simple", source: str = "seed") -> list[Path]:
    """Import every seed-layout file of `src` as an episode into `out`."""
    src, out = Path(src), Path(out)
    aset = F.get_action_set(action_set)
    check_output_dir(out, action_set, FRAME_SKIP)
    written = []
    for p in _seed_files(src):
        try:
            with open_h5(p) as f:  # refuses links, external storage and virtual datasets
                n = 1 + max((int(m.group(1)) for k in f.keys() if (m := _KEY.fullmatch(k))), default=-1)
                if n < 2:
                    raise ValueError("fewer than 2 frames")
                x0 = f["frame_0_x"]
                if x0.shape != F.FRAME_SHAPE:
                    raise ValueError(f"frame_0_x of shape {x0.shape}, expected {F.FRAME_SHAPE}")
                ys = np.stack([f[f"frame_{i}_y"][()] for i in range(n)])
                helper = np.stack([np.asarray(f[f"frame_{i}_helperarr"][()], dtype=np.float64) for i in range(n)])
                meta = EpisodeMeta(env_id=f"SuperMarioBros-{LEVEL}-v0", level=LEVEL, frame_skip=FRAME_SKIP,
                                   action_set=aset, source=source, policy={"name": "unknown"},
                                   extra={"imported_from": "seed", "seed_file": p.name, "replayable": False,
                                          "y_kind": "onehot7" if ys.shape[1] == 7 else "multihot3"})
                actions = [F.nearest_action(_y_to_buttons(y), aset) for y in ys]
                w = EpisodeWriter(out, meta)
                try:
                    w.add_frame(np.asarray(x0[()], dtype=np.uint8))
                    for t in range(n - 1):
                        a = actions[t]
                        w.add_step(a, np.asarray(f[f"frame_{t + 1}_x"][()], dtype=np.uint8), float(helper[t + 1][0]),
                                   bool(helper[t + 1][1]), False, {}, [int(aset.joypad[a])] * FRAME_SKIP)
                    w.add_extra("seed_y", ys)
                    w.add_extra("seed_helperarr", helper)
                    written.append(w.finish("cut"))
                except BaseException:
                    w.discard()
                    raise
        except (KeyError, ValueError, OSError) as e:
            raise UserError(f"{p} is not in the seed layout ({e})") from None
    return written


def export_seed(src: str | Path, out: str | Path, force: bool = False) -> list[Path]:
    """Write every episode of `src` in the seed layout into `out` (one `<episode>.hdf5` each)."""
    ds = Dataset(src).require_episodes()
    if ds.skipped:
        p, why = ds.skipped[0]
        raise UserError(f"{p} is not a valid episode ({why}); run `mario-kit dataset validate {src}`")
    out = Path(out)
    existing = [out / (p.stem + ".hdf5") for p in ds.paths if (out / (p.stem + ".hdf5")).exists()]
    if existing and not force:  # checked for every file before the first is written
        raise UserError(f"{existing[0]} exists; pass --force to overwrite")
    with output_dir(out):
        return _export(ds, out)


def _export(ds: Dataset, out: Path) -> list[Path]:
    from mario_kit.progress import make_progress

    simple = F.ACTION_SETS["simple"]
    written = []
    with make_progress(transient=True) as bar:
        task = bar.add_task("exporting", total=len(ds.paths))
        for p in ds.paths:
            written.append(_export_one(p, out, simple))
            bar.update(task, advance=1)
    return written


def _export_one(p: Path, out: Path, simple: F.ActionSet) -> Path:
    target = out / (p.stem + ".hdf5")
    with Episode(p) as ep:
        if int(ep.attrs["frame_skip"]) != FRAME_SKIP:
            raise UserError(f"{p.name} has frame skip {ep.attrs['frame_skip']}; the seed layout is frame skip 4")
        ys, helper = ep.extra("seed_y"), ep.extra("seed_helperarr")
        T = ep.length
        if ys is None:
            acts = F.map_actions(ep.actions, ep.action_set, simple)
            ys = np.zeros((T + 1, 7), dtype=np.int64)
            ys[np.arange(T), acts] = 1
            ys[T, 0] = 1  # no action follows the last frame: NOOP
            helper = np.zeros((T + 1, 2), dtype=np.float64)
            helper[1:, 0] = ep.rewards
            helper[1:, 1] = ep.column(F.TERMINATED)
        with atomic_path(target) as tmp, h5py.File(tmp, "w") as f:
            for i in range(T + 1):
                f.create_dataset(f"frame_{i}_x", data=ep.read_frames(i, i + 1)[0])
                f.create_dataset(f"frame_{i}_y", data=ys[i])
                f.create_dataset(f"frame_{i}_helperarr", data=helper[i])
    return target
