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

import fcntl
import json
import os
import shutil
import socket
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import xxhash

from mario_kit import UserError
from mario_kit.atomic import check_writable, ensure_space, fsync_dir
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode
from mario_kit.trust import check_zarr_store

STORE_SCHEMA = 1
# a frame in the store, compressed, with room to spare (measured: about 130 B low-res, 2.3 KB full-res)
LOW_FRAME_BYTES, FULL_FRAME_BYTES = 512, 4096
ATTR = "mario_kit_store"
FACTOR = 4
LOW_SHAPE = (F.FRAME_SHAPE[0] // FACTOR, F.FRAME_SHAPE[1] // FACTOR, 3)  # (60, 64, 3)
LOW_CHUNK = 512
RESIZE = "area: mean of each 4x4 block per channel, rounded half up (exact, integer)"
_BLOCK = 256  # frames read from an episode at a time
ZSTD_LEVEL = 3  # a new store's default: fast to build; higher levels make a smaller store (--compression-level)
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


def _codecs(level: int):
    from zarr.codecs import ZstdCodec

    return [ZstdCodec(level=level, checksum=True)]


def store_zstd_level(store: Path) -> int | None:
    """The zstd level of the store's frame chunks as created (a build extends it at that level);
    None where they are not compressed by zstd alone (a store mario-kit did not build)."""
    from zarr.codecs import ZstdCodec

    codecs = store_array(store, "low").compressors
    return codecs[0].level if len(codecs) == 1 and isinstance(codecs[0], ZstdCodec) else None


@dataclass
class BuildResult:
    added: int
    kept: int
    frames: int
    store: Path
    unweighted: list[str] = field(default_factory=list)  # added episodes a --weights file had no entry for (weight 1)


def store_array(store: str | Path, name: str, mode: Literal["r", "r+"] = "r") -> Any:
    """The store's array `name` (a zarr.Array), refused in one line where the store holds a group
    or nothing of that name. Call read_manifest first: it checks the store before zarr reads it."""
    import zarr

    try:
        a = zarr.open_group(str(store), mode=mode)[name]
    except KeyError:
        raise UserError(f"{store} has no {name} array; rebuild it with --force") from None
    if not isinstance(a, zarr.Array):
        raise UserError(f"{store}: {name} is not an array; rebuild it with --force")
    return a


def read_manifest(store: Path) -> dict[str, Any]:
    import zarr

    store = Path(store)
    if not (store / "zarr.json").is_file():
        raise UserError(f"{store} is not a mario-kit training store (no zarr.json)")
    check_zarr_store(store)  # before zarr reads anything: no symlinks, no v2 metadata, no foreign codecs
    try:
        g = zarr.open_group(str(store), mode="r")
        m = g.attrs[ATTR]
        if not isinstance(m, dict):
            raise TypeError
        m = dict(m)
    except Exception:  # noqa: BLE001  (anything that is not our store)
        raise UserError(f"{store} is not a mario-kit training store") from None
    if m.get("schema_version") != STORE_SCHEMA:
        raise UserError(f"{store}: store schema {m.get('schema_version')} (this mario-kit reads {STORE_SCHEMA})")
    try:
        _check_manifest(m)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{store}: damaged manifest ({type(e).__name__}: {e}); rebuild with --force") from None
    return m


def _check_manifest(m: dict[str, Any]) -> None:
    """What the loader and trainer rely on: a known action set, episodes that tile the arrays."""
    if F.ACTION_SETS[m["action_set"]].buttons != tuple(tuple(b) for b in m["action_buttons"]):
        raise ValueError("action_buttons differ from the named action set")
    if not isinstance(m["frame_skip"], int) or not isinstance(m["full_res"], bool):
        raise ValueError("frame_skip or full_res")
    if not isinstance(m.get("x_pos", False), bool) or not isinstance(m.get("rewend", False), bool):
        raise ValueError("x_pos or rewend")
    at = 0
    for e in m["episodes"]:
        if not (isinstance(e["start"], int) and isinstance(e["frames"], int)) or e["start"] != at or e["frames"] < 1:
            raise ValueError(f"episode {e.get('file')!r} does not start where the previous one ended")
        if e["split"] not in ("train", "test"):
            raise ValueError(f"split {e['split']!r}")
        at += e["frames"]
    for key in ("sums", "sumsq"):
        if len(m[key]) != 3 or not all(isinstance(v, (int, float)) for v in m[key]):
            raise ValueError(key)


def _load_weights(path: Path | None) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """The weights by episode file, and the episodes they were computed for (name -> [length, actions digest])."""
    if path is None:
        return {}, {}
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files if k != F.WEIGHTS_META}
            meta = json.loads(str(z[F.WEIGHTS_META])) if F.WEIGHTS_META in z.files else {}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read weights file {path}: {e}") from None
    tied = meta.get("episodes") if isinstance(meta, dict) else None
    if not isinstance(tied, dict) or set(tied) != set(out):
        raise UserError(
            f"weights file {path} does not say which episodes it was computed for; compute it with "
            f"`mario-kit balance DIR --out {path.name}` (or balancing.offline.save_weights)"
        )
    for k, w in out.items():
        if w.ndim != 1 or w.dtype.kind not in "fiu":
            raise UserError(f"weights file {path}: {k} is not a 1-D numeric array")
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise UserError(f"weights file {path}: {k} holds negative or non-finite weights")
    return {k: w.astype(np.float32) for k, w in out.items()}, tied


@contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Hold `.<store>.lock` beside the store (flock) while building: a second build into the same
    store exits 2 saying who holds it, instead of interleaving appends (which corrupted stores).
    Beside the store, not in it, so that --force can replace the whole folder under the lock."""
    lock = store.parent / f".{store.name}.lock"
    while True:
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot create {store}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(f"{store} is being built by {holder}; wait for it to finish (or stop it)") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed that file as we opened it: take the lock on the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0
        )
        yield
    finally:
        lock.unlink(missing_ok=True)  # while held: a build that opened it re-checks the inode and retries
        os.close(fd)


def build_store(
    src: str | Path,
    out: str | Path,
    full_res: bool = False,
    weights: str | Path | None = None,
    force: bool = False,
    verify: bool = False,
    progress: bool = True,
    compression_level: int | None = None,
) -> BuildResult:
    """Build or extend `out` from the episodes in `src`, holding the store's lock. See the module
    docstring. With `force` the new store is built beside the old one and replaces it only once
    complete: a failed or interrupted rebuild leaves the old store as it was. `compression_level`:
    zstd's level for a new store's chunks (None: ZSTD_LEVEL); a store is extended at its own level."""
    if compression_level is not None and not 1 <= compression_level <= 22:
        raise UserError(f"compression level {compression_level}: zstd's levels are 1 to 22")
    src, out = Path(src), Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    check_writable(out)
    with store_lock(out):
        if not (force and out.exists()):
            created = not out.exists()
            try:
                return _build(src, out, full_res, weights, verify, progress, compression_level)
            except Exception:  # a damaged episode: a store this build created goes (Ctrl-C keeps it, to resume)
                if created:
                    shutil.rmtree(out, ignore_errors=True)
                raise
        if not (out / "zarr.json").exists():
            raise UserError(f"{out} exists and is not a zarr store; refusing to replace it")
        new, old = out.with_name(f".{out.name}.rebuild"), out.with_name(f".{out.name}.old")
        for leftover in (new, old):  # of a rebuild killed earlier: ours to remove
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            r = _build(src, new, full_res, weights, verify, progress, compression_level)
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        os.rename(out, old)
        os.rename(new, out)
        fsync_dir(out.parent)
        shutil.rmtree(old, ignore_errors=True)
        return BuildResult(added=r.added, kept=0, frames=r.frames, store=out, unweighted=r.unweighted)


def _build(
    src: Path,
    out: Path,
    full_res: bool,
    weights: str | Path | None,
    verify: bool,
    progress: bool,
    level: int | None = None,
) -> BuildResult:
    from mario_kit.datasets.split import read_split
    from mario_kit.progress import make_progress

    ds = Dataset(src).require_episodes()
    aset, frame_skip, wmap = _check_episodes(src, ds, out, weights)
    split = read_split(src)
    g, m = _open_store(out, src, aset, frame_skip, full_res, level)
    known, todo = _reconcile(ds, m, out, split, verify)
    app = _Appender(g, _arrays(m))
    committed_at = time.monotonic()
    try:
        with make_progress(enabled=progress) as bar:
            total = int(ds.index.set_index("file").loc[[p.name for p in todo], "frames"].sum()) if todo else 0
            task = bar.add_task("building store", total=total)
            frames = dict(zip(ds.index["file"], ds.index["frames"]))
            for p in todo:
                ensure_space(
                    out,
                    int(frames[p.name]) * (FULL_FRAME_BYTES if full_res else LOW_FRAME_BYTES),
                    "the episodes added so far stay in the store; free space and build again to add the rest",
                )
                _append_episode(
                    app, m, p, wmap.get(p.name), split.get(p.name, "train"), lambda n: bar.update(task, advance=n)
                )
                if time.monotonic() - committed_at >= COMMIT_EVERY_S:  # the commit point of these episodes
                    app.flush()
                    g.attrs[ATTR] = m
                    committed_at = time.monotonic()
    finally:  # Ctrl-C or an error: the finished episodes stay committed (a hard kill loses <= 2 s)
        app.flush()
        g.attrs[ATTR] = m
    total = sum(e["frames"] for e in m["episodes"])
    unweighted = [p.name for p in todo if wmap and p.name not in wmap]
    return BuildResult(added=len(todo), kept=len(known), frames=total, store=out, unweighted=unweighted)


def _check_episodes(
    src: Path, ds: Dataset, out: Path, weights: str | Path | None
) -> tuple[F.ActionSet, int, dict[str, np.ndarray]]:
    """Every episode to add is checked before the store is created or changed; returns the one
    action set and frame skip of the dataset, and the weights by file. The episodes themselves were
    checked when the dataset was indexed (`require_episodes` refuses one with a file that failed)."""
    sets = set(ds.index["action_set"])
    skips = set(ds.index["frame_skip"])
    if len(sets) > 1 or len(skips) > 1:
        raise UserError(
            f"{src} mixes action sets {sorted(sets)} or frame skips {sorted(skips)}; a store needs one of each"
        )
    with Episode(ds.paths[0]) as first:
        aset, frame_skip = first.action_set, int(first.attrs["frame_skip"])
    wmap, tied = _load_weights(Path(weights) if weights else None)
    old_files = {e["file"] for e in read_manifest(out)["episodes"]} if out.exists() else set()
    for p in ds.paths:  # each passed Episode's check_data (every column a reader relies on) when indexed
        if p.name in wmap and p.name not in old_files:
            _check_tied(p, tied[p.name], Path(weights or ""))
            if len(wmap[p.name]) < tied[p.name][0]:
                raise UserError(
                    f"weights file {weights}: {p.name} has {len(wmap[p.name])} weights for {tied[p.name][0]} steps"
                )
    if wmap and not set(wmap) & {p.name for p in ds.paths}:
        raise UserError(
            f"weights file {weights} was computed for another dataset: none of its {len(wmap)} episodes "
            f"is in {src}; compute weights for it with `mario-kit balance {src} --out FILE.npz`"
        )
    return aset, frame_skip, wmap


def _check_tied(p: Path, tie: list, weights: Path) -> None:
    """The episode is the one the weights were computed for: same length, same actions."""
    with Episode(p) as ep:
        ok = isinstance(tie, list) and len(tie) == 2 and tie[0] == ep.length and tie[1] == F.actions_digest(ep.actions)
    if not ok:
        raise UserError(
            f"weights file {weights} was computed for another dataset: {p.name} is not the episode it "
            f"weighted (its length or actions differ); compute weights again with `mario-kit balance`"
        )


END_NONE, END_DEATH, END_FLAG = 0, 1, 2  # `ends`: what the step taken at a frame did to the episode


def step_outcomes(ep: Episode) -> tuple[np.ndarray, np.ndarray]:
    """(rewards float32, ends uint8) per frame of the episode, for the step taken at the frame (the
    last frame takes none: 0). The end step (the first step the game ended the episode on) is a
    death or the flag; the steps of the ending after it are none, as they are in the game's eyes."""
    n = ep.length + 1
    rewards, ends = np.zeros(n, np.float32), np.zeros(n, np.uint8)
    rewards[:-1] = ep.column("rewards")
    terminated = ep.column("terminated").astype(bool)
    if terminated.any():
        t = int(np.argmax(terminated))
        flag = ep.attrs.get("end") == "flag" or bool(ep.info["flag_get"][t])
        ends[t] = END_FLAG if flag else END_DEATH
    return rewards, ends


