"""The training loss: how training corrupts frames (NoiseConfig) and what the denoiser regresses.

For a target frame x, a noise level sigma ~ exp(N(loc, scale)) and offset noise (one Gaussian per
frame and channel, sigma_offset_noise of it) are added; F is trained on (x - c_skip noisy) / c_out,
the EDM loss. With noise_previous_obs the context frames are noised as well, at their own level,
which the network is told. A window of horizon h > 1 trains h targets in turn, each after the
model's own (detached) denoising of the targets before it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mario_kit.world_model.config import NoiseConfig
from mario_kit.world_model.model.denoiser import Denoiser, bicubic


def sample_sigma(
    noise: NoiseConfig, n: int, gen: torch.Generator | None, device: torch.device | str, context: bool = False
) -> Tensor:
    """Training noise levels: log-normal (loc, scale), or (cond_loc, cond_scale) for the context."""
    loc, scale = (noise.cond_loc, noise.cond_scale) if context else (noise.loc, noise.scale)
    s = torch.randn(n, generator=gen, device=device) * scale + loc
    return s.exp().clip(noise.sigma_min, noise.sigma_max)


def add_noise(x: Tensor, sigma: Tensor, offset: float, gen: torch.Generator | None) -> Tensor:
    b, ch = x.shape[:2]
    shift = offset * torch.randn(b, ch, 1, 1, generator=gen, device=x.device, dtype=x.dtype)
    return x + shift + torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * sigma[:, None, None, None]


def denoiser_loss(
    model: Denoiser,
    noise: NoiseConfig,
    frames: Tensor,
    act: Tensor,
    mask: Tensor,
    gen: torch.Generator | None = None,
    level: Tensor | None = None,
) -> Tensor:
    """frames (B, n + h, C, H, W) in [-1, 1]; act (B, n + h - 1); mask (B, n + h); level (B,) the
    windows' stages. For each of the h targets the context is the n frames before it, earlier targets
    replaced by the model's denoising."""
    n = model.cfg.n_context
    frames = frames.clone()
    total = frames.new_zeros(())
    h = frames.shape[1] - n
    for i in range(h):
        ctx = frames[:, i : i + n].flatten(1, 2)
        loss, denoised = _loss_one(
            model,
            noise,
            frames[:, n + i],
            ctx,
            act[:, i : i + n],
            mask[:, n + i],
            gen,
            noise_ctx=noise.noise_previous_obs,
            level=level,
        )
        total = total + loss
        if i + 1 < h:
            frames[:, n + i] = denoised.detach()
    return total / h


def upsampler_loss(
    model: Denoiser, noise: NoiseConfig, frames: Tensor, low: Tensor, mask: Tensor, gen: torch.Generator | None = None
) -> Tensor:
    """frames (B, 1, C, H, W) full-res targets, low (B, C, h, w) the same frames low-res."""
    up = bicubic(low, model.cfg.upsampling_factor)
    target = frames[:, 0] - up if model.cfg.residual else frames[:, 0]
    return _loss_one(model, noise, target, up, None, mask[:, -1], gen, noise_ctx=False)[0]


def _loss_one(
    model: Denoiser,
    noise: NoiseConfig,
    target: Tensor,
    ctx: Tensor,
    act: Tensor | None,
    mask: Tensor,
    gen: torch.Generator | None,
    noise_ctx: bool,
    level: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The masked mean loss over a batch of targets, and D's output (the denoised targets)."""
    b, offset = target.shape[0], model.cfg.sigma_offset_noise
    sigma_cond = None
    if noise_ctx:
        sigma_cond = sample_sigma(noise, b, gen, target.device, context=True)
        ctx = add_noise(ctx, sigma_cond, offset, gen)
    sigma = sample_sigma(noise, b, gen, target.device)
    noisy = add_noise(target, sigma, offset, gen)
    out, c_skip, c_out = model.denoise(noisy, sigma, ctx, act, sigma_cond, level)
    goal = (target - c_skip * noisy) / c_out
    per = ((out.float() - goal.float()) ** 2).mean(dim=(1, 2, 3))
    m = mask.float()
    loss = (per * m).sum() / m.sum().clamp(min=1)
    return loss, (c_skip * noisy + c_out * out).clamp(-1, 1)


def window_loss(
    model: Denoiser,
    noise: NoiseConfig,
    frames: Tensor,
    act: Tensor | None,
    mask: Tensor,
    gen: torch.Generator | None = None,
    low: Tensor | None = None,
    level: Tensor | None = None,
) -> Tensor:
    """The loss of a batch from the loader: the upsampler's when `model` is one (then `low` is given)."""
    if model.cfg.upsampler:
        assert low is not None, "the upsampler's loss needs the low-res frames"
        return upsampler_loss(model, noise, frames, low, mask, gen)
    assert act is not None, "the denoiser's loss needs the actions"
    return denoiser_loss(model, noise, frames, act, mask, gen, level)
