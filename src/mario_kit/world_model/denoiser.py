"""EDM denoiser (Karras et al. 2022) around the DIAMOND U-Net: all preconditioning in one place.

D(x; sigma) = c_skip x + c_out F(c_in x, c_noise, context, actions), with the noise level widened
by the offset noise: sigma' = sqrt(sigma^2 + sigma_offset^2),
  c_in = 1 / sqrt(sigma'^2 + sd^2), c_skip = sd^2 / (sigma'^2 + sd^2), c_out = sigma' sqrt(c_skip),
  c_noise = log(sigma') / 4. Context frames are divided by sd; during training they are noised too
(noise_previous_obs) and the network sees that noise level (c_noise_cond); at sampling a small
fixed s_cond plays that role. Frames are floats in [-1, 1], channels first.

The upsampler is the same class with `upsampler=True`: its context is the low-res target frame,
upsampled x4 (bicubic), and it takes no actions. With `residual=True` it diffuses the difference
between the full-res frame and that bicubic frame instead of the frame itself (the sampler adds the
bicubic frame back): a network that outputs nothing then gives bicubic, so even a briefly trained
upsampler starts from bicubic rather than from grey, and its capacity goes to the detail bicubic lacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.nn.functional import interpolate, silu
from torch import Tensor, nn

from mario_kit.world_model.blocks import FourierFeatures, UNet, conv3x3, n_groups


DRAW_SIGMA = 5.0  # the noise level the samplers start from (SamplerConfig.sigma_max); self_ctx draws from it


@dataclass
class ModelConfig:
    """Architecture and EDM settings of one diffusion model (denoiser or upsampler)."""

    channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    attn: list[bool] = field(default_factory=lambda: [False, False, False, False])
    cond_channels: int = 256
    n_context: int = 4  # past frames (and actions) the denoiser sees; ignored by the upsampler
    upsampler: bool = False
    upsampling_factor: int = 4
    residual: bool = False  # upsampler only: diffuse the full-res frame minus its bicubic upsample
    img_channels: int = 3
    sigma_data: float = 0.5
    sigma_offset_noise: float = 0.3
    noise_previous_obs: bool = True
    # training noise: sigma = exp(N(loc, scale)), clipped
    loc: float = -0.4
    scale: float = 1.2
    # noise on the context frames in training (noise_previous_obs): sigma_cond = exp(N(cond_loc, cond_scale));
    # DIAMOND draws it like the target's (the defaults); lower cond_loc trusts the context more
    cond_loc: float = -0.4
    cond_scale: float = 1.2
    # denoiser loss: extra weight on the pixels that differ from the last context frame (Mario,
    # enemies, the scrolled edge), 1 + changed_weight there, 1 elsewhere, normalised per window so the
    # loss keeps its scale. 0 is DIAMOND's plain loss, in which the few pixels that make the game
    # (a 16x16 Mario of a 64x60 frame) weigh as little as a patch of sky.
    changed_weight: float = 0.0
    # denoiser with horizon > 1: the fraction of windows whose earlier frames are replaced by the
    # model's own 1-step draws from pure noise (no gradient), as play and evaluate make them, with the
    # loss on the last frame only; 0 keeps the horizon's denoised training samples. A model trained on
    # real context alone meets its own blurred frames only in a rollout (exposure bias); this shows
    # them in training at the cost of a no-grad forward pass per extra frame. Measured to lose: 0.25
    # with horizon 5 for 2 hours cost 6 dB on the next frame and 1 dB at 32 steps (docs/BENCHMARKS.md).
    self_ctx: float = 0.0
    sigma_min_train: float = 2e-3
    sigma_max_train: float = 20.0


class Denoiser(nn.Module):
    def __init__(self, cfg: ModelConfig, n_actions: int):
        super().__init__()
        self.cfg, self.n_actions = cfg, n_actions
        c = cfg.cond_channels
        self.noise_emb = FourierFeatures(c)
        self.noise_cond_emb = FourierFeatures(c)
        if cfg.upsampler:
            self.act_emb = None
            n_in = 2
        else:
            assert c % cfg.n_context == 0, "cond_channels must be divisible by n_context"
            self.act_emb = nn.Embedding(n_actions, c // cfg.n_context)
            n_in = cfg.n_context + 1
        self.cond_proj = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, c))
        self.conv_in = conv3x3(n_in * cfg.img_channels, cfg.channels[0])
        self.unet = UNet(c, cfg.depths, cfg.channels, cfg.attn)
        self.norm_out = nn.GroupNorm(n_groups(cfg.channels[0]), cfg.channels[0])
        self.conv_out = conv3x3(cfg.channels[0], cfg.img_channels)
        nn.init.zeros_(self.conv_out.weight)
        # what D may return: frames lie in [-1, 1], residuals (frame - bicubic) in [-2, 2]
        self.limit = 2.0 if cfg.upsampler and cfg.residual else 1.0

    # --- EDM preconditioning ---------------------------------------------------------------
    def conditioners(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        sd = self.cfg.sigma_data
        s = (sigma**2 + self.cfg.sigma_offset_noise**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * c_skip.sqrt()
        c_noise = s.log() / 4
        v = lambda t: t[:, None, None, None]  # noqa: E731
        return v(c_in), v(c_skip), v(c_out), c_noise

    def network(self, x: Tensor, c_noise: Tensor, c_noise_cond: Tensor, ctx: Tensor, act: Tensor | None) -> Tensor:
        """F: the raw U-Net output for a scaled noisy frame `x` and the context (B, n*C, H, W)."""
        cond = self.noise_emb(c_noise) + self.noise_cond_emb(c_noise_cond)
        if self.act_emb is not None:
            cond = cond + self.act_emb(act).flatten(1)
        x = self.conv_in(torch.cat((ctx / self.cfg.sigma_data, x), dim=1))
        x = self.unet(x, self.cond_proj(cond))
        return self.conv_out(silu(self.norm_out(x)))

    def forward(self, noisy: Tensor, sigma: Tensor, ctx: Tensor, act: Tensor | None,
                sigma_cond: Tensor | None = None) -> Tensor:
        """D(noisy; sigma): the denoised frame (or residual), clamped to [-limit, limit]."""
        out, c_skip, c_out = self._denoise(noisy, sigma, ctx, act, sigma_cond)
        return (c_skip * noisy + c_out * out).clamp(-self.limit, self.limit)

    def _denoise(self, noisy: Tensor, sigma: Tensor, ctx: Tensor, act: Tensor | None,
                 sigma_cond: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """F's raw output with the scalings that make D of it: D = c_skip noisy + c_out F."""
        c_in, c_skip, c_out, c_noise = self.conditioners(sigma)
        c_cond = sigma_cond.log() / 4 if sigma_cond is not None else torch.zeros_like(c_noise)
        return self.network(noisy * c_in, c_noise, c_cond, ctx, act), c_skip, c_out

    # --- training ----------------------------------------------------------------------------
    def sample_sigma(self, n: int, gen: torch.Generator | None, device, context: bool = False) -> Tensor:
        """Training noise levels: log-normal (loc, scale), or (cond_loc, cond_scale) for the context."""
        c = self.cfg
        loc, scale = (c.cond_loc, c.cond_scale) if context else (c.loc, c.scale)
        s = torch.randn(n, generator=gen, device=device) * scale + loc
        return s.exp().clip(c.sigma_min_train, c.sigma_max_train)

    def add_noise(self, x: Tensor, sigma: Tensor, gen: torch.Generator | None) -> Tensor:
        b, ch = x.shape[:2]
        offset = self.cfg.sigma_offset_noise * torch.randn(b, ch, 1, 1, generator=gen, device=x.device, dtype=x.dtype)
        return x + offset + torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * sigma[:, None, None, None]

    def loss(self, frames: Tensor, act: Tensor | None, mask: Tensor, gen: torch.Generator | None = None,
             cond_frames: Tensor | None = None) -> Tensor:
        """Denoising loss over a window.

        Denoiser: frames (B, n + h, C, H, W) in [-1, 1]; act (B, n + h - 1); mask (B, n + h). For each of
        the h targets (h > 1: autoregressive training), the context is the n frames before it, where
        earlier targets are replaced by the model's own (detached) predictions.
        Upsampler: frames (B, 1, C, H, W) full-res targets, cond_frames (B, C, h, w) low-res targets."""
        c = self.cfg
        if c.upsampler:
            up = bicubic(cond_frames, c.upsampling_factor)
            target = frames[:, 0] - up if c.residual else frames[:, 0]
            return self._loss_one(target, up, None, mask[:, -1], gen, noise_ctx=False)
        n = c.n_context
        frames = frames.clone()
        total = frames.new_zeros(())
        h = frames.shape[1] - n
        if c.self_ctx and h > 1:
            return self._loss_drawn_context(frames, act, mask, gen)
        for i in range(h):
            ctx = frames[:, i : i + n].flatten(1, 2)
            target = frames[:, n + i]
            weight = changed_pixels(target, frames[:, n + i - 1], c.changed_weight) if c.changed_weight else None
            loss, denoised = self._loss_one(target, ctx, act[:, i : i + n], mask[:, n + i], gen, noise_ctx=c.noise_previous_obs,
                                            return_denoised=True, weight=weight)
            total = total + loss
            if i + 1 < h:
                frames[:, n + i] = denoised.detach()
        return total / h

    def _loss_drawn_context(self, frames: Tensor, act: Tensor, mask: Tensor, gen: torch.Generator | None) -> Tensor:
        """`self_ctx`: draw frames n .. n+h-2 of a random `self_ctx` share of the windows with the
        model itself (what `sample` does in 1 step: D(sigma_max * noise; sigma_max) with the context
        said to carry the median training context noise), then the loss of the last frame given them."""
        c, n = self.cfg, self.cfg.n_context
        h = frames.shape[1] - n
        pick = torch.rand(frames.shape[0], generator=gen, device=frames.device) < c.self_ctx
        rows = pick.nonzero().squeeze(1)
        if len(rows):
            with torch.no_grad():
                sub, sub_act = frames[rows], act[rows]
                k = len(rows)
                s_cond = torch.full((k,), math.exp(c.cond_loc), device=frames.device)
                sigma = torch.full((k,), DRAW_SIGMA, device=frames.device)
                for i in range(h - 1):
                    noise = torch.randn(sub[:, n + i].shape, generator=gen, device=frames.device, dtype=frames.dtype)
                    drawn = self(noise * DRAW_SIGMA, sigma, sub[:, i : i + n].flatten(1, 2), sub_act[:, i : i + n], s_cond)
                    sub[:, n + i] = drawn.to(frames.dtype)
                frames[rows] = sub
        target, last = frames[:, -1], frames[:, -2]
        weight = changed_pixels(target, last, c.changed_weight) if c.changed_weight else None
        return self._loss_one(target, frames[:, h - 1 : h - 1 + n].flatten(1, 2), act[:, h - 1 : h - 1 + n], mask[:, -1],
                              gen, noise_ctx=c.noise_previous_obs, weight=weight)

    def _loss_one(self, target: Tensor, ctx: Tensor, act: Tensor | None, mask: Tensor, gen, noise_ctx: bool,
                  return_denoised: bool = False, weight: Tensor | None = None):
        b = target.shape[0]
        sigma_cond = None
        if noise_ctx:
            sigma_cond = self.sample_sigma(b, gen, target.device, context=True)
            ctx = self.add_noise(ctx, sigma_cond, gen)
        sigma = self.sample_sigma(b, gen, target.device)
        noisy = self.add_noise(target, sigma, gen)
        out, c_skip, c_out = self._denoise(noisy, sigma, ctx, act, sigma_cond)
        goal = (target - c_skip * noisy) / c_out
        sq = (out.float() - goal.float()) ** 2
        per = sq.mean(dim=(1, 2, 3)) if weight is None else (sq * weight).mean(dim=(1, 2, 3)) / weight.mean(dim=(1, 2, 3))
        m = mask.float()
        loss = (per * m).sum() / m.sum().clamp(min=1)
        if return_denoised:
            return loss, (c_skip * noisy + c_out * out).clamp(-1, 1)
        return loss


def changed_pixels(target: Tensor, last: Tensor, extra: float, threshold: float = 0.02) -> Tensor:
    """Per-pixel loss weight (B, 1, H, W): 1 + extra where any channel of `target` differs from
    `last` by more than `threshold` (in [-1, 1] units: about 2.5 grey levels of 255), else 1."""
    moved = (target.float() - last.float()).abs().amax(dim=1, keepdim=True) > threshold
    return 1.0 + extra * moved.float()


def bicubic(low: Tensor, factor: int) -> Tensor:
    """The upsampler's context: low-res frames enlarged `factor` times, bicubic, in [-1, 1]."""
    return interpolate(low, scale_factor=factor, mode="bicubic").clamp(-1, 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
