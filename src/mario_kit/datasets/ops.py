"""Dataset operations that make new folders: merge, filter (a view), and play spawns.

Episodes are immutable once written, so merge and filter hard-link them (no copy; a copy only
across file systems). An episode whose actions must be re-expressed in another action set is
rewritten (a copy with mapped actions; its joypad record stays the real one).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from mario_kit import UserError
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset, check_output_dir
from mario_kit.atomic import atomic_path, check_writable, fsync_dir
from mario_kit.datasets.episode import Episode, remap_actions
from mario_kit.trust import open_h5
from mario_kit.datasets.split import add_assignments, read_split, sample_indices


def link_or_copy(src: Path, dst: Path) -> str:
    try:
        os.link(src, dst)
        return "link"
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
        return "copy"


def _place(paths: list[Path], out: Path, target: F.ActionSet) -> dict[str, int]:
    counts = {"link": 0, "copy": 0, "mapped": 0, "present": 0}
    for p in paths:
        dst = out / p.name
        if dst.exists():
            counts["present"] += 1
            continue
        with Episode(p) as ep:
            same = ep.action_set.name == target.name
        if same:
            counts[link_or_copy(p, dst)] += 1
        else:
            remap_actions(p, dst, target)
            counts["mapped"] += 1
    fsync_dir(out)
    return counts


def _carry_split(sources: list[Path], out: Path, names: set[str]) -> None:
    assign = {}
    for s in sources:
        assign.update({f: v for f, v in read_split(s).items() if f in names})
    add_assignments(out, assign)


def merge(sources: list[str | Path], out: str | Path, action_set: str | None = None) -> dict[str, int]:
    """Merge episode folders into `out`. Mixed frame skips are refused; mixed action sets are refused
    unless `action_set` names the set to map every episode into."""
    if not sources:
        raise UserError("give at least one dataset to merge")
    out = Path(out)
    dss = [Dataset(s).require_episodes() for s in sources]
    if any(d.dir.resolve() == out.resolve() for d in dss):
        raise UserError("--out must differ from the merged datasets")
    idx = pd.concat([d.index for d in dss])
    skips, sets = sorted(set(idx["frame_skip"])), sorted(set(idx["action_set"]))
    if len(skips) > 1:
        raise UserError(f"the datasets mix frame skips {skips}: steps of different length cannot be merged")
    if action_set is None:
        if len(sets) > 1:
            raise UserError(f"the datasets mix action sets {sets}; pass --action-set NAME to map them into one")
        action_set = sets[0]
    target = F.get_action_set(action_set)
    check_output_dir(out, target.name, int(skips[0]))
    names = [p.name for d in dss for p in d.paths]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"episode {sorted(dup)[0]} is in more than one dataset")
    counts = _place([p for d in dss for p in d.paths], out, target)
    _carry_split([d.dir for d in dss], out, set(names))
    return counts


@dataclass
class Filter:
    source: str | None = None
    level: str | None = None  # a comma list
    player: str | None = None
    end: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    since: str | None = None  # ISO date or time, compared with `created`
    until: str | None = None
    split: str | None = None  # train or test, by the folder's split file (an episode it does not list: train)
    sample: int | None = None  # then this many of the episodes that pass, drawn with `seed` (all if fewer)
    seed: int = 0

    def apply(self, idx: pd.DataFrame, splits: dict[str, str] | None = None) -> pd.DataFrame:
        """The rows of `idx` that pass; `splits`: the folder's assignments (`split.read_split`)."""
        keep = pd.Series(True, index=idx.index)
        if self.split:
            if self.split not in ("train", "test"):
                raise UserError(f"split {self.split!r}: train or test")
            keep &= idx["file"].map(lambda f: (splits or {}).get(f, "train")) == self.split
        if self.source:
            keep &= idx["source"].isin(self.source.split(","))
        if self.level:
            keep &= idx["level"].isin(self.level.split(","))
        if self.player is not None:
            keep &= idx["player"] == self.player
        if self.end:
            keep &= idx["end"].isin(self.end.split(","))
        if self.min_length is not None:
            keep &= idx["length"] >= self.min_length
        if self.max_length is not None:
            keep &= idx["length"] <= self.max_length
        created = pd.to_datetime(idx["created"], utc=True)
        for bound, op in ((self.since, "ge"), (self.until, "le")):
            if bound:
                try:
                    t = pd.Timestamp(bound, tz="UTC") if pd.Timestamp(bound).tzinfo is None else pd.Timestamp(bound)
                except ValueError:
                    raise UserError(f"cannot read the date {bound!r} (use ISO form, e.g. 2026-11-25)") from None
                keep &= getattr(created, op)(t)
        sel = idx[keep].sort_values("file")
        return sel.iloc[sample_indices(len(sel), self.sample, self.seed)]


