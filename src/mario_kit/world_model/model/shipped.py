"""The trained world model that ships inside the package, so that `mario-kit play`, `mario-kit
dream` and `DreamEnv()` work on first run, with no dataset and no training.

`world_model/model/shipped/` is a run folder like any other (`denoiser.pt`, and `upsampler.pt` when the
shipped upsampler beats bicubic) plus `spawns.h5` (starting contexts for play) and `model.json`:
the config, the data recipe, the training command, the commit, the evaluation figures and the
SHA-256 of every file. Weights are stored in 16 bits (checkpoint.shrink); loading verifies every
checksum first, so a changed or damaged file is refused in one line (exit 2).
`ship()` (`bench/ship.py RUN ...`) writes the folder from a trained run (docs/FORMAT.md, "Shipped model").
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any

from mario_kit import UserError
from mario_kit.trust import read_json

FOLDER = Path(__file__).parent / "shipped"
MANIFEST = "model.json"
KIND = "mario-kit-shipped-model"
SCHEMA = 1
MAX_BYTES = 25_000_000  # all files together


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def available(folder: Path | None = None) -> bool:
    return ((folder or FOLDER) / MANIFEST).is_file()


@lru_cache(maxsize=4)
def _verified(folder: Path, stamp: tuple) -> dict[str, Any]:
    m = read_json(folder / MANIFEST, what="shipped model manifest")
    if (
        not isinstance(m, dict)
        or m.get("kind") != KIND
        or m.get("schema") != SCHEMA
        or not isinstance(m.get("files"), dict)
    ):
        raise UserError(f"{folder / MANIFEST} is not a mario-kit shipped-model manifest")
    for name, digest in m["files"].items():
        p = folder / str(name)
        if "/" in str(name) or not p.is_file():
            raise UserError(f"the shipped model lacks {name}; reinstall mario-kit")
        if sha256(p) != digest:
            raise UserError(
                f"the shipped model's {name} does not match its checksum (changed or damaged); reinstall mario-kit"
            )
    return m


def manifest(folder: Path | None = None) -> dict[str, Any]:
    """The verified manifest: every file listed in it matches its SHA-256 (else UserError)."""
    folder = folder or FOLDER
    if not available(folder):
        raise UserError("this mario-kit ships no trained model; pass --run RUN (from `mario-kit train`)")
    stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.iterdir()) if p.is_file())
    return _verified(folder, stamp)


def run_folder(folder: Path | None = None) -> Path:
    """The shipped run folder, verified: what `--run` defaults to."""
    manifest(folder)
    return folder or FOLDER


def spawns_file(folder: Path | None = None) -> Path:
    """The spawns that ship with the model, verified: what `play --spawn` defaults to."""
    m = manifest(folder)
    if "spawns.h5" not in m["files"]:
        raise UserError("the shipped model has no spawns; pass --spawn SPAWNS.h5")
    return (folder or FOLDER) / "spawns.h5"


def ship(run: Path, spawns: Path, out: Path, record: dict[str, Any], upsampler: bool = False) -> dict[str, Any]:
    """Write the shipped folder `out` from a trained `run`: each stage's weights (EMA when present)
    in 16 bits without optimiser state, the spawns, and model.json with `record` (recipe, command,
    commit, evaluation, config) and the checksums; the weights carry record["config"] (the run's, or
    with other samplers). Refuses more than MAX_BYTES in all."""
    import shutil

    import torch

    from mario_kit.atomic import output_dir, write_json_atomic
    from mario_kit.world_model.model.checkpoint import path_of

    files = {}
    with output_dir(out):
        for stage in ("denoiser", "upsampler") if upsampler else ("denoiser",):
            slim(path_of(run, stage), path_of(out, stage), record.get("config"))
            files[f"{stage}.pt"] = sha256(path_of(out, stage))
        shutil.copyfile(spawns, out / "spawns.h5")
        files["spawns.h5"] = sha256(out / "spawns.h5")
        total = sum((out / n).stat().st_size for n in files)
        if total > MAX_BYTES:
            raise UserError(f"the shipped model would take {total / 1e6:.1f} MB (at most {MAX_BYTES / 1e6:.0f})")
        m = {"kind": KIND, "schema": SCHEMA, **record, "bytes": total, "files": files, "torch": torch.__version__}
        write_json_atomic(out / MANIFEST, m)
    return m


def ship_tiles(tiles_file: Path, record: dict[str, Any], folder: Path | None = None) -> dict[str, Any]:
    """Add (or replace) the tile upsampler (world_model/model/tiles.py) in a shipped folder, with
    `record` (what it was fit on, the command, its figures) as the manifest's "tiles"."""
    from mario_kit.world_model.model import tiles

    tiles.load(tiles_file)  # a file that loads, or one line
    return _ship_file(tiles_file, tiles.FILE, "tiles", record, folder)


def ship_rewend(run: Path, record: dict[str, Any], folder: Path | None = None) -> dict[str, Any]:
    """Add (or replace) a run's reward and end model in a shipped folder, its weights in 16 bits,
    with `record` (data, command, its held-out scores) as the manifest's "rewend"."""
    import tempfile

    from mario_kit.world_model.model import rewend
    from mario_kit.world_model.model.checkpoint import load_checkpoint, save_atomic

    rewend.load_rewend(run)  # a model that loads, or one line
    ck = load_checkpoint(rewend.path_of(run, rewend.STAGE))
    ck["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in ck["model"].items()}
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "rewend.pt"
        save_atomic(ck, small)
        return _ship_file(small, small.name, "rewend", record, folder)


def _ship_file(src: Path, name: str, key: str, record: dict[str, Any], folder: Path | None) -> dict[str, Any]:
    """Copy `src` into the shipped folder as `name`, its checksum and `record` (under `key`) into the
    manifest. Refuses more than MAX_BYTES in all."""
    import shutil

    from mario_kit.atomic import atomic_path, write_json_atomic

    folder = folder or FOLDER
    m = dict(manifest(folder))
    total = sum((folder / n).stat().st_size for n in m["files"] if n != name) + src.stat().st_size
    if total > MAX_BYTES:
        raise UserError(f"the shipped model would take {total / 1e6:.1f} MB (at most {MAX_BYTES / 1e6:.0f})")
    with atomic_path(folder / name) as tmp:
        shutil.copyfile(src, tmp)
    m["files"] = {**m["files"], name: sha256(folder / name)}
    m.update(bytes=total, **{key: record})
    write_json_atomic(folder / MANIFEST, m)
    return m


def slim(src: Path, dst: Path, config: dict[str, Any] | None = None) -> None:
    """A checkpoint's weights alone (EMA when present) in 16 bits, without optimiser or resume state:
    about a quarter of a training checkpoint, still loadable by every command (and as `init`).
    `config`: the config to store with them instead of the checkpoint's (a shipped sampler)."""
    import json

    from mario_kit.world_model.model.checkpoint import load_checkpoint, save_atomic

    ck = load_checkpoint(Path(src))
    state = ck["ema"] if ck.get("ema") else ck["model"]
    small = {k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}
    keep = {
        k: ck[k]
        for k in ("kind", "schema", "stage", "config", "n_actions", "action_set", "action_buttons", "step", "epoch")
    }
    if config is not None:
        keep["config"] = json.dumps(config)
    save_atomic({**keep, "model": small, "ema": None}, Path(dst))
