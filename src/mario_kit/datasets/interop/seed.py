"""The seed project's (Super Mario DIAMOND) HDF5 layout: one file per recording with, for i in 0..N-1,
  frame_{i}_x          (240, 256, 3) uint8   the frame before action i
  frame_{i}_y          the action: (7,) one-hot over SIMPLE_MOVEMENT, (4,) multi-hot [W, A, S, D]
                       (W jump = the A button, A left, S nothing, D right) or (3,) multi-hot [jump, left, right]
  frame_{i}_helperarr  (2,) [reward of the previous step, life lost before step i]; optional (the seed's
                       human recorder writes none)
recorded at frame skip 4 on level 1-1 by default. The last action has no frame after it.

Import: the seed's generators record fixed windows in which the game resets after a death or the
flag; a file is split into episodes at each reset, found as a frame equal to the level's first frame
(the file's frame 0, or the emulator's reset frame of `level`) that follows a different frame. In an
episode of frames s..e-1, frame t+1 follows action t; reward of step t = helperarr[t+1][0], terminated
= helperarr[t+1][1] (0 and False without helper arrays, and `extra.helper_array` false says so). The
action at the last frame before a reset has no recorded outcome and is dropped. Actions are mapped
to the target action set by their buttons (`format.nearest_action`; the summary counts those that
became another action). The original y vectors and helper arrays of each episode's frames are kept,
dtypes unchanged, in its `extra/` group, so that an imported file exports back byte-identical.
The files have no per-frame joypad record, so each episode is replayed alongside in the emulator
(our loop: the action's byte held for frame-skip frames, the last frame recorded): while the replay
reproduces the recorded frames, the joypad bytes, info columns and deaths are the emulator's, and an
episode reproduced to its end gets `extra.replayable` true (then `dream` can rebuild it). Where the
replay departs (another frame-skip wrapper, another level), the rest keeps each action's byte repeated
frame-skip times and no info, and `replayable` is false. Every file is checked before the first
episode is written; the import lands whole or not at all; a file already imported (same content
hash) is skipped.

Export: frames 0..T, y one-hot over SIMPLE_MOVEMENT (actions mapped by buttons; the last frame
gets NOOP), helperarr = [previous step's reward, previous step's terminated].
"""

from __future__ import annotations

import json
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from mario_kit import UserError
from mario_kit.atomic import atomic_path, ensure_space, output_dir
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset, check_output_dir, read_header, scan
from mario_kit.datasets.episode import Episode, EpisodeMeta, EpisodeWriter
from mario_kit.datasets.store import file_checksum
from mario_kit.trust import open_h5

FRAME_SKIP = 4
LEVEL = "1-1"
LAYOUTS = {7: "onehot7", 4: "wasd4", 3: "wad3"}  # label width -> layout
WASD = ("A", "left", None, "right")  # [W, A, S, D]: W jumps (the A button), S is nothing
WAD = ("A", "left", "right")  # [jump, left, right]
MULTIHOT = WAD
_KEY = re.compile(r"frame_(\d+)_x")
EXPORT_ATTR = "mario_kit_export"  # a root attribute of the files our export labels (the seed's readers ignore it)
SEED_PACK = 1000  # frames a file: what the seed's loader, process_dataset_hdf5.py and spawn.py read
SEED_FRAME_BYTES = 8192  # an exported frame with its label, deflated, with room to spare (about 3.3 KB measured)


def _seed_files(src: Path) -> list[Path]:
    if not src.is_dir():
        raise UserError(f"{src} is not a folder")
    files = sorted(p for p in src.iterdir() if p.suffix in (".h5", ".hdf5") and p.is_file())
    if not files:
        raise UserError(f"{src} holds no .hdf5/.h5 files")
    return files


def _y_to_buttons(y: np.ndarray) -> tuple[str, ...]:
    """The buttons a label stands for, in any of the three layouts."""
    if y.shape == (7,):
        return F.ACTION_SETS["simple"].buttons[int(np.argmax(y))]
    names = {4: WASD, 3: WAD}.get(y.shape[0]) if y.ndim == 1 else None
    if names is None:
        raise ValueError(
            f"frame_y of shape {y.shape}: expected (7,) one-hot, (4,) [W, A, S, D] or (3,) [jump, left, right]"
        )
    held = tuple(b for b, on in zip(names, y) if on and b is not None)
    # order as the action sets write buttons: direction first, then A
    return tuple(sorted(held, key=lambda b: b == "A")) or ("NOOP",)


