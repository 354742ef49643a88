"""The promise itself: every `mario-kit` command, given hostile or faulty input, exits 2 (or its
documented code) with one line on stderr and no traceback, runs no code from the input, reads
nothing outside it, and changes no file outside its output.

`ROWS` is the table: each row builds its inputs in a fresh copy of the shared fixtures and runs the
real entry point (`mario_kit.cli.main`, in process: the payload matrix would otherwise spend minutes
importing torch). New commands add their rows. Faults that need processes (locks, signals, a full
disk) have their own tests below, through subprocesses.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from conftest import make_dataset, run_cli, run_here, run_main

MARKER = "PWNED"


class Payload:
    """Unpickling this creates the marker file: the attack an agent or checkpoint file can carry."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- shared fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A dataset with a split, its store, a tiny trained run and a genuine agent."""
    from mario_kit.agents.ppo import AgentConfig, train_agent
    from mario_kit.datasets.split import split_dataset
    from mario_kit.datasets.store import build_store
    from mario_kit.world_model.training.presets import get_config
    from mario_kit.world_model.training.trainer import train

    d = tmp_path_factory.mktemp("hostile-base")
    make_dataset(d / "eps", episodes=3, max_steps=30, seed=5)
    split_dataset(d / "eps", 34, seed=0)
    build_store(d / "eps", d / "s.zarr", progress=False)
    train(d / "s.zarr", get_config("tiny", ["max_steps=2"]), d / "run", progress=False)
    train_agent(
        AgentConfig(
            timesteps=64, workers=1, n_steps=64, batch_size=32, n_epochs=1, checkpoint_every=64, eval_every=10**9
        ),
        d / "agent",
        progress=False,
    )
    (d / "secret.bin").write_bytes(b"SECRET" * 2_000_000)
    return d


@pytest.fixture
def ctx(base, tmp_path):
    """A private copy of the fixtures (rows may not harm the shared ones)."""
    for name in ("eps", "s.zarr", "run", "agent", "secret.bin"):
        src = base / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path


def first_episode(d: Path) -> Path:
    return sorted(d.glob("*.h5"))[0]


# --- hostile inputs ------------------------------------------------------------------------------
def zip_with(agent: Path, out: Path, **replace: bytes) -> Path:
    with zipfile.ZipFile(agent) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    parts.update(replace)
    with zipfile.ZipFile(out, "w") as z:
        for n, b in parts.items():
            z.writestr(n, b)
    return out


def evil_data_entry(agent: Path, entry: str, marker: Path) -> bytes:
    data = json.loads(zipfile.ZipFile(agent).read("data"))
    data[entry] = {
        ":type:": "<class 'object'>",
        ":serialized:": base64.b64encode(pickle.dumps(Payload(marker))).decode(),
    }
    return json.dumps(data).encode()


def evil_pth(marker: Path) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"weight": Payload(marker)}, buf)
    return buf.getvalue()


SERIALIZED = [
    "policy_class",
    "observation_space",
    "action_space",
    "clip_range",
    "lr_schedule",
    "_last_obs",
    "_last_episode_starts",
    "ep_info_buffer",
    "ep_success_buffer",
    "rollout_buffer_class",
]
PTH = ["policy.pth", "policy.optimizer.pth", "pytorch_variables.pth"]


def agent_commands(ctx: Path, evil: Path) -> list[list]:
    """The three commands that load an agent file: eval, collect (parent, then workers), train --resume."""
    resume = ctx / "resume"
    shutil.copytree(ctx / "agent", resume, dirs_exist_ok=True)
    shutil.copy2(evil, resume / "checkpoints" / "ppo_999999_steps.zip")  # the newest checkpoint
    return [
        ["agent", "eval", evil, "--episodes", "1"],
        ["collect", "--agent", "ppo", "--model", evil, "--episodes", "2", "--workers", "2", "--out", ctx / "c", "-q"],
        ["agent", "train", "--resume", "--out", resume, "--timesteps", "100000", "-q"],
    ]


@pytest.mark.parametrize("part", SERIALIZED + PTH)
def test_agent_files_are_never_unpickled(ctx, part):
    marker = ctx / MARKER
    agent = ctx / "agent" / "agent.zip"
    blob = evil_data_entry(agent, part, marker) if part in SERIALIZED else evil_pth(marker)
    evil = zip_with(agent, ctx / "evil.zip", **{("data" if part in SERIALIZED else part): blob})
    for args in agent_commands(ctx, evil):
        before = snapshot(ctx)
        code, _, err = run_main(*args)
        assert not marker.exists(), f"payload in {part} ran through {args[:2]}"
        assert code == 2 and err.count("\n") == 1 and err.startswith("error:") and "refused" in err, (args, err)
        assert snapshot(ctx) == before, args


def test_a_genuine_agent_loads_without_sb3s_unpickler_and_acts_the_same(ctx):
    """Same weights, same actions on the same observations as SB3's own load (which unpickles)."""
    import torch
    from stable_baselines3 import PPO

    from mario_kit.agents.ppo import load_agent

    model, rec = load_agent(ctx / "agent" / "agent.zip")
    ref = PPO.load(ctx / "agent" / "agent.zip", device="cpu")
    obs = np.random.default_rng(0).integers(0, 256, (32, 84, 84, 4), dtype=np.uint8)
    assert np.array_equal(model.predict(obs, deterministic=True)[0], ref.predict(obs, deterministic=True)[0])
    sd, sd_ref = model.policy.state_dict(), ref.policy.state_dict()
    assert sd.keys() == sd_ref.keys() and all(torch.equal(sd[k], sd_ref[k]) for k in sd)
    assert model.num_timesteps == ref.num_timesteps == 64 and rec["action_set"] == "simple"
    assert model.clip_range(1.0) == ref.clip_range(1.0) == 0.2 and model.lr_schedule(1.0) == ref.lr_schedule(1.0)


def _external(ep: Path, secret: Path, how: str) -> Path:
    """Make `frames` of an episode read another file: external storage, a virtual dataset, an
    external link. Shapes and dtype stay valid, so only the check can refuse it. Returns `ep`."""
    with h5py.File(ep, "r+") as f:
        shape = f["frames"].shape
        del f["frames"]
        if how == "external":
            f.create_dataset("frames", shape=shape, dtype="u1", external=[(str(secret), 0, h5py.h5f.UNLIMITED)])
        elif how == "virtual":
            with h5py.File(secret.with_suffix(".h5"), "w") as g:
                g.create_dataset(
                    "x", data=np.frombuffer(secret.read_bytes()[: int(np.prod(shape))], np.uint8).reshape(shape)
                )
            layout = h5py.VirtualLayout(shape=shape, dtype="u1")
            layout[:] = h5py.VirtualSource(str(secret.with_suffix(".h5")), "x", shape=shape)
            f.create_virtual_dataset("frames", layout)
        else:
            with h5py.File(secret.with_suffix(".h5"), "w") as g:
                g.create_dataset("x", shape=shape, dtype="u1")
            f["frames"] = h5py.ExternalLink(str(secret.with_suffix(".h5")), "x")
    return ep


