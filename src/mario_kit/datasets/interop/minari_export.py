"""Export to Minari (Farama's offline-RL dataset format): `dataset export --format minari`.

The dataset is laid out under ROOT as Minari keeps its datasets (ROOT/<namespace>/<name>-v<N>/data/),
so that with MINARI_DATASETS_PATH=ROOT, `minari.load_dataset(id)` opens it. Frames are stored raw
(Minari's JPEG encoding is lossy and is off): 184,320 bytes a frame, far larger than our deflated
episode files (docs/BENCHMARKS.md). Each
episode keeps its Discrete actions, rewards, terminations, truncations and info columns (the reset
info is not recorded: the first step's row stands for it). The action set's buttons, frame skip and
levels are in the dataset's description and in `mario_kit` of its metadata.json, which names no local
path. The env spec is the real game with the dataset's level, action set and frame skip
(`mario_kit/SuperMarioBros-v0`, `datasets.game_env`), so `recover_environment()` (also with
`eval_env=True`) rebuilds it; a dataset of several levels names the first. Minari keeps a Box's
bounds element by element (its reader refuses scalar bounds), so metadata.json holds the frame's
184,320 bounds twice; written without spaces, which is as small as a reader of it allows.
Minari is an optional extra: `pip install 'mario-kit[minari]'`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mario_kit import UserError
from mario_kit.atomic import check_writable, ensure_space
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode
from mario_kit.datasets.game_env import game_spec

_ID = re.compile(r"[A-Za-z0-9_-]+/[A-Za-z0-9_-]+-v\d+")
RAW_FRAME_BYTES = int(np.prod(F.FRAME_SHAPE)) + 1024  # a frame as Minari keeps it, with its columns
CHUNK_FRAMES = 5000  # episodes go to Minari in groups of about this many frames (about 0.9 GB in memory)


@contextmanager
def _datasets_path(root: Path) -> Iterator[None]:
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _buffer(ep: Episode, k: int):
    """Episode `k` as Minari's buffer: its steps up to the game's end (an RL episode stops there; the
    ending sequence recorded after a death or the flag is not a transition an agent takes)."""
    from minari.data_collector import EpisodeBuffer

    T = ep.played_steps
    infos = {name: np.r_[col[:1], col[:T]] for name, col in ep.info.items()}  # T+1 rows: the reset repeats row 0
    return EpisodeBuffer(
        id=k,
        observations=ep.frames[: T + 1],
        actions=ep.actions[:T].astype(np.int64),
        rewards=list(ep.rewards[:T].astype(float)),
        terminations=list(ep.column(F.TERMINATED)[:T].astype(bool)),
        truncations=list(ep.column(F.TRUNCATED)[:T].astype(bool)),
        infos=infos,
    )


def _write_buffers(ds: Dataset, dataset_id: str, root: Path, spec, n_actions: int, description: str) -> None:
    """The episodes to Minari (under MINARI_DATASETS_PATH), CHUNK_FRAMES at a time, the disk checked
    before each chunk (h5py writing into a full disk crashed)."""
    import gymnasium as gym
    import minari

    dataset, chunk, frames = None, [], 0
    for k, p in enumerate(ds.paths):
        with Episode(p) as ep:
            chunk.append(_buffer(ep, k))
            frames += ep.played_steps + 1
        if frames >= CHUNK_FRAMES or k == len(ds.paths) - 1:
            ensure_space(root, frames * RAW_FRAME_BYTES, "nothing was written (Minari keeps frames raw)")
            if dataset is None:
                dataset = minari.create_dataset_from_buffers(
                    dataset_id,
                    chunk,
                    env=spec,
                    eval_env=spec,
                    action_space=gym.spaces.Discrete(n_actions),
                    observation_space=gym.spaces.Box(0, 255, F.FRAME_SHAPE, np.uint8),
                    jpeg_encoding=False,
                    algorithm_name="mario-kit",
                    description=description,
                )
            else:
                dataset.update_dataset_from_buffer(chunk)
            chunk, frames = [], 0


def export_minari(src: str | Path, root: str | Path, dataset_id: str, force: bool = False) -> dict[str, Any]:
    """Write the episodes of `src` as the Minari dataset `dataset_id` under `root`; returns what was written."""
    import importlib.util

    if importlib.util.find_spec("minari") is None:
        raise UserError("the Minari export needs minari: pip install 'mario-kit[minari]'")
    if not _ID.fullmatch(dataset_id or ""):
        raise UserError(f"--dataset-id takes NAMESPACE/NAME-vN, e.g. mario/human-v0, got {dataset_id!r}")
    ds = Dataset(src).require_episodes()
    if ds.index["action_set"].nunique() > 1 or ds.index["frame_skip"].nunique() > 1:
        raise UserError(f"{src} mixes action sets or frame skips; a Minari dataset has one action space")
    root = Path(root).absolute()  # Minari joins a relative MINARI_DATASETS_PATH onto itself
    target = root / dataset_id
    if target.exists() and not force:
        raise UserError(f"{target} exists; pass --force to replace it")
    check_writable(root)
    ensure_space(root, int(ds.index["frames"].sum()) * RAW_FRAME_BYTES, "nothing was written (Minari keeps frames raw)")
    with Episode(ds.paths[0]) as ep:
        aset, frame_skip = ep.action_set, int(ep.attrs["frame_skip"])
    levels = sorted(set(ds.index["level"]))
    record = {
        "action_set": aset.name,
        "action_buttons": [list(b) for b in aset.buttons],
        "frame_skip": frame_skip,
        "levels": levels,
        "source_dataset": Path(src).resolve().name,
    }  # a name, never a local path
    spec = game_spec(levels[0], aset.name, frame_skip)
    tmp = root / f".mario-kit-minari-{os.getpid()}"  # built aside, moved into place when complete
    shutil.rmtree(tmp, ignore_errors=True)
    created = not root.exists()
    try:
        with _datasets_path(tmp), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Minari's advice on author, code link and env spec
            _write_buffers(
                ds, dataset_id, root, spec, len(aset), "Super Mario Bros episodes from mario-kit: " + json.dumps(record)
            )
        meta_path = tmp / dataset_id / "data" / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["mario_kit"] = record
        meta["observation_space"] = json.dumps(json.loads(meta["observation_space"]), separators=(",", ":"))
        meta_path.write_text(json.dumps(meta, separators=(",", ":")))
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # --force: replaced only now that the new one is complete
            shutil.rmtree(target)
        os.rename(tmp / dataset_id, target)
        ns_meta = tmp / dataset_id.split("/")[0] / "namespace_metadata.json"
        if ns_meta.exists() and not (target.parent / ns_meta.name).exists():
            shutil.copy2(ns_meta, target.parent / ns_meta.name)
    except BaseException:
        if created:  # a failed export leaves no folder behind
            shutil.rmtree(root, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = int(ds.index["frames"].sum())
    return {
        "path": target,
        "episodes": len(ds.paths),
        "steps": int(ds.index["length"].sum()),
        "frames": total,
        "bytes": sum(f.stat().st_size for f in target.rglob("*") if f.is_file()),
    }