def filter_dataset(src: str | Path, out: str | Path, flt: Filter) -> dict[str, int]:
    """Select episodes of `src` into the view `out` (hard links)."""
    ds = Dataset(src).require_episodes()
    sel = flt.apply(ds.index, read_split(ds.dir))
    if sel.empty:
        raise UserError("no episode matches the filter")
    out = Path(out)
    first = sel.iloc[0]
    check_output_dir(out, first["action_set"], int(first["frame_skip"]))
    counts = _place([ds.dir / f for f in sel["file"]], out, F.get_action_set(first["action_set"]))
    _carry_split([ds.dir], out, set(sel["file"]))
    return counts


# --- spawns -------------------------------------------------------------------------------
SPAWN_SCHEMA = 1


def make_spawns(
    src: str | Path,
    out: str | Path,
    n: int = 16,
    n_context: int = 4,
    seed: int = 0,
    level: str | None = None,
    x_min: int | None = None,
    x_max: int | None = None,
    split: str | None = None,
    force: bool = False,
    fmt: str = "h5",
    labels: str | None = None,
    per_level: bool = False,
) -> Path:
    """Starting contexts for play: at each chosen step t, frames t-n_context..t-1 (full and low res),
    the actions taken there, and (episode, t) so the real game can be rebuilt at t by replay.
    Steps are drawn at random (seeded) among those matching level and x_pos (at t-1): n in all, or
    with `per_level` n on each stage, so that a few spawns still reach every stage of a whole game.
    `fmt` "seed": the layout DIAMOND's play script reads, a folder per spawn with actions in the label
    layout `labels` (see `interop.seed.write_spawns`)."""
    from mario_kit.datasets.interop import seed as seed_layout
    from mario_kit.datasets.store import downsample

    if fmt not in ("h5", "seed"):
        raise UserError(f"unknown spawn format {fmt!r}; choose h5 or seed")
    if fmt == "h5" and labels is not None:
        raise UserError("--labels is for --format seed (h5 spawns keep the action set's indices)")
    seed_layout.check_labels(labels)
    ds = Dataset(src).require_episodes()
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to overwrite")
    check_writable(out)
    if n < 1:
        raise UserError("--n must be >= 1")
    cands = _spawn_steps(ds, n_context, level, x_min, x_max, split)
    if not cands:
        raise UserError("no step matches the spawn filters")
    level_of = dict(zip(ds.paths, ds.index["level"])) if per_level else None
    chosen = _draw(cands, n, np.random.default_rng(seed), level_of)
    full, acts, nexts, refs = [], [], [], []
    for p, t in chosen:
        with Episode(p) as ep:
            full.append(ep.read_frames(t - n_context, t))
            acts.append(ep.actions[t - n_context : t])
            nexts.append(ep.actions[t:])
            refs.append({"file": p.name, "dataset": str(ds.dir.resolve()), "step": t, "level": ep.attrs["level"]})
            aset = ep.action_set  # one action set: the dataset's files agree (require_episodes)
    full_a = np.stack(full)
    low_a = downsample(full_a.reshape(-1, *F.FRAME_SHAPE)).reshape(len(chosen), n_context, 60, 64, 3)
    if fmt == "seed":
        return seed_layout.write_spawns(out, full_a, low_a, acts, nexts, aset, labels or "wad3")
    attrs = {
        "action_set": aset.name,
        "action_buttons": aset.to_json(),
        "n_context": n_context,
        "spawns": json.dumps(refs),
    }
    return _write_spawns(
        out, full_a, low_a, np.stack(acts), attrs | {"frame_skip": int(ds.index["frame_skip"].iloc[0])}
    )


def _spawn_steps(
    ds: Dataset, n_context: int, level: str | None, x_min: int | None, x_max: int | None, split: str | None
) -> list[tuple[Path, int]]:
    """Every (episode, t) with n_context frames before t that matches the filters (x_pos at t-1)."""
    split_map = read_split(ds.dir)
    cands = []
    for p, row in zip(ds.paths, ds.index.itertuples()):
        if level and row.level not in level.split(","):
            continue
        if split and split_map.get(p.name, "train") != split:
            continue
        if row.length < n_context:
            continue
        with Episode(p) as ep:
            x = ep.info["x_pos"]
        t = np.arange(n_context, row.length + 1)
        ok = np.ones(len(t), bool)
        if x_min is not None:
            ok &= x[t - 1] >= x_min
        if x_max is not None:
            ok &= x[t - 1] <= x_max
        cands += [(p, int(s)) for s in t[ok]]
    return cands


