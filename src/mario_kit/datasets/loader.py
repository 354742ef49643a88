"""PyTorch dataset of training windows over a store: `n_context` past frames and actions, then
`horizon` frames to predict.

Reading compressed zarr chunks per sample would starve training (decompression per window; see
docs/BENCHMARKS.md), so the low-res frames are decompressed into an uncompressed `.npy` cache
inside the store (`_cache/`, keyed by the manifest) and memory-mapped: worker processes share the
OS page cache instead of each holding a copy. A cache travels with the store it sits in, so a
process uses one only after comparing it with the store (a sequential decode, far cheaper than
decoding per window). A corrupted chunk fails that decode (zstd checksums) with a clear error, so
it is never trained on.

A batch is fetched whole with vectorised numpy indexing: `fetch` computes indices, actions and
masks (and decodes full-res targets), `gather` reads the low-res frames from the memory map. The
order of the batches is `epoch_batches`: a pure function of (seed, epoch), so that a resumed run
skips exactly the batches it already used.
Batch layout (T = n_context + horizon):
  obs   (B, T, 60, 64, 3) uint8   frames; positions before the episode start are zeros
  act   (B, T - 1) int64          act[:, t] is the action taken at frame t (0 where padded)
  mask  (B, T) bool               False where padded (before the episode start)
  index (B,) int64                global index of the first target frame
  level (B,) int64                the episode's stage, emulator.level_number (1-1 is 1; 0: not recorded)
  full  (B, horizon, 240, 256, 3) uint8, only with full_res=True (for the upsampler)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xxhash

from mario_kit import UserError
from mario_kit.atomic import atomic_path
from mario_kit.datasets.store import LOW_SHAPE, read_manifest, store_array
from mario_kit.emulator import level_number

CACHE_DIR = "_cache"


def _cache_key(m: dict[str, Any]) -> str:
    h = xxhash.xxh3_64()
    for e in m["episodes"]:
        h.update(f"{e['file']}:{e['checksum']}:{e['start']}:{e['frames']};".encode())
    return h.hexdigest()


_verified: set[tuple[str, float]] = set()  # caches this process has checked against their store


def materialize_low(store: Path, m: dict[str, Any] | None = None) -> Path:
    """Decompress the store's low-res frames into `_cache/low-<key>.npy` (atomic); return its path.
    A cache already there is a file like any other in a store a user may have been handed: it is
    used only once this process has compared it with the store, frame for frame (the one-time decode
    the cache saves later reads from), and rebuilt when it differs or is not a plain uint8 array."""
    m = m or read_manifest(store)
    path = store / CACHE_DIR / f"low-{_cache_key(m)}.npy"
    n = sum(e["frames"] for e in m["episodes"])
    if path.exists() and not path.is_symlink():
        if _stamp(path) in _verified or _matches_store(path, store, n):
            _verified.add(_stamp(path))
            return path
    path.parent.mkdir(exist_ok=True)
    for old in path.parent.glob("low-*.npy"):
        old.unlink()
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, *LOW_SHAPE))
        for i, block in _store_blocks(store, n):
            out[i : i + len(block)] = block
        out.flush()
        del out
    _verified.add(_stamp(path))
    return path


def _stamp(path: Path) -> tuple[str, float]:
    return str(path.resolve()), path.stat().st_mtime


def _store_blocks(store: Path, n: int):
    """(start, frames) of the store's first n low-res frames, decoded a few chunks at a time; a damaged
    chunk is a UserError."""
    low = store_array(store, "low")
    if low.dtype != np.uint8 or tuple(low.shape[1:]) != LOW_SHAPE or low.shape[0] < n:
        raise UserError(
            f"{store}: the low-res array is not ({n}, {', '.join(map(str, LOW_SHAPE))}) uint8; "
            f"rebuild the store with --force"
        )
    step = 8 * low.chunks[0]
    for i in range(0, n, step):
        try:
            yield i, low[i : min(n, i + step)]
        except Exception as e:  # noqa: BLE001  (zstd/codec errors of a damaged chunk)
            raise UserError(
                f"{store}: low-res frames {i}..{min(n, i + step) - 1} are corrupt "
                f"({type(e).__name__}); rebuild the store with --force"
            ) from None


def _matches_store(path: Path, store: Path, n: int) -> bool:
    """Whether a cache file holds exactly the store's low-res frames (a planted, short, object or
    poisoned one does not: it is rebuilt)."""
    try:
        cached = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return False
    if cached.dtype != np.uint8 or cached.shape != (n, *LOW_SHAPE):
        return False
    return all(np.array_equal(cached[i : i + len(block)], block) for i, block in _store_blocks(store, n))


class WindowDataset(torch.utils.data.Dataset):
    """Windows over one split of a store (see the module docstring for the batch layout)."""

    def __init__(
        self,
        store: str | Path,
        split: str | None = "train",
        n_context: int = 4,
        horizon: int = 1,
        full_res: bool = False,
    ):
        self.store = Path(store)
        self.m = read_manifest(self.store)
        if split not in ("train", "test", None):
            raise UserError(f"split must be train, test or all, got {split!r}")
        if full_res and not self.m["full_res"]:
            raise UserError(f"{self.store} has no full-res frames (build it with --full-res)")
        self.n_context, self.horizon, self.full_res = n_context, horizon, full_res
        self.n_actions = len(self.m["action_buttons"])
        self.low_path = materialize_low(self.store, self.m)
        self._low: np.ndarray | None = None  # opened lazily, once per process
        self._full: Any = None  # the zarr array of full-res frames, opened on first use
        actions, weights = store_array(self.store, "actions"), store_array(self.store, "weights")
        if actions.dtype != np.int16 or weights.dtype != np.float32:
            raise UserError(
                f"{self.store}: actions must be int16 and weights float32, got {actions.dtype} and "
                f"{weights.dtype}; rebuild with --force"
            )
        try:
            self.actions = np.asarray(actions[:], dtype=np.int64)
            self.weights = np.asarray(weights[:], dtype=np.float32)
        except Exception as e:  # noqa: BLE001  (zstd/codec errors of a damaged chunk)
            raise UserError(
                f"{self.store}: the actions or weights do not decode ({type(e).__name__}); rebuild with --force"
            ) from None
        n = sum(e["frames"] for e in self.m["episodes"])
        if len(self.actions) < n or len(self.weights) < n:
            raise UserError(f"{self.store}: arrays shorter than the manifest; rebuild with --force")
        if n and (self.actions[:n].max() >= self.n_actions or self.actions[:n].min() < -1):
            raise UserError(
                f"{self.store}: actions outside the {self.m['action_set']} action set; rebuild with --force"
            )
        if n and not (np.isfinite(self.weights[:n]).all() and self.weights[:n].min() >= 0):
            raise UserError(f"{self.store}: weights that are negative or not finite; rebuild with --force")
        starts, targets, levels = [], [], []
        for ep in self.m["episodes"]:
            if split is not None and ep["split"] != split:
                continue
            k = np.arange(1, ep["frames"] - horizon + 1)  # first target offsets with a full horizon
            targets.append(ep["start"] + k)
            starts.append(np.full(len(k), ep["start"]))
            levels.append(np.full(len(k), level_number(ep.get("level"))))
        self.targets = np.concatenate(targets) if targets else np.zeros(0, np.int64)
        self.episode_start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        self.level = np.concatenate(levels) if levels else np.zeros(0, np.int64)  # each window's stage
        self._offsets = np.arange(-n_context, horizon)

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def low(self) -> np.ndarray:
        if self._low is None:
            # a plain ndarray view of the map: np.memmap's own __getitem__ costs more than the read
            self._low = np.load(self.low_path, mmap_mode="r").view(np.ndarray)
        return self._low

    @property
    def target_weights(self) -> np.ndarray:
        """Balancing weight of each window: the weight of the step that leads to its first target."""
        return self.weights[self.targets - 1]

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        return _to_torch(self.gather(self.fetch(indices)))

    def fetch(self, indices) -> dict[str, np.ndarray]:
        """Everything of a batch but the low-res frames: window indices, mask, actions (and the
        decoded full-res targets)."""
        i = np.asarray(indices, dtype=np.int64)
        g, es = self.targets[i], self.episode_start[i]
        idx = g[:, None] + self._offsets[None, :]
        mask = idx >= es[:, None]
        idx = np.maximum(idx, es[:, None])
        act = self.actions[idx[:, :-1]]
        act[~mask[:, :-1]] = 0
        batch = {"idx": idx, "act": act, "mask": mask, "index": g, "level": self.level[i]}
        if self.full_res:
            if self._full is None:
                self._full = store_array(self.store, "full")
            tgt = idx[:, self.n_context :].ravel()
            full = np.stack([self._full[int(j)] for j in tgt]).reshape(len(i), self.horizon, *self._full.shape[1:])
            batch["full"] = full
        return batch

    def gather(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add the low-res frames to a fetched batch: one fancy-indexing read of the memory map."""
        idx = batch.pop("idx")
        obs = self.low[idx.ravel()].reshape(*idx.shape, *LOW_SHAPE)
        if not batch["mask"].all():
            obs[~batch["mask"]] = 0
        return {"obs": obs, **batch}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}