def _set_attr(ep: Path, **attrs) -> None:
    with h5py.File(ep, "r+") as f:
        f.attrs.update(attrs)


def _set_action(ep: Path, value: int) -> None:
    with h5py.File(ep, "r+") as f:
        f["actions"][0] = value


def _replace(ep: Path, name: str, data=None, **kw) -> Path:
    """Replace one dataset of an episode (data, or a declared shape with nothing written)."""
    with h5py.File(ep, "r+") as f:
        del f[name]
        f.create_dataset(name, data=data, **kw)
    return ep


def _declared(ep: Path, frames: int) -> Path:
    """An episode that declares `frames` frames (and as many steps) but stores next to nothing: chunked
    datasets of that shape, nothing written. Its attributes say the same length."""
    with h5py.File(ep, "r+") as f:
        for name in list(f):
            if name != "action_joypad":
                del f[name]
        f.create_dataset("frames", shape=(frames, 240, 256, 3), dtype="u1", chunks=(1, 240, 256, 3))
        for col, dtype in (
            ("actions", "u1"),
            ("rewards", "f4"),
            ("terminated", "?"),
            ("truncated", "?"),
            ("step_frames", "u1"),
            ("overridden", "?"),
            ("joypad", "u1"),
        ):
            f.create_dataset(col, shape=(frames - 1,), dtype=dtype, chunks=(1024,))
        for col, dtype in (
            ("x_pos", "i4"),
            ("y_pos", "i4"),
            ("world", "u1"),
            ("stage", "u1"),
            ("status", "u1"),
            ("life", "i2"),
            ("time", "i2"),
            ("score", "i4"),
            ("coins", "i2"),
            ("flag_get", "?"),
        ):
            f.create_dataset(f"info/{col}", shape=(frames - 1,), dtype=dtype, chunks=(1024,))
        f.attrs["length"] = frames - 1
    return ep


def _rewards_nan(ep: Path) -> Path:
    with h5py.File(ep, "r+") as f:
        f["rewards"][1] = np.nan
    return ep


def _lying_length(ep: Path) -> Path:
    with h5py.File(ep, "r+") as f:
        f.attrs["length"] = int(f.attrs["length"]) + 5
    return ep


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _linked_out(ctx: Path) -> Path:
    """An x.h5 in the dataset that is a symlink to a genuine episode outside it."""
    outside = ctx / "outside.h5"
    shutil.move(first_episode(ctx / "eps"), outside)
    (ctx / "eps" / "x.h5").symlink_to(outside)
    return ctx / "eps"


# every reader of episodes: each must check sizes, dtypes and ranges before it reads
READERS = {
    "info": lambda c: ["dataset", "info", c / "eps"],
    "build": lambda c: ["dataset", "build", c / "eps", "--out", c / "new.zarr"],
    "export-seed": lambda c: ["dataset", "export", c / "eps", "--out", c / "exp", "--pack", "30"],
    "export-minari": lambda c: [
        "dataset",
        "export",
        c / "eps",
        "--format",
        "minari",
        "--dataset-id",
        "m/x-v0",
        "--out",
        c / "m",
    ],
    "report": lambda c: ["report", c / "eps", "--out", c / "rep"],
    "spawn": lambda c: ["dataset", "spawn", c / "eps", "--out", c / "sp.h5"],
    "balance": lambda c: ["balance", c / "eps", "--out", c / "w.npz"],
    "dream": lambda c: [
        "dream",
        "--run",
        c / "run",
        "--episode",
        first_episode(c / "eps"),
        "--start",
        "5",
        "--out",
        c / "d.gif",
    ],
}


def _shape(ep: Path, name: str) -> tuple[int, ...]:
    with h5py.File(ep, "r") as f:
        return f[name].shape


REPORTERS = ("info", "report")  # they name the files they cannot read, and report on the rest
BAD_COLUMNS = {  # what each variant does to the first episode
    "actions-float64": lambda e: _replace(e, "actions", np.ones(_shape(e, "actions"), np.float64)),
    "actions-negative-int8": lambda e: _replace(e, "actions", -np.ones(_shape(e, "actions"), np.int8)),
    "action-255": lambda e: _set_action(e, 255),
    "frames-int16": lambda e: _replace(e, "frames", np.zeros(_shape(e, "frames"), np.int16)),
    "rewards-nan": _rewards_nan,
    "lying-length": _lying_length,
}


def _weights(ctx: Path, kind: str) -> Path:
    from mario_kit.datasets.dataset import Dataset

    ds = Dataset(ctx / "eps")
    arrays: dict[str, Any] = {f: np.ones(n, np.float32) for f, n in zip(ds.index["file"], ds.index["length"])}
    name = ds.index["file"][0]
    if kind == "nan":
        arrays[name][3] = np.nan
    elif kind == "negative":
        arrays[name][3] = -1
    elif kind == "short":
        arrays[name] = arrays[name][:5]
    p = ctx / f"w-{kind}.npz"
    if kind == "pickle":
        pickled: dict[str, Any] = {name: np.array([Payload(ctx / MARKER)], dtype=object)}
        np.savez(p, **pickled)
    else:  # tied to the dataset as `balance` ties it, so that the checks behind the tie are what refuses it
        from mario_kit.balancing.offline import save_weights
        from mario_kit.datasets.episode import Episode

        save_weights(p, arrays, {f: Episode(ctx / "eps" / f).actions for f in arrays})
    return p


def _pickle_codec_store(ctx: Path) -> Path:
    meta = ctx / "s.zarr" / "low" / "zarr.json"
    m = json.loads(meta.read_text())
    m["codecs"] = [{"name": "numcodecs.pickle", "configuration": {}}]
    meta.write_text(json.dumps(m))
    return ctx / "s.zarr"


