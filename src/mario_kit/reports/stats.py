"""Dataset statistics: every figure that `dataset info` and `report` show comes from here.

Column figures (counts, actions, lengths, returns, coverage, scenario keys) read only the episode
files' small columns. Frame figures (duplicate-frame rate, sample frames) stream frames, optionally
from a sample of episodes (`sample`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xxhash

from mario_kit.balancing.offline import entropy_bits
from mario_kit.datasets.dataset import SIDE_PREFIX, Dataset
from mario_kit.emulator import X_WRAPPED

X_BIN = 64  # px per coverage bin
EDGE_PX = 24  # Mario this close to the screen's left edge (pixels of info/left_x_pos) counts as at the edge


def summary(ds: Dataset) -> dict[str, Any]:
    """Totals and per-category counts, from attributes and the actions column (no frames decoded)."""
    idx = ds.index
    frames = int(idx["frames"].sum())
    bytes_ = int(idx["bytes"].sum())
    action_counts: dict[str, Counter] = {}
    for ep in ds.episodes():
        aset = ep.action_set
        counts = np.bincount(ep.actions, minlength=len(aset))
        c = action_counts.setdefault(aset.name, Counter({aset.meaning(i): 0 for i in range(len(aset))}))
        for i, n in enumerate(counts):
            c[aset.meaning(i)] += int(n)
    return {
        "folder": str(ds.dir),
        "episodes": len(idx),
        "steps": int(idx["length"].sum()),
        "frames": frames,
        "bytes": bytes_,
        "bytes_per_frame": round(bytes_ / frames, 1) if frames else 0.0,
        "sources": _counts(idx, "source"),
        "players": _counts(idx, "player"),
        "levels": _counts(idx, "level"),
        "action_sets": _counts(idx, "action_set"),
        "frame_skips": {str(k): v for k, v in _counts(idx, "frame_skip").items()},
        "ends": _counts(idx, "end"),
        "action_counts": {k: dict(v) for k, v in action_counts.items()},
        "partial_files": [p.name for p in ds.partial],
        "skipped_files": [{"file": p.name, "reason": r} for p, r in ds.skipped],
    }


def _counts(idx, col: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in idx[col].value_counts().sort_index().items()}


def _quantiles(v: np.ndarray) -> dict[str, float]:
    if len(v) == 0:
        return {}
    q = np.quantile(v, [0, 0.25, 0.5, 0.75, 1])
    return {
        "mean": round(float(np.mean(v)), 3),
        "min": float(q[0]),
        "p25": float(q[1]),
        "median": float(q[2]),
        "p75": float(q[3]),
        "max": float(q[4]),
    }


@dataclass
class _Tally:
    """What one pass over the episodes gathers for the figures."""

    names: list[str] = field(default_factory=list)
    per_source: dict[str, np.ndarray] = field(default_factory=dict)
    per_level: dict[str, np.ndarray] = field(default_factory=dict)
    actions: list[np.ndarray] = field(default_factory=list)
    runs: list[np.ndarray] = field(default_factory=list)
    keys: list = field(default_factory=list)
    coverage: dict[str, dict[int, int]] = field(default_factory=dict)
    death_x: dict[str, dict[int, int]] = field(default_factory=dict)
    edge: dict[str, list[int]] = field(default_factory=dict)  # per stage: [at the left edge, with left_x_pos]
    ending: dict[str, int] = field(default_factory=dict)  # per stage: steps recorded after a death or the flag
    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)

    def add(self, ep, row) -> None:
        from mario_kit.balancing.hash import episode_keys

        aset = ep.action_set
        self.names = [aset.meaning(i) for i in range(len(aset))]
        a = ep.actions.astype(np.int64)
        c = np.bincount(a, minlength=len(aset))
        self.per_source[row.source] = self.per_source.get(row.source, 0) + c
        self.per_level[row.level] = self.per_level.get(row.level, 0) + c
        self.actions.append(a)
        if len(a):
            change = np.flatnonzero(np.diff(a)) + 1
            self.runs.append(np.diff(np.r_[0, change, len(a)]))
        info = ep.info
        x = info["x_pos"].astype(np.int64)
        cov = self.coverage.setdefault(row.level, {})
        for b, n in zip(*np.unique(x[x < X_WRAPPED] // X_BIN, return_counts=True)):
            cov[int(b) * X_BIN] = cov.get(int(b) * X_BIN, 0) + int(n)
        if row.end == "terminated" and len(x):
            dx = self.death_x.setdefault(row.level, {})
            b = int(x[ep.played_steps - 1] // X_BIN) * X_BIN
            dx[b] = dx.get(b, 0) + 1
        self.ending[row.level] = self.ending.get(row.level, 0) + ep.ending_steps
        if "left_x_pos" in info:  # files from before it was recorded lack it
            e = self.edge.setdefault(row.level, [0, 0])
            e[0] += int((info["left_x_pos"] < EDGE_PX).sum())
            e[1] += len(x)
        self.keys += episode_keys(info)
        self.returns.append(float(ep.rewards.sum()))
        self.lengths.append(len(a))

    def action_figures(self) -> dict[str, Any]:
        names, n = self.names, len(self.names)
        acts = np.concatenate(self.actions) if self.actions else np.zeros(0, np.int64)
        counts = np.bincount(acts, minlength=n)
        trans = np.zeros((n, n), np.int64)
        for a in self.actions:
            if len(a) > 1:
                np.add.at(trans, (a[:-1], a[1:]), 1)
        run_all = np.concatenate(self.runs) if self.runs else np.zeros(0)
        return {
            "action_names": names,
            "action_histogram": {names[i]: int(counts[i]) for i in range(n)},
            "action_shares": {names[i]: round(float(counts[i] / max(int(counts.sum()), 1)), 4) for i in range(n)},
            "action_entropy_bits": round(entropy_bits(counts), 4),
            "rarest_action": names[int(counts.argmin())] if n else "",
            "rarest_action_share": round(float(counts.min() / max(int(counts.sum()), 1)), 4) if n else 0.0,
            "actions_by_source": {k: v.tolist() for k, v in self.per_source.items()},
            "actions_by_level": {k: v.tolist() for k, v in self.per_level.items()},
            "transitions": trans.tolist(),
            "run_length": _quantiles(run_all),
            "run_length_histogram": {
                str(k): int(v) for k, v in zip(*np.unique(np.minimum(run_all, 30).astype(int), return_counts=True))
            },
        }


def dataset_stats(
    ds: Dataset, frames: bool = True, sample: int | None = None, seed: int = 0, progress=None
) -> dict[str, Any]:
    """Every figure of the report for one dataset (see docs/REPORTS.md for the list)."""
    from mario_kit.datasets.split import read_split

    s = summary(ds.require_episodes(valid=False))
    idx = ds.index
    s["hours_of_play"] = round(float((idx["length"] * idx["frame_skip"]).sum()) / 60 / 3600, 4)
    t = _Tally()
    for ep, row in zip(ds.episodes(), idx.itertuples()):
        t.add(ep, row)
    s["frame_skip"] = int(idx["frame_skip"].iloc[0])
    s.update(t.action_figures())
    s.update(
        {
            "episode_length": _quantiles(np.array(t.lengths)),
            "episode_return": _quantiles(np.array(t.returns)),
            "episode_lengths": t.lengths,
            "coverage_x": {lv: dict(sorted(c.items())) for lv, c in t.coverage.items()},
            "death_x": {lv: dict(sorted(c.items())) for lv, c in t.death_x.items()},
            "max_x": {lv: int(idx[idx["level"] == lv]["max_x"].max()) for lv in t.coverage},
            "stages": _stage_coverage(idx, t),
            "scenario_keys": len(set(t.keys)),
            "steps_per_scenario_key": round(len(t.keys) / max(len(set(t.keys)), 1), 2),
        }
    )
    split = read_split(ds.dir)
    if split:
        s["split"] = dict(Counter(split.get(f, "train") for f in idx["file"]))
    weights = sorted(p for p in ds.dir.glob("*.npz") if not p.name.startswith(SIDE_PREFIX))  # not the hash table
    if weights:
        s["weights_files"] = [w.name for w in weights]
    if frames:
        s.update(_frame_stats(ds, sample, seed, progress))
    return s


def _stage_coverage(idx: Any, t: _Tally) -> dict[str, dict[str, Any]]:
    """Per stage: how much of it the data shows (episodes, frames, the farthest x, the x that half and
    nine tenths of the frames lie before, the share of steps with Mario at the screen's left edge),
    how its episodes ended (deaths, flags) and how many steps show the ending after them."""
    out = {}
    for lv, cov in t.coverage.items():
        rows = idx[idx["level"] == lv]
        bins = np.array(sorted(cov))
        cum = np.cumsum([cov[b] for b in bins]) / max(sum(cov.values()), 1)

        def below(q: float, bins: np.ndarray = bins, cum: np.ndarray = cum) -> int:
            return int(bins[int(np.searchsorted(cum, q))] + X_BIN) if len(bins) else 0

        edge = t.edge.get(lv)
        out[lv] = {"episodes": len(rows), "frames": int((rows["length"] + 1).sum()), "max_x": int(rows["max_x"].max()),
                   "x_half_of_frames": below(0.5), "x_nine_tenths_of_frames": below(0.9),
                   "left_edge_share": round(edge[0] / edge[1], 4) if edge and edge[1] else None,
                   "deaths": int((rows["end"] == "terminated").sum()), "flags": int((rows["end"] == "flag").sum()),
                   "ending_steps": t.ending.get(lv, 0)}  # fmt: skip
    return dict(sorted(out.items()))


def _frame_stats(ds: Dataset, sample: int | None, seed: int, progress) -> dict[str, Any]:
    paths = ds.paths
    if sample is not None and sample < len(paths):
        rng = np.random.default_rng(seed)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), sample, replace=False))]
    from mario_kit.datasets.episode import Episode

    pairs = dups = 0
    strip: list[np.ndarray] = []
    captions: list[str] = []
    for p in paths:
        with Episode(p) as ep:
            prev = None
            for i in range(0, ep.frames.shape[0], 256):
                block = ep.read_frames(i, i + 256)
                for f in block:
                    h = xxhash.xxh3_64_intdigest(f.tobytes())
                    if prev is not None:
                        pairs += 1
                        dups += h == prev
                    prev = h
                if progress:
                    progress(len(block))
            if len(strip) < 8:
                t = ep.length // 2
                strip.append(ep.read_frames(t, t + 1)[0])
                captions.append(f"{ep.attrs['source']} {ep.attrs['level']}\nstep {t} of {ep.length}")
    return {
        "frames_scanned": pairs + len(paths),
        "episodes_scanned": len(paths),
        "duplicate_frame_rate": round(dups / max(pairs, 1), 4),
        "_sample_frames": strip,
        "_sample_captions": captions,
    }
