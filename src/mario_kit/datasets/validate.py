"""`dataset validate`: open every file and check it against the format, frames included."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import read_header, scan


@dataclass
class ValidationReport:
    good: list[Path] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    partial: list[Path] = field(default_factory=list)  # temp files of killed or running writers
    ignored: list[Path] = field(default_factory=list)  # files that are not episodes (notes, weights): every tool skips them

    @property
    def ok(self) -> bool:
        return not self.bad

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "good": len(self.good),
            "bad": [{"file": p.name, "reason": r} for p, r in self.bad],
            "partial": [p.name for p in self.partial],
            "ignored": [p.name for p in self.ignored],
        }


def validate_file(path: Path, frames: bool = True) -> str | None:
    """The reason `path` is not a valid episode, or None. `frames=False` skips decoding frames."""
    try:
        attrs = read_header(path)  # refuses external data and links; checks every attribute
    except ValueError as e:
        return str(e)
    try:
        with h5py.File(path, "r") as f:
            return check_data(f, attrs, frames)
    except OSError as e:
        return f"unreadable ({e})"


def check_data(f: h5py.File, attrs: dict, frames: bool = True) -> str | None:
    """The reason the datasets of an open episode file (which passed `read_header`: attributes checked,
    nothing read from outside it) break schema 1, or None: shapes, dtypes, action range, joypad against step frames and frame
    skip, and (with `frames`) that every frame decodes."""
    T = int(attrs["length"])
    fr = f.get(F.FRAMES)
    if not isinstance(fr, h5py.Dataset) or fr.shape != (T + 1, *F.FRAME_SHAPE) or fr.dtype != F.FRAME_DTYPE:
        return f"frames: expected ({T + 1}, 240, 256, 3) uint8, got {_describe(fr)}"
    for name, dtype in F.STEP_COLUMNS.items():
        ds = f.get(name)
        if not isinstance(ds, h5py.Dataset) or ds.shape != (T,) or ds.dtype != dtype:
            return f"{name}: expected ({T},) {np.dtype(dtype)}, got {_describe(ds)}"
    aset = F.ACTION_SETS[attrs["action_set"]]
    aj = f.get(F.ACTION_JOYPAD)
    if not isinstance(aj, h5py.Dataset) or aj.shape != (len(aset),) or not np.array_equal(aj[()], aset.joypad):
        return f"{F.ACTION_JOYPAD} differs from the {aset.name} action set's joypad bytes"
    actions = f[F.ACTIONS][()]
    if T and int(actions.max()) >= len(aset):
        return f"action index {int(actions.max())} outside the action set ({len(aset)} actions)"
    fs = int(attrs["frame_skip"])
    sf = f[F.STEP_FRAMES][()].astype(np.int64)
    if T and (sf.min() < 1 or sf.max() > fs or (sf[:-1] != fs).any()):
        return f"step_frames disagree with frame_skip {fs} (every step but the last takes {fs} frames)"
    jp = f.get(F.JOYPAD)
    if not isinstance(jp, h5py.Dataset) or jp.ndim != 1 or jp.shape[0] != int(sf.sum()):
        return "joypad length differs from the sum of step_frames"
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


def validate_dir(directory: Path, frames: bool = True, progress: bool = False) -> ValidationReport:
    from mario_kit.progress import make_progress

    files, partial, other = scan(directory)
    report = ValidationReport(partial=partial, ignored=other)
    with make_progress(enabled=progress, transient=True) as bar:
        task = bar.add_task("validating", total=len(files))
        for p in files:
            reason = validate_file(p, frames)
            (report.bad.append((p, reason)) if reason else report.good.append(p))
            bar.update(task, advance=1)
    return report
