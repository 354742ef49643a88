"""Image metrics shared by `evaluate` and `dream`: PSNR and SSIM of uint8-range frames.

Written in torch so that a batch of generated frames is scored where it was made (GPU or CPU)
without a round trip through numpy; tests/test_world_model.py checks both against scikit-image's
`peak_signal_noise_ratio` and `structural_similarity` (Gaussian window 11, sigma 1.5) on real frames.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.functional import conv2d


def to_img(frames: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) in [-1, 1] -> (..., H, W, C) float in [0, 255], quantised like a saved frame."""
    return frames.add(1).mul(127.5).round().clamp(0, 255).movedim(-3, -1)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error of images (..., H, W, C) in [0, 255]."""
    return ((a.float() - b.float()) ** 2).flatten(-3).mean(-1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of uint8-range images (..., H, W, C) given as floats in [0, 255]; identical
    images give +inf (no arbitrary ceiling: a ceiling such as 100 dB lets a few identical pairs
    dominate a mean)."""
    return 10 * torch.log10(255.0**2 / mse(a, b))


def pooled_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of the mean squared error over all images: finite unless every pair is identical."""
    return float(10 * torch.log10(255.0**2 / mse(a, b).mean()))


def pooled_gap_interval(
    pred: torch.Tensor, base: torch.Tensor, real: torch.Tensor, level: float = 0.9, n_boot: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """How sure a pooled PSNR lead is: the `level` bootstrap interval of pooled_psnr(pred) -
    pooled_psnr(base) against `real` (B, H, W, C), resampling the B pairs (rollouts) with replacement,
    model and baseline together. A lead read off one set of rollouts moves with which rollouts were
    drawn and with the sampler's noise (how much: docs/BENCHMARKS_LOG.md, "World model quality"); a
    target such as "+3 dB" is met when the interval's low end is."""
    ep, eb = mse(pred, real).double().cpu(), mse(base, real).double().cpu()
    idx = torch.from_numpy(np.random.default_rng(seed).integers(0, len(ep), (n_boot, len(ep))))
    # a resample of pairs that copy-last gets exactly (a still screen: the end of a death) has a zero
    # MSE: clamped like the model's, so that the interval stays finite
    gaps = 10 * torch.log10(eb[idx].mean(1).clamp(min=1e-12) / ep[idx].mean(1).clamp(min=1e-12))
    lo, hi = torch.quantile(gaps, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=gaps.dtype)).tolist()
    return lo, hi