@dataclass
class SeedFile:
    """What the check pass learnt about one file: enough to write its episodes without surprises."""

    path: Path
    n: int
    layout: str
    helper: bool
    digest: str
    segments: list[tuple[int, int]]  # [start, end) frame ranges, one an episode
    ours: bool = False  # written by our export: every episode's last frame is in the file


@dataclass
class ImportSummary:
    files: int = 0
    episodes: int = 0
    steps: int = 0
    layouts: Counter = field(default_factory=Counter)  # files per label layout
    remapped: Counter = field(default_factory=Counter)  # "labelled buttons -> recorded action": steps
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    short_segments: int = 0  # pieces between resets too short for an episode (one frame)
    replayable: int = 0  # episodes the emulator reproduces frame for frame from the level's start
    paths: list[Path] = field(default_factory=list)


def _check_file(p: Path, reset_frame: np.ndarray | None) -> SeedFile:
    """Read one file's structure and labels, find its resets; ValueError says why it is not a seed file."""
    with open_h5(p) as f:  # refuses links, external storage and virtual datasets
        n = 1 + max((int(m.group(1)) for k in f.keys() if (m := _KEY.fullmatch(k))), default=-1)
        if n < 2:
            raise ValueError("fewer than 2 frames")
        helper = "frame_0_helperarr" in f
        width = None
        refs, prev, segments, start = [], None, [], 0
        for i in range(n):
            for name in (f"frame_{i}_x", f"frame_{i}_y") + ((f"frame_{i}_helperarr",) if helper else ()):
                if not isinstance(f.get(name), h5py.Dataset):
                    raise ValueError(f"{name} is missing")
            x, y = f[f"frame_{i}_x"], f[f"frame_{i}_y"]
            if x.shape != F.FRAME_SHAPE or x.dtype.kind not in "ui":
                raise ValueError(f"frame_{i}_x of shape {x.shape} {x.dtype}, expected {F.FRAME_SHAPE} integers")
            if y.ndim != 1 or y.shape[0] not in LAYOUTS or (width is not None and y.shape[0] != width):
                raise ValueError(f"frame_{i}_y of shape {y.shape}: expected one width (7, 4 or 3) in the whole file")
            width = y.shape[0]
            if helper and f[f"frame_{i}_helperarr"].shape != (2,):
                raise ValueError(f"frame_{i}_helperarr of shape {f[f'frame_{i}_helperarr'].shape}, expected (2,)")
            frame = np.asarray(x[()], dtype=np.uint8)
            key = frame.tobytes()
            if i == 0:
                refs = [key] + ([reset_frame.tobytes()] if reset_frame is not None else [])
            elif key in refs and prev not in refs:  # a reset: the level's first frame again
                segments.append((start, i))
                start = i
            prev = key
        segments.append((start, n))
        ours = EXPORT_ATTR in f.attrs
    assert width is not None  # n >= 2 frames, each with its y
    return SeedFile(p, n, LAYOUTS[width], helper, file_checksum(p), segments, ours)


def _imported_digests(out: Path) -> set[str]:
    if not out.is_dir():
        return set()
    found = set()
    for p in scan(out)[0]:
        try:
            extra = json.loads(read_header(p)["extra"])
        except (OSError, ValueError):  # not an episode (validate reports it); nothing imported from it
            continue
        if isinstance(extra, dict) and "seed_file_hash" in extra:
            found.add(extra["seed_file_hash"])
    return found


def _emulator(level: str):
    """The emulator at `level` (for the reset frame and the replay check); None without nes-py."""
    try:
        from mario_kit.emulator import MarioEnv

        return MarioEnv(level)
    except ImportError:
        return None


