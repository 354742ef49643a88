"""Dataset statistics: every figure that `dataset info` and `report` print comes from here."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from mario_kit.datasets.dataset import Dataset


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