def psnr_stats(pred: torch.Tensor, target: torch.Tensor, moving: torch.Tensor) -> dict[str, float]:
    """The three PSNR figures the evaluation reports, the same windows for model and baseline:
    `mean` over the windows whose target differs from the last context frame (on the others the
    copy-last baseline is exact and its PSNR infinite), `median` over all windows, and `pooled`
    (PSNR of the mean squared error over all windows)."""
    p = psnr(pred, target)
    return {
        "mean": round(float(p[moving].mean()), 3) if moving.any() else float("nan"),
        "median": round(float(p.median()), 3),
        "pooled": round(pooled_psnr(pred, target), 3),
    }


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, sigma 1.5) of images (B, H, W, C) in [0, 255]."""
    x, y = (t.float().div(255).movedim(-1, 1) for t in (a, b))
    c = x.shape[1]
    g = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2).expand(c, 1, 11, 11).to(x)
    f = lambda t: conv2d(t, w, groups=c)  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return m.flatten(1).mean(1)


def finite_stats(v: torch.Tensor) -> dict[str, float]:
    """Mean and median of the finite values (empty where there are none)."""
    v = v[torch.isfinite(v)] if v.numel() else v
    return {"mean": round(float(v.mean()), 3), "median": round(float(v.median()), 3)} if v.numel() else {}


# --- what a player sees in a rollout ------------------------------------------------------------
HUD_ROWS = 8  # top rows of a 64x60 frame: the score line, which never scrolls (scaled for other sizes)


def changed_psnr(pred: torch.Tensor, real: torch.Tensor, last: torch.Tensor) -> float:
    """Pooled PSNR over the pixels where the real frame differs from the last context frame `last`
    (Mario, enemies, the scrolled-in edge): a model that copies the scene scores as copy-last
    there, however well it keeps the background. Frames (B, H, W, C) floats in [0, 255];
    +inf when nothing changed."""
    mask = (real != last).any(-1, keepdim=True).expand_as(real)
    if not mask.any():
        return float("inf")
    err = ((pred.float() - real.float()) ** 2)[mask].mean()
    return float(10 * torch.log10(255.0**2 / err))


def horizontal_shift(prev: torch.Tensor, nxt: torch.Tensor, max_shift: int = 8) -> torch.Tensor:
    """Per pair, the integer dx in [-max_shift, max_shift] that best maps `prev` onto `nxt`
    (nxt[:, x] ~ prev[:, x + dx]: positive when the level scrolls left, as Mario runs right): the
    least mean squared error over the overlapping columns, below the HUD. Frames (B, H, W, C)."""
    rows = slice(HUD_ROWS * prev.shape[-3] // 60, None)
    a, b = prev[..., rows, :, :].float(), nxt[..., rows, :, :].float()
    w = a.shape[-2]
    errs = []
    for dx in range(-max_shift, max_shift + 1):
        if dx >= 0:
            e = (b[..., :, : w - dx, :] - a[..., :, dx:, :]) ** 2
        else:
            e = (b[..., :, -dx:, :] - a[..., :, : w + dx, :]) ** 2
        errs.append(e.flatten(-3).mean(-1))
    return torch.stack(errs, -1).argmin(-1) - max_shift


def scroll_so_far(frames: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """(B, T): how far a rollout `frames` (B, T, H, W, C) has scrolled by each step since `last`
    (B, H, W, C), the shift between consecutive frames (`horizontal_shift`) summed."""
    prev = torch.cat([last[:, None], frames[:, :-1]], 1)
    return horizontal_shift(prev.flatten(0, 1), frames.flatten(0, 1)).view(frames.shape[:2]).cumsum(1)


def scroll_error(
    pred: torch.Tensor, real: torch.Tensor, last: torch.Tensor, real_scroll: torch.Tensor | None = None
) -> dict[str, float]:
    """How far the dream scrolled against the real game over a rollout (`scroll_so_far` of each).
    pred, real (B, T, H, W, C), last (B, H, W, C); `real_scroll`, (B, T), is `scroll_so_far(real,
    last)` when the caller has it already. Returns the real game's mean scroll and the mean
    absolute difference of the dream's, in pixels at the end of the rollout; copy-last (no scroll)
    scores the real scroll itself as its error."""
    sr = (scroll_so_far(real, last) if real_scroll is None else real_scroll)[:, -1]
    sp = scroll_so_far(pred, last)[:, -1]
    return {
        "real_scroll_px": round(float(sr.float().mean()), 2),
        "model_scroll_px": round(float(sp.float().mean()), 2),
        "scroll_error_px": round(float((sp - sr).abs().float().mean()), 2),
        "copy_last_scroll_error_px": round(float(sr.abs().float().mean()), 2),
    }


def shift_frames(frames: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Each frame (B, H, W, C) moved left by its dx columns (right where dx < 0), below the HUD; the
    columns that scroll in repeat the frame's border column (sky stays sky, the ground continues)."""
    rows = HUD_ROWS * frames.shape[-3] // 60
    w = frames.shape[-2]
    cols = (torch.arange(w, device=frames.device)[None, :] + dx[:, None]).clamp(0, w - 1)  # (B, W): source column each
    out = frames.clone()
    body = frames[:, rows:]
    out[:, rows:] = torch.gather(body, 2, cols[:, None, :, None].expand_as(body))
    return out


def scroll_oracle(real: torch.Tensor, last: torch.Tensor, real_scroll: torch.Tensor | None = None) -> torch.Tensor:
    """A baseline that knows the scroll and nothing else: per step the last context frame `last`
    (B, H, W, C) moved by the real game's scroll so far (`scroll_so_far` of `real`, (B, T, H, W, C)),
    the scrolled-in columns repeating the frame's border. It keeps the background in
    place as a perfect scroller would, but cannot draw the level that scrolls in, nor Mario's or the
    enemies' moves (it carries Mario along with the scene). A model that scores below it at a horizon
    loses more to its own scroll error and the scenery it draws than the oracle loses by stretching
    the border (docs/BENCHMARKS_LOG.md, "What the long rollouts ask for"). `real_scroll` as in
    `scroll_error`."""
    dx = scroll_so_far(real, last) if real_scroll is None else real_scroll
    return torch.stack([shift_frames(last, dx[:, t]) for t in range(real.shape[1])], 1)
