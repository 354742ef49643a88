"""`mario-kit balance`: post-hoc balancing of an existing dataset, as per-step sampling weights.

Nothing is copied: the result is a small `.npz` file with one float32 array of weights per episode
file (the format `dataset build --weights` reads; the loader samples windows by these weights when
training with `--set weighted=true`), plus a `__meta__` entry (JSON: strategy, parameters,
histograms). Weights have mean 1 over all steps.

- class:  weight = target share / observed share of the step's action (uniform target by default),
          clipped to `max_weight`, so the weighted histogram approaches the target.
- hash:   within each scenario (the hash strategy's key, from the info columns), the dominant action's
          steps are down-weighted so that its share is at most `cap`.
- repeat: steps inside held runs (>= `min_run` steps) of the target actions are up-weighted so that
          the target actions' weighted share reaches `share` (default: uniform share per target).
- place:  weight = 1 / (steps of the step's place)^`power`, a place being a stage and an `x_bucket`-px
          span of Mario's x (`evaluate`'s by-place buckets), so that a stage's well-trodden start
          does not take most of the training samples from its far parts; no step's weight above
          `max_weight` times the mean (a place of a few steps would otherwise be sampled endlessly).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mario_kit import UserError
from mario_kit.atomic import atomic_path, check_writable
from mario_kit.balancing.base import parse_actions
from mario_kit.balancing.hash import episode_keys
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode

META = F.WEIGHTS_META


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram (counts or weights); log2(n) when n classes are even."""
    p = np.asarray(counts, float)
    p = p[p > 0] / max(p.sum(), 1e-12)
    return float(-(p * np.log2(p)).sum())


def effective_samples(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / max((w**2).sum(), 1e-12))


def balance_dataset(
    directory: str | Path, out: str | Path, strategy: str = "class", force: bool = False, **params: Any
) -> dict[str, Any]:
    ds = Dataset(directory).require_episodes()
    sets = set(ds.index["action_set"])
    if len(sets) > 1:
        raise UserError(f"{directory} mixes action sets {sorted(sets)}; balance one action set at a time")
    out = Path(out)
    if out.suffix != ".npz":
        raise UserError("--out must name a .npz file")
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to overwrite")
    check_writable(out)
    eps = []
    for p in ds.paths:
        with Episode(p) as ep:
            eps.append(
                (
                    p.name,
                    ep.actions.astype(np.int64),
                    {k: ep.info[k] for k in ("world", "stage", "x_pos", "y_pos", "status")},
                )
            )
    aset = F.get_action_set(sets.pop())
    n = len(aset)
    acts = np.concatenate([a for _, a, _ in eps]) if eps else np.zeros(0, np.int64)
    if strategy == "class":
        w = _class(acts, n, **params)
    elif strategy == "hash":
        w = _hash(eps, n, **params)
    elif strategy == "repeat":
        w = _repeat(eps, aset, **params)
    elif strategy == "place":
        w = _place(eps, **params)
    else:
        raise UserError(f"unknown strategy {strategy!r}; choose class, hash, repeat or place")
    w = (w / w.mean()).astype(np.float32) if len(w) else w.astype(np.float32)
    before = np.bincount(acts, minlength=n).astype(float)
    after = np.bincount(acts, weights=w, minlength=n)
    report = {
        "strategy": strategy,
        "params": params,
        "steps": int(len(acts)),
        "before": {aset.meaning(i): round(float(before[i] / max(before.sum(), 1)), 4) for i in range(n)},
        "after": {aset.meaning(i): round(float(after[i] / max(after.sum(), 1)), 4) for i in range(n)},
        "entropy_bits_before": round(entropy_bits(before), 3),
        "entropy_bits_after": round(entropy_bits(after), 3),
        "effective_samples": round(effective_samples(w), 1),
    }
    if strategy == "place":
        report["places"] = place_shares(eps, w, int(params.get("x_bucket", F.PLACE_PX)))
    arrays, pos = {}, 0
    for name, a, _ in eps:
        arrays[name] = w[pos : pos + len(a)]
        pos += len(a)
    save_weights(out, arrays, {name: a for name, a, _ in eps}, report)
    return report


def save_weights(
    out: Path, weights: dict[str, np.ndarray], actions: dict[str, np.ndarray], report: dict[str, Any] | None = None
) -> None:
    """Write a weights file `dataset build --weights` reads: a float32 array per episode file name and
    the `__meta__` JSON (`report`, plus each episode's length and actions digest, which tie the file
    to the episodes it was computed for: build refuses it for others). Atomic."""
    meta = {**(report or {}), "episodes": {k: [len(actions[k]), F.actions_digest(actions[k])] for k in weights}}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".npz") as tmp:
        arrays: dict[str, Any] = {k: np.asarray(w, np.float32) for k, w in weights.items()}
        arrays[META] = np.array(json.dumps(meta))
        np.savez(tmp, **arrays)


