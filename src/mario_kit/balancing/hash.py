"""`hash`: a novelty selector. Each step's situation is reduced to a scenario key; a table counts the
actions taken in each scenario; with probability p the strategy overrides the policy with the
action least taken in this scenario so far (ties at random).

Scenario key (documented in docs/BALANCING.md): xxh3_64 of the chosen components, from the env's
info after the previous step (and, optionally, the frame):
  level  -> world, stage          x      -> x_pos // x_bucket (default 32 px)
  y      -> y_pos // y_bucket (32)  status -> small / tall / fire
  screen -> a coarse signature of the frame (HUD cut, 16x15 area mean, 8 levels per channel)
Default: level, x, y, status. Pixel signatures alone almost never recur (scrolling shifts every
pixel), position buckets do.

The table persists beside the dataset in `mario-kit.balance-hash.npz`. With workers, each worker
starts from that table and writes its own counts to a shard `mario-kit.balance-hash.shard-*.npz`
after every episode, holding the shard's `.lock` (flock) while it runs; `merge_shards` adds the shards
of finished or killed collectors into the table (at the end of a collection, and at the start of the
next one, so a killed collection loses at most its current episodes' counts), one merge at a time
under the table's lock, leaving the shards of collectors still running alone. On a Ray cluster
(`collect --ray`) the counts live in one actor instead (`TableExchange`): each collector hands in its
new counts and takes everyone else's at the start and end of every episode.
"""

from __future__ import annotations

import fcntl
import json
import os
import uuid
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
import xxhash

from mario_kit import UserError
from mario_kit.atomic import atomic_path
from mario_kit.balancing.base import Strategy
from mario_kit.datasets.format import STATUS_CODES

TABLE = "mario-kit.balance-hash.npz"
SHARD_GLOB = "mario-kit.balance-hash.shard-*.npz"
TABLE_LOCK = "mario-kit.balance-hash.lock"
COMPONENTS = ("level", "x", "y", "status", "screen")


