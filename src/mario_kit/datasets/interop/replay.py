"""Replay files (`dataset export/import --format replay`): a dataset without its frames.

The emulator is deterministic from reset (docs/FORMAT.md, "Replay"), so an episode's frames follow
from its joypad bytes. A replay file keeps everything else of every episode (its attributes, per-step
columns and `extra/` arrays), its split assignment and a hash of its frames; `import`
replays each episode in the emulator, checks the frames against the hash and writes the episode
under its own name with its own attributes: the same episode file, frames included, for about
1/1000 of the bytes. That is how a dataset travels without its frames, and how bench/ keeps its
fixed evaluation set and training data in the repository (a PPO agent that recorded them need not
exist on the machine that rebuilds them).

One file, `replay.json.xz`, in the export folder: xz-compressed JSON (schema: docs/FORMAT.md, "Replay
files"); whole-file compression, not per array, because most of an episode's bytes are attributes and
short columns that repeat across episodes (3.7 bytes a step on sticky-random play, against 12 with
each episode's arrays compressed on their own).
"""

from __future__ import annotations

import base64
import json
import lzma
import math
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import xxhash

from mario_kit import UserError, __version__
from mario_kit.atomic import atomic_path, check_writable, output_dir
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset, check_output_dir
from mario_kit.datasets.episode import Episode, EpisodeMeta, EpisodeWriter, package_versions
from mario_kit.datasets.split import add_assignments, read_split, sample_indices
from mario_kit.datasets.validate import validate_file
from mario_kit.emulator import StartCache, replay

REPLAY_FILE = "replay.json.xz"
REPLAY_FORMAT = "mario-kit-replay"
REPLAY_SCHEMA = 1
MAX_BYTES = 256 << 20  # a replay file larger than this is refused unread
MAX_JSON = 4 << 30  # ... and one that inflates to more than this (a small file cannot fill the memory)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\.h5")
# the arrays an episode may carry besides its frames: the schema's (with their dtypes) and `extra/` ones
_DTYPES = {**F.STEP_COLUMNS, F.JOYPAD: np.dtype(np.uint8), F.ACTION_JOYPAD: np.dtype(np.uint8)}
_EXTRA = re.compile(rf"{F.EXTRA_GROUP}/[A-Za-z0-9_.-]+")


def frames_digest(frames: Iterator[np.ndarray]) -> str:
    """xxh3-128 of the frames' bytes in order (each (240, 256, 3) uint8, or blocks of them)."""
    h = xxhash.xxh3_128()
    for f in frames:
        h.update(np.ascontiguousarray(f, dtype=np.uint8).data)
    return h.hexdigest()


# --- export ----------------------------------------------------------------------------------------
def export_replay(src: str | Path, out: str | Path, force: bool = False, progress: bool = False) -> dict[str, Any]:
    """Write `out/replay.json.xz`: every episode of `src` without its frames. Returns a summary."""
    from mario_kit.progress import make_progress

    ds = Dataset(src).require_episodes()
    target = Path(out) / REPLAY_FILE
    if target.exists() and not force:
        raise UserError(f"{target} exists; --force replaces it (after the new one is written)")
    check_writable(target)
    split = read_split(ds.dir)
    episodes, steps = [], 0
    with make_progress(enabled=progress, transient=True) as bar:
        task = bar.add_task("exporting", total=len(ds.paths))
        for p in ds.paths:
            with Episode(p) as ep:
                episodes.append(_export_episode(ep, split.get(p.name)))
                steps += ep.length
            bar.update(task, advance=1)
    doc = {
        "format": REPLAY_FORMAT,
        "schema_version": REPLAY_SCHEMA,
        "mario_kit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_versions": package_versions(),
        "episodes": episodes,
    }
    with output_dir(target.parent), atomic_path(target) as tmp:
        tmp.write_bytes(lzma.compress(json.dumps(doc, separators=(",", ":")).encode(), preset=9))
    return {"episodes": len(episodes), "steps": steps, "path": target, "bytes": target.stat().st_size}