def _arrays(m: dict[str, Any]) -> list[str]:
    """The per-frame arrays of a store, by its manifest."""
    names = ["low", "actions", "weights"] + (["full"] if m["full_res"] else []) + (["x_pos"] if m.get("x_pos") else [])
    return names + (["rewards", "ends"] if m.get("rewend") else [])


def _open_store(out: Path, src: Path, aset: F.ActionSet, frame_skip: int, full_res: bool, level: int | None):
    """(zarr group, manifest) of the store to extend, or of a new empty one; arrays cut back to
    what the manifest commits (a killed build may have written beyond it)."""
    import zarr

    if out.exists():
        m = read_manifest(out)
        if m["action_set"] != aset.name or m["frame_skip"] != frame_skip:
            raise UserError(f"{out} was built from {m['action_set']}/frame skip {m['frame_skip']} episodes")
        if m["full_res"] != full_res:
            hint = "add --full-res to extend it" if m["full_res"] else "leave out --full-res to extend it"
            raise UserError(
                f"{out} was built {'with' if m['full_res'] else 'without'} --full-res: {hint} "
                f"(--force rebuilds it {'with' if full_res else 'without'} full-res frames)"
            )
        if level is not None and level != (had := store_zstd_level(out)):
            raise UserError(f"{out} was built at compression level {had} (--force rebuilds it at {level})")
        g = zarr.open_group(str(out), mode="r+")
    else:
        g = _create_arrays(zarr.open_group(str(out), mode="w"), full_res, ZSTD_LEVEL if level is None else level)
        m = {
            "schema_version": STORE_SCHEMA,
            "action_set": aset.name,
            "action_buttons": [list(b) for b in aset.buttons],
            "frame_skip": frame_skip,
            "low_shape": list(LOW_SHAPE),
            "resize": RESIZE,
            "full_res": full_res,
            "x_pos": True,  # Mario's x at each frame (stores built before it was kept lack it)
            "rewend": True,  # `rewards` and `ends` of each step (stores built before they were kept lack them)
            "source": str(src.resolve()),
            "sums": [0.0] * 3,
            "sumsq": [0.0] * 3,
            "count": 0,
            "episodes": [],
        }
        g.attrs[ATTR] = m
    committed = sum(e["frames"] for e in m["episodes"])
    for name in _arrays(m):
        a = store_array(out, name, mode="r+")
        if a.shape[0] != committed:
            a.resize((committed, *a.shape[1:]))
    return g, m


