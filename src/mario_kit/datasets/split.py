"""Train/test split by episode, stored in the dataset as `mario-kit.split.json`.

Deterministic for a seed: episodes are ranked by xxh3_64 of the seed and the episode's play (its
stage, its way from reset and its joypad bytes, which rebuild it in the emulator), then by file name,
so that the same seed splits a re-collection of the same episodes the same way, whatever their files
are called. Within each stratum (optionally source and/or level), the first round(p * n) not yet
assigned episodes in that order go to test until the stratum's test share reaches p; the rest go to
train. With p > 0 and two or more episodes, at least one goes to test (15 % of 3 episodes rounds to
none, and training then has no test loss). Existing assignments are never changed (unless `--reset`),
so adding episodes later keeps them: only new ones are assigned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xxhash

from mario_kit import UserError
from mario_kit.atomic import check_writable, write_json_atomic, write_text_atomic
from mario_kit.trust import read_json
from mario_kit.datasets.dataset import SIDE_PREFIX, Dataset
from mario_kit.datasets.episode import Episode

SPLIT_FILE = SIDE_PREFIX + "split.json"
SPLIT_SCHEMA = 1
STRATA = ("source", "level")


def sample_indices(n: int, k: int | None, seed: int) -> np.ndarray:
    """Indices (sorted) of `k` of `n` items drawn with `seed`; all of them if `k` is None or not below
    `n`. One draw for every command that samples episodes (`dataset filter --sample`, the replay import)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def read_split(directory: Path) -> dict[str, str]:
    """{episode file name: 'train' | 'test'}; empty when the dataset has no split."""
    p = Path(directory) / SPLIT_FILE
    if not p.exists():
        return {}
    data = read_json(p, what="split file")
    try:
        a = dict(data["assignments"])
        if not all(isinstance(k, str) and v in ("train", "test") for k, v in a.items()):
            raise ValueError("assignments must map file names to train or test")
        return a
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{p} is not a mario-kit split file ({e})") from None


def add_assignments(directory: Path, assign: dict[str, str]) -> None:
    """Record train/test assignments of episodes new to `directory` (merged or imported ones);
    the folder's own assignments win where both have one."""
    if assign:
        assign = {**assign, **read_split(directory)}
        write_json_atomic(
            Path(directory) / SPLIT_FILE,
            {
                "schema_version": SPLIT_SCHEMA,
                "seed": None,
                "percentage": None,
                "stratify": [],
                "assignments": dict(sorted(assign.items())),
            },
            sort_keys=True,
        )


def play_digest(path: Path) -> bytes:
    """The identity of what was played in an episode file: its stage, its joypad bytes from the stage's
    reset to its first frame and through it. Two files with the same play hold the same episode."""
    with Episode(path) as ep:
        h = xxhash.xxh3_64(str(ep.attrs["level"]).encode())
        start = ep.start_joypad
        h.update(len(start).to_bytes(8, "little") if start is not None else b"-")
        for part in (start, ep.joypad):
            if part is not None:
                h.update(part.astype("u1").tobytes())
        return h.digest()


def split_dataset(
    directory: str | Path,
    percentage: float = 15.0,
    seed: int = 0,
    stratify: tuple[str, ...] = (),
    reset: bool = False,
    txt: Path | None = None,
) -> dict[str, str]:
    if not 0 <= percentage < 100:
        raise UserError(f"--percentage must be in [0, 100), got {percentage}")
    bad = [s for s in stratify if s not in STRATA]
    if bad:
        raise UserError(f"cannot stratify by {bad[0]!r}; choose from {', '.join(STRATA)}")
    ds = Dataset(directory).require_episodes()
    check_writable(ds.dir / SPLIT_FILE)
    if txt is not None:
        if Path(txt).is_dir():
            raise UserError(f"--txt {txt} is a folder; give a file name")
        check_writable(txt)
    old = {} if reset else read_split(ds.dir)
    present = set(ds.index["file"])
    assign = {f: s for f, s in old.items() if f in present}
    digests = {f: play_digest(ds.dir / f) for f in present if f not in assign}
    rank = lambda f: (xxhash.xxh3_64_intdigest(f"{seed}:".encode() + digests[f]), f)  # noqa: E731
    groups = ds.index.groupby(list(stratify)) if stratify else [((), ds.index)]
    for _, g in groups:
        files = list(g["file"])
        want = round(percentage / 100 * len(files))
        have = sum(assign.get(f) == "test" for f in files)
        new = sorted((f for f in files if f not in assign), key=rank)
        for i, f in enumerate(new):
            assign[f] = "test" if i < want - have else "train"
    n_test = sum(v == "test" for v in assign.values())
    if percentage > 0 and n_test == 0 and len(assign) >= 2:  # 15 % of 3 rounds to 0: a test split needs one
        first = min((f for f, v in assign.items() if v == "train" and f not in old), key=rank, default=None)
        if first is not None:
            assign[first] = "test"
    if txt is not None:  # first: a failure here leaves the dataset's split as it was
        Path(txt).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(txt, "".join(f"{f}\n" for f, s in sorted(assign.items()) if s == "test"))
    write_json_atomic(
        ds.dir / SPLIT_FILE,
        {
            "schema_version": SPLIT_SCHEMA,
            "seed": seed,
            "percentage": percentage,
            "stratify": list(stratify),
            "assignments": dict(sorted(assign.items())),
        },
        sort_keys=True,
    )
    return assign
