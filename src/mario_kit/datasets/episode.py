"""Episode writer (streams steps to disk, atomic rename) and lazy reader.

Only this module and `format.py` know how an episode file is laid out.
"""

from __future__ import annotations

import json
import shutil
import uuid
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from mario_kit import UserError, __version__
from mario_kit.atomic import commit, ensure_space
from mario_kit.datasets import format as F
from mario_kit.trust import open_h5

if TYPE_CHECKING:
    import pandas as pd

_PACKAGES = ("gym-super-mario-bros", "nes-py", "gymnasium", "numpy", "h5py", "torch", "stable-baselines3")


def package_versions() -> dict[str, str]:
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


class _Column:
    """A per-step column of an Episode, read whole on first use and kept (like cached_property)."""

    def __init__(self, name: str):
        self.name = name

    def __set_name__(self, owner: type, attr: str) -> None:
        self.attr = attr

    def __get__(self, ep: Any, owner: type | None = None) -> Any:
        if ep is None:
            return self
        value = ep.column(self.name)
        ep.__dict__[self.attr] = value
        return value


@dataclass
class EpisodeMeta:
    """What an episode file says about itself, besides its per-step data."""

    env_id: str
    level: str
    frame_skip: int
    action_set: F.ActionSet
    source: str
    policy: dict[str, Any] = field(default_factory=dict)
    seed: int = -1
    player: str = ""
    rom_mode: str = "vanilla"
    extra: dict[str, Any] = field(default_factory=dict)
    ending_steps: int = 0  # the last steps, recorded after the game ended the episode (format.ENDING_STEPS)