def _create_arrays(g: Any, full_res: bool, level: int) -> Any:
    """A new store's empty arrays, every chunk zstd-compressed at `level` with its checksum."""
    g.create_array(
        "low", shape=(0, *LOW_SHAPE), chunks=(LOW_CHUNK, *LOW_SHAPE), dtype="uint8", compressors=_codecs(level)
    )
    if full_res:
        # flat chunk names ("c.N.0.0.0"): zarr's default nests each one-frame chunk three folders
        # deep, and those folders cost more disk than the data (docs/BENCHMARKS.md)
        g.create_array(
            "full",
            shape=(0, *F.FRAME_SHAPE),
            chunks=(1, *F.FRAME_SHAPE),
            dtype="uint8",
            compressors=_codecs(level),
            chunk_key_encoding={"name": "default", "separator": "."},
        )
    for name, dtype in (
        ("actions", "int16"),
        ("weights", "float32"),
        ("x_pos", "int32"),
        ("rewards", "float32"),
        ("ends", "uint8"),
    ):
        g.create_array(name, shape=(0,), chunks=(1 << 16,), dtype=dtype, compressors=_codecs(level))
    return g


def _reconcile(
    ds: Dataset, m: dict[str, Any], out: Path, split: dict[str, str], verify: bool
) -> tuple[dict[str, dict], list[Path]]:
    """The manifest against the folder: (episodes already in the store, episodes to add). A stored
    episode whose size or time changed (or every one, `verify`) must still match its checksum;
    the split is re-read for all."""
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
    return known, todo