def screen_signature(frame: np.ndarray) -> bytes:
    """HUD cut (top 32 rows), 16x15 area mean, 8 levels per channel."""
    body = frame[32:, :, :]  # (208, 256, 3)
    h, w = body.shape[0] // 15 * 15, 256
    small = body[:h].reshape(15, h // 15, 16, w // 16, 3).mean(axis=(1, 3))
    return (small // 32).astype(np.uint8).tobytes()


def scenario_key(
    frame: np.ndarray | None,
    info: dict[str, Any],
    components: tuple[str, ...] = ("level", "x", "y", "status"),
    x_bucket: int = 32,
    y_bucket: int = 32,
) -> int:
    h = xxhash.xxh3_64()
    for c in components:
        if c == "level":
            h.update(f"L{info.get('world', 0)}-{info.get('stage', 0)};".encode())
        elif c == "x":
            h.update(f"X{int(info.get('x_pos', 0)) // x_bucket};".encode())
        elif c == "y":
            h.update(f"Y{int(info.get('y_pos', 0)) // y_bucket};".encode())
        elif c == "status":  # the env says 'small'/'tall'/'fireball'; episode files store the code
            s = info.get("status", 0)
            h.update(f"S{STATUS_CODES.get(s, 255) if isinstance(s, str) else int(s)};".encode())
        elif c == "screen":
            assert frame is not None, "the screen component needs the frame"
            h.update(screen_signature(frame))
    return h.intdigest()


def episode_keys(
    info: dict[str, np.ndarray],
    components: tuple[str, ...] = ("level", "x", "y", "status"),
    x_bucket: int = 32,
    y_bucket: int = 32,
) -> list[int]:
    """The scenario key of every step of a recorded episode, from its info columns: step t sees the
    info after step t-1 (step 0 uses row 0: the reset info is not recorded)."""
    prev = {k: np.r_[info[k][:1], info[k][:-1]] for k in ("world", "stage", "x_pos", "y_pos", "status")}
    return [
        scenario_key(None, {k: v[t] for k, v in prev.items()}, components, x_bucket, y_bucket)
        for t in range(len(info["x_pos"]))
    ]


def _save(path: Path, table: dict[int, np.ndarray], meta: dict[str, Any], merged: list[str] | None = None) -> None:
    keys = np.fromiter(table.keys(), dtype=np.uint64, count=len(table))
    counts = np.stack(list(table.values())) if table else np.zeros((0, meta["n_actions"]), np.int64)
    with atomic_path(path, ".npz") as tmp:
        np.savez(
            tmp,
            keys=keys,
            counts=counts,
            meta=np.array(json.dumps(meta, sort_keys=True)),
            merged=np.array(json.dumps(sorted(merged or []))),
        )


def load_table(path: Path, with_merged: bool = False):
    """(table, meta) of a table or shard file ({} and None when there is none); with `with_merged`
    also the shard names already added into it."""
    table: dict[int, np.ndarray] = {}
    meta: dict[str, Any] | None = None
    merged: list[str] = []
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                merged = json.loads(str(z["merged"])) if "merged" in z.files else []
                keys, counts = z["keys"], z["counts"]
                if (
                    counts.ndim != 2
                    or len(keys) != len(counts)
                    or counts.shape[1] != meta["n_actions"]
                    or (counts < 0).any()
                ):
                    raise ValueError("keys and counts do not match")
                table = {int(k): c.astype(np.int64) for k, c in zip(keys, counts)}
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"{path} is not a mario-kit hash table ({e})") from None
    return (table, meta, merged) if with_merged else (table, meta)


@contextmanager
def _flock(path: Path, block: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on `path` (created) inside the block; yields False when `block` is
    off and another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def merge_shards(directory: Path) -> int:
    """Add the shards of finished (or killed) collectors into the dataset's table; returns how many.

    Exact under concurrency: the table's lock makes merges one at a time; a shard whose collector
    is still running holds its `.lock` and is left alone; the table records the names of the shards
    it holds, so a merge killed between writing the table and deleting the shards never counts
    one twice."""
    directory = Path(directory)
    with _flock(directory / TABLE_LOCK):
        table, meta, merged = load_table(directory / TABLE, with_merged=True)
        done, added = set(merged), []
        for s in sorted(directory.glob(SHARD_GLOB)):
            with _flock(s.with_suffix(".lock"), block=False) as free:
                if not free:  # a running collector's shard
                    continue
                if s.name not in done:
                    delta, m = load_table(s)
                    if meta is not None and m is not None and m != meta:
                        raise UserError(f"{s.name} was written with another scenario key or action set than {TABLE}")
                    meta = meta or m
                    for k, c in delta.items():
                        table[k] = table.get(k, 0) + c
                added.append(s)
        if not added:
            return 0
        still = {s.name for s in directory.glob(SHARD_GLOB)}
        _save(directory / TABLE, table, meta, [n for n in done | {s.name for s in added} if n in still])
        for s in added:
            s.unlink(missing_ok=True)
            s.with_suffix(".lock").unlink(missing_ok=True)
    return len(added)


def add_counts(directory: Path, counts: dict[int, np.ndarray], meta: dict[str, Any]) -> None:
    """Add counts made elsewhere (a Ray cluster's) into the folder's table: written as a shard, merged."""
    if counts:
        _save(Path(directory) / SHARD_GLOB.replace("*", f"added-{uuid.uuid4().hex[:12]}"), counts, meta)
        merge_shards(directory)


class TableExchange(Protocol):
    """Counts shared by collectors on many machines (`collectors.distributed`: a Ray actor)."""

    def exchange(self, delta: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Add this collector's new counts; return the shared counts of every key that changed
        since its previous exchange (all keys at the first)."""
        ...


class HashStrategy(Strategy):
    name = "hash"

    def __init__(
        self,
        policy: Any,
        action_set: Any,
        p: float = 0.5,
        components: str | list[str] = "level,x,y,status",
        x_bucket: int = 32,
        y_bucket: int = 32,
        table_dir: str | Path | None = None,
        exchange: TableExchange | None = None,
    ):
        super().__init__(policy, action_set)
        comps = tuple(c.strip() for c in components.split(",")) if isinstance(components, str) else tuple(components)
        bad = [c for c in comps if c not in COMPONENTS]
        if bad or not comps:
            raise UserError(
                f"hash: unknown key component {bad[0] if bad else ''!r}; components: {', '.join(COMPONENTS)}"
            )
        if not 0 <= p <= 1 or x_bucket < 1 or y_bucket < 1:
            raise UserError("hash: p must be in [0, 1] and the buckets >= 1")
        self.p, self.components, self.xb, self.yb = p, comps, x_bucket, y_bucket
        self.meta = {
            "components": list(comps),
            "x_bucket": x_bucket,
            "y_bucket": y_bucket,
            "action_set": action_set.name,
            "n_actions": len(action_set),
        }
        self.table: dict[int, np.ndarray] = {}  # base table (read) + own counts
        self.delta: dict[int, np.ndarray] = {}  # this worker's counts (written to its shard)
        self.dir = Path(table_dir) if table_dir else None
        self.shard = None
        self.exchange = exchange
        if exchange is not None:
            self.flush()  # the shared counts so far
        elif self.dir is not None:
            self.table, meta = load_table(self.dir / TABLE)
            if meta is not None and meta != self.meta:
                raise UserError(
                    f"{self.dir / TABLE} uses another scenario key or action set ({meta}); use another folder"
                )
            self.shard = self.dir / f"mario-kit.balance-hash.shard-{uuid.uuid4().hex[:12]}.npz"
            # held while this collector runs: merges leave a live shard alone (released by close or death)
            self._lock = os.open(self.shard.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._lock, fcntl.LOCK_EX)

    def choose(self, base: int, frame, info) -> tuple[int, bool]:
        key = scenario_key(frame, info, self.components, self.xb, self.yb)
        counts = self.table.get(key)
        if counts is None:
            counts = self.table[key] = np.zeros(len(self.action_set), np.int64)
        action, forced = base, False
        if self.rng.random() < self.p:
            least = np.flatnonzero(counts == counts.min())
            action, forced = int(self.rng.choice(least)), True
        counts[action] += 1
        d = self.delta.setdefault(key, np.zeros(len(self.action_set), np.int64))
        d[action] += 1
        return action, forced

    def reset(self, rng: np.random.Generator, n_actions: int) -> None:
        super().reset(rng, n_actions)
        self.flush()

    def flush(self) -> None:
        if self.exchange is not None:  # hand in the counts since the last exchange, take the others'
            for k, c in self.exchange.exchange(self.delta).items():
                self.table[k] = np.array(c, np.int64)
            self.delta = {}
        elif self.shard is not None and self.delta:
            _save(self.shard, self.delta, self.meta)

    def close(self) -> None:
        self.flush()
        lock: int | None = getattr(self, "_lock", None)
        if lock is not None:
            os.close(lock)
            del self._lock
        super().close()

    def own_params(self) -> dict[str, Any]:
        return {"p": self.p, "components": list(self.components), "x_bucket": self.xb, "y_bucket": self.yb}
