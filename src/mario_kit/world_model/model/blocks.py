"""U-Net building blocks of the DIAMOND denoiser: Fourier features of the noise level, GroupNorm
scaled and shifted by the conditioning (AdaGroupNorm), residual blocks, self-attention, and a
U-Net that pads inputs to a multiple of 2^(resolutions-1) and crops back (60 is not a multiple of 8)."""

from __future__ import annotations

import math
from typing import cast

import torch
from torch.nn.functional import group_norm, interpolate, pad, scaled_dot_product_attention, silu
from torch import Tensor, nn

GN_GROUP_SIZE = 32
GN_EPS = 1e-5
ATTN_HEAD_DIM = 8


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


def n_groups(channels: int) -> int:
    return max(1, channels // GN_GROUP_SIZE)


class FourierFeatures(nn.Module):
    """A scalar (the log noise level) -> [cos, sin] of its projection on fixed random frequencies."""

    weight: Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("weight", torch.randn(1, dim // 2))

    def forward(self, x: Tensor) -> Tensor:
        f = 2 * math.pi * x[:, None] @ self.weight
        return torch.cat([f.cos(), f.sin()], dim=-1)


class AdaGroupNorm(nn.Module):
    """GroupNorm whose output is scaled by (1 + s) and shifted by m, with (s, m) a linear map of the conditioning."""

    def __init__(self, channels: int, cond: int):
        super().__init__()
        self.groups = n_groups(channels)
        self.linear = nn.Linear(cond, 2 * channels)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = group_norm(x, self.groups, eps=GN_EPS)
        scale, shift = self.linear(cond)[:, :, None, None].chunk(2, dim=1)
        return x * (1 + scale) + shift


class SelfAttention2d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.heads = max(1, channels // ATTN_HEAD_DIM)
        self.norm = nn.GroupNorm(n_groups(channels), channels, eps=GN_EPS)
        self.qkv = conv1x1(channels, 3 * channels)
        self.out = conv1x1(channels, channels)
        nn.init.zeros_(self.out.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        x = self.norm(x)
        q, k, v = self.qkv(x).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        y = scaled_dot_product_attention(q, k, v)  # (n, heads, hw, d)
        return x + self.out(y.transpose(-1, -2).reshape(n, c, h, w))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond: int, attn: bool):
        super().__init__()
        self.proj = conv1x1(cin, cout) if cin != cout else nn.Identity()
        self.norm1 = AdaGroupNorm(cin, cond)
        self.conv1 = conv3x3(cin, cout)
        self.norm2 = AdaGroupNorm(cout, cond)
        self.conv2 = conv3x3(cout, cout)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        self.attn = SelfAttention2d(cout) if attn else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        r = self.proj(x)
        x = self.conv1(silu(self.norm1(x, cond)))
        x = self.conv2(silu(self.norm2(x, cond)))
        return self.attn(x + r)


class UNet(nn.Module):
    """len(channels) resolutions of depths[i] ResBlocks; stride-2 conv down, nearest x2 + conv up;
    skip connections concatenate every block output of the down path; two attention blocks in the middle."""

    def __init__(self, cond: int, depths: list[int], channels: list[int], attn: list[bool]):
        super().__init__()
        assert len(depths) == len(channels) == len(attn)
        self.n_down = len(channels) - 1
        self.down_blocks, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        ups = []
        for i, n in enumerate(depths):
            c1, c2 = channels[max(0, i - 1)], channels[i]
            self.down_blocks.append(nn.ModuleList(ResBlock(c1 if j == 0 else c2, c2, cond, attn[i]) for j in range(n)))
            ups.append(
                nn.ModuleList(
                    [ResBlock(2 * c2, c2, cond, attn[i]) for _ in range(n)] + [ResBlock(c1 + c2, c1, cond, attn[i])]
                )
            )
        self.up_blocks = nn.ModuleList(reversed(ups))
        c = channels[-1]
        self.mid = nn.ModuleList([ResBlock(c, c, cond, True), ResBlock(c, c, cond, True)])
        strided = [nn.Conv2d(ch, ch, 3, stride=2, padding=1) for ch in channels[:-1]]
        for conv in strided:
            nn.init.orthogonal_(conv.weight)
        self.downsample = nn.ModuleList([nn.Identity(), *strided])
        self.upsample = nn.ModuleList([nn.Identity()] + [conv3x3(ch, ch) for ch in reversed(channels[:-1])])

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = 2**self.n_down
        x = pad(x, (0, -w % m, 0, -h % m))
        skips = []
        for blocks, down in zip(self.down_blocks, self.downsample):
            x = down(x)
            skips.append(x)
            for b in cast(nn.ModuleList, blocks):
                x = b(x, cond)
                skips.append(x)
        for b in self.mid:
            x = b(x, cond)
        for i, (blocks, up) in enumerate(zip(self.up_blocks, self.upsample)):
            if i:
                x = up(interpolate(x, scale_factor=2.0, mode="nearest"))
            for b in cast(nn.ModuleList, blocks):
                x = b(torch.cat((x, skips.pop()), dim=1), cond)
        return x[..., :h, :w]