def import_seed(
    src: str | Path,
    out: str | Path,
    action_set: str = "simple",
    source: str = "seed",
    level: str = LEVEL,
    frame_skip: int = FRAME_SKIP,
    player: str = "",
    progress: bool = False,
) -> ImportSummary:
    """Import every seed-layout file of `src` as episodes into `out` (see the module docstring)."""
    from mario_kit.emulator import parse_levels
    from mario_kit.progress import make_progress

    src, out = Path(src), Path(out)
    aset = F.get_action_set(action_set)
    if len(parse_levels(level)) != 1 or level == "random":
        raise UserError(f"--level takes one level (W-S), got {level!r}")
    if not 1 <= frame_skip <= F.MAX_FRAME_SKIP:
        raise UserError(f"--frame-skip must be in 1..{F.MAX_FRAME_SKIP}")
    files = _seed_files(src)
    summary = ImportSummary(files=len(files))
    done = _imported_digests(out)
    env = _emulator(level)
    reset_frame = env.reset()[0] if env is not None else None
    checked: list[SeedFile] = []
    with make_progress(enabled=progress, transient=True) as bar, _closing(env):
        task = bar.add_task("checking", total=len(files))
        for p in files:
            try:
                sf = _check_file(p, reset_frame)
            except (KeyError, ValueError, OSError, UserError) as e:
                raise UserError(f"{p} is not in the seed layout ({e}); nothing was imported") from None
            bar.update(task, advance=1)
            if sf.digest in done:
                summary.skipped.append((p.name, "already imported (same content)"))
                continue
            done.add(sf.digest)
            summary.layouts[sf.layout] += 1
            checked.append(sf)
        check_output_dir(out, action_set, frame_skip)  # after the check: a refused import leaves no folder
        task = bar.add_task("importing", total=sum(sf.n for sf in checked))
        try:
            for sf in checked:
                _write_file(sf, out, aset, source, level, frame_skip, player, summary, env)
                bar.update(task, advance=sf.n)
        except BaseException:  # all or nothing: the episodes of this import go again
            for path in summary.paths:
                path.unlink(missing_ok=True)
            raise
    return summary


@contextmanager
def _closing(env) -> Iterator[None]:
    try:
        yield
    finally:
        if env is not None:
            env.close()


def _write_file(
    sf: SeedFile,
    out: Path,
    aset: F.ActionSet,
    source: str,
    level: str,
    frame_skip: int,
    player: str,
    summary: ImportSummary,
    env=None,
) -> None:
    """Write the episodes of one checked file (see `_write_segment`)."""
    with open_h5(sf.path) as f:
        ys_all = [f[f"frame_{i}_y"][()] for i in range(sf.n)]
        helper_all = [f[f"frame_{i}_helperarr"][()] for i in range(sf.n)] if sf.helper else None
        for k, (s, e) in enumerate(sf.segments):
            if e - s < 2:
                summary.short_segments += 1
                continue
            ys = np.stack(ys_all[s:e])
            helper = np.stack(helper_all[s:e]) if helper_all is not None else None
            labels = [_y_to_buttons(y) for y in ys]
            actions = [F.nearest_action(b, aset) for b in labels]
            for b, a in zip(labels[:-1], actions[:-1]):
                if tuple(x for x in aset.buttons[a]) != b:
                    summary.remapped[f"{'+'.join(b)} -> {aset.meaning(a)}"] += 1
            meta = EpisodeMeta(
                env_id=f"SuperMarioBros-{level}-v0",
                level=level,
                frame_skip=frame_skip,
                action_set=aset,
                source=source,
                policy={"name": "unknown"},
                player=player,
                extra={
                    "imported_from": "seed",
                    "seed_file": sf.path.name,
                    "seed_file_hash": sf.digest,
                    "seed_segment": k,
                    "seed_frames": [s, e],
                    "replayable": False,
                    "helper_array": sf.helper,
                    "y_kind": sf.layout,
                    "death_step_replayed": False,
                },
            )
            flag = helper_all is not None and bool(helper_all[e][1] if e < sf.n else helper_all[e - 1][1])
            reset_reward = float(helper_all[e][0]) if helper_all is not None and e < sf.n else 0.0
            with EpisodeWriter(out, meta) as w:
                w.add_extra("seed_y", ys)
                if helper is not None:
                    w.add_extra("seed_helperarr", helper)
                died, steps = _write_segment(
                    w,
                    f,
                    s,
                    e,
                    actions,
                    helper,
                    aset,
                    frame_skip,
                    env,
                    replay_death=e < sf.n and not sf.ours,
                    reset_reward=reset_reward,
                )
                summary.replayable += bool(meta.extra["replayable"])
                summary.paths.append(w.finish("terminated" if died or flag else "cut"))
            summary.episodes += 1
            summary.steps += steps