def _export_episode(ep: Episode, split: str | None) -> dict[str, Any]:
    arrays = ep.arrays()
    blocks = (ep.read_frames(s, min(s + 256, ep.length + 1)) for s in range(0, ep.length + 1, 256))
    return {
        "file": ep.path.name,
        "split": split,
        "attrs": ep.raw_attrs(),
        "frames_xxh3_128": frames_digest(blocks),
        "arrays": [{"name": k, "dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()],
        "data": base64.b64encode(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())).decode(),
    }


# --- import ----------------------------------------------------------------------------------------
@dataclass
class ReplayImport:
    episodes: int = 0
    steps: int = 0
    skipped: list[str] = field(default_factory=list)  # already in the folder under the same name
    paths: list[Path] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)  # left out, with keep_going: replayed to other frames


class FramesDiffer(UserError):
    """An episode that replays to frames other than its recording's."""


def import_replay(
    src: str | Path,
    out: str | Path,
    workers: int = 1,
    progress: bool = False,
    levels: list[str] | None = None,
    keep_going: bool = False,
    sample: int | None = None,
    seed: int = 0,
) -> ReplayImport:
    """Rebuild the episodes of `src/replay.json.xz` (or the file `src`) in `out` by replaying them
    (with `levels`, only those of these stages; with `sample`, that many of them, drawn with `seed`
    from the episodes in file-name order as `dataset filter --sample` draws).

    Every episode is checked before the first is written; an episode already in `out` under its name
    is skipped; the import lands whole or not at all (a failure or Ctrl-C removes the episodes it
    wrote), but with `keep_going` an episode that replays to other frames is left out and named in
    `differ`. `workers` processes replay episodes side by side."""
    from mario_kit.progress import make_progress

    src, out = Path(src), Path(out)
    path = src / REPLAY_FILE if src.is_dir() else src
    episodes = choose_episodes(parse_replay(read_replay(path), path), levels, sample, seed)
    sets = {(e["attrs"]["action_set"], int(e["attrs"]["frame_skip"])) for e in episodes}
    if len(sets) > 1:
        raise UserError(f"{path} mixes action sets or frame skips {sorted(sets)}: one dataset folder takes one")
    summary = ReplayImport()
    with output_dir(out):  # a folder this import made goes again if it fails
        check_output_dir(out, *sets.pop())
        todo = []
        for e in episodes:
            (summary.skipped.append(e["file"]) if (out / e["file"]).exists() else todo.append(e))
        try:
            with make_progress(enabled=progress, transient=True) as bar:
                task = bar.add_task("replaying", total=sum(int(e["attrs"]["length"]) for e in todo))
                for i, (p, n) in _run(todo, out, workers, keep_going):
                    e = todo[i]
                    if p is None:
                        summary.differ.append(e["file"])
                    else:
                        summary.paths.append(p)
                        summary.episodes += 1
                        summary.steps += n
                    bar.update(task, advance=int(e["attrs"]["length"]))
            summary.paths.sort()
            summary.differ.sort()
            kept = [e for e in todo if e["split"] is not None and e["file"] not in summary.differ]
            add_assignments(out, {e["file"]: e["split"] for e in kept})
        except BaseException:  # all or nothing: what this import wrote goes again
            for e in todo:
                (out / e["file"]).unlink(missing_ok=True)
                (out / F.partial_name(e["file"])).unlink(missing_ok=True)
            raise
    return summary


def choose_episodes(
    episodes: list[dict], levels: list[str] | None = None, sample: int | None = None, seed: int = 0
) -> list[dict]:
    """The parsed episodes an import replays, in file-name order: those of `levels` (all if None), then
    `sample` of them drawn with `seed` as `dataset filter --sample` draws."""
    if levels is not None:
        episodes = [e for e in episodes if e["attrs"]["level"] in levels]
    episodes = sorted(episodes, key=lambda e: e["file"])
    return [episodes[i] for i in sample_indices(len(episodes), sample, seed)]


def _run(todo: list[dict], out: Path, workers: int, keep_going: bool) -> Iterator[tuple[int, tuple[Path | None, int]]]:
    """(index in `todo`, (path, steps)) of each episode as it is replayed, in the order of their starts
    (`start_order`); (None, 0) for one that differs, with keep_going."""
    order = start_order(todo)
    if workers <= 1 or len(todo) <= 1:
        for i in order:
            yield i, _replay_one(todo[i], out, keep_going)
        return
    with ProcessPoolExecutor(min(workers, len(todo)), mp_context=get_context("spawn")) as pool:
        futures = [(i, pool.submit(_replay_one, todo[i], out, keep_going)) for i in order]
        try:
            for i, f in futures:
                yield i, f.result()
        except BaseException:
            for _, f in futures:
                f.cancel()
            raise


