"""The EDM wrapper (Karras et al. 2022) around the inner network: all preconditioning in one place.

D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, context, actions), with the noise level widened
by the offset noise: sigma' = sqrt(sigma^2 + sigma_offset^2),
  c_in = 1 / sqrt(sigma'^2 + sd^2), c_skip = sd^2 / (sigma'^2 + sd^2), c_out = sigma' sqrt(c_skip),
  c_noise = log(sigma') / 4. Context frames are divided by sd; the noise level they carry (drawn in
training, training/loss.py; a fixed s_cond at sampling) reaches F as log(sigma_cond) / 4. Frames are
floats in [-1, 1], channels first.

The upsampler is the same class with `upsampler=True`: its context is the low-res target frame,
upsampled x4 (bicubic), and it takes no actions. With `residual=True` it diffuses the difference
between the full-res frame and that bicubic frame instead of the frame itself (the sampler adds the
bicubic frame back): a network that outputs nothing then gives bicubic, so even a briefly trained
upsampler starts from bicubic rather than from grey, and its capacity goes to the detail bicubic lacks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.functional import interpolate

from mario_kit.world_model.config import ModelConfig
from mario_kit.world_model.model.network import InnerModel


class Denoiser(nn.Module):
    def __init__(self, cfg: ModelConfig, n_actions: int):
        super().__init__()
        self.cfg, self.n_actions = cfg, n_actions
        self.inner = InnerModel(cfg, n_actions)
        # what D may return: frames lie in [-1, 1], residuals (frame - bicubic) in [-2, 2]
        self.limit = 2.0 if cfg.upsampler and cfg.residual else 1.0
        self.register_load_state_dict_pre_hook(_flat_keys_to_inner)

    def conditioners(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """c_in, c_skip, c_out (shaped to broadcast over frames) and c_noise, for noise levels (B,)."""
        sd = self.cfg.sigma_data
        s = (sigma**2 + self.cfg.sigma_offset_noise**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * c_skip.sqrt()
        c_noise = s.log() / 4

        def v(t: Tensor) -> Tensor:
            return t[:, None, None, None]

        return v(c_in), v(c_skip), v(c_out), c_noise

    def forward(
        self,
        noisy: Tensor,
        sigma: Tensor,
        ctx: Tensor,
        act: Tensor | None,
        sigma_cond: Tensor | None = None,
        level: Tensor | None = None,
    ) -> Tensor:
        """D(noisy; sigma): the denoised frame (or residual), clamped to [-limit, limit]."""
        out, c_skip, c_out = self.denoise(noisy, sigma, ctx, act, sigma_cond, level)
        return (c_skip * noisy + c_out * out).clamp(-self.limit, self.limit)

    def denoise(
        self,
        noisy: Tensor,
        sigma: Tensor,
        ctx: Tensor,
        act: Tensor | None,
        sigma_cond: Tensor | None,
        level: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """F's raw output with the scalings that make D of it: D = c_skip noisy + c_out F. Training
        regresses F on its target (x - c_skip noisy) / c_out, EDM's loss weighting built in. `level`
        (B,) of emulator.level_number: read by a model with `levels` only."""
        c_in, c_skip, c_out, c_noise = self.conditioners(sigma)
        c_cond = sigma_cond.log() / 4 if sigma_cond is not None else torch.zeros_like(c_noise)
        ctx = ctx / self.cfg.sigma_data
        return self.inner(noisy * c_in, c_noise, c_cond, ctx, act, level), c_skip, c_out


def _flat_keys_to_inner(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Checkpoints written before the inner network was its own module name its weights without
    `inner.`; they load unchanged (the shipped model is one)."""
    for key in [k for k in state if k.startswith(prefix) and not k.startswith(prefix + "inner.")]:
        state[prefix + "inner." + key[len(prefix) :]] = state.pop(key)


def bicubic(low: Tensor, factor: int) -> Tensor:
    """The upsampler's context: low-res frames enlarged `factor` times, bicubic, in [-1, 1]."""
    return interpolate(low, scale_factor=factor, mode="bicubic").clamp(-1, 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