def _write_segment(
    w: EpisodeWriter,
    f: h5py.File,
    s: int,
    e: int,
    actions: list[int],
    helper: np.ndarray | None,
    aset: F.ActionSet,
    frame_skip: int,
    env,
    replay_death: bool,
    reset_reward: float,
) -> tuple[bool, int]:
    """The steps of frames s..e-1, replayed alongside in the emulator (when there is one): while the
    replay reproduces the recorded frames, the step's joypad bytes, info and deaths are the
    emulator's, and an episode reproduced to its end is marked replayable. The seed's recorders reset
    after the step that ends an episode and never record its frame: where a reset follows
    (`replay_death`) and the replay reproduced everything, the action at the last frame is replayed
    too, and a death it shows becomes the episode's last step (frame from the emulator). Returns
    (the episode ended in a death or the flag, steps written)."""
    x0 = np.asarray(f[f"frame_{s}_x"][()], dtype=np.uint8)
    w.add_frame(x0)
    matching = env is not None and np.array_equal(env.reset()[0], x0)
    ended = False
    last = e - s - 2
    for t in range(e - s - 1):
        byte = int(aset.joypad[actions[t]])
        nxt = np.asarray(f[f"frame_{s + t + 1}_x"][()], dtype=np.uint8)
        reward = float(helper[t + 1][0]) if helper is not None else 0.0
        terminated = bool(helper[t + 1][1]) if helper is not None else False
        joypad, info = [byte] * frame_skip, {}
        if matching:
            r = env.step(byte, frame_skip)
            ended = r.terminated or r.truncated
            matching = np.array_equal(r.frame, nxt) and (not ended or t == last)
            if matching:
                joypad, info, terminated = r.joypad, r.info, terminated or r.terminated
        w.add_step(actions[t], nxt, reward, terminated, False, info, joypad)
    w.meta.extra["replayable"] = bool(matching)
    if not matching:
        return False, e - s - 1
    if ended:
        return bool(r.terminated), e - s - 1
    if replay_death:
        r = env.step(int(aset.joypad[actions[-1]]), frame_skip)
        if r.terminated:
            w.add_step(actions[-1], r.frame, reset_reward, True, False, r.info, r.joypad)
            w.meta.extra["death_step_replayed"] = True
            return True, e - s
    return False, e - s - 1


@dataclass
class ExportSummary:
    files: list[Path] = field(default_factory=list)
    frames: int = 0
    episodes: int = 0
    remapped: Counter = field(default_factory=Counter)  # "action -> label" for actions a layout cannot express
    dropped_frames: int = 0  # the remainder under --remainder drop
    unread_by: list[str] = field(default_factory=list)  # what the seed's or DIAMOND's tools will not read, and why


def label(buttons: tuple[str, ...], layout: str) -> tuple[np.ndarray, bool]:
    """The y vector of an action's buttons in a label layout, and whether it is exact (a layout
    without B, up or down keeps the rest: right+B -> [D], down -> [S])."""
    held = set(buttons) - {"NOOP"}
    if layout == "onehot7":
        simple = F.ACTION_SETS["simple"]
        a = F.nearest_action(tuple(held) or ("NOOP",), simple)
        return np.eye(7, dtype=np.int64)[a], set(simple.buttons[a]) - {"NOOP"} == held
    names = WASD if layout == "wasd4" else WAD
    y = np.array([int(b is not None and b in held) for b in names], dtype=np.int64)  # NOOP: all zero, as the seed's
    return y, held <= {b for b in names if b is not None}


def export_seed(
    src: str | Path,
    out: str | Path,
    force: bool = False,
    pack: int = SEED_PACK,
    labels: str | None = None,
    remainder: str = "drop",
) -> ExportSummary:
    """Write the episodes of `src` in the seed layout into `out`.

    `pack` N > 0: files of exactly N frames, `mario_episode_data_{k}.hdf5`, episodes joined one after
    another as the seed's generators record them (the game reset inside a file; the life flag set at
    each join that follows a death; the seed's loader reads every file as N frames), the last partial
    file dropped (the default: every file is one the seed's tools read end to end) or kept (`remainder`).
    `pack` 0: one `<episode>.hdf5` per episode, with an imported episode's own labels and helper arrays
    when `labels` is None. `labels`: onehot7 (default), wasd4, wad3; actions a layout cannot express
    become the nearest label, counted in the summary. A choice that gives files the seed's or DIAMOND's
    tools do not read is said in `unread_by`."""
    check_labels(labels)
    if pack < 0 or remainder not in ("keep", "drop"):
        raise UserError("--pack must be >= 0 (0: one file per episode) and --remainder keep or drop")
    ds = Dataset(src).require_episodes()
    bad = ds.index[ds.index["frame_skip"] != FRAME_SKIP]
    if len(bad):
        raise UserError(
            f"{bad['file'].iloc[0]} has frame skip {bad['frame_skip'].iloc[0]}; the seed layout is frame skip 4"
        )
    out = Path(out)
    n_frames = int(ds.index["frames"].sum())
    summary = ExportSummary(unread_by=_unread_by(pack, remainder, n_frames))
    if pack:
        n_files = n_frames // pack + (1 if n_frames % pack and remainder == "keep" else 0)
        if not n_files:
            raise UserError(
                f"{src} has {n_frames} frames, not one whole file of --pack {pack}; pass --remainder keep "
                f"(one short file, which the seed's loader cannot read) or a smaller --pack"
            )
        names = [out / f"mario_episode_data_{k}.hdf5" for k in range(n_files)]
    else:
        names = [out / (p.stem + ".hdf5") for p in ds.paths]
    existing = [p for p in names if p.exists()]
    if existing and not force:  # checked for every file before the first is written
        raise UserError(f"{existing[0]} exists; pass --force to overwrite")
    with output_dir(out):
        if pack:
            _export_packed(ds, names, pack, labels or "onehot7", summary)
        else:
            _export_each(ds, names, labels, summary)
    return summary


