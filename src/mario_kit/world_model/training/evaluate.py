"""`mario-kit evaluate`: the world model against the real frames of the test split, always side by
side with the copy-last-frame baseline (predict that nothing changes) on the same windows.

- next frame: PSNR and SSIM of one sampled frame against the recorded one (low res; full res too
  when the run has an upsampler and the store has full-res frames);
- rollouts: from a test window, h frames generated autoregressively driven by the recorded actions
  (h = 1, 8, 32, 64 where the test episodes are long enough), scored against the real game's frames
  (the recorded ones: replay rebuilds them exactly): PSNR per step, SSIM, PSNR over the pixels where
  the game changed, and the scroll against the real game's (metrics.py), so that a model that
  copies the scene cannot score well; with an upsampler, the last frame at full res too. The lead
  over copy-last at the last step comes with a 90% bootstrap interval over the rollouts
  (`model_gap_last_ci90`): a lead read off one evaluation is as unsure as that interval is wide;
- by place (places.py): the next frame and 32-step rollouts per stage and 512-px x bucket, where
  the store keeps Mario's x.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mario_kit import UserError
from mario_kit.atomic import check_writable, output_dir, write_json_atomic
from mario_kit.datasets.loader import WindowDataset
from mario_kit.datasets.store import store_array
from mario_kit.progress import make_progress
from mario_kit.world_model.model.denoiser import bicubic
from mario_kit.world_model.training.metrics import (
    changed_psnr,
    finite_stats,
    mse,
    pooled_gap_interval,
    pooled_psnr,
    psnr_stats,
    scroll_error,
    scroll_oracle,
    scroll_so_far,
    ssim,
    to_img,
)
from mario_kit.world_model.model.sampler import rollout, to_model, upsample
from mario_kit.hardware import resolve_device
from mario_kit.world_model.model.checkpoint import load_model, path_of
from mario_kit.world_model.model.rewend import STAGE, load_rewend
from mario_kit.world_model.training.rewend import score, split_steps
from mario_kit.world_model.config import TrainConfig, set_sampler
from mario_kit.world_model.training.places import by_place, next_frames
from mario_kit.world_model.training.scores import (
    Evaluation,
    FrameScores,
    PooledScores,
    PsnrStats,
    RolloutScores,
    Scores,
    SsimStats,
    UpsamplerScores,
)


def _pick(ds: WindowDataset, n: int, seed: int, full_context: bool = True) -> np.ndarray:
    ok = np.flatnonzero(ds.targets - ds.episode_start >= ds.n_context) if full_context else np.arange(len(ds))
    if len(ok) == 0:
        ok = np.arange(len(ds))
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(ok, size=min(n, len(ok)), replace=False))


@dataclass(kw_only=True)
class EvaluateConfig:
    """What `evaluate` scores and how. `sampling_steps` / `upsampler_steps`: denoising steps of the
    denoiser / upsampler (None: the run's); `sampler_set`: overrides of the run's samplers for this
    evaluation, `sampler.KEY=VALUE` or `upsampler_sampler.KEY=VALUE` (the sampler is chosen at
    sampling time, not trained: tune it here). `out`: where evaluation.json and the plot go."""

    run: Path
    store: Path
    horizons: tuple[int, ...] = (1, 8, 32, 64)
    windows: int = 64  # test windows for the next-frame scores
    rollouts: int = 8  # rollouts per horizon, and per place
    place_windows: int = 16  # next-frame windows per stage and x bucket (places.py; 0: no scores by place)
    seed: int = 0
    device: str = "auto"
    out: Path | None = None
    sampling_steps: int | None = None
    upsampler_steps: int | None = None
    ema: bool = True
    progress: bool = True
    sampler_set: list[str] = field(default_factory=list)


@torch.no_grad()
def evaluate(cfg: EvaluateConfig) -> Evaluation:
    """Score the run on the store's test split, beside copy-last (and bicubic for the upsampler)."""
    run, store, device = Path(cfg.run), Path(cfg.store), resolve_device(cfg.device)
    set_sampler(TrainConfig(), cfg.sampler_set)  # refused before anything is loaded
    if cfg.out is not None:
        check_writable(cfg.out)
    if not path_of(run, "denoiser").exists():  # an upsampler-only run (--set stage=upsampler)
        if not path_of(run, "upsampler").exists():
            raise UserError(f"{run} holds neither denoiser.pt nor upsampler.pt")
        return _evaluate_upsampler_only(cfg, device)
    model, tcfg, meta = load_model(run, "denoiser", ema=cfg.ema, device=device)
    if cfg.sampling_steps:  # fewer denoising steps: the speed/quality trade-off of play
        tcfg.sampler.steps = cfg.sampling_steps
    set_sampler(tcfg, cfg.sampler_set)
    test = _test_windows(store, model.cfg.n_context)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    report = Evaluation(run=str(run), store=str(store), step=meta["step"], sampler=vars(tcfg.sampler))
    idx = _pick(test, cfg.windows, cfg.seed)
    obs, pred, report.next_frame_low_res = _next_frame(model, tcfg, test, idx, gen, device)
    up = None
    if path_of(run, "upsampler").exists() and test.m["full_res"]:
        up, ucfg, _ = _load_upsampler(run, cfg.ema, device, cfg.upsampler_steps, cfg.sampler_set)
        report.upsampler_sampler = vars(ucfg.upsampler_sampler)
        k = min(len(idx), UPSAMPLER_WINDOWS)
        rows = test.targets[idx[:k]]
        tgt, prev = _full_frames(store, rows), _full_frames(store, rows - 1)
        hi = torch.cat([upsample(up, pred[i : i + 4], ucfg.upsampler_sampler, gen) for i in range(0, k, 4)])
        report.next_frame_full_res = _scores(to_img(hi.cpu()), tgt, prev)
        report.upsampler_alone = _upsampler_alone(up, ucfg, obs[:k, -1], tgt, gen)
    curves = _rollouts(model, tcfg, cfg, gen, device, report, (up, ucfg) if up is not None else None)
    if cfg.place_windows:
        report.by_place = by_place(model, tcfg, store, cfg.place_windows, cfg.rollouts, cfg.seed, gen, device)
    if path_of(run, STAGE).exists() and test.m.get("rewend"):  # the reward and end model, on every test step
        rewend_model, _ = load_rewend(run, device)
        steps = split_steps(store, "test", rewend_model.cfg.n_context)
        report.rewend = score(rewend_model, steps, torch.device(device)).to_json()
    _write(cfg.out, report, curves)
    return report


def _write(out: Path | None, report: Evaluation, curves: dict | None) -> None:
    if out is not None:
        with output_dir(out) as folder:
            write_json_atomic(folder / "evaluation.json", report.to_json())
            if curves:
                _plot(curves, folder / "rollout_psnr.png")


def _scores(pred: torch.Tensor, target: torch.Tensor, last: torch.Tensor) -> FrameScores:
    """Model and copy-last baseline on the same frames (uint8-range floats, (B, H, W, C))."""
    moving = mse(last, target) > 0

    def scores(x: torch.Tensor) -> Scores:
        return Scores(PsnrStats(**psnr_stats(x, target, moving)), SsimStats(**finite_stats(ssim(x, target))))

    return FrameScores(
        windows=len(target), static_windows=int((~moving).sum()), model=scores(pred), copy_last=scores(last)
    )


def _next_frame(
    model, cfg, test: WindowDataset, idx: np.ndarray, gen, device: str
) -> tuple[torch.Tensor, torch.Tensor, FrameScores]:
    """One sampled next frame per test window, scored at low res; with the scores, the windows'
    frames (B, n+1, C, H, W) and the predictions (B, C, H, W), in model units, for the upsampler."""
    obs, pred, target, last = next_frames(model, cfg.sampler, test, idx, gen, device)
    return obs, pred, _scores(to_img(pred.cpu()), target, last)


def _rollouts(
    model, tcfg: TrainConfig, cfg: EvaluateConfig, gen, device: str, report: Evaluation, up=None
) -> dict[int, tuple[list[float], list[float], list[float]]]:
    """From test windows, h frames generated autoregressively with the recorded actions (the real
    game's frames, as replay rebuilds them), scored per step against copy-last on the same windows.
    With an upsampler `up` (its model and config), each rollout's last frame is scored at full res too."""
    n, curves, store = model.cfg.n_context, {}, Path(cfg.store)
    with make_progress(enabled=cfg.progress, transient=True) as bar:
        task = bar.add_task("rollout steps", total=sum(cfg.horizons))  # a horizon costs its length
        for h in cfg.horizons:
            ds = WindowDataset(store, "test", n_context=n, horizon=h)
            if len(ds) == 0:
                report.rollouts_skipped.append(h)
                bar.update(task, advance=h)
                continue
            idx = _pick(ds, cfg.rollouts, cfg.seed)
            b = ds.gather(ds.fetch(idx))
            frames = to_model(torch.from_numpy(b["obs"])).to(device)
            acts, level = torch.from_numpy(b["act"]).to(device), torch.from_numpy(b["level"]).to(device)
            gen_frames = rollout(model, frames[:, :n], acts[:, :n], acts[:, n:], tcfg.sampler, gen, level)
            real, base_last = torch.from_numpy(b["obs"][:, n:]).float(), torch.from_numpy(b["obs"][:, n - 1]).float()
            r = _score_rollout(to_img(gen_frames.cpu()), real, base_last)
            curves[h] = (r.pop("model_curve"), r.pop("copy_last_curve"), r.pop("scroll_oracle_curve"))
            if up is not None and ds.m["full_res"]:
                r.update(_full_res_last(up, gen_frames[:, -1], store, ds.targets[idx], h, gen))
            report.rollouts[h] = RolloutScores(rollouts=len(idx), **r)
            bar.update(task, advance=h)
    return curves


def _score_rollout(img: torch.Tensor, real: torch.Tensor, last: torch.Tensor) -> dict[str, Any]:
    """Model rollouts `img` and the real frames (B, h, H, W, C), copy-last `last` (B, H, W, C): per
    step the pooled PSNR over the rollouts (finite even when a baseline frame is exact), for the
    model, copy-last and the scroll oracle (copy-last moved by the real scroll: `scroll_oracle`); at
    the last step the model's lead over copy-last with its 90% bootstrap interval over the rollouts,
    SSIM and PSNR over the pixels that changed; the scroll against the real game's."""
    h = real.shape[1]
    real_scroll = scroll_so_far(real, last)  # measured once: the oracle and the scroll error share it
    oracle = scroll_oracle(real, last, real_scroll)
    m = [pooled_psnr(img[:, t], real[:, t]) for t in range(h)]
    c = [pooled_psnr(last, real[:, t]) for t in range(h)]
    o = [pooled_psnr(oracle[:, t], real[:, t]) for t in range(h)]
    r3 = lambda v: round(float(v), 3)  # noqa: E731
    return {
        "model_curve": m,
        "copy_last_curve": c,
        "scroll_oracle_curve": o,
        "model_psnr_last": r3(m[-1]),
        "model_psnr_mean": r3(np.mean(m)),
        "copy_last_psnr_last": r3(c[-1]),
        "copy_last_psnr_mean": r3(np.mean(c)),
        "scroll_oracle_psnr_last": r3(o[-1]),
        "scroll_oracle_psnr_mean": r3(np.mean(o)),
        "model_gap_last": r3(m[-1] - c[-1]),
        "model_gap_last_ci90": [r3(v) for v in pooled_gap_interval(img[:, -1], last, real[:, -1])],
        "model_ssim_last": r3(ssim(img[:, -1], real[:, -1]).mean()),
        "copy_last_ssim_last": r3(ssim(last, real[:, -1]).mean()),
        "model_changed_psnr_last": r3(changed_psnr(img[:, -1], real[:, -1], last)),
        "copy_last_changed_psnr_last": r3(changed_psnr(last, real[:, -1], last)),
        **scroll_error(img, real, last, real_scroll),
    }


def _full_res_last(up, low: torch.Tensor, store: Path, targets: np.ndarray, h: int, gen) -> dict[str, Any]:
    """The rollouts' last frames upsampled and scored against the real full-res frames, with
    copy-last at full res (the last context frame) on the same windows."""
    model, ucfg = up
    hi = to_img(
        torch.cat([upsample(model, low[i : i + 4], ucfg.upsampler_sampler, gen) for i in range(0, len(low), 4)]).cpu()
    )
    tgt, last = _full_frames(store, targets + h - 1), _full_frames(store, targets - 1)
    return {
        "model_psnr_last_full_res": round(pooled_psnr(hi, tgt), 3),
        "copy_last_psnr_last_full_res": round(pooled_psnr(last, tgt), 3),
        "model_ssim_last_full_res": round(float(ssim(hi, tgt).mean()), 3),
        "copy_last_ssim_last_full_res": round(float(ssim(last, tgt).mean()), 3),
    }


UPSAMPLER_WINDOWS = 16  # full-res frames scored (each costs a full-res denoising pass on a CPU)


def _test_windows(store: Path, n: int) -> WindowDataset:
    test = WindowDataset(store, "test", n_context=n)
    if len(test) == 0:
        raise UserError(f"{store} has no test episodes; run `mario-kit dataset split` and rebuild the store")
    return test


def _full_frames(store: Path, rows: np.ndarray) -> torch.Tensor:
    full = store_array(store, "full")
    return torch.from_numpy(np.stack([full[int(g)] for g in rows])).float()


def _upsampler_alone(up, ucfg, low: torch.Tensor, tgt: torch.Tensor, gen) -> UpsamplerScores:
    """The recorded low-res targets lifted to full res by the upsampler, against plain bicubic."""
    ups = to_img(
        torch.cat([upsample(up, low[i : i + 4], ucfg.upsampler_sampler, gen) for i in range(0, len(low), 4)]).cpu()
    )
    bic = to_img(bicubic(low, up.cfg.upsampling_factor).cpu())

    def scores(x: torch.Tensor) -> PooledScores:
        return PooledScores(round(pooled_psnr(x, tgt), 3), SsimStats(**finite_stats(ssim(x, tgt))))

    return UpsamplerScores(windows=len(low), upsampler=scores(ups), bicubic=scores(bic))


def _load_upsampler(run: Path, ema: bool, device: str, steps: int | None, sampler_set: list[str]):
    up, ucfg, meta = load_model(run, "upsampler", ema=ema, device=device)
    if steps:  # the upsampler's speed/quality trade-off (1 step: the fastest; the `cpu` preset samples 2)
        ucfg.upsampler_sampler.steps = steps
    set_sampler(ucfg, sampler_set)
    return up, ucfg, meta


def _evaluate_upsampler_only(cfg: EvaluateConfig, device: str) -> Evaluation:
    run, store = Path(cfg.run), Path(cfg.store)
    up, ucfg, meta = _load_upsampler(run, cfg.ema, device, cfg.upsampler_steps, cfg.sampler_set)
    test = _test_windows(store, ucfg.denoiser.n_context)
    if not test.m["full_res"]:
        raise UserError(f"{store} has no full-res frames (build it with --full-res) to score the upsampler on")
    idx = _pick(test, cfg.windows, cfg.seed)[:UPSAMPLER_WINDOWS]  # the frames a full evaluation scores
    low = to_model(torch.from_numpy(test.gather(test.fetch(idx))["obs"][:, -1])).to(device)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    report = Evaluation(
        run=str(run),
        store=str(store),
        step=meta["step"],
        sampler=vars(ucfg.upsampler_sampler),
        upsampler_alone=_upsampler_alone(up, ucfg, low, _full_frames(store, test.targets[idx]), gen),
    )
    _write(cfg.out, report, None)
    return report


def _plot(curves: dict[int, tuple[list[float], list[float], list[float]]], path: Path) -> None:
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = max(curves)
    m, c, o = curves[h]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(m) + 1), m, label="world model")
    ax.plot(range(1, len(c) + 1), c, label="copy last frame", linestyle="--")
    ax.plot(range(1, len(o) + 1), o, label="last frame moved by the real scroll", linestyle=":")
    ax.set_xlabel("steps into the rollout")
    ax.set_ylabel("PSNR (dB), 64x60")
    ax.set_title(f"autoregressive rollouts ({h} steps)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
