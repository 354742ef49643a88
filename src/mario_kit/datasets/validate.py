"""`dataset validate`: open every file and check it against the format, frames included."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import read_header, scan

_STEP_COLUMNS = {
    F.ACTIONS: np.uint8, F.REWARDS: np.float32, F.TERMINATED: np.bool_, F.TRUNCATED: np.bool_,
    F.STEP_FRAMES: np.uint8,
}


@dataclass
class ValidationReport:
    good: list[Path] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    partial: list[Path] = field(default_factory=list)  # temp files of killed or running writers

    @property
    def ok(self) -> bool:
        return not self.bad

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "good": len(self.good),
            "bad": [{"file": p.name, "reason": r} for p, r in self.bad],
            "partial": [p.name for p in self.partial],
        }


def validate_file(path: Path, frames: bool = True) -> str | None:
    """The reason `path` is not a valid episode, or None. `frames=False` skips decoding frames."""
    try:
        attrs = read_header(path)
    except ValueError as e:
        return str(e)
    missing = [k for k in F.REQUIRED_ATTRS if k not in attrs]
    if missing:
        return f"missing attributes: {', '.join(missing)}"
    if int(attrs["schema_version"]) != F.SCHEMA_VERSION:
        return f"schema version {attrs['schema_version']} (this mario-kit reads {F.SCHEMA_VERSION})"
    if attrs["end"] not in F.END_REASONS:
        return f"unknown end reason {attrs['end']!r}"
    T = int(attrs["length"])
    try:
        with h5py.File(path, "r") as f:
            fr = f.get(F.FRAMES)
            if fr is None or fr.shape != (T + 1, *F.FRAME_SHAPE) or fr.dtype != F.FRAME_DTYPE:
                return f"frames: expected ({T + 1}, 240, 256, 3) uint8, got {None if fr is None else (fr.shape, str(fr.dtype))}"
            for name, dtype in _STEP_COLUMNS.items():
                ds = f.get(name)
                if ds is None or ds.shape != (T,) or ds.dtype != dtype:
                    return f"{name}: expected ({T},) {np.dtype(dtype)}, got {None if ds is None else (ds.shape, str(ds.dtype))}"
            for name, dtype in F.INFO_COLUMNS.items():
                ds = f.get(f"{F.INFO_GROUP}/{name}")
                if ds is None or ds.shape != (T,) or ds.dtype != dtype:
                    return f"info/{name}: expected ({T},) {dtype}"
            n_actions = len(json.loads(attrs["action_buttons"]))
            actions = f[F.ACTIONS][()]
            if T and int(actions.max()) >= n_actions:
                return f"action index {int(actions.max())} outside the action set ({n_actions} actions)"
            if f[F.JOYPAD].shape[0] != int(f[F.STEP_FRAMES][()].sum()):
                return "joypad length differs from the sum of step_frames"
            if frames:
                buf = np.empty((64, *F.FRAME_SHAPE), np.uint8)
                for start in range(0, T + 1, 64):
                    n = min(64, T + 1 - start)
                    try:
                        fr.read_direct(buf, np.s_[start : start + n], np.s_[:n])
                    except Exception as e:  # noqa: BLE001
                        return f"frames {start}..{start + n - 1} do not decode ({type(e).__name__})"
    except OSError as e:
        return f"unreadable ({e})"
    return None


def validate_dir(directory: Path, frames: bool = True, progress: bool = False) -> ValidationReport:
    from mario_kit.progress import make_progress

    files, partial, other = scan(directory)
    report = ValidationReport(partial=partial)
    for p in other:
        report.bad.append((p, "not an episode file"))
    with make_progress(enabled=progress, transient=True) as bar:
        task = bar.add_task("validating", total=len(files))
        for p in files:
            reason = validate_file(p, frames)
            (report.bad.append((p, reason)) if reason else report.good.append(p))
            bar.update(task, advance=1)
    return report
