"""A deterministic upsampler for NES frames: 64x60 -> 256x240 by looking blocks up, no network.

The game draws 8x8 tiles from a small palette, and the model's 64x60 frame is an exact 4x4 area mean
of the real one (`datasets.store.downsample`). So a low-res pixel together with its 8 neighbours
nearly always names one 4x4 block of the full frame: the same bricks, digits and sprite pieces come
back at the same scroll phases. `fit` keeps, for every neighbourhood seen in real frames, the mean
of the blocks it stood for; `TileUpsampler.__call__` looks each pixel up, tier by tier (the exact
3x3 neighbourhood, then coarser keys a dream's inexact pixels still match, then the pixel alone),
and leaves bicubic where no tier knows the pixel. A world model's frames are near, not equal, to the
game's: coarse tiers fit on its own predictions paired with the real frames they predicted (`then`
chains tables; bench/tiles.py `--predicted`) draw its dreams sharp. Measured against bicubic and the
diffusion upsamplers: docs/BENCHMARKS.md, "Tile upsampler".

Files (`tiles.h5` in a run folder): attributes kind/schema/tiers, per tier `keys_i` (n,) uint64,
sorted, and `blocks_i` (n, 48) uint8; every size and dtype is checked before anything is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mario_kit import UserError
from mario_kit.atomic import atomic_path
from mario_kit.trust import open_h5

KIND = "mario-kit-tiles"
SCHEMA = 1
FILE = "tiles.h5"
FACTOR = 4
BLOCK = FACTOR * FACTOR * 3  # bytes of one full-res block: 4x4 RGB
# (q, r): pixel values divided by q, a (2r+1)^2 neighbourhood. Exact first; the coarser ones catch
# a dream's pixels that are near, not equal, to what the game draws.
TIERS: tuple[tuple[int, int], ...] = ((1, 1), (16, 1), (1, 0))
# For tables fit on a model's predictions: coarse, so that its near values meet.
PREDICTED_TIERS: tuple[tuple[int, int], ...] = ((32, 1), (16, 0))
PREDICTED_MIN_COUNT = 4  # a predicted key seen fewer times is dropped: most are a model's noise, and they weigh
MAX_ENTRIES = 4_000_000  # all tiers of a file together (56 bytes each): above it a file is refused unread
_FNV_OFFSET, _FNV_PRIME = np.uint64(14695981039346656037), np.uint64(1099511628211)


def neighbourhood_keys(low: np.ndarray, q: int, r: int) -> np.ndarray:
    """(n, h, w, 3) uint8 -> (n, h, w) uint64: a hash (FNV-1a over values // q) of each pixel's
    (2r+1)^2 neighbourhood, the frame's edge repeated outward."""
    quant = (low // q).astype(np.uint64)
    pad = np.pad(quant, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    h = np.full(low.shape[:3], _FNV_OFFSET)
    with np.errstate(over="ignore"):
        for dy in range(2 * r + 1):
            for dx in range(2 * r + 1):
                for c in range(3):
                    h = (h ^ pad[:, dy : dy + low.shape[1], dx : dx + low.shape[2], c]) * _FNV_PRIME
    return h


def to_blocks(full: np.ndarray) -> np.ndarray:
    """(n, 4h, 4w, 3) -> (n, h, w, 48): each low-res pixel's 4x4 block of the full frame."""
    n, hh, ww, _ = full.shape
    h, w = hh // FACTOR, ww // FACTOR
    return full.reshape(n, h, FACTOR, w, FACTOR, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, h, w, BLOCK)


def from_blocks(blocks: np.ndarray) -> np.ndarray:
    n, h, w, _ = blocks.shape
    return blocks.reshape(n, h, w, FACTOR, FACTOR, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, h * FACTOR, w * FACTOR, 3)


def bicubic(low: np.ndarray) -> np.ndarray:
    """(n, h, w, 3) uint8 -> (n, 4h, 4w, 3) uint8, torch's bicubic (the baseline, and the fallback)."""
    x = torch.from_numpy(np.ascontiguousarray(low)).permute(0, 3, 1, 2).float()
    y = torch.nn.functional.interpolate(x, scale_factor=FACTOR, mode="bicubic").clamp_(0, 255).round_()
    return y.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


@dataclass
class TileUpsampler:
    tiers: tuple[tuple[int, int], ...]
    keys: list[np.ndarray]  # per tier, sorted uint64
    blocks: list[np.ndarray]  # per tier, (n, 48) uint8, the mean block of each key

    def __call__(self, low: np.ndarray) -> np.ndarray:
        """(n, 60, 64, 3) or (60, 64, 3) uint8 -> the full-res frame(s), uint8."""
        return self.upsample(low)[0]

    def upsample(self, low: np.ndarray) -> tuple[np.ndarray, float]:
        """The full-res frame(s) and the share of pixels a tier knew (the rest is bicubic)."""
        one = low.ndim == 3
        low = low[None] if one else low
        out = np.zeros((*low.shape[:3], BLOCK), np.uint8)
        known = np.zeros(low.shape[:3], bool)
        for (q, r), keys, blocks in zip(self.tiers, self.keys, self.blocks):
            if not len(keys):
                continue
            k = neighbourhood_keys(low, q, r)
            i = np.searchsorted(keys, k).clip(0, len(keys) - 1)
            hit = (keys[i] == k) & ~known
            out[hit] = blocks[i[hit]]
            known |= hit
        if not known.all():  # bicubic only where it is needed: the play path usually knows every pixel
            out[~known] = to_blocks(bicubic(low))[~known]
        full = from_blocks(out)
        return (full[0] if one else full), float(known.mean())

    def then(self, other: TileUpsampler) -> TileUpsampler:
        """This one's tiers, then `other`'s where none of these knows a pixel."""
        return TileUpsampler(self.tiers + other.tiers, self.keys + other.keys, self.blocks + other.blocks)

    def save(self, path: str | Path) -> None:
        import h5py

        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update(kind=KIND, schema=SCHEMA, tiers=json.dumps(self.tiers))
            for i, (k, b) in enumerate(zip(self.keys, self.blocks)):
                f.create_dataset(f"keys_{i}", data=k, compression="gzip", compression_opts=9, shuffle=True)
                f.create_dataset(f"blocks_{i}", data=b, compression="gzip", compression_opts=9, shuffle=True)


def fit(
    low: np.ndarray, full: np.ndarray, tiers: tuple[tuple[int, int], ...] = TIERS, min_count: int = 1
) -> TileUpsampler:
    """The tables of `low` (n, 60, 64, 3) uint8 frames and the full frames (n, 240, 256, 3) they stand
    for (the real frame they were made from, or that a model predicted them for). Each key keeps the
    mean (rounded) of its blocks, the least squared error; keys seen fewer than `min_count` times are
    dropped (a model's noise makes many keys that never come back)."""
    b = to_blocks(full).reshape(-1, BLOCK)
    keys, blocks = [], []
    for q, r in tiers:
        u, inv, count = np.unique(neighbourhood_keys(low, q, r).ravel(), return_inverse=True, return_counts=True)
        s = np.stack([np.bincount(inv, weights=b[:, c], minlength=len(u)) for c in range(BLOCK)], axis=1)
        keep = count >= min_count
        keys.append(u[keep])
        blocks.append(np.rint(s[keep] / count[keep, None]).astype(np.uint8))
    return TileUpsampler(tuple(tiers), keys, blocks)


def load(path: str | Path) -> TileUpsampler:
    """A tiles file, refused in one line unless every array has the size and dtype it should."""
    import h5py

    with open_h5(path) as f:
        if f.attrs.get("kind") != KIND or f.attrs.get("schema") != SCHEMA:
            raise UserError(f"{path} is not a mario-kit tiles file (schema {SCHEMA})")
        try:
            tiers = tuple((int(q), int(r)) for q, r in json.loads(str(f.attrs["tiers"])))
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: its tiers do not parse ({e})") from None
        if not 1 <= len(tiers) <= 8 or any(not (1 <= q <= 255 and 0 <= r <= 3) for q, r in tiers):
            raise UserError(f"{path}: tiers out of range: {tiers}")
        keys, blocks = [], []
        total = 0
        for i in range(len(tiers)):
            k, b = f.get(f"keys_{i}"), f.get(f"blocks_{i}")
            if not isinstance(k, h5py.Dataset) or not isinstance(b, h5py.Dataset):
                raise UserError(f"{path}: tier {i} lacks keys_{i} (uint64) or blocks_{i} (uint8)")
            if k.dtype != np.uint64 or b.dtype != np.uint8:
                raise UserError(f"{path}: tier {i} lacks keys_{i} (uint64) or blocks_{i} (uint8)")
            n = k.shape[0] if k.ndim == 1 else -1
            total += max(n, 0)
            if total > MAX_ENTRIES:
                raise UserError(f"{path}: more than {MAX_ENTRIES:,} entries in all: not a tiles file mario-kit reads")
            if n < 0 or b.shape != (n, BLOCK):
                raise UserError(f"{path}: tier {i} has keys {k.shape} and blocks {b.shape}; want (n,), (n, {BLOCK})")
            keys.append(k[()])
            blocks.append(b[()])
            if not (keys[-1][1:] > keys[-1][:-1]).all():
                raise UserError(f"{path}: tier {i}'s keys are not sorted and distinct")
    return TileUpsampler(tiers, keys, blocks)