def check_labels(labels: str | None) -> None:
    if labels not in (None, *LAYOUTS.values()):
        raise UserError(f"--labels takes onehot7, wasd4 or wad3, got {labels!r}")


def labels_of(actions: np.ndarray, aset: F.ActionSet, layout: str) -> np.ndarray:
    """(n, width) int64 labels of action indices in a label layout (nearest label where it lacks a button)."""
    width = {v: k for k, v in LAYOUTS.items()}[layout]
    return (
        np.stack([label(aset.buttons[int(a)], layout)[0] for a in actions])
        if len(actions)
        else np.zeros((0, width), np.int64)
    )


def write_spawns(
    out: Path,
    full: np.ndarray,
    low: np.ndarray,
    acts: list[np.ndarray],
    nexts: list[np.ndarray],
    aset: F.ActionSet,
    layout: str = "wad3",
) -> Path:
    """DIAMOND's spawn layout as the seed's spawn.py writes it and its play script loads it:
    `out/<k>/low_res.npy` (n, 3, 60, 64) and `full_res.npy` (n, 3, 240, 256) uint8 channels first in BGR
    order (what DIAMOND's loader makes of the seed's RGB files, so what a model trained on them saw),
    `act.npy` (n, width) int64 labels of the actions at those frames (the last one is replaced by the
    player's), `next_act.npy` (k, width) those the episode took from there on; width from `layout`
    (wad3, the seed's spawns and released config: 3)."""
    with output_dir(out):
        for k in range(len(full)):
            d = out / str(k)
            d.mkdir(exist_ok=True)
            arrays = {
                "low_res": low[k][..., ::-1].transpose(0, 3, 1, 2),
                "full_res": full[k][..., ::-1].transpose(0, 3, 1, 2),
                "act": labels_of(acts[k], aset, layout),
                "next_act": labels_of(nexts[k], aset, layout),
            }
            for name, a in arrays.items():
                with atomic_path(d / f"{name}.npy", ".npy") as tmp:
                    np.save(tmp, np.ascontiguousarray(a))
    return out


def _unread_by(pack: int, remainder: str, n_frames: int) -> list[str]:
    """What the seed's loader (DIAMOND's CSGOHdf5Dataset: every file as 1000 frames, files ordered by
    the integer after the last underscore of their names), its process_dataset_hdf5.py (segment 0..1000
    of each file) and spawn.py (frames up to 803) will not read among the files these options write."""
    if pack == 0:
        return [
            "--pack 0 writes one file per episode: the seed's loader and process_dataset_hdf5.py read "
            f"{SEED_PACK} frames a file and DIAMOND's loader orders files by a number their names lack; "
            "neither reads these files as they are (they are for mario-kit and h5py)"
        ]
    notes = []
    if pack != SEED_PACK:
        notes.append(
            f"files of {pack} frames: the seed's loader and process_dataset_hdf5.py read {SEED_PACK} a file "
            f"(change its episode length to {pack} to read them)"
        )
    if remainder == "keep" and n_frames % pack:
        notes.append(
            f"the last file has {n_frames % pack} frames: the seed's loader and process_dataset_hdf5.py read "
            f"{pack} from every file and fail on it (the default --remainder drop leaves it out)"
        )
    return notes


