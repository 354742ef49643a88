"""`dataset validate`: open every file and check it against the format, frames included."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py

from mario_kit.datasets.dataset import read_header, scan
from mario_kit.datasets.episode import check_data


@dataclass
class ValidationReport:
    good: list[Path] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    partial: list[Path] = field(default_factory=list)  # temp files of killed or running writers
    ignored: list[Path] = field(
        default_factory=list
    )  # files that are not episodes (notes, weights): every tool skips them

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
