"""A dataset is a folder of episode files. `Dataset` indexes it as a pandas DataFrame, one row per
episode, from attributes and small columns only (no frame is decoded)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from mario_kit import UserError
from mario_kit.trust import h5_problems, regular_file_problem
from mario_kit.datasets import format as F
from mario_kit.datasets.episode import Episode
from mario_kit.emulator import X_WRAPPED

SIDE_PREFIX = "mario-kit."  # side files mario-kit keeps beside the episodes (splits, tables, ...)
# Files people and mario-kit keep beside episodes (weights from `balance`, notes, split lists): a
# collection may add to a folder that holds them. Any other non-episode file makes `collect` refuse
# the folder (it is probably not a dataset); every reader skips such files and `validate` lists them.
COMPANION_SUFFIXES = (".npz", ".txt", ".md", ".json", ".csv")


def scan(directory: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(episode candidates *.h5, partial files, other files) in `directory`, sorted by name.
    Hidden files, folders and mario-kit side files are not listed."""
    episodes, partial, other = [], [], []
    for p in sorted(directory.iterdir()):
        if p.name.startswith(".") or p.name.startswith(SIDE_PREFIX) or not p.is_file():
            continue
        if p.name.endswith(F.PARTIAL_SUFFIX):
            partial.append(p)
        elif p.suffix in (".h5", ".hdf5"):
            episodes.append(p)
        else:
            other.append(p)
    return episodes, partial, other


def read_header(path: Path) -> dict:
    """The attributes of an episode file; raises ValueError for a file that is not one (a symlink or a
    FIFO is not one: nothing is followed or opened)."""
    problem = regular_file_problem(path)
    if problem:
        raise ValueError(problem)
    try:
        with h5py.File(path, "r") as f:
            problems = h5_problems(f)
            if problems:
                raise ValueError(f"refused: it reads outside itself ({problems[0]})")
            return F.header(f.attrs)
    except OSError as e:
        raise ValueError(f"not a readable HDF5 file ({e.__class__.__name__})") from None


def check_output_dir(out: Path, action_set: str, frame_skip: int) -> None:
    """Make sure `out` can take new episodes of this action set and frame skip, or raise UserError.
    Nothing on disk is changed except creating the folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UserError(f"cannot write into {out}: {e.strerror or e}") from None
    episodes, _, other = scan(out)
    other = [p for p in other if p.suffix.lower() not in COMPANION_SUFFIXES]
    if other:
        names = ", ".join(p.name for p in other[:3]) + (" ..." if len(other) > 3 else "")
        raise UserError(f"{out} holds files that are not episodes ({names}); use an empty or episode-only folder")
    for p in episodes:
        try:
            h = read_header(p)
        except ValueError as e:
            raise UserError(f"{p} is {e}; refusing to write into {out}") from None
        if h.get("action_set") != action_set or int(h.get("frame_skip", -1)) != frame_skip:
            raise UserError(
                f"{out} holds episodes with action set {h.get('action_set')!r} and frame skip "
                f"{h.get('frame_skip')}; this collection uses {action_set!r} and {frame_skip}: use another folder"
            )


INDEX_COLUMNS = [
    "file",
    "length",
    "frames",
    "bytes",
    "source",
    "player",
    "level",
    "action_set",
    "frame_skip",
    "end",
    "return",
    "max_x",
    "seed",
    "created",
    "env_id",
    "schema_version",
]


class Dataset:
    """Index of the episodes in a folder. `index` is a DataFrame with INDEX_COLUMNS;
    `skipped` lists (path, reason) for files that could not be indexed."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise UserError(f"{self.dir} is not a folder")
        files, self.partial, self.other = scan(self.dir)
        rows, self.skipped = [], []
        for p in files:
            try:
                rows.append(self._row(p))
            except (ValueError, OSError, KeyError) as e:
                self.skipped.append((p, str(e)))
        self.index = pd.DataFrame(rows, columns=INDEX_COLUMNS)

    @staticmethod
    def _row(path: Path) -> dict:
        read_header(path)
        with Episode(path) as ep:
            a = ep.attrs
            x = ep.info.get("x_pos", np.zeros(1))
            x = x[x < X_WRAPPED]  # a castle maze's loop, a frame at page -1: no place
            return {
                "file": path.name,
                "length": int(a["length"]),
                "frames": int(a["length"]) + 1,
                "bytes": path.stat().st_size,
                "source": a["source"],
                "player": a.get("player", ""),
                "level": a["level"],
                "action_set": a["action_set"],
                "frame_skip": int(a["frame_skip"]),
                "end": a["end"],
                "return": float(ep.rewards.sum()),
                "max_x": int(x.max()) if len(x) else 0,
                "seed": int(a["seed"]),
                "created": a["created"],
                "env_id": a["env_id"],
                "schema_version": int(a["schema_version"]),
            }

    def __len__(self) -> int:
        return len(self.index)

    @property
    def paths(self) -> list[Path]:
        return [self.dir / f for f in self.index["file"]]

    def require_episodes(self, valid: bool = True) -> Dataset:
        """This dataset, refused (UserError) when it holds no episodes, or (`valid`) when a file in it
        is not a valid episode: a command that writes something from a dataset does not leave a file
        out silently. `valid=False` for the commands that report on what they skip (info, report)."""
        if valid and self.skipped:
            p, why = self.skipped[0]
            raise UserError(f"{p} is not a valid episode ({why}); run `mario-kit dataset validate {self.dir}`")
        if len(self) == 0:
            raise UserError(f"{self.dir} holds no episodes")
        return self

    def episodes(self):
        """Yield each episode opened (and closed after use)."""
        for p in self.paths:
            with Episode(p) as ep:
                yield ep