def _episode_arrays(ep: Episode, layout: str, summary: ExportSummary) -> tuple[np.ndarray, np.ndarray]:
    """(y, helperarr) of every frame of an episode: frame t's label is action t (the last frame: no
    action, NOOP); helperarr[t] = [reward of step t-1, terminated of step t-1]. The ending sequence
    recorded after a death or the flag is left out: the seed's recorders reset on the game's end."""
    T = ep.played_steps
    ys = []
    for t in range(T + 1):
        buttons = ep.action_set.buttons[int(ep.actions[t])] if t < T else ("NOOP",)
        y, exact = label(buttons, layout)
        if not exact:
            summary.remapped[f"{'+'.join(buttons)} -> {layout} {y.tolist()}"] += 1
        ys.append(y)
    helper = np.zeros((T + 1, 2), dtype=np.float64)
    helper[1:, 0] = ep.rewards[:T]
    helper[1:, 1] = ep.column(F.TERMINATED)[:T]
    return np.stack(ys), helper


def _write_frames(path: Path, frames, ys: np.ndarray, helper: np.ndarray | None, ours: bool = True) -> None:
    """One seed-layout file; `ours` marks it as our export's (an imported file's kept originals are not).
    The disk is checked before the file and every 64 frames: HDF5 writing into a full disk crashed."""
    ensure_space(path.parent, len(ys) * SEED_FRAME_BYTES, "the export stopped, no partial file is left")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        if ours:
            f.attrs[EXPORT_ATTR] = json.dumps({"schema_version": F.SCHEMA_VERSION})
        for i, x in enumerate(frames):  # deflate, as our episodes: any h5py reader decodes it, 50x smaller than raw
            if i % 64 == 63:
                ensure_space(path.parent, 0, "the export stopped, no partial file is left")
            f.create_dataset(f"frame_{i}_x", data=x, compression="gzip", compression_opts=F.FRAME_COMPRESSION_OPTS)
            f.create_dataset(f"frame_{i}_y", data=ys[i])
            if helper is not None:  # the seed's human recorder writes none
                f.create_dataset(f"frame_{i}_helperarr", data=helper[i])


def _export_each(ds: Dataset, names: list[Path], labels: str | None, summary: ExportSummary) -> None:
    from mario_kit.progress import make_progress

    with make_progress(transient=True) as bar:
        task = bar.add_task("exporting", total=len(ds.paths))
        for p, target in zip(ds.paths, names):
            with Episode(p) as ep:
                ys, helper = ep.extra("seed_y"), ep.extra("seed_helperarr")
                kept = (
                    labels is None and ys is not None and (helper is not None or not ep.attrs["extra"]["helper_array"])
                )
                if not kept:  # labels anew
                    ys, helper = _episode_arrays(ep, labels or "onehot7", summary)
                # kept originals: the file's own frames (a death step the import replayed is not one of them)
                assert ys is not None  # _episode_arrays labels every step
                n = len(ys)
                _write_frames(target, (ep.read_frames(i, i + 1)[0] for i in range(n)), ys, helper, ours=not kept)
                summary.frames += n
            summary.episodes += 1
            summary.files.append(target)
            bar.update(task, advance=1)


def _export_packed(ds: Dataset, names: list[Path], pack: int, layout: str, summary: ExportSummary) -> None:
    """Episodes one after another, cut into files of `pack` frames; the join frame (the next
    episode's reset frame) carries the life flag when the episode before it ended in a death."""
    from mario_kit.progress import make_progress

    frames: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    helpers: list[np.ndarray] = []
    k = 0

    def flush(n: int) -> None:
        nonlocal frames, ys, helpers, k
        _write_frames(names[k], frames[:n], np.stack(ys[:n]), np.stack(helpers[:n]))
        summary.files.append(names[k])
        summary.frames += n
        frames, ys, helpers, k = frames[n:], ys[n:], helpers[n:], k + 1

    died = False
    with make_progress(transient=True) as bar:
        task = bar.add_task("exporting", total=len(ds.paths))
        for p in ds.paths:
            with Episode(p) as ep:
                y, helper = _episode_arrays(ep, layout, summary)
                helper[0] = [0.0, float(died)]
                died = ep.attrs["end"] == "terminated"
                for t in range(ep.played_steps + 1):
                    frames.append(ep.read_frames(t, t + 1)[0])
                    ys.append(y[t])
                    helpers.append(helper[t])
                    if len(frames) == pack:
                        flush(pack)
            summary.episodes += 1
            bar.update(task, advance=1)
    if frames:
        if k < len(names):
            flush(len(frames))
        else:
            summary.dropped_frames = len(frames)