def new_episode_name(source: str, level: str, now: datetime | None = None) -> str:
    """A unique file name: time-sortable, and a random 64-bit suffix so that any number of
    processes or machines can write into one folder without coordination."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}-{source}-{level}-{uuid.uuid4().hex[:16]}{F.SUFFIX}"


class EpisodeWriter:
    """Streams one episode to `<dir>/<name>.h5.partial`; `finish()` fsyncs and renames it.

    Frames are compressed with zlib (the HDF5 gzip filter's own format) on a background thread,
    which overlaps with emulation because zlib releases the GIL, and written as raw chunks, which
    skips HDF5's filter pipeline. Columns are buffered and flushed in blocks, so an episode never
    has to fit in memory.
    """

    _GROW = 512  # frames added to the frames dataset at a time
    _FLUSH = 1024  # steps of columns buffered before a flush
    _RING = 8  # frames in flight to the compression thread
    _SPACE_EVERY = 16  # frames between free-space checks (about 50 KB of chunks: far below MIN_FREE)

    def __init__(self, directory: str | Path, meta: EpisodeMeta, name: str | None = None):
        self.dir = Path(directory)
        self.meta = meta
        self.name = name or new_episode_name(meta.source, meta.level)
        self.path = self.dir / self.name
        self.tmp_path = self.dir / F.partial_name(self.name)
        self._f = h5py.File(self.tmp_path, "w", libver=("v110", "latest"))
        f = self._f
        self._frames = f.create_dataset(
            F.FRAMES,
            shape=(0, *F.FRAME_SHAPE),
            maxshape=(None, *F.FRAME_SHAPE),
            dtype=F.FRAME_DTYPE,
            chunks=F.FRAME_CHUNKS,
            compression=F.FRAME_COMPRESSION,
            compression_opts=F.FRAME_COMPRESSION_OPTS,
        )
        self._frames.attrs[F.DESCRIPTION_ATTR] = F.DESCRIPTIONS[F.FRAMES]
        self._cols: dict[str, tuple[h5py.Dataset, list]] = {}

        def col(name: str, dtype: np.dtype, group: h5py.Group = f) -> None:
            ds = group.create_dataset(
                name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(F.COLUMN_CHUNK,), compression="gzip"
            )
            path = f"{group.name.strip('/')}/{name}".strip("/")
            ds.attrs[F.DESCRIPTION_ATTR] = F.DESCRIPTIONS[path]
            self._cols[path] = (ds, [])

        col(F.ACTIONS, np.dtype(np.uint8))
        col(F.REWARDS, np.dtype(np.float32))
        col(F.TERMINATED, np.dtype(np.bool_))
        col(F.TRUNCATED, np.dtype(np.bool_))
        col(F.STEP_FRAMES, np.dtype(np.uint8))
        col(F.JOYPAD, np.dtype(np.uint8))
        col(F.OVERRIDDEN, np.dtype(np.bool_))
        info = f.create_group(F.INFO_GROUP)
        for name, dtype in F.INFO_COLUMNS.items():
            col(name, dtype, info)
        f.create_dataset(F.ACTION_JOYPAD, data=meta.action_set.joypad).attrs[F.DESCRIPTION_ATTR] = F.DESCRIPTIONS[
            F.ACTION_JOYPAD
        ]
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mario-kit-zlib")
        self._ring = np.empty((self._RING, *F.FRAME_SHAPE), F.FRAME_DTYPE)
        self._inflight: deque[tuple[int, Future]] = deque()
        self.n_frames = 0
        self.n_steps = 0
        self._pending = 0
        self._closed = False

    # --- streaming ---------------------------------------------------------------------
    def add_frame(self, frame: np.ndarray) -> None:
        """Append one frame (the first one after reset, then one per step via `add_step`)."""
        if frame.shape != F.FRAME_SHAPE or frame.dtype != F.FRAME_DTYPE:
            raise ValueError(f"frame must be {F.FRAME_SHAPE} uint8, got {frame.shape} {frame.dtype}")
        if len(self._inflight) >= self._RING:
            self._write_next()
        slot = self._ring[self.n_frames % self._RING]
        np.copyto(slot, frame)  # the caller may pass a live screen buffer
        job = self._pool.submit(zlib.compress, slot.data, F.FRAME_COMPRESSION_OPTS)
        self._inflight.append((self.n_frames, job))
        self.n_frames += 1

    def _write_next(self) -> None:
        i, job = self._inflight.popleft()
        data = job.result()
        if i % self._SPACE_EVERY == 0:
            self._check_space()
        if i >= self._frames.shape[0]:
            self._frames.resize(i + self._GROW, axis=0)
        self._frames.id.write_direct_chunk((i, 0, 0, 0), data)

    def add_step(
        self,
        action: int,
        frame: np.ndarray,
        reward: float,
        terminated: bool,
        truncated: bool,
        info: dict[str, Any],
        joypad: list[int] | bytes,
        overridden: bool = False,
    ) -> None:
        """Record action t, the frame it led to, and what the env said about it.

        `joypad` holds the joypad byte of every emulator frame this step took (frame skip)."""
        if self.n_frames != self.n_steps + 1:
            raise RuntimeError("add_frame() the first frame before the first step")
        c = self._cols
        c[F.ACTIONS][1].append(action)
        c[F.REWARDS][1].append(reward)
        c[F.TERMINATED][1].append(terminated)
        c[F.TRUNCATED][1].append(truncated)
        c[F.STEP_FRAMES][1].append(len(joypad))
        c[F.JOYPAD][1].extend(joypad)
        c[F.OVERRIDDEN][1].append(overridden)
        for name in F.INFO_COLUMNS:
            v = info.get(name, 0)
            if name == "status" and isinstance(v, str):
                v = F.STATUS_CODES.get(v, 255)
            c[f"{F.INFO_GROUP}/{name}"][1].append(v)
        self.add_frame(frame)
        self.n_steps += 1
        self._pending += 1
        if self._pending >= self._FLUSH:
            self._flush()

    def _check_space(self) -> None:
        """Raise DiskFull while the disk still has room for HDF5 to close the file cleanly. A write
        that fails with ENOSPC inside HDF5 leaves the library unable to close the file (and, seen in
        2 of 10 runs, segfaulting at exit); stopping first keeps every finished episode valid."""
        ensure_space(self.dir, 0, "the episode in progress was discarded, finished ones are kept")

    def _flush(self) -> None:
        self._check_space()
        for ds, buf in self._cols.values():
            if buf:
                n = ds.shape[0]
                ds.resize(n + len(buf), axis=0)
                ds[n:] = np.asarray(buf, dtype=ds.dtype)
                buf.clear()
        self._pending = 0

    def add_extra(self, name: str, data: np.ndarray) -> None:
        """Store an additional array under `extra/` (importer provenance and the like), saying what it is."""
        ds = self._f.require_group(F.EXTRA_GROUP).create_dataset(name, data=data, compression="gzip")
        ds.attrs[F.DESCRIPTION_ATTR] = F.EXTRA_DESCRIPTIONS.get(name, "an array its importer kept (see docs/FORMAT.md)")

    # --- ending ------------------------------------------------------------------------
    def finish(self, end: str, attrs: dict[str, Any] | None = None) -> Path:
        """Write the attributes, fsync, and atomically rename to the final name. If anything fails
        (a full disk), the temporary file is removed and the error raised. `attrs`: the root
        attributes, as stored, of a recorded episode this one reproduces (a replay import), written
        instead of this writer's own."""
        if end not in F.END_REASONS:
            raise ValueError(f"end must be one of {F.END_REASONS}")
        try:
            return self._finish(end, attrs)
        except BaseException:
            self.discard()
            raise

    def _finish(self, end: str, recorded: dict[str, Any] | None) -> Path:
        self._flush()
        while self._inflight:
            self._write_next()
        self._pool.shutdown()
        self._frames.resize(self.n_frames, axis=0)
        m = self.meta
        attrs = {
            "format": F.FORMAT_NAME,
            "schema_version": F.SCHEMA_VERSION,
            "env_id": m.env_id,
            "rom_mode": m.rom_mode,
            "level": m.level,
            "frame_skip": m.frame_skip,
            "action_set": m.action_set.name,
            "action_buttons": m.action_set.to_json(),
            "source": m.source,
            "policy": json.dumps(m.policy, sort_keys=True),
            "seed": int(m.seed),
            "player": m.player,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "mario_kit_version": __version__,
            "package_versions": json.dumps(package_versions(), sort_keys=True),
            "length": self.n_steps,
            "end": end,
            F.ENDING_STEPS: m.ending_steps,
            "extra": json.dumps(m.extra, sort_keys=True),
        }
        self._f.attrs.update(attrs if recorded is None else recorded)
        self._f.flush()
        self._f.close()
        self._closed = True
        commit(self.tmp_path, self.path)
        return self.path

    def discard(self) -> None:
        """Drop the episode: remove the temporary file, then close it. Removal comes first and the
        close may fail (a failed write leaves HDF5 unable to flush): the .partial goes either way."""
        self._pool.shutdown(cancel_futures=True)
        self._inflight.clear()
        self.tmp_path.unlink(missing_ok=True)
        if not self._closed:
            self._closed = True
            try:
                self._f.close()
            except Exception:  # noqa: BLE001  (the file is already gone from the folder)
                pass

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._closed:
            self.discard()


def check_data(f: h5py.File, attrs: dict, frames: bool = True) -> str | None:
    """The reason the datasets of an open episode file (which passed `read_header`: attributes checked,
    nothing read from outside it) break schema 1, or None: shapes, dtypes, action range, finite rewards,
    joypad against step frames and frame skip, and (with `frames`) that every frame decodes. Every
    reader runs it (`Episode`) before it reads a column: sizes are checked against what the file
    stores (one chunk per frame, written) before anything of a declared size is allocated."""
    T = int(attrs["length"])
    fr = f.get(F.FRAMES)
    if not isinstance(fr, h5py.Dataset) or fr.shape != (T + 1, *F.FRAME_SHAPE) or fr.dtype != F.FRAME_DTYPE:
        return f"frames: expected ({T + 1}, 240, 256, 3) uint8, got {_describe(fr)}"
    if fr.chunks != F.FRAME_CHUNKS or fr.id.get_num_chunks() != T + 1:
        stored = fr.id.get_num_chunks() if fr.chunks else 0
        return f"frames: {T + 1} declared, {stored} stored (one chunk a frame): the length is not the file's"
    for name, dtype in F.STEP_COLUMNS.items():
        ds = f.get(name)
        if ds is None and name in F.OPTIONAL_COLUMNS:
            continue
        if not isinstance(ds, h5py.Dataset) or ds.shape != (T,) or ds.dtype != dtype:
            return f"{name}: expected ({T},) {np.dtype(dtype)}, got {_describe(ds)}"
    aset = F.ACTION_SETS[attrs["action_set"]]
    aj = f.get(F.ACTION_JOYPAD)
    if not isinstance(aj, h5py.Dataset) or aj.shape != (len(aset),) or not np.array_equal(aj[()], aset.joypad):
        return f"{F.ACTION_JOYPAD} differs from the {aset.name} action set's joypad bytes"
    actions = f[F.ACTIONS][()]
    if T and int(actions.max()) >= len(aset):
        return f"action index {int(actions.max())} outside the action set ({len(aset)} actions)"
    if not np.isfinite(f[F.REWARDS][()]).all():
        return "rewards: not all finite (NaN or infinity)"
    fs = int(attrs["frame_skip"])
    sf = f[F.STEP_FRAMES][()].astype(np.int64)
    # every step runs the frame skip but two that may stop early: the one the game ended in, and the last
    inner = np.delete(sf, [T - 1, T - 1 - int(attrs.get(F.ENDING_STEPS, 0))]) if T else sf
    if T and (sf.min() < 1 or sf.max() > fs or (inner != fs).any()):
        return f"step_frames disagree with frame_skip {fs} (every step takes {fs} frames but the end step and the last)"
    jp = f.get(F.JOYPAD)
    if not isinstance(jp, h5py.Dataset) or jp.ndim != 1 or jp.shape[0] != int(sf.sum()):
        return "joypad length differs from the sum of step_frames"
    start = f.get(f"{F.EXTRA_GROUP}/{F.START_JOYPAD}")
    if start is not None and (
        not isinstance(start, h5py.Dataset)
        or start.ndim != 1
        or start.dtype != np.uint8
        or start.shape[0] > F.MAX_START_FRAMES
    ):
        return f"extra/{F.START_JOYPAD}: expected (n,) uint8 with n <= {F.MAX_START_FRAMES}, got {_describe(start)}"
    if frames:
        buf = np.empty((64, *F.FRAME_SHAPE), np.uint8)
        for start in range(0, T + 1, 64):
            n = min(64, T + 1 - start)
            try:
                fr.read_direct(buf, np.s_[start : start + n], np.s_[:n])
            except Exception as e:  # noqa: BLE001
                return f"frames {start}..{start + n - 1} do not decode ({type(e).__name__})"
    return None


def _describe(obj) -> str:
    return str((obj.shape, str(obj.dtype))) if isinstance(obj, h5py.Dataset) else "nothing"


class BadEpisode(UserError, ValueError):
    """An episode file whose attributes break the schema (a UserError for the CLI, a ValueError
    for the dataset index, which skips such files)."""


class Episode:
    """Read access to one episode file. Columns load on first use; frames stay lazy.

    >>> with Episode(path) as ep:
    ...     ep.actions, ep.frames[10], ep.info["x_pos"]
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = open_h5(self.path)  # refuses symlinks, FIFOs, links, external storage and virtual datasets
        try:
            why = check_data(self._f, F.header(self._f.attrs), frames=False)  # sizes, dtypes, ranges
        except ValueError as e:
            why = str(e)
        if why:
            self._f.close()
            raise BadEpisode(f"{self.path} is not a valid mario-kit episode ({why})")

    @cached_property
    def attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in self._f.attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, np.generic):
                v = v.item()
            if k in F.JSON_ATTRS and isinstance(v, str):
                v = json.loads(v)
            out[k] = v
        return out

    @property
    def length(self) -> int:
        return int(self.attrs["length"])

    @property
    def ending_steps(self) -> int:
        """The last steps, recorded after the game ended the episode (the death animation, the flag)."""
        return int(self.attrs.get(F.ENDING_STEPS, 0))

    @property
    def played_steps(self) -> int:
        """The steps up to the game's end: what an RL or imitation-learning consumer takes."""
        return self.length - self.ending_steps

    @property
    def frames(self) -> h5py.Dataset:
        return self._f[F.FRAMES]

    @cached_property
    def action_set(self) -> F.ActionSet:
        a = self.attrs
        return F.ActionSet.from_attrs(a["action_set"], a["action_buttons"])

    def read_frames(self, start: int, stop: int) -> np.ndarray:
        """Frames start..stop-1; a damaged chunk is a UserError naming the file and the frames."""
        try:
            return self.frames[start:stop]
        except (OSError, RuntimeError, ValueError) as e:
            raise UserError(
                f"{self.path}: frames {start}..{min(stop, self.length + 1) - 1} do not decode "
                f"({type(e).__name__}); run `mario-kit dataset validate` on its folder"
            ) from None

    def column(self, name: str) -> np.ndarray:
        return self._f[name][()]

    def raw_attrs(self) -> dict[str, Any]:
        """The root attributes as stored (JSON ones as their strings), as plain Python values."""
        return {
            k: v.item() if isinstance(v, np.generic) else v.decode() if isinstance(v, bytes) else v
            for k, v in self._f.attrs.items()
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Every dataset of the file but the frames, by path (columns, info/, action_joypad, extra/):
        what a replay file keeps, since the frames follow from the joypad bytes."""
        out: dict[str, np.ndarray] = {}
        self._f.visititems(
            lambda k, obj: out.__setitem__(k, obj[()]) if isinstance(obj, h5py.Dataset) and k != F.FRAMES else None
        )
        return out

    actions = _Column(F.ACTIONS)
    rewards = _Column(F.REWARDS)
    joypad = _Column(F.JOYPAD)  # every emulator frame's joypad byte
    step_frames = _Column(F.STEP_FRAMES)

    @cached_property
    def info(self) -> dict[str, np.ndarray]:
        g = self._f[F.INFO_GROUP]
        return {k: g[k][()] for k in g}

    def extra(self, name: str) -> np.ndarray | None:
        key = f"{F.EXTRA_GROUP}/{name}"
        return self._f[key][()] if key in self._f else None

    @property
    def start_joypad(self) -> np.ndarray | None:
        """The joypad bytes from the stage's reset to frame 0 (None: the episode starts at reset);
        `emulator.replay(level, joypad, step_frames, start)` rebuilds the episode with them."""
        return self.extra(F.START_JOYPAD)

    def to_dataframe(self) -> pd.DataFrame:
        """The per-step columns as a DataFrame, a row per step t (index `step`), named as in the file:
        actions, their buttons (`action_name`), rewards, terminated, truncated, step_frames, overridden
        and every info column."""
        import pandas as pd

        cols: dict[str, Any] = {F.ACTIONS: self.actions}
        cols["action_name"] = pd.Categorical.from_codes(
            self.actions.astype(np.int64), [self.action_set.meaning(i) for i in range(len(self.action_set))]
        )
        names = [n for n in F.STEP_COLUMNS if n != F.ACTIONS and n in self._f]  # an older file lacks an optional one
        cols |= {name.split("/")[-1]: self.column(name) for name in names}
        return pd.DataFrame(cols, index=pd.RangeIndex(self.length, name="step"))

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Episode:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_steps(path: str | Path) -> pd.DataFrame:
    """An episode's per-step columns as a pandas DataFrame, in one call (`Episode.to_dataframe`);
    `pd.read_hdf` reads only PyTables' layout, not this one."""
    with Episode(path) as ep:
        return ep.to_dataframe()


def remap_actions(src: Path, dst: Path, target: F.ActionSet) -> None:
    """Write `dst`, a copy of episode `src` with its actions mapped to the `target` set (by their
    buttons: format.map_actions), atomically; the old set's name is kept in `extra`."""
    tmp = dst.with_name(F.partial_name(dst.name))
    shutil.copy2(src, tmp)
    with h5py.File(tmp, "r+") as f:
        old = F.ActionSet.from_attrs(f.attrs["action_set"], f.attrs["action_buttons"])
        f[F.ACTIONS][...] = F.map_actions(f[F.ACTIONS][()], old, target)
        del f[F.ACTION_JOYPAD]
        f.create_dataset(F.ACTION_JOYPAD, data=target.joypad).attrs[F.DESCRIPTION_ATTR] = F.DESCRIPTIONS[
            F.ACTION_JOYPAD
        ]
        extra = json.loads(f.attrs.get("extra", "{}"))
        extra["mapped_from_action_set"] = old.name
        f.attrs.update({"action_set": target.name, "action_buttons": target.to_json(), "extra": json.dumps(extra)})
    commit(tmp, dst)