def start_order(todo: list[dict]) -> list[int]:
    """Episodes by stage and start prefix, so that starts with a shared beginning follow each other
    and a process's `StartCache` runs that beginning once."""

    def key(i: int) -> tuple[str, bytes]:
        start = todo[i]["arrays"].get(f"{F.EXTRA_GROUP}/{F.START_JOYPAD}")
        return todo[i]["attrs"]["level"], b"" if start is None else np.asarray(start, np.uint8).tobytes()

    return sorted(range(len(todo)), key=key)


_CACHE: StartCache | None = None  # this process's envs and start snapshots, across the episodes it replays


def _replay_one(e: dict, out: Path, keep_going: bool) -> tuple[Path | None, int]:
    global _CACHE
    _CACHE = _CACHE or StartCache()
    try:
        try:
            return replay_episode(e, out, _CACHE)
        except FramesDiffer:  # snapshots are a cache, never the truth: once more from reset
            return replay_episode(e, out)
    except FramesDiffer:
        if not keep_going:
            raise
        return None, 0


def replay_episode(e: dict, out: Path, cache: StartCache | None = None) -> tuple[Path, int]:
    """Replay one checked episode into `out`; the frames must hash to the recorded digest. `cache`:
    reach its start through this process's envs and snapshots."""
    attrs, a = e["attrs"], e["arrays"]
    T = int(attrs["length"])
    meta = EpisodeMeta(
        env_id=attrs["env_id"],
        level=attrs["level"],
        frame_skip=int(attrs["frame_skip"]),
        action_set=F.get_action_set(attrs["action_set"]),
        source=attrs["source"],
    )
    h = xxhash.xxh3_128()
    jp, sf = a[F.JOYPAD], a[F.STEP_FRAMES]
    info = {k: a[f"{F.INFO_GROUP}/{k}"] for k in F.INFO_COLUMNS if f"{F.INFO_GROUP}/{k}" in a}
    with EpisodeWriter(out, meta, name=e["file"]) as w:
        start = a.get(f"{F.EXTRA_GROUP}/{F.START_JOYPAD}")
        frames = replay(attrs["level"], jp, sf, None if start is None else np.asarray(start, np.uint8), cache)
        first, _ = next(frames)
        w.add_frame(first)
        h.update(first.data)
        pos = 0
        for t, (frame, game) in enumerate(frames):  # the game's info fills a column the file lacks
            n = int(sf[t])
            w.add_step(
                int(a[F.ACTIONS][t]),
                frame,
                float(a[F.REWARDS][t]),
                bool(a[F.TERMINATED][t]),
                bool(a[F.TRUNCATED][t]),
                game | {k: v[t] for k, v in info.items()},
                jp[pos : pos + n].tolist(),
                bool(a[F.OVERRIDDEN][t]),
            )
            h.update(frame.data)
            pos += n
        if h.hexdigest() != e["frames_xxh3_128"]:
            raise FramesDiffer(
                f"{e['file']}: the replayed frames differ from the recorded ones (recorded with "
                f"{attrs.get('package_versions', '?')}); nothing was imported"
            )
        for k, v in a.items():
            if k.startswith(F.EXTRA_GROUP + "/"):
                w.add_extra(k.split("/", 1)[1], v)
        path = w.finish(attrs["end"], attrs=attrs)
    reason = validate_file(path, frames=False)
    if reason:
        path.unlink()
        raise UserError(f"{e['file']} in the replay file is not a valid episode ({reason}); nothing was imported")
    return path, T