def _class(acts: np.ndarray, n: int, target: list[float] | None = None, max_weight: float = 10.0) -> np.ndarray:
    t = np.asarray(target if target is not None else np.full(n, 1 / n), float)
    if t.shape != (n,) or t.min() < 0 or not np.isclose(t.sum(), 1):
        raise UserError(f"class: target must be {n} non-negative shares summing to 1")
    if max_weight <= 0:
        raise UserError("class: max_weight must be > 0")
    share = np.bincount(acts, minlength=n) / max(len(acts), 1)
    per_action = np.where(share > 0, t / np.maximum(share, 1e-12), 0.0)
    per_action = np.minimum(per_action, max_weight * per_action[share > 0].min() if (share > 0).any() else 1)
    return per_action[acts]


def _hash(
    eps, n: int, cap: float = 0.5, components: str = "level,x,y,status", x_bucket: int = 32, y_bucket: int = 32
) -> np.ndarray:
    if not 0 < cap < 1:
        raise UserError("hash: cap must be in (0, 1)")
    comps = tuple(c.strip() for c in components.split(","))
    if "screen" in comps:
        raise UserError("hash: the post-hoc key uses the info columns only (no 'screen' component)")
    keys = np.asarray([k for _, _, info in eps for k in episode_keys(info, comps, x_bucket, y_bucket)], dtype=np.uint64)
    acts = np.concatenate([a for _, a, _ in eps])
    w = np.ones(len(acts))
    order = np.lexsort((acts, keys))
    uk, start = np.unique(keys[order], return_index=True)
    for s, e in zip(start, list(start[1:]) + [len(order)]):
        idx = order[s:e]
        c = np.bincount(acts[idx], minlength=n)
        d = int(c.argmax())
        N, cd = c.sum(), c[d]
        if cd / N > cap and N > cd:
            w[idx[acts[idx] == d]] = cap * (N - cd) / ((1 - cap) * cd)
    return w


def _place_keys(eps, x_bucket: int) -> np.ndarray:
    """Each step's place as one integer: (world, stage, x // x_bucket)."""
    return np.concatenate(
        [
            (np.asarray(i["world"], np.int64) * 16 + np.asarray(i["stage"], np.int64)) << 20
            | np.asarray(i["x_pos"], np.int64) // x_bucket
            for _, _, i in eps
        ]
    )


def _place(eps, x_bucket: int = F.PLACE_PX, power: float = 1.0, max_weight: float = 10.0) -> np.ndarray:
    if not isinstance(x_bucket, int) or x_bucket < 1:
        raise UserError("place: x_bucket must be a whole number of pixels >= 1")
    if not 0 <= power <= 1 or max_weight < 1:
        raise UserError("place: power must be in [0, 1] and max_weight >= 1")
    _, inverse, counts = np.unique(_place_keys(eps, x_bucket), return_inverse=True, return_counts=True)
    w = counts[inverse].astype(float) ** -power
    for _ in range(50):  # no step above max_weight times the mean: a rare place's few frames not repeated endlessly
        w = w / w.mean() if len(w) else w
        if not len(w) or w.max() <= max_weight * (1 + 1e-6):
            break
        w = np.minimum(w, max_weight)
    return w


def place_shares(eps, w: np.ndarray, x_bucket: int) -> list[dict[str, Any]]:
    """Per place (stage, x from): its steps and its share of the steps before and after weighting."""
    keys = _place_keys(eps, x_bucket)
    uk, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    after = np.bincount(inverse, weights=w, minlength=len(uk))
    return [
        {
            "level": f"{k >> 20 >> 4}-{(k >> 20) & 15}",
            "x_from": int(k & ((1 << 20) - 1)) * x_bucket,
            "steps": int(c),
            "before": round(float(c / max(len(keys), 1)), 4),
            "after": round(float(a / max(w.sum(), 1e-12)), 4),
        }
        for k, c, a in zip(uk.tolist(), counts, after)
    ]


def _repeat(eps, aset, target: str | list = "NOOP", min_run: int = 4, share: float | None = None) -> np.ndarray:
    targets = parse_actions(target, aset)
    share = share if share is not None else len(targets) / len(aset)
    if not 0 < share < 1 or min_run < 1:
        raise UserError("repeat: share must be in (0, 1) and min_run >= 1")
    acts = np.concatenate([a for _, a, _ in eps])
    in_run = np.zeros(len(acts), bool)
    pos = 0
    for _, a, _ in eps:
        i = 0
        while i < len(a):
            j = i
            while j < len(a) and a[j] == a[i]:
                j += 1
            if a[i] in targets and j - i >= min_run:
                in_run[pos + i : pos + j] = True
            i = j
        pos += len(a)
    w = np.ones(len(acts))
    is_t = np.isin(acts, targets)
    cur = is_t.sum() / max(len(acts), 1)
    runs = in_run.sum()
    if runs and cur < share:
        # boost b on run steps so that (T + (b - 1) R) / (N + (b - 1) R) = share
        N, T, R = len(acts), is_t.sum(), runs
        b = 1 + (share * N - T) / ((1 - share) * R)
        w[in_run] = b
    return w
