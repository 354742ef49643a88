"""The only place that turns noise into frames: Karras sigmas and Euler / Heun samplers as plain
functions, plus the autoregressive rollout used by evaluate, play and dream."""

from __future__ import annotations

import torch
from torch import Tensor

from mario_kit.world_model.config import SamplerConfig
from mario_kit.world_model.model.denoiser import Denoiser, bicubic


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float, device=None) -> Tensor:
    """`steps` decreasing noise levels (Karras et al. eq. 5), then 0."""
    ramp = torch.linspace(0, 1, steps, device=device)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    return torch.cat((sig, sig.new_zeros(1)))


@torch.no_grad()
def sample(
    model: Denoiser,
    ctx: Tensor,
    act: Tensor | None,
    cfg: SamplerConfig,
    gen: torch.Generator | None = None,
    shape: tuple[int, ...] | None = None,
    noise: Tensor | None = None,
    level: Tensor | None = None,
) -> Tensor:
    """Draw a frame (B, C, H, W) in [-1, 1] given context frames ctx (B, n*C, H, W) and actions (B, n)
    (a residual upsampler's draw is a residual, in [-2, 2]); `level` (B,): the stages, for a model
    with `levels`. `noise`: the unit Gaussian to start from (default: drawn from `gen`); with it given,
    nothing here syncs with the host, so a CUDA graph can capture the whole draw."""
    b = ctx.shape[0]
    shape = shape or (b, model.cfg.img_channels, *ctx.shape[-2:])
    sigmas = karras_sigmas(cfg.steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, device=ctx.device)
    sigma_cond = torch.full((b,), cfg.s_cond, device=ctx.device) if cfg.s_cond > 0 else None
    if noise is None:
        noise = torch.randn(shape, generator=gen, device=ctx.device, dtype=ctx.dtype)
    x = noise * sigmas[0]
    for i, (s, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        sv = s.expand(b)
        d = (x - model(x, sv, ctx, act, sigma_cond, level)) / s
        dt = s_next - s
        if cfg.order == 1 or i == cfg.steps - 1:  # the last step goes to sigma 0: Euler
            x = x + d * dt
        else:  # Heun
            x2 = x + d * dt
            d2 = (x2 - model(x2, s_next.expand(b), ctx, act, sigma_cond, level)) / s_next
            x = x + (d + d2) / 2 * dt
    return x.clamp(-model.limit, model.limit)


@torch.no_grad()
def upsample(
    model: Denoiser, low: Tensor, cfg: SamplerConfig, gen: torch.Generator | None = None, noise: Tensor | None = None
) -> Tensor:
    """Low-res frames (B, C, h, w) -> full-res (B, C, 4h, 4w) with the upsampler."""
    up = bicubic(low, model.cfg.upsampling_factor)
    x = sample(model, up, None, cfg, gen, noise=noise)
    return (up + x).clamp(-1, 1) if model.cfg.residual else x


@torch.no_grad()
def rollout(
    model: Denoiser,
    ctx_frames: Tensor,
    ctx_actions: Tensor,
    actions: Tensor,
    cfg: SamplerConfig,
    gen: torch.Generator | None = None,
    level: Tensor | None = None,
) -> Tensor:
    """Generate len(actions[0]) frames autoregressively.

    ctx_frames (B, n, C, H, W), ctx_actions (B, n): the last n frames and the actions taken at them;
    actions (B, T - 1): the actions taken at the generated frames but the last; level (B,) the stages.
    Returns (B, T, C, H, W): frame t is generated from the n frames before it."""
    frames, acts = list(ctx_frames.unbind(1)), list(ctx_actions.unbind(1))
    n = ctx_frames.shape[1]
    out = []
    for t in range(actions.shape[1] + 1):
        ctx = torch.cat(frames[-n:], dim=1)
        nxt = sample(model, ctx, torch.stack(acts[-n:], dim=1), cfg, gen, level=level)
        out.append(nxt)
        if t < actions.shape[1]:
            frames.append(nxt)
            acts.append(actions[:, t])
    return torch.stack(out, dim=1)


def to_model(frames_uint8: Tensor) -> Tensor:
    """(..., H, W, C) uint8 -> (..., C, H, W) float in [-1, 1]."""
    return frames_uint8.movedim(-1, -3).float().div(127.5).sub(1)


def to_uint8(frames: Tensor) -> Tensor:
    """(..., C, H, W) in [-1, 1] -> (..., H, W, C) uint8."""
    return frames.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).movedim(-3, -1)