def _to_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def epoch_batches(
    n_windows: int, batch: int, count: int, seed: int, epoch: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """`count` batches of window indices for one epoch: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    need = count * batch
    if weights is not None:
        idx = torch.multinomial(torch.from_numpy(weights).double(), need, replacement=True, generator=g)
    else:
        perms = [torch.randperm(n_windows, generator=g) for _ in range(math.ceil(need / n_windows))]
        idx = torch.cat(perms)[:need]
    return idx.numpy().reshape(count, batch)


def store_outcomes(store: Path, m: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The store's `rewards` (float32) and `ends` (uint8) of every frame's step, checked: finite
    rewards within what frame_skip frames of nes-py's clip can sum to, ends a known class."""
    if not m.get("rewend"):
        raise UserError(f"{store} holds no rewards and ends (built before they were kept); rebuild it with --force")
    n = sum(e["frames"] for e in m["episodes"])
    r, e = store_array(store, "rewards"), store_array(store, "ends")
    if r.dtype != np.float32 or e.dtype != np.uint8 or r.shape[0] < n or e.shape[0] < n:
        raise UserError(f"{store}: rewards must be float32 and ends uint8, one a frame; rebuild with --force")
    try:
        rewards, ends = np.asarray(r[:n], np.float32), np.asarray(e[:n], np.uint8)
    except Exception as err:  # noqa: BLE001  (damaged chunks)
        raise UserError(f"{store}: the rewards or ends do not decode ({type(err).__name__}); rebuild with --force")
    bound = 15.0 * max(1, int(m["frame_skip"]))
    if n and not (np.isfinite(rewards).all() and np.abs(rewards).max() <= bound and ends.max() <= 2):
        raise UserError(f"{store}: rewards outside +-{bound:g} or ends outside 0..2; rebuild with --force")
    return rewards, ends