def _consolidated_v2(ctx: Path, compressor: dict) -> Path:
    """The root zarr.json's consolidated metadata describing `low` as a zarr v2 array with a compressor."""
    meta = ctx / "s.zarr" / "zarr.json"
    m = json.loads(meta.read_text())
    m["consolidated_metadata"] = {
        "kind": "inline",
        "must_understand": False,
        "metadata": {
            "low": {
                "zarr_format": 2,
                "shape": [10, 60, 64, 3],
                "chunks": [512, 60, 64, 3],
                "dtype": "|u1",
                "compressor": compressor,
                "filters": None,
                "fill_value": 0,
                "order": "C",
                "node_type": "array",
            }
        },
    }
    meta.write_text(json.dumps(m))
    return ctx / "s.zarr"


def _store_actions(ctx: Path, how: str) -> Path:
    import zarr

    store = ctx / "s.zarr"
    if how == "float64":
        g = zarr.open_group(str(store), mode="r+")
        values: Any = g["actions"][:]  # type: ignore[index]  # an array, not a group
        del g["actions"]
        g.create_array("actions", data=values.astype(np.float64), chunks=(1 << 16,))
    else:  # a garbage chunk
        (store / "actions" / "c" / "0").write_bytes(os.urandom(300))
    return store


def _symlinked_store(ctx: Path) -> Path:
    chunk = next(p for p in (ctx / "s.zarr" / "actions").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    chunk.symlink_to(ctx / "secret.bin")
    return ctx / "s.zarr"


def _seed_symlink(ctx: Path) -> Path:
    """A folder of seed files whose one file is a symlink to a seed-layout file outside it."""
    with h5py.File(ctx / "outside.hdf5", "w") as f:
        for i in range(3):
            f.create_dataset(f"frame_{i}_x", data=np.zeros((240, 256, 3), np.uint8))
            f.create_dataset(f"frame_{i}_y", data=np.eye(7)[1])
    (ctx / "seedlinks").mkdir()
    (ctx / "seedlinks" / "ep.hdf5").symlink_to(ctx / "outside.hdf5")
    return ctx / "seedlinks"


def _seed_file(ctx: Path) -> Path:
    d = ctx / "seedfiles"
    d.mkdir()
    with h5py.File(d / "ep.hdf5", "w") as f:
        for i in range(3):
            f.create_dataset(f"frame_{i}_y", data=np.eye(7)[1])
            f.create_dataset(f"frame_{i}_helperarr", data=np.zeros(2))
        f.create_dataset("frame_0_x", data=np.zeros((240, 256, 3), np.uint8))
        f.create_dataset("frame_1_x", data=np.zeros((240, 256, 3), np.uint8))
        with h5py.File(ctx / "other.h5", "w") as g:
            g.create_dataset("x", data=np.zeros((240, 256, 3), np.uint8))
        f["frame_2_x"] = h5py.ExternalLink(str(ctx / "other.h5"), "x")
    return d


def _spawns_with_link(ctx: Path) -> Path:
    from mario_kit.datasets.ops import make_spawns

    p = make_spawns(ctx / "eps", ctx / "sp.h5", n=2)
    with h5py.File(p, "r+") as f:
        data = f["full"][()]
        del f["full"]
        with h5py.File(ctx / "other.h5", "w") as g:
            g.create_dataset("x", data=data)
        f["full"] = h5py.ExternalLink(str(ctx / "other.h5"), "x")
    return p


def _damage_chunk(ep: Path, frame: int = 5) -> Path:
    """Overwrite the middle of one frame's compressed chunk: gzip then fails to decode it."""
    with h5py.File(ep, "r") as f:
        info = f["frames"].id.get_chunk_info_by_coord((frame, 0, 0, 0))
    with open(ep, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 3)
        fh.write(b"\xff\x00" * (info.size // 6))
    return ep


def _evil_checkpoint(ctx: Path) -> Path:
    import torch

    torch.save(
        {"kind": "mario-kit-checkpoint", "schema": 1, "model": Payload(ctx / MARKER)}, ctx / "run" / "denoiser.pt"
    )
    return ctx / "run"


def _bad_config_checkpoint(ctx: Path) -> Path:
    import torch

    ck = torch.load(ctx / "run" / "denoiser.pt", weights_only=True)
    ck["config"] = json.dumps({"bogus": 1})
    torch.save(ck, ctx / "run" / "denoiser.pt")
    return ctx / "run"


def _checkpoint_with(ctx: Path, **change) -> Path:
    """The run's denoiser checkpoint with some entries changed (None: removed)."""
    import torch

    ck = torch.load(ctx / "run" / "denoiser.pt", weights_only=True)
    for k, v in change.items():
        if v is None:
            ck.pop(k, None)
        else:
            ck[k] = v
    torch.save(ck, ctx / "run" / "denoiser.pt")
    return ctx / "run"


def _config_with(ctx: Path, **denoiser) -> str:
    import torch

    cfg = json.loads(torch.load(ctx / "run" / "denoiser.pt", weights_only=True)["config"])
    cfg["denoiser"].update(denoiser)
    return json.dumps(cfg)


def _agent_with(ctx: Path, **plain) -> Path:
    """The genuine agent with some plain entries of its data JSON changed."""
    with zipfile.ZipFile(ctx / "agent" / "agent.zip") as z:
        data = json.loads(z.read("data"))
    data.update(plain)
    return zip_with(ctx / "agent" / "agent.zip", ctx / "big.zip", data=json.dumps(data).encode())


RUN_READERS = {
    "dream": lambda c, run: [
        "dream",
        "--run",
        run,
        "--episode",
        first_episode(c / "eps"),
        "--start",
        "5",
        "--out",
        c / "d.gif",
    ],
    "evaluate": lambda c, run: ["evaluate", run, "--store", c / "s.zarr", "--out", c / "e"],
}
BAD_CHECKPOINTS = {
    "config-nested-100k": lambda c: _checkpoint_with(c, config="[" * 100_000 + "]" * 100_000),
    "channels-40000": lambda c: _checkpoint_with(c, config=_config_with(c, channels=[40000, 40000, 40000, 40000])),
    "n-actions-1e10": lambda c: _checkpoint_with(c, n_actions=10**10),
    "n-actions-negative": lambda c: _checkpoint_with(c, n_actions=-3),
}
BAD_RESUME_STATE = {  # train --resume of the run with its training state broken
    "optimizer-missing": lambda c: _checkpoint_with(c, optimizer=None),
    "optimizer-wrong": lambda c: _checkpoint_with(c, optimizer={"state": {}, "param_groups": []}),
    "generators-missing": lambda c: _checkpoint_with(c, gen_states=None),
    "generator-garbage": lambda c: _checkpoint_with(
        c, gen_states=[__import__("torch").zeros(3, dtype=__import__("torch").uint8)]
    ),
    "weights-wrong": lambda c: _checkpoint_with(c, model={"nope": __import__("torch").zeros(1)}),
}


# Each row: (id, prepare(ctx) -> args, expected exit code, a word the error line must hold).
ROWS = [
    # 2. episodes that read other files
    *[
        (
            f"build-{how}",
            lambda c, how=how: (
                _external(first_episode(c / "eps"), c / "secret.bin", how),
                ["dataset", "build", c / "eps", "--out", c / "new.zarr"],
            )[1],
            2,
            "outside",
        )
        for how in ("external", "virtual", "link")
    ],
    *[
        (
            f"export-{how}",
            lambda c, how=how: (
                _external(first_episode(c / "eps"), c / "secret.bin", how),
                ["dataset", "export", c / "eps", "--out", c / "exp", "--pack", "30"],
            )[1],
            2,
            "outside",
        )
        for how in ("external", "virtual", "link")
    ],
    *[
        (
            f"validate-{how}",
            lambda c, how=how: (
                _external(first_episode(c / "eps"), c / "secret.bin", how),
                ["dataset", "validate", c / "eps"],
            )[1],
            1,
            None,
        )
        for how in ("external", "virtual", "link")
    ],
    ("import-seed-link", lambda c: ["dataset", "import", _seed_file(c), "--out", c / "imp"], 2, "outside"),
    ("import-seed-symlink", lambda c: ["dataset", "import", _seed_symlink(c), "--out", c / "imp"], 2, "symbolic link"),
    # 3. other inputs: zarr metadata, weights, key maps
    (
        "store-pickle-codec",
        lambda c: ["train", "--store", _pickle_codec_store(c), "--out", c / "r2", "--config", "tiny"],
        2,
        "codec",
    ),
    # issue 40, 4: store metadata zarr reads from anywhere, arrays of other dtypes or that do not decode
    *[
        (
            f"store-consolidated-v2-{name}",
            lambda c, comp=comp: ["train", "--store", _consolidated_v2(c, comp), "--out", c / "r2", "--config", "tiny"],
            2,
            "v2",
        )
        for name, comp in (("pickle", {"id": "pickle"}), ("zlib", {"id": "zlib", "level": 1}))
    ],
    *[
        (
            f"store-actions-{how}",
            lambda c, how=how: ["train", "--store", _store_actions(c, how), "--out", c / "r2", "--config", "tiny"],
            2,
            word,
        )
        for how, word in (("float64", "int16"), ("garbage", "decode"))
    ],
    (
        "store-symlink",
        lambda c: ["train", "--store", _symlinked_store(c), "--out", c / "r2", "--config", "tiny"],
        2,
        "symbolic link",
    ),
    *[
        (
            f"weights-{k}",
            lambda c, k=k: ["dataset", "build", c / "eps", "--out", c / "new.zarr", "--weights", _weights(c, k)],
            2,
            "weights",
        )
        for k in ("nan", "negative", "short", "pickle")
    ],
    (
        "keymap-not-object",
        lambda c: (
            c.joinpath("k.json").write_text("[1, 2]"),
            ["collect", "--human", "--keymap", c / "k.json", "--out", c / "h"],
        )[1],
        2,
        "key map",
    ),
    (
        "keymap-not-json",
        lambda c: (
            c.joinpath("k.json").write_text("{nope"),
            ["collect", "--human", "--keymap", c / "k.json", "--out", c / "h"],
        )[1],
        2,
        "key map",
    ),
    (
        "keymap-bad-keys",
        lambda c: (
            c.joinpath("k.json").write_text('{"A": [3]}'),
            ["collect", "--human", "--keymap", c / "k.json", "--out", c / "h"],
        )[1],
        2,
        "key",
    ),
    ("spawns-link", lambda c: ["play", "--run", c / "run", "--spawn", _spawns_with_link(c)], 2, "outside"),
    # 9. a checkpoint every step
    (
        "agent-checkpoint-every-0",
        lambda c: ["agent", "train", "--checkpoint-every", "0", "--out", c / "a2"],
        2,
        "checkpoint-every",
    ),
    # 10. validation holes: validate says BAD (exit 1), build refuses (exit 2)
    *[
        (
            f"{cmd}-{name}",
            lambda c, cmd=cmd, fn=fn: (
                fn(first_episode(c / "eps")),
                ["dataset", "validate", c / "eps"]
                if cmd == "validate"
                else ["dataset", "build", c / "eps", "--out", c / "new.zarr"],
            )[1],
            1 if cmd == "validate" else 2,
            None if cmd == "validate" else "" if name == "lying-frame-skip" else "valid",
        )
        for cmd in ("validate", "build")
        for name, fn in (
            ("buttons-not-json", lambda e: _set_attr(e, action_buttons="[[not json")),
            ("unknown-action-set", lambda e: _set_attr(e, action_set="bogus")),
            ("lying-frame-skip", lambda e: _set_attr(e, frame_skip=8)),
            ("bad-extra-json", lambda e: _set_attr(e, extra="{oops")),
            ("schema-2", lambda e: _set_attr(e, schema_version=2)),
            ("action-out-of-range", lambda e: _set_action(e, 9)),
        )
    ],
    # issue 40, 2: dtypes and ranges, checked by every reader before it reads
    # (`dataset info` and `report` report on what they can read: a bad file is named as not indexed, exit 0)
    *[
        (
            f"{reader}-{bad}",
            lambda c, reader=reader, bad=bad: (BAD_COLUMNS[bad](first_episode(c / "eps")), READERS[reader](c))[1],
            0 if reader in REPORTERS else 2,
            "",
        )
        for reader in READERS
        for bad in BAD_COLUMNS
    ],
    # issue 40, 3: a symlink out of the dataset, a FIFO
    *[
        (
            f"{reader}-symlink-out",
            lambda c, reader=reader: (_linked_out(c), READERS[reader](c))[1],
            0 if reader in REPORTERS else 2,
            "symbolic link",
        )
        for reader in READERS
        if reader != "dream"
    ],
    (
        "dream-episode-symlink",
        lambda c: (
            _linked_out(c),
            ["dream", "--run", c / "run", "--episode", c / "eps" / "x.h5", "--start", "5", "--out", c / "d.gif"],
        )[1],
        2,
        "symbolic link",
    ),
    (
        "dream-episode-fifo",
        lambda c: (
            _fifo(c / "eps" / "x.h5"),
            ["dream", "--run", c / "run", "--episode", c / "eps" / "x.h5", "--start", "5", "--out", c / "d.gif"],
        )[1],
        2,
        "not a regular file",
    ),
    # issue 40, 5: checkpoints, resume state and agent files that ask too much, or hold the wrong state
    *[
        (f"{cmd}-{bad}", lambda c, cmd=cmd, bad=bad: RUN_READERS[cmd](c, BAD_CHECKPOINTS[bad](c)), 2, "")
        for cmd in RUN_READERS
        for bad in BAD_CHECKPOINTS
    ],
    *[
        (
            f"resume-{bad}",
            lambda c, bad=bad: (
                BAD_RESUME_STATE[bad](c),
                ["train", "--store", c / "s.zarr", "--out", c / "run", "--resume", "--set", "max_steps=3"],
            )[1],
            2,
            "",
        )
        for bad in BAD_RESUME_STATE
    ],
    (
        "agent-eval-net-arch-30000",
        lambda c: ["agent", "eval", _agent_with(c, policy_kwargs={"net_arch": [30000, 30000]}), "--episodes", "1"],
        2,
        "net_arch",
    ),
    (
        "agent-eval-rollout-1e9",
        lambda c: ["agent", "eval", _agent_with(c, n_steps=10**9), "--episodes", "1"],
        2,
        "rollout",
    ),
    # 11. numbers that ended in tracebacks
    *[
        (
            f"train-{s}",
            lambda c, s=s: ["train", "--store", c / "s.zarr", "--out", c / "r2", "--config", "tiny", "--set", s],
            2,
            s.split("=")[0],
        )
        for s in ("lr=-1", "log_every=0", "threads=-1", "test_batches=0")
    ],
    ("evaluate-windows-0", lambda c: ["evaluate", c / "run", "--store", c / "s.zarr", "--windows", "0"], 2, "windows"),
    (
        "evaluate-horizons-0",
        lambda c: ["evaluate", c / "run", "--store", c / "s.zarr", "--horizons", "0"],
        2,
        "horizons",
    ),
    ("report-sample-negative", lambda c: ["report", c / "eps", "--out", c / "rep", "--sample", "-1"], 2, "sample"),
    ("agent-eval-episodes-0", lambda c: ["agent", "eval", c / "agent" / "agent.zip", "--episodes", "0"], 2, "episodes"),
    ("agent-train-level-random", lambda c: ["agent", "train", "--level", "random", "--out", c / "a2"], 2, "level"),
    (
        "collect-seed-negative",
        lambda c: ["collect", "--random", "--episodes", "1", "--seed", "-1", "--out", c / "n"],
        2,
        "seed",
    ),
    (
        "collect-seed-2**64",
        lambda c: ["collect", "--random", "--episodes", "1", "--seed", str(2**64), "--out", c / "n"],
        2,
        "seed",
    ),
    # 12. outputs that cannot be written (under a file)
    (
        "build-out-under-file",
        lambda c: ["dataset", "build", c / "eps", "--out", c / "a-file" / "s.zarr"],
        2,
        "not a folder",
    ),
    ("report-out-under-file", lambda c: ["report", c / "eps", "--out", c / "a-file" / "r"], 2, "not a folder"),
    ("balance-out-under-file", lambda c: ["balance", c / "eps", "--out", c / "a-file" / "w.npz"], 2, "not a folder"),
    (
        "spawn-out-under-file",
        lambda c: ["dataset", "spawn", c / "eps", "--out", c / "a-file" / "s.h5"],
        2,
        "not a folder",
    ),
    (
        "export-out-under-file",
        lambda c: ["dataset", "export", c / "eps", "--out", c / "a-file" / "x", "--pack", "30"],
        2,
        "not a folder",
    ),
    (
        "export-minari-out-under-file",
        lambda c: [
            "dataset",
            "export",
            c / "eps",
            "--format",
            "minari",
            "--dataset-id",
            "mario/x-v0",
            "--out",
            c / "a-file" / "m",
        ],
        2,
        "not a folder",
    ),
    (
        "train-out-under-file",
        lambda c: ["train", "--store", c / "s.zarr", "--out", c / "a-file" / "r", "--config", "tiny"],
        2,
        "not a folder",
    ),
    (
        "evaluate-out-under-file",
        lambda c: ["evaluate", c / "run", "--store", c / "s.zarr", "--out", c / "a-file" / "e"],
        2,
        "not a folder",
    ),
    (
        "dream-out-under-file",
        lambda c: [
            "dream",
            "--run",
            c / "run",
            "--episode",
            first_episode(c / "eps"),
            "--start",
            "5",
            "--out",
            c / "a-file" / "d.gif",
        ],
        2,
        "not a folder",
    ),
    ("agent-train-out-under-file", lambda c: ["agent", "train", "--out", c / "a-file" / "a"], 2, "not a folder"),
    (
        "merge-out-under-file",
        lambda c: ["dataset", "merge", c / "eps", "--out", c / "a-file" / "m"],
        2,
        "not a directory",
    ),
    (
        "filter-out-under-file",
        lambda c: ["dataset", "filter", c / "eps", "--out", c / "a-file" / "f"],
        2,
        "not a directory",
    ),
    ("demo-out-under-file", lambda c: ["demo", "--out", c / "a-file" / "d"], 2, "not a directory"),
    ("info-missing-folder", lambda c: ["dataset", "info", c / "nothere"], 2, "not a folder"),
    (
        "merge-missing-source",
        lambda c: ["dataset", "merge", c / "eps", c / "nothere", "--out", c / "m"],
        2,
        "not a folder",
    ),
    (
        "split-txt-under-file",
        lambda c: ["dataset", "split", c / "eps", "--txt", c / "a-file" / "t.txt"],
        2,
        "not a folder",
    ),
    # messages that showed internals (issue 18)
    (
        "balance-set-unknown-key",
        lambda c: [
            "collect",
            "--random",
            "--balance",
            "hash",
            "--balance-set",
            "q=1",
            "--episodes",
            "1",
            "--out",
            c / "n",
        ],
        2,
        "no parameter q; its parameters: p, components",
    ),
    (
        "play-spawn-is-a-folder",
        lambda c: ["play", "--run", c / "run", "--spawn", c / "s.zarr"],
        2,
        "is a folder, not an hdf5 file",
    ),
    (
        "random-factor-and-range",
        lambda c: [
            "collect",
            "--agent",
            "ppo",
            "--model",
            c / "agent" / "agent.zip",
            "--random-factor",
            "0.2",
            "--random-factor-range",
            "0",
            "0.3",
            "--episodes",
            "1",
            "--out",
            c / "n",
        ],
        2,
        "not both",
    ),
    # damaged chunks, read part-way through
    (
        "build-damaged-chunk",
        lambda c: (_damage_chunk(first_episode(c / "eps")), ["dataset", "build", c / "eps", "--out", c / "new.zarr"])[
            1
        ],
        2,
        "decode",
    ),
    (
        "report-damaged-chunk",
        lambda c: (_damage_chunk(first_episode(c / "eps")), ["report", c / "eps", "--out", c / "rep"])[1],
        2,
        "decode",
    ),
    (
        "export-damaged-chunk",
        lambda c: (
            _damage_chunk(first_episode(c / "eps")),
            ["dataset", "export", c / "eps", "--out", c / "exp", "--pack", "30"],
        )[1],
        2,
        "decode",
    ),
    (
        "spawn-damaged-chunk",
        lambda c: (
            [_damage_chunk(p, f) for p in c.joinpath("eps").glob("*.h5") for f in range(4, 25)],
            ["dataset", "spawn", c / "eps", "--out", c / "sp.h5", "--n", "30"],
        )[1],
        2,
        "decode",
    ),
    # checkpoints
    (
        "evaluate-pickled-checkpoint",
        lambda c: ["evaluate", _evil_checkpoint(c), "--store", c / "s.zarr", "--out", c / "e"],
        2,
        "checkpoint",
    ),
    (
        "dream-pickled-checkpoint",
        lambda c: [
            "dream",
            "--run",
            _evil_checkpoint(c),
            "--episode",
            first_episode(c / "eps"),
            "--start",
            "5",
            "--out",
            c / "d.gif",
        ],
        2,
        "checkpoint",
    ),
    (
        "evaluate-bad-config",
        lambda c: ["evaluate", _bad_config_checkpoint(c), "--store", c / "s.zarr", "--out", c / "e"],
        2,
        "config",
    ),
    (
        "train-missing-store",
        lambda c: ["train", "--store", c / "typo.zarr", "--out", c / "run", "--config", "tiny", "--force"],
        2,
        "store",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_hostile_and_faulty_inputs(ctx, row):
    _, prepare, want, word = row
    args = prepare(ctx)
    before = snapshot(ctx)
    code, out, err = run_main(*args)
    assert code == want, (code, out, err)
    assert "Traceback" not in err + out and not (ctx / MARKER).exists()
    if want == 2:
        assert err.startswith("error:") and err.count("\n") == 1, err
        assert word.lower() in err.lower(), err
    elif want == 1:  # validate: the bad file is listed, the command does not crash
        assert "BAD" in out, out
    else:  # info, report: the bad file is named, the rest reported (the report written)
        assert "not indexed" in out + err and word in out + err, out + err
        after = snapshot(ctx)
        assert {k: after[k] for k in before} == before  # nothing that was there changed
        return
    assert snapshot(ctx) == before  # nothing changed, the output included: it was never started


OUTPUT_COMMANDS = {
    "build": lambda c, o: ["dataset", "build", c / "eps", "--out", o / "s.zarr"],
    "report": lambda c, o: ["report", c / "eps", "--out", o / "r"],
    "balance": lambda c, o: ["balance", c / "eps", "--out", o / "w.npz"],
    "spawn": lambda c, o: ["dataset", "spawn", c / "eps", "--out", o / "s.h5"],
    "export": lambda c, o: ["dataset", "export", c / "eps", "--out", o / "x", "--pack", "30"],
    "train": lambda c, o: ["train", "--store", c / "s.zarr", "--out", o / "r", "--config", "tiny"],
    "evaluate": lambda c, o: ["evaluate", c / "run", "--store", c / "s.zarr", "--out", o / "e"],
    "dream": lambda c, o: [
        "dream",
        "--run",
        c / "run",
        "--episode",
        first_episode(c / "eps"),
        "--start",
        "5",
        "--out",
        o / "d.gif",
    ],
    "agent-train": lambda c, o: ["agent", "train", "--out", o / "a"],
    "split-txt": lambda c, o: ["dataset", "split", c / "eps", "--txt", o / "t.txt"],
}


@pytest.mark.parametrize("reader", [*READERS, "validate"])
def test_declared_sizes_are_checked_before_anything_is_allocated(ctx, reader):
    """An episode of a few KB that declares 2e9 frames (chunked, nothing written): every reader says
    one line, under a 6 GB address-space limit (a reader that allocates gets a MemoryError, not the
    machine's memory)."""
    import resource

    _declared(first_episode(ctx / "eps"), 2_000_000_000)
    args = ["dataset", "validate", ctx / "eps"] if reader == "validate" else READERS[reader](ctx)
    limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # noqa: E731
    res = subprocess.run(
        [sys.executable, "-m", "mario_kit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    assert "Traceback" not in res.stderr and "MemoryError" not in res.stderr, res.stderr[-2000:]
    assert res.returncode == (1 if reader == "validate" else 0 if reader in REPORTERS else 2), res.stdout + res.stderr
    assert "2000000000 declared" in res.stdout + res.stderr


@pytest.mark.parametrize("plant", ["short", "object", "garbage", "poisoned"])
def test_a_planted_cache_is_checked_against_the_store_and_rebuilt(ctx, plant):
    """The store's `_cache/` travels with it: a cache is used only when it holds exactly the store's
    frames; a short, object-dtype, garbage or poisoned (right shape, other frames) one is rebuilt."""
    from mario_kit.datasets import loader
    from mario_kit.datasets.loader import WindowDataset, materialize_low
    from mario_kit.datasets.store import read_manifest

    store = ctx / "s.zarr"
    path = materialize_low(store)
    real = np.load(path).copy()
    loader._verified.clear()  # a new process: nothing verified yet
    if plant == "short":
        np.save(path, real[:3])
    elif plant == "object":
        np.save(path, np.array([Payload(ctx / MARKER)] * 3, dtype=object), allow_pickle=True)
    elif plant == "garbage":
        path.write_bytes(os.urandom(5000))
    else:
        np.save(path, np.full_like(real, 7))
    assert materialize_low(store, read_manifest(store)) == path
    assert np.array_equal(np.load(path), real) and not (ctx / MARKER).exists()
    ds = WindowDataset(store, "train")
    assert np.array_equal(ds.gather(ds.fetch(np.arange(4)))["obs"][:, -1], real[ds.targets[:4]])  # the target frames


# issue 40, 7 and 8: the training log after a kill; the browser server's origin and messages
def test_a_run_killed_before_its_first_checkpoint_resumes_with_a_clean_log(ctx):
    """SIGKILL before the first checkpoint, then --resume: log.csv holds its header once and every
    step once (the killed run's rows are logged again, not kept beside them); a log left empty or
    cut mid-row by the kill gets its header back."""
    args = ["--store", ctx / "s.zarr", "--config", "tiny", "--set", "log_every=1", "-q"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mario_kit", "train", "--out", str(ctx / "r"), *map(str, args), "--set", "epochs=1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.time()
    while not (ctx / "r" / "log.csv").exists() or len((ctx / "r" / "log.csv").read_text().splitlines()) < 4:
        assert time.time() - t0 < 120 and proc.poll() is None, (
            proc.stderr.read() if proc.poll() is not None else "timeout"
        )
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert not (ctx / "r" / "denoiser.pt").exists()  # killed inside the first epoch (20 steps)
    with open(ctx / "r" / "log.csv", "a") as f:
        f.write("denoiser,4,0,0.9")  # a row cut by the kill
    res = run_cli("train", "--out", ctx / "r", "--resume", *args, "--set", "max_steps=6")
    assert res.returncode == 0, res.stderr
    lines = (ctx / "r" / "log.csv").read_text().splitlines()
    steps = [int(ln.split(",")[1]) for ln in lines[1:] if ln.split(",")[6] == ""]
    assert lines[0].startswith("stage,step,") and sum(ln.startswith("stage,") for ln in lines) == 1
    assert steps == [1, 2, 3, 4, 5, 6], lines
    (ctx / "e").mkdir()
    (ctx / "e" / "config.json").write_text((ctx / "r" / "config.json").read_text())
    (ctx / "e" / "log.csv").write_text("")  # killed before the header was on disk
    res = run_cli("train", "--out", ctx / "e", "--resume", *args, "--set", "max_steps=2")
    assert res.returncode == 0, res.stderr
    assert (ctx / "e" / "log.csv").read_text().startswith("stage,step,")


def test_a_page_of_another_site_cannot_connect(tmp_path):
    """Cross-site WebSocket hijacking: any page the user visits could open ws://127.0.0.1:8000/ws. The
    server's own page (Origin = the host asked for) and --allow-origin ones connect; others are
    refused at the handshake; clients that are not browsers send no Origin."""
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from mario_kit.serve.app import ServeConfig, make_app

    def until_bye(ws) -> None:
        while not (m := ws.receive()).get("text") or json.loads(m["text"])["t"] != "bye":
            pass

    c = TestClient(make_app(ServeConfig(out=tmp_path / "d", allow_origins=("https://mario.example.org",))))
    for origin in ("http://testserver", "https://mario.example.org", None):
        headers = {"origin": origin} if origin else {}
        with c.websocket_connect("/ws?name=ok", headers=headers) as ws:
            assert ws.receive_json()["t"] == "hello"
            ws.send_text(json.dumps({"t": "cmd", "cmd": "quit"}))
            until_bye(ws)
    for origin in ("http://evil.example", "http://testserver.evil.example", "null"):
        with (
            pytest.raises(WebSocketDisconnect) as e,
            c.websocket_connect("/ws?name=x", headers={"origin": origin}) as ws,
        ):
            ws.receive_json()
        assert e.value.code == 4403
    assert not list((tmp_path / "d").glob("*.h5"))


@pytest.mark.parametrize("clock", ["NaN", "Infinity", "-Infinity", "1e900"])
def test_a_page_message_with_a_non_finite_number_closes_its_connection(tmp_path, clock):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from mario_kit.serve.app import ServeConfig, make_app

    with TestClient(make_app(ServeConfig(out=tmp_path / "d"))).websocket_connect("/ws?name=x") as ws:
        assert ws.receive_json()["t"] == "hello"
        ws.send_text('{"t": "keys", "held": ["right"], "c": %s}' % clock)
        while (m := ws.receive())["type"] != "websocket.close":
            pass
        assert m["code"] == 1008


@pytest.fixture
def immutable(ctx):
    d = ctx / "immutable"
    d.mkdir()
    if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    yield d
    subprocess.run(["chattr", "-i", str(d)])


@pytest.mark.parametrize("command", list(OUTPUT_COMMANDS))
def test_outputs_in_an_immutable_folder(ctx, immutable, command):
    args = OUTPUT_COMMANDS[command](ctx, immutable)
    before = snapshot(ctx)
    code, out, err = run_main(*args)
    assert code == 2 and err.startswith("error: cannot write") and err.count("\n") == 1, (code, out, err)
    assert snapshot(ctx) == before


def test_secret_bytes_never_reach_an_export_or_a_store(ctx):
    """Before the fix, an external-storage episode passed validate and its 'frames' were the secret file."""
    _external(first_episode(ctx / "eps"), ctx / "secret.bin", "external")
    res = run_cli("dataset", "validate", ctx / "eps", "--json")
    rep = json.loads(res.stdout)
    assert res.returncode == 1 and rep["bad"] and "outside" in rep["bad"][0]["reason"]


# --- integrity under concurrency and failure -------------------------------------------------------
def test_a_second_build_of_the_same_store_exits_2_naming_the_holder(ctx):
    from mario_kit.datasets.store import store_lock

    with store_lock(ctx / "new.zarr"):
        res = run_cli("dataset", "build", ctx / "eps", "--out", ctx / "new.zarr")
    assert res.returncode == 2 and f"pid {os.getpid()}" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (ctx / "new.zarr").exists()
    res = run_cli("dataset", "build", ctx / "eps", "--out", ctx / "new.zarr")  # lock released: builds
    assert res.returncode == 0, res.stderr
    assert not (ctx / ".new.zarr.lock").exists()


def test_build_force_replaces_the_store_only_once_the_new_one_is_complete(ctx):
    from mario_kit.datasets.store import read_manifest

    before = read_manifest(ctx / "s.zarr")
    _set_action(first_episode(ctx / "eps"), 9)  # the rebuild fails on this episode
    res = run_cli("dataset", "build", ctx / "eps", "--out", ctx / "s.zarr", "--force")
    assert res.returncode == 2 and "valid" in res.stderr
    assert read_manifest(ctx / "s.zarr") == before  # the old store, untouched
    assert not list(ctx.glob(".s.zarr.*"))


def test_two_hash_collectors_in_one_folder_count_every_step_once(tmp_path):
    from mario_kit.balancing.hash import TABLE, load_table

    out = tmp_path / "d"
    args = ["collect", "--random", "--balance", "hash", "--steps", "600", "--max-steps", "100", "--out", out, "-q"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mario_kit", *map(str, args), "--seed", str(s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for s in (1, 2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
    table, _ = load_table(out / TABLE)
    assert sum(int(c.sum()) for c in table.values()) == 1200
    assert not list(out.glob("mario-kit.balance-hash.shard-*"))


def test_a_live_shard_is_never_merged(tmp_path):
    """A shard whose collector still runs (holds its lock) stays; a dead collector's shard is merged once."""
    from mario_kit.balancing.hash import TABLE, HashStrategy, load_table, merge_shards
    from mario_kit.datasets import format as F

    from mario_kit.collectors.policies import RandomPolicy

    live = HashStrategy(RandomPolicy(), F.ACTION_SETS["simple"], table_dir=tmp_path)
    live.rng = np.random.default_rng(0)
    for x in range(10):
        live.choose(0, None, {"x_pos": 40 * x})
    live.flush()
    assert merge_shards(tmp_path) == 0 and live.shard.exists()
    live.close()  # the collector ends: its lock is released
    assert merge_shards(tmp_path) == 1 and not live.shard.exists()
    table, _ = load_table(tmp_path / TABLE)
    assert sum(int(c.sum()) for c in table.values()) == 10
    assert merge_shards(tmp_path) == 0


def test_train_force_with_a_mistyped_store_keeps_the_run(ctx):
    before = snapshot(ctx / "run")
    res = run_here("train", "--store", ctx / "typo.zarr", "--out", ctx / "run", "--config", "tiny", "--force")
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert snapshot(ctx / "run") == before


def test_train_force_keeps_the_old_run_until_the_new_one_has_a_checkpoint(ctx, monkeypatch):
    import mario_kit.world_model.training.trainer as T

    before = snapshot(ctx / "run")

    def boom(*a, **k):
        raise RuntimeError("crash before the first checkpoint")

    monkeypatch.setattr(T, "_train_stage", boom)
    with pytest.raises(RuntimeError):
        T.train(ctx / "s.zarr", _tiny(), ctx / "run", force=True)
    assert snapshot(ctx / "run") == before and not (ctx / ".run.replaced").exists()
    monkeypatch.undo()
    T.train(ctx / "s.zarr", _tiny(), ctx / "run", force=True, progress=False)
    assert not (ctx / ".run.replaced").exists() and (ctx / "run" / "denoiser.pt").exists()


def _tiny():
    from mario_kit.world_model.training.presets import get_config

    return get_config("tiny", ["max_steps=1"])


def test_a_failed_first_train_leaves_nothing_behind(ctx):
    res = run_here(
        "train", "--store", ctx / "s.zarr", "--out", ctx / "fresh", "--config", "tiny", "--set", "stage=upsampler"
    )
    assert res.returncode == 2 and "full-res" in res.stderr
    assert not (ctx / "fresh").exists()


@contextmanager
def small_disk(tmp_path: Path, size: str, room: int):
    """(folder, environment) of a small disk: a tmpfs of `size` where the test may mount one; otherwise
    the test's own disk with the writers' threshold raised to its free space but `room` bytes (the
    same code path). Unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    env = dict(os.environ)
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], capture_output=True
        ).returncode
        == 0
    )
    if not mounted:
        st = os.statvfs(tmp_path)
        env["MARIO_KIT_MIN_FREE"] = str(st.f_bavail * st.f_frsize - room)
    try:
        yield disk, env
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)])


@pytest.mark.parametrize("workers", [1, 2])
def test_disk_full_stops_with_one_line_and_keeps_finished_episodes(tmp_path, workers):
    """On a 6 MB disk (`small_disk`)."""
    with small_disk(tmp_path, "6m", 1_500_000) as (disk, env):
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "mario_kit",
                "collect",
                "--random",
                "--episodes",
                "40",
                "--max-steps",
                "150",
                "--seed",
                "3",
                "--workers",
                str(workers),
                "-q",
                "--out",
                str(disk / "d"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and "disk full" in res.stderr, res.stderr
        assert res.returncode != -11
        assert not list((disk / "d").glob("*.partial"))
        kept = list((disk / "d").glob("*.h5"))
        assert kept and 0 < len(kept) < 40
        check = run_cli("dataset", "validate", disk / "d")
        assert check.returncode == 0, check.stdout


FULL_DISK_WRITERS = {
    "export-seed": lambda d, out: ["dataset", "export", d, "--out", out / "x", "--pack", "100"],
    "build-full-res": lambda d, out: ["dataset", "build", d, "--out", out / "s.zarr", "--full-res"],
    "export-minari": lambda d, out: [
        "dataset",
        "export",
        d,
        "--format",
        "minari",
        "--dataset-id",
        "m/x-v0",
        "--out",
        out / "m",
    ],
}


@pytest.mark.parametrize("writer", list(FULL_DISK_WRITERS))
def test_every_writer_stops_before_the_disk_is_full(tmp_path, writer):
    """The collector's free-space guard in every writer: on a small disk an export or a build says one
    line and exits 2 (it segfaulted, or printed 14 tracebacks), leaves no temporary file, and a
    Minari export leaves no folder. On a 5 MB disk, 1 MB above the 4 MB the writers keep free
    (`small_disk`); the dataset: about 520 frames, 1.7 MB as seed files."""
    make_dataset(tmp_path / "eps", episodes=2, max_steps=300, seed=0)
    with small_disk(tmp_path, "5m", 1_000_000) as (disk, env):
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "mario_kit",
                *map(str, FULL_DISK_WRITERS[writer](tmp_path / "eps", disk)),
                "-q" if writer == "build-full-res" else "--force",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert res.returncode == 2 and "disk full" in res.stderr, res.stderr[-3000:]
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
        left = [
            p.name for p in disk.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.startswith(".mario-kit"))
        ]
        assert not left, left
        if writer == "export-minari":
            assert not (disk / "m").exists()


def test_sigint_to_the_parent_alone_stops_the_workers(tmp_path):
    out = tmp_path / "d"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mario_kit",
            "collect",
            "--random",
            "--steps",
            "100000",
            "--workers",
            "2",
            "--max-steps",
            "100",
            "-q",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.time()
    while len(list(out.glob("*.h5"))) < 2:
        assert time.time() - t0 < 120 and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # the parent only, as docker stop or Popen.send_signal
    t1 = time.time()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert time.time() - t1 < 10
    assert not list(out.glob("*.partial"))
    assert run_cli("dataset", "validate", out).returncode == 0