def _draw(
    cands: list[tuple[Path, int]], n: int, rng: np.random.Generator, level_of: dict[Path, str] | None
) -> list[tuple[Path, int]]:
    """n candidates without replacement, in candidate order; with `level_of`, n from each stage."""
    groups: dict[str, list[tuple[Path, int]]] = {}
    for c in cands:
        groups.setdefault(level_of[c[0]] if level_of else "", []).append(c)
    chosen = []
    for _, g in sorted(groups.items()):
        chosen += [g[i] for i in sorted(rng.choice(len(g), size=min(n, len(g)), replace=False))]
    return chosen


def _write_spawns(out: Path, full: np.ndarray, low: np.ndarray, actions: np.ndarray, attrs: dict[str, Any]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("full", data=full, chunks=(1, 1, *F.FRAME_SHAPE), compression="gzip", compression_opts=3)
        f.create_dataset("low", data=low)
        f.create_dataset("actions", data=actions.astype(np.uint8))
        f.attrs.update(
            {
                "format": "mario-kit-spawns",
                "schema_version": SPAWN_SCHEMA,
                **attrs,
                "created": datetime.now().isoformat(),
            }
        )
    return out


@dataclass
class Spawns:
    full: np.ndarray  # (S, n, 240, 256, 3)
    low: np.ndarray  # (S, n, 60, 64, 3)
    actions: np.ndarray  # (S, n)
    refs: list[dict]
    action_set: F.ActionSet
    frame_skip: int

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def levels(self) -> list[str]:
        """The stages the spawns start on, in game order."""
        return sorted({str(r.get("level")) for r in self.refs})

    def level_of(self, i: int) -> str | None:
        """The stage spawn i starts on (None where its file did not record one)."""
        level = self.refs[i].get("level")
        return str(level) if level is not None else None

    def of_level(self, level: str | None) -> "Spawns":
        """The spawns on a stage of `level` (a comma list; None: all), in file order."""
        if level is None:
            return self
        keep = [i for i, r in enumerate(self.refs) if r.get("level") in level.split(",")]
        if not keep:
            raise UserError(f"no spawn on {level}: the spawns start on {', '.join(self.levels)}")
        refs = [self.refs[i] for i in keep]
        return Spawns(self.full[keep], self.low[keep], self.actions[keep], refs, self.action_set, self.frame_skip)


def load_spawns(path: str | Path, level: str | None = None) -> Spawns:
    """A spawns file, checked; `level` keeps the spawns on those stages (a comma list)."""
    path = Path(path)
    try:
        with open_h5(path) as f:  # refuses links, external storage and virtual datasets
            if f.attrs.get("format") != "mario-kit-spawns":
                raise ValueError("no mario-kit-spawns format attribute")
            if int(f.attrs.get("schema_version", -1)) != SPAWN_SCHEMA:
                raise ValueError(
                    f"schema version {f.attrs.get('schema_version')} (this mario-kit reads {SPAWN_SCHEMA})"
                )
            aset = F.ActionSet.from_attrs(f.attrs["action_set"], f.attrs["action_buttons"])
            if aset != F.get_action_set(aset.name):
                raise ValueError(f"action_buttons differ from the {aset.name} action set")
            n = int(f.attrs["n_context"])
            full, low, acts = f["full"], f["low"], f["actions"]
            S = acts.shape[0] if acts.ndim == 2 else -1
            shapes = {
                "full": (full, (S, n, *F.FRAME_SHAPE)),
                "low": (low, (S, n, 60, 64, 3)),
                "actions": (acts, (S, n)),
            }
            for name, (ds, shape) in shapes.items():
                if ds.shape != shape or ds.dtype != np.uint8:
                    raise ValueError(f"{name} of shape {ds.shape} {ds.dtype}, expected {shape} uint8")
            refs = json.loads(f.attrs["spawns"])
            if not isinstance(refs, list) or len(refs) != S or S < 1 or not all(isinstance(r, dict) for r in refs):
                raise ValueError("the spawns attribute does not list one entry per spawn")
            a = acts[()].astype(np.int64)
            if a.max() >= len(aset.buttons):
                raise ValueError(f"action {int(a.max())} outside the {aset.name} action set")
            frame_skip = int(f.attrs["frame_skip"])
            if not 1 <= frame_skip <= 16:
                raise ValueError(f"frame_skip {frame_skip}")
            spawns = Spawns(full[()], low[()], a, refs, aset, frame_skip)
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a spawns file from `mario-kit dataset spawn` ({e})") from None
    return spawns.of_level(level)
