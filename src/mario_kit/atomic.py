"""Atomic file writes: write a temporary file beside the target, fsync it, rename it over the
target, fsync the folder. A reader sees the old file or the new one, never a part."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mario_kit import UserError


# Writers stop while the disk still has this much room (bytes): HDF5 or zarr left to hit ENOSPC can
# crash the process (a segfault was seen) or leave files they cannot close. MARIO_KIT_MIN_FREE
# changes it (a test on a disk it cannot fill).
MIN_FREE = int(os.environ.get("MARIO_KIT_MIN_FREE", 4 << 20))


class DiskFull(UserError, OSError):
    """A writer's disk is (nearly) full: one line for the CLI, an OSError for callers."""


def ensure_space(folder: str | Path, need: int = 0, consequence: str = "nothing was written") -> None:
    """Raise DiskFull unless `folder`'s disk keeps MIN_FREE bytes free after `need` more: the one
    free-space guard of every writer (episodes, exports, stores), called before and while writing."""
    anc = Path(folder).absolute()
    while not anc.exists():
        anc = anc.parent
    st = os.statvfs(anc)
    free = st.f_bavail * st.f_frsize
    if free - need < MIN_FREE:
        asked = f", about {need >> 20} MiB more needed" if need >= 1 << 20 else ""
        raise DiskFull(
            f"disk full: {free >> 10} KiB free in {folder}{asked} (mario-kit stops at {MIN_FREE >> 20} MiB "
            f"free); {consequence}"
        )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, path: Path) -> None:
    """fsync `tmp` and rename it to `path`."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on error it is removed.
    `suffix` keeps an extension that a writer insists on (np.savez adds `.npz`)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        yield tmp
        commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path: str | Path) -> None:
    """Raise UserError unless `path` can be created or replaced: the nearest existing folder on its
    way is a folder and takes a file (probed: permissions, read-only mounts and immutable folders
    alike). Called before a command does its work, so that a bad output path costs nothing."""
    from mario_kit import UserError

    path = Path(path).absolute()
    if path.is_dir():
        anc = path
    else:
        anc = path.parent
        while not anc.exists():
            anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"cannot write {path}: {anc} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=anc, prefix=".mario-kit-write-test-"):
            pass
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e} in {anc}") from None


@contextmanager
def output_dir(path: str | Path) -> Iterator[Path]:
    """Create the output folder `path` (checked first); if the block fails, remove the folders it
    created, so that a failed command leaves nothing half-written behind. A folder that existed
    before is kept (its files are written atomically, one by one)."""
    path = Path(path)
    check_writable(path)
    top = path
    while not top.parent.exists():
        top = top.parent
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if created:
            shutil.rmtree(top, ignore_errors=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj: Any, sort_keys: bool = False) -> None:
    """`obj` as indented JSON, atomically (configs, summaries, reports, split files)."""
    write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=sort_keys))
