"""Readers of files a user may have been handed: each one reads only inside the file it was given.

HDF5 can make a dataset's bytes come from another file (external storage, virtual datasets) or
link to one (external links); a shared episode could then pull any local file into an export or
a store. zarr metadata names codecs, and some (numcodecs' pickle) unpickle. So every HDF5 file is
opened through `open_h5`, which refuses those constructs before any data is read, and every store
goes through `check_zarr_store`. docs/FORMAT.md ("Trust") lists what each reader accepts.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from mario_kit import UserError

# zarr v3 codecs a store may name: zarr's own, all of which only transform bytes.
ZARR_CODECS = {"bytes", "zstd", "blosc", "gzip", "crc32c", "transpose", "sharding_indexed", "vlen-utf8", "vlen-bytes"}


def h5_problems(f) -> list[str]:
    """Why `f` (an open h5py File) reads outside itself: external, soft or user-defined links,
    external raw storage, virtual datasets. Visits links without following them."""
    import h5py

    found: list[str] = []

    def visit(name: str, link) -> None:
        if isinstance(link, h5py.ExternalLink):
            found.append(f"{name} is an external link to {link.filename}")
        elif isinstance(link, h5py.SoftLink):
            found.append(f"{name} is a soft link")
        elif not isinstance(link, h5py.HardLink):
            found.append(f"{name} is a user-defined link")
        else:
            obj = f.get(name, getlink=False)
            if isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    found.append(f"{name} is a virtual dataset")
                elif obj.external:
                    found.append(f"{name} keeps its data in external files")

    f.visititems_links(visit)
    return found


def regular_file_problem(path: Path) -> str | None:
    """Why `path` is not a regular file of its own: a symbolic link (it may point out of the dataset,
    or anywhere), a FIFO or device (reading one can hang), a folder, nothing."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return f"no file at {path}"
    if stat.S_ISLNK(mode):
        return f"{path} is a symbolic link (mario-kit reads regular files only, never what a link points to)"
    if stat.S_ISDIR(mode):
        return f"{path} is a folder, not an HDF5 file"
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file (a FIFO, socket or device)"
    return None


def open_h5(path: str | Path, mode: str = "r"):
    """h5py.File(path, mode), refused (UserError) unless it is a regular file (no symlink, no FIFO)
    and nothing in it reads outside the file."""
    import h5py

    path = Path(path)
    problem = regular_file_problem(path)
    if problem:
        raise UserError(problem)
    try:
        f = h5py.File(path, mode)
    except OSError as e:
        why = re.sub(r"\s*\((file read failed|errno).*", "", str(e), flags=re.S)  # no buffer addresses
        raise UserError(f"{path} is not a readable HDF5 file ({why.strip()})") from None
    try:
        problems = h5_problems(f)
    except Exception as e:  # noqa: BLE001  (a damaged object table)
        f.close()
        raise UserError(f"{path}: cannot list its objects ({type(e).__name__}: {e})") from None
    if problems:
        f.close()
        raise UserError(f"{path}: refused, it reads outside itself: {problems[0]}")
    return f


_checked_stores: set[tuple[str, int]] = set()


def check_zarr_store(store: str | Path) -> None:
    """Refuse a store that links outside itself (symlinks), uses zarr v2 metadata, or names a
    codec other than zarr's own byte codecs (numcodecs' pickle codec would unpickle chunks).
    One pass of os.scandir (no stat a file: a full-res store has a chunk file a frame), once per
    process for a store whose root metadata has not changed since."""
    store = Path(store)
    if store.is_symlink():
        raise UserError(f"{store}: refused, a store may not be a symbolic link")
    key = (str(store.resolve()), (store / "zarr.json").stat().st_mtime_ns if (store / "zarr.json").exists() else 0)
    if key in _checked_stores:
        return
    todo = [store]
    while todo:
        d = todo.pop()
        with os.scandir(d) as it:
            for e in it:
                rel = Path(e.path).relative_to(store)
                if e.is_symlink():
                    raise UserError(f"{store}: refused, it holds a symbolic link ({rel})")
                if e.name in (".zarray", ".zgroup", ".zattrs", ".zmetadata"):
                    raise UserError(f"{store}: refused, zarr v2 metadata ({rel}); stores are zarr v3")
                if e.is_dir(follow_symlinks=False):
                    todo.append(Path(e.path))
                elif e.name == "zarr.json":
                    try:
                        why = _metadata_problem(read_json(e.path, max_bytes=64 << 20))
                    except RecursionError:
                        why = "is nested too deep"
                    if why:
                        raise UserError(f"{store}: refused, {rel} {why}")
    _checked_stores.add(key)


def _metadata_problem(meta: Any) -> str | None:
    """Why a zarr.json is refused: a codec other than zarr's own byte codecs, or zarr v2 metadata,
    anywhere in it (consolidated metadata nests every array's metadata in the root document, and zarr
    reads it from there: a v2 array with a pickle compressor can hide in it)."""
    if isinstance(meta, list):
        return next((w for m in meta if (w := _metadata_problem(m))), None)
    if not isinstance(meta, dict):
        return None
    if meta.get("zarr_format", 3) != 3 or "compressor" in meta or "filters" in meta:
        return "holds zarr v2 metadata (a compressor or filters); stores are zarr v3"
    for codec in _codec_names(meta.get("codecs", [])):
        if codec not in ZARR_CODECS:
            return f"names codec {codec!r} (accepted: {', '.join(sorted(ZARR_CODECS))})"
    return next((w for k, v in meta.items() if k != "attributes" and (w := _metadata_problem(v))), None)


def _codec_names(codecs: Any) -> list[str]:
    out: list[str] = []
    for c in codecs if isinstance(codecs, list) else [codecs]:
        name = c.get("name") if isinstance(c, dict) else c
        out.append(str(name))
        if isinstance(c, dict) and isinstance(c.get("configuration"), dict):
            for key in ("codecs", "index_codecs"):  # sharding nests codecs
                out += _codec_names(c["configuration"].get(key, []))
    return out


def read_json(path: str | Path, max_bytes: int = 16 << 20, what: str = "JSON file") -> Any:
    """Parse a JSON file a user gave us: size-capped, one-line errors."""
    path = Path(path)
    try:
        if path.stat().st_size > max_bytes:
            raise UserError(f"{path}: {what} larger than {max_bytes >> 20} MiB")
        return json.loads(path.read_bytes())
    except OSError as e:
        raise UserError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise UserError(f"{path} is not a valid {what} ({type(e).__name__}: {e})") from None