class _Appender:
    """Rows appended to the store's arrays, held here and written together (`flush`): zarr rewrites a
    partly filled chunk at every write, and an episode is often shorter than a chunk (a frontier's tens
    of frames against 512), so writing each episode as it came would compress each chunk many times
    over, which at a high compression level is most of a build. Full-res frames (a chunk a frame) are
    written as they come."""

    FLUSH_FRAMES = 4 * LOW_CHUNK  # held at most (a long episode is written in parts)

    def __init__(self, g: Any, arrays: list[str]):
        self.g, self.end, self.full = g, int(g["low"].shape[0]), "full" in arrays  # end: rows written or held
        self.held: dict[str, list[np.ndarray]] = {name: [] for name in arrays if name != "full"}
        self.frames = 0

    def add_frames(self, low: np.ndarray, full: np.ndarray | None = None) -> None:
        """The next frames: low-res held, full-res (a chunk a frame) written now at the same rows."""
        if full is not None:
            a = self.g["full"]
            a.resize((self.end + len(full), *a.shape[1:]))
            a[self.end :] = full
        self.add("low", low)
        self.end += len(low)
        self.frames += len(low)
        if self.frames >= self.FLUSH_FRAMES:
            self.flush()

    def add(self, name: str, rows: np.ndarray) -> None:
        """Rows of a per-frame column (actions, weights, ...) held, in the order of the frames."""
        self.held[name].append(rows)

    def flush(self) -> None:
        """Write what is held; before every commit of the manifest, which must not list unwritten frames."""
        for name, parts in self.held.items():
            if parts:
                a, rows = self.g[name], np.concatenate(parts)
                at = a.shape[0]
                a.resize((at + len(rows), *a.shape[1:]))
                a[at:] = rows
                parts.clear()
        self.frames = 0


def _append_episode(
    app: _Appender, m: dict[str, Any], p: Path, weights: np.ndarray | None, split: str, advance
) -> None:
    """Episode `p` appended to every array, block by block, and to the manifest (not yet committed)."""
    with Episode(p) as ep:
        n = ep.length + 1
        start = app.end
        sums, sumsq = np.zeros(3), np.zeros(3)
        for i in range(0, n, _BLOCK):
            block = ep.read_frames(i, i + _BLOCK)
            low = downsample(block)
            app.add_frames(low, block if app.full else None)
            lf = low.reshape(-1, 3).astype(np.int64)
            sums += lf.sum(0) / 255.0
            sumsq += (lf * lf).sum(0) / 255.0**2
            advance(len(block))
        acts = np.full(n, -1, np.int16)
        acts[:-1] = ep.actions
        app.add("actions", acts)
        w = np.zeros(n, np.float32)
        w[:-1] = (weights if weights is not None else np.ones(ep.length, np.float32))[: ep.length]
        app.add("weights", w)
        if "x_pos" in app.held:  # frame t follows step t-1; frame 0 takes the first step's x
            x = ep.info["x_pos"].astype(np.int32)
            app.add("x_pos", np.r_[x[:1], x] if len(x) else np.zeros(1, np.int32))
        if "rewards" in app.held:
            rewards, ends = step_outcomes(ep)
            app.add("rewards", rewards)
            app.add("ends", ends)
        source, level = ep.attrs["source"], ep.attrs["level"]
    st = p.stat()
    m["episodes"].append(
        {
            "file": p.name,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "checksum": file_checksum(p),
            "start": start,
            "frames": n,
            "split": split,
            "source": source,
            "level": level,
        }
    )
    m["sums"] = (np.array(m["sums"]) + sums).tolist()
    m["sumsq"] = (np.array(m["sumsq"]) + sumsq).tolist()
    m["count"] += n * LOW_SHAPE[0] * LOW_SHAPE[1]


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
        "store": str(store),
        "episodes": len(eps),
        "frames": sum(e["frames"] for e in eps),
        "train_episodes": sum(e["split"] == "train" for e in eps),
        "test_episodes": sum(e["split"] == "test" for e in eps),
        "action_set": m["action_set"],
        "frame_skip": m["frame_skip"],
        "full_res": m["full_res"],
        "compression_level": store_zstd_level(store),
        "channel_mean": mean,
        "channel_std": std,
        "bytes": _du(store),
    }


def _du(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