def read_replay(path: Path) -> Any:
    """The parsed JSON of a replay file, size-capped before and after decompression."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise UserError(f"{path}: replay file larger than {MAX_BYTES >> 20} MiB")
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        text = dec.decompress(path.read_bytes(), max_length=MAX_JSON)
        if not dec.eof:
            raise UserError(f"{path} is not a valid replay file (truncated, or over {MAX_JSON >> 30} GiB unpacked)")
        return json.loads(text)
    except OSError as e:
        raise UserError(f"cannot read replay file {path}: {e.strerror or e}") from None
    except (lzma.LZMAError, EOFError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path} is not a valid replay file ({type(e).__name__}: {e})") from None


def parse_replay(doc: Any, path: Path) -> list[dict[str, Any]]:
    """Check a parsed replay file and decode its arrays; a UserError names what is wrong. Nothing
    in it is trusted: names are plain file names, attributes pass the episode schema's check, arrays
    have the schema's dtypes (`extra/` ones: numeric), exactly their declared bytes, and agree with
    the episode's length."""

    def bad(why: str) -> UserError:
        return UserError(f"{path} is not a valid replay file ({why}); nothing was imported")

    if not isinstance(doc, dict) or doc.get("format") != REPLAY_FORMAT:
        raise bad(f"format is not {REPLAY_FORMAT!r}")
    if doc.get("schema_version") != REPLAY_SCHEMA:
        raise bad(f"schema version {doc.get('schema_version')!r}; this mario-kit reads {REPLAY_SCHEMA}")
    eps = doc.get("episodes")
    if not isinstance(eps, list) or not eps:
        raise bad("no episodes")
    out: list[Any] = []
    names: set[str] = set()
    for i, e in enumerate(eps):
        try:
            out.append(_parse_episode(e, names))
        except (KeyError, TypeError, ValueError) as err:
            raise bad(f"episode {i}: {err}") from None
    return out


def _parse_episode(e: dict, names: set[str]) -> dict[str, Any]:
    name, attrs = e["file"], e["attrs"]
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in names:
        raise ValueError(f"file name {name!r} is not a plain, unique episode file name")
    names.add(name)
    if e.get("split") not in (None, "train", "test"):
        raise ValueError(f"split {e.get('split')!r}")
    if not isinstance(attrs, dict) or not all(isinstance(v, (str, int, float)) for v in attrs.values()):
        raise ValueError("attributes must be a mapping of strings and numbers")
    F.check_attrs(attrs)
    if not isinstance(e["frames_xxh3_128"], str) or not re.fullmatch(r"[0-9a-f]{32}", e["frames_xxh3_128"]):
        raise ValueError("frames_xxh3_128 is not a 128-bit hex digest")
    specs: list[tuple[str, np.dtype, list[int]]] = []
    sizes: list[int] = []
    for s in e["arrays"]:
        dt, shape = np.dtype(s["dtype"]), [int(n) for n in s["shape"]]
        known = _DTYPES.get(s["name"])
        if (
            (dt != known if known is not None else not _EXTRA.fullmatch(s["name"]) or dt.kind not in "uifb")
            or dt.itemsize > 8
            or len(shape) > 4
            or min(shape, default=0) < 0
            or math.prod(shape) > 1 << 31
            or any(k == s["name"] for k, _, _ in specs)
        ):
            raise ValueError(f"array {s['name']!r} ({s['dtype']}, {s['shape']}) is not allowed")
        specs.append((s["name"], dt, shape))
        sizes.append(math.prod(shape) * dt.itemsize)
    blob = base64.b64decode(e["data"], validate=True)
    if len(blob) != sum(sizes):
        raise ValueError(f"data holds {len(blob)} bytes, the arrays {sum(sizes)}")
    arrays, pos = {}, 0
    for (k, dt, shape), n in zip(specs, sizes):
        arrays[k] = np.frombuffer(blob, dt, math.prod(shape), pos).reshape(shape)
        pos += n
    T = int(attrs["length"])
    for k in F.STEP_COLUMNS:
        if k not in arrays and k in F.OPTIONAL_COLUMNS:
            continue
        if k not in arrays or arrays[k].shape != (T,):
            raise ValueError(f"{k}: expected {T} values")
    sf = arrays[F.STEP_FRAMES].astype(np.int64)
    if F.JOYPAD not in arrays or arrays[F.JOYPAD].shape != (int(sf.sum()),):
        raise ValueError("joypad length differs from the sum of step_frames")
    return {
        "file": name,
        "split": e.get("split"),
        "attrs": attrs,
        "frames_xxh3_128": e["frames_xxh3_128"],
        "arrays": arrays,
    }
