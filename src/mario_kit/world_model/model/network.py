"""F, the network inside the EDM wrapper: DIAMOND's U-Net with its conditioning.

It sees the scaled noisy frame next to the context frames (channels stacked) and a condition vector:
Fourier features of the noise level and of the context's noise level, plus an embedding of each
context frame's action (the denoiser; the upsampler takes none) and, with `levels`, of the stage
the frames are of (0: unknown; emulator.level_number). It knows nothing of sigma_data or of
how noise is drawn: the wrapper (denoiser.py) scales what goes in and what comes out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.functional import silu

from mario_kit.emulator import ALL_LEVELS
from mario_kit.world_model.config import ModelConfig
from mario_kit.world_model.model.blocks import FourierFeatures, UNet, conv3x3, n_groups


class InnerModel(nn.Module):
    def __init__(self, cfg: ModelConfig, n_actions: int):
        super().__init__()
        c = cfg.cond_channels
        self.noise_emb = FourierFeatures(c)
        self.noise_cond_emb = FourierFeatures(c)
        self.act_emb: nn.Embedding | None = None
        n_in = 2
        if not cfg.upsampler:
            assert c % cfg.n_context == 0, "cond_channels must be divisible by n_context"
            self.act_emb = nn.Embedding(n_actions, c // cfg.n_context)
            n_in = cfg.n_context + 1
        self.level_emb: nn.Embedding | None = None
        if cfg.levels:
            self.level_emb = nn.Embedding(len(ALL_LEVELS) + 1, c)
            nn.init.zeros_(self.level_emb.weight)  # the model it starts as ignores the level
        self.cond_proj = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, c))
        self.conv_in = conv3x3(n_in * cfg.img_channels, cfg.channels[0])
        self.unet = UNet(c, cfg.depths, cfg.channels, cfg.attn)
        self.norm_out = nn.GroupNorm(n_groups(cfg.channels[0]), cfg.channels[0])
        self.conv_out = conv3x3(cfg.channels[0], cfg.img_channels)
        nn.init.zeros_(self.conv_out.weight)

    def forward(
        self, x: Tensor, c_noise: Tensor, c_noise_cond: Tensor, ctx: Tensor, act: Tensor | None, level: Tensor | None
    ) -> Tensor:
        """The raw output for a scaled noisy frame `x` (B, C, H, W) and scaled context (B, n*C, H, W);
        `level` (B,) is read only by a model with `levels` (None there: unknown)."""
        cond = self.noise_emb(c_noise) + self.noise_cond_emb(c_noise_cond)
        if self.act_emb is not None:
            cond = cond + self.act_emb(act).flatten(1)
        if self.level_emb is not None:
            lv = level if level is not None else torch.zeros(len(x), dtype=torch.long, device=x.device)
            cond = cond + self.level_emb(lv)
        x = self.conv_in(torch.cat((ctx, x), dim=1))
        x = self.unet(x, self.cond_proj(cond))
        return self.conv_out(silu(self.norm_out(x)))
