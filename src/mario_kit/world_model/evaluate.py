"""`mario-kit evaluate`: the world model against the real frames of the test split, always side by
side with the copy-last-frame baseline (predict that nothing changes).

- next frame: PSNR and SSIM of one sampled frame against the recorded one (low res; full res too
  when the run has an upsampler and the store has full-res frames);
- rollouts: from a test window, generate h frames autoregressively driven by the recorded actions
  and score every step (h = 1, 8, 32, 64 where the test episodes are long enough).
"""

from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mario_kit import UserError
from mario_kit.atomic import check_writable, output_dir, write_text_atomic
from mario_kit.datasets.loader import WindowDataset
from mario_kit.progress import make_progress
from mario_kit.world_model.denoiser import bicubic
from mario_kit.world_model.sampler import rollout, sample, to_model, upsample
from mario_kit.world_model.train import load_model


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


def psnr_stats(pred: torch.Tensor, target: torch.Tensor, moving: torch.Tensor) -> dict[str, float]:
    """The three PSNR figures the evaluation reports, the same windows for model and baseline:
    `mean` over the windows whose target differs from the last context frame (on the others the
    copy-last baseline is exact and its PSNR infinite), `median` over all windows, and `pooled`
    (PSNR of the mean squared error over all windows)."""
    p = psnr(pred, target)
    return {"mean": round(float(p[moving].mean()), 3) if moving.any() else float("nan"),
            "median": round(float(p.median()), 3), "pooled": round(pooled_psnr(pred, target), 3)}


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Gaussian window 11, sigma 1.5) of images (B, H, W, C) in [0, 255]."""
    x, y = (t.float().div(255).movedim(-1, 1) for t in (a, b))
    c = x.shape[1]
    g = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2).expand(c, 1, 11, 11).to(x)
    f = lambda t: F.conv2d(t, w, groups=c)  # noqa: E731
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return m.flatten(1).mean(1)


def _stats(v: torch.Tensor) -> dict[str, float]:
    v = v[torch.isfinite(v)] if v.numel() else v
    return {"mean": round(float(v.mean()), 3), "median": round(float(v.median()), 3)} if v.numel() else {}


def _pick(ds: WindowDataset, n: int, seed: int, full_context: bool = True) -> np.ndarray:
    ok = np.flatnonzero(ds.targets - ds.episode_start >= ds.n_context) if full_context else np.arange(len(ds))
    if len(ok) == 0:
        ok = np.arange(len(ds))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ok, size=min(n, len(ok)), replace=False))


def _to_img(frames: torch.Tensor) -> torch.Tensor:
    """(..., C, H, W) in [-1, 1] -> (..., H, W, C) float in [0, 255], quantised like a saved frame."""
    return frames.add(1).mul(127.5).round().clamp(0, 255).movedim(-3, -1)


@torch.no_grad()
def evaluate(run: str | Path, store: str | Path, horizons: tuple[int, ...] = (1, 8, 32, 64), windows: int = 64,
             rollouts: int = 8, seed: int = 0, device: str = "cpu", out: str | Path | None = None,
             steps: int | None = None, ema: bool = True, upsampler_steps: int | None = None,
             progress: bool = True) -> dict[str, Any]:
    """`steps` / `upsampler_steps`: denoising steps of the denoiser / upsampler (default: the run's)."""
    run, store = Path(run), Path(store)
    if out is not None:
        check_writable(out)
    if not (run / "denoiser.pt").exists():  # an upsampler-only run (--set stage=upsampler)
        if not (run / "upsampler.pt").exists():
            raise UserError(f"{run} holds neither denoiser.pt nor upsampler.pt")
        return _evaluate_upsampler_only(run, store, windows, seed, device, out, ema, upsampler_steps)
    model, cfg, meta = load_model(run, "denoiser", ema=ema, device=device)
    if steps:  # fewer denoising steps: the speed/quality trade-off of play
        cfg.sampler.steps = steps
    n = model.cfg.n_context
    test = _test_windows(store, n)
    gen = torch.Generator(device).manual_seed(seed)
    report: dict[str, Any] = {"run": str(run), "store": str(store), "step": meta["step"], "sampler": vars(cfg.sampler)}

    # next frame
    idx = _pick(test, windows, seed)
    b = test.gather(test.fetch(idx))
    obs = to_model(torch.from_numpy(b["obs"])).to(device)  # (B, n+1, C, H, W)
    act = torch.from_numpy(b["act"]).to(device)
    pred = torch.cat([sample(model, obs[i : i + 16, :n].flatten(1, 2), act[i : i + 16], cfg.sampler, gen)
                      for i in range(0, len(idx), 16)])
    target, last = torch.from_numpy(b["obs"][:, n]).float(), torch.from_numpy(b["obs"][:, n - 1]).float()
    p_img = _to_img(pred.cpu())
    moving = mse(last, target) > 0
    report["next_frame_low_res"] = {
        "windows": len(idx), "static_windows": int((~moving).sum()),
        "model": {"psnr": psnr_stats(p_img, target, moving), "ssim": _stats(ssim(p_img, target))},
        "copy_last": {"psnr": psnr_stats(last, target, moving), "ssim": _stats(ssim(last, target))},
    }
    if (run / "upsampler.pt").exists() and test.m["full_res"]:
        up, ucfg, _ = _load_upsampler(run, ema, device, upsampler_steps)
        report["upsampler_sampler"] = vars(ucfg.upsampler_sampler)
        k = min(len(idx), UPSAMPLER_WINDOWS)
        tgt = _full_frames(store, test.targets[idx[:k]])
        prev = _full_frames(store, test.targets[idx[:k]] - 1)
        hi = torch.cat([upsample(up, pred[i : i + 4], ucfg.upsampler_sampler, gen) for i in range(0, k, 4)])
        h_img = _to_img(hi.cpu())
        moving = mse(prev, tgt) > 0
        report["next_frame_full_res"] = {
            "windows": k, "static_windows": int((~moving).sum()),
            "model": {"psnr": psnr_stats(h_img, tgt, moving), "ssim": _stats(ssim(h_img, tgt))},
            "copy_last": {"psnr": psnr_stats(prev, tgt, moving), "ssim": _stats(ssim(prev, tgt))},
        }
        report["upsampler_alone"] = _upsampler_alone(up, ucfg, obs[:k, n], tgt, gen)

    # rollouts
    curves = {}
    with make_progress(enabled=progress, transient=True) as bar:
        task = bar.add_task("rollouts", total=len(horizons))
        for h in horizons:
            ds = WindowDataset(store, "test", n_context=n, horizon=h)
            if len(ds) == 0:
                report.setdefault("rollouts_skipped", []).append(h)
                continue
            idx = _pick(ds, rollouts, seed)
            b = ds.gather(ds.fetch(idx))
            frames = to_model(torch.from_numpy(b["obs"])).to(device)
            acts = torch.from_numpy(b["act"]).to(device)
            gen_frames = rollout(model, frames[:, :n], acts[:, :n], acts[:, n:], cfg.sampler, gen)
            real = torch.from_numpy(b["obs"][:, n:]).float()
            img = _to_img(gen_frames.cpu())
            # per step: pooled PSNR over the rollouts (finite even when a baseline frame is exact)
            m = torch.tensor([pooled_psnr(img[:, t], real[:, t]) for t in range(h)])
            base_last = torch.from_numpy(b["obs"][:, n - 1]).float()
            c = torch.tensor([pooled_psnr(base_last, real[:, t]) for t in range(h)])
            curves[h] = (m.tolist(), c.tolist())
            report[f"rollout_{h}"] = {"rollouts": len(idx), "model_psnr_last": round(float(m[-1]), 3),
                                      "model_psnr_mean": round(float(m.mean()), 3),
                                      "copy_last_psnr_last": round(float(c[-1]), 3), "copy_last_psnr_mean": round(float(c.mean()), 3)}
            bar.update(task, advance=1)
    if out is not None:
        with output_dir(out) as out:
            write_text_atomic(out / "evaluation.json", json.dumps(report, indent=1))
            _plot(curves, out / "rollout_psnr.png")
    return report


UPSAMPLER_WINDOWS = 16  # full-res frames scored (each costs a full-res denoising pass on a CPU)


def _test_windows(store: Path, n: int) -> WindowDataset:
    test = WindowDataset(store, "test", n_context=n)
    if len(test) == 0:
        raise UserError(f"{store} has no test episodes; run `mario-kit dataset split` and rebuild the store")
    return test


def _full_frames(store: Path, rows: np.ndarray) -> torch.Tensor:
    import zarr

    full = zarr.open_group(str(store), mode="r")["full"]
    return torch.from_numpy(np.stack([full[int(g)] for g in rows])).float()


def _upsampler_alone(up, ucfg, low: torch.Tensor, tgt: torch.Tensor, gen) -> dict[str, Any]:
    """The recorded low-res targets lifted to full res by the upsampler, against plain bicubic."""
    ups = _to_img(torch.cat([upsample(up, low[i : i + 4], ucfg.upsampler_sampler, gen) for i in range(0, len(low), 4)]).cpu())
    bic = _to_img(bicubic(low, up.cfg.upsampling_factor).cpu())
    return {
        "windows": len(low),
        "upsampler": {"psnr": round(pooled_psnr(ups, tgt), 3), "ssim": _stats(ssim(ups, tgt))},
        "bicubic": {"psnr": round(pooled_psnr(bic, tgt), 3), "ssim": _stats(ssim(bic, tgt))},
    }


def _load_upsampler(run: Path, ema: bool, device: str, steps: int | None):
    up, ucfg, meta = load_model(run, "upsampler", ema=ema, device=device)
    if steps:  # the upsampler's speed/quality trade-off (1 step: the fastest; the `cpu` preset samples 2)
        ucfg.upsampler_sampler.steps = steps
    return up, ucfg, meta


def _evaluate_upsampler_only(run: Path, store: Path, windows: int, seed: int, device: str, out: str | Path | None,
                             ema: bool, steps: int | None) -> dict[str, Any]:
    up, ucfg, meta = _load_upsampler(run, ema, device, steps)
    test = _test_windows(store, ucfg.denoiser.n_context)
    if not test.m["full_res"]:
        raise UserError(f"{store} has no full-res frames (build it with --full-res) to score the upsampler on")
    idx = _pick(test, windows, seed)[:UPSAMPLER_WINDOWS]  # the frames a full evaluation scores
    low = to_model(torch.from_numpy(test.gather(test.fetch(idx))["obs"][:, -1])).to(device)
    gen = torch.Generator(device).manual_seed(seed)
    report = {"run": str(run), "store": str(store), "step": meta["step"], "sampler": vars(ucfg.upsampler_sampler),
              "upsampler_alone": _upsampler_alone(up, ucfg, low, _full_frames(store, test.targets[idx]), gen)}
    if out is not None:
        with output_dir(out) as out:
            write_text_atomic(out / "evaluation.json", json.dumps(report, indent=1))
    return report


def _plot(curves: dict[int, tuple[list[float], list[float]]], path: Path) -> None:
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = max(curves)
    m, c = curves[h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(m) + 1), m, label="world model")
    ax.plot(range(1, len(c) + 1), c, label="copy last frame", linestyle="--")
    ax.set_xlabel("steps into the rollout")
    ax.set_ylabel("PSNR (dB), 64x60")
    ax.set_title(f"autoregressive rollouts ({h} steps)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)



