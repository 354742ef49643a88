"""The world model as a game: `WorldModelEnv.step(action)` gives the next frame, as an emulator would.

Apart from any window (DIAMOND keeps `envs/world_model_env.py` apart from `game/`): `play` drives it
from the keyboard, `dream` side by side with the real emulator, `bench/play.py` times it. What the
model needs (how many past frames, the upsampling factor) comes from the loaded run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from mario_kit import UserError
from mario_kit.hardware import resolve_device
from mario_kit.world_model.model import shipped, tiles
from mario_kit.world_model.model.checkpoint import load_model, path_of
from mario_kit.world_model.model.denoiser import Denoiser
from mario_kit.world_model.config import SamplerConfig
from mario_kit.world_model.model.sampler import sample, to_model, to_uint8, upsample


class WorldModelEnv:
    """The model as a game: `step(action)` -> the next frame (low res, and full res).

    On CUDA the whole step (every denoising step and the upsampler) is one captured CUDA graph by
    default: at batch 1 these small U-Nets are bound by kernel launches, not arithmetic (the same
    frames, faster: docs/BENCHMARKS.md, "On a GPU")."""

    def __init__(
        self,
        run: str | Path | None = None,
        upsampler: bool = True,
        steps: int | None = None,
        device: str = "auto",
        bf16: bool = False,
        seed: int = 0,
        compile: bool = False,
        cuda_graph: bool | None = None,
        channels_last: bool | None = None,
        upsampler_steps: int | None = None,
    ):
        device = resolve_device(device)
        run = shipped.run_folder() if run is None else run  # verified against its checksums
        self.model, cfg, self.meta = load_model(run, "denoiser", device=device)
        self.n_context = self.model.cfg.n_context  # past frames (and actions) each step conditions on
        self.up = None
        self.tiles: tiles.TileUpsampler | None = None  # without a diffusion upsampler: the tile lookup
        if upsampler and path_of(run, "upsampler").exists():
            self.up, ucfg, _ = load_model(run, "upsampler", device=device)
            self.up_cfg = ucfg.upsampler_sampler
            if upsampler_steps:
                self.up_cfg.steps = upsampler_steps
        elif upsampler and (Path(run) / tiles.FILE).exists():
            self.tiles = tiles.load(Path(run) / tiles.FILE)
        if channels_last is None:  # faster on the CPU, the same results; on CUDA the default stays the
            channels_last = device == "cpu"  # layout of the measured configuration (docs/BENCHMARKS.md)
        if channels_last:
            for m in (self.model, self.up):
                if m is not None:
                    m.to(memory_format=torch.channels_last)
        self.compiled = compile
        if compile:  # inference-only graphs with frozen weights (constant folding, prepacked oneDNN
            # convolutions): faster on a CPU after a minute or so of compiling (docs/BENCHMARKS.md).
            # dynamic=False: denoiser and upsampler share the U-Net's code; with automatic dynamic
            # shapes the second size recompiles symbolically and inductor fails on the padding's modulo.
            opts: dict[str, Any] = {"freezing": True}
            self.model = cast(Denoiser, torch.compile(self.model, options=opts, dynamic=False))
            if self.up is not None:
                self.up = cast(Denoiser, torch.compile(self.up, options=opts, dynamic=False))
        self.cfg = SamplerConfig(**{**vars(cfg.sampler), **({"steps": steps} if steps else {})})
        self.device = torch.device(device)
        self.cuda_graph = (self.device.type == "cuda" and not compile) if cuda_graph is None else cuda_graph
        if self.cuda_graph and self.device.type != "cuda":
            raise UserError("CUDA graphs need a CUDA device")
        self._graph: tuple | None = None  # (graph, static inputs, static outputs), captured at the first step
        # autocast's weight-cast cache must be off while a graph is captured (torch.cuda.graphs' notes)
        self.amp = (
            torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.cuda_graph) if bf16 else None
        )
        self.gen = torch.Generator(device).manual_seed(seed)

    @property
    def upsampling_factor(self) -> int:
        """Full-res size over low-res size (the upsampler's; 4 for the NES frame)."""
        return self.up.cfg.upsampling_factor if self.up is not None else 4

    def reset(self, low: np.ndarray, actions: np.ndarray) -> None:
        """Start from context frames (n, 60, 64, 3) uint8 and the actions taken at them; the last
        `n_context` are used, and fewer than that are refused."""
        if len(low) < self.n_context or len(actions) < len(low):
            raise UserError(
                f"the model conditions on {self.n_context} past frames; this start gives {len(low)} "
                f"(make spawns with `dataset spawn --context {self.n_context}`)"
            )
        low, actions = low[-self.n_context :], actions[len(actions) - self.n_context :]
        self.frames = to_model(torch.from_numpy(np.ascontiguousarray(low))).to(self.device)[None]  # (1, n, C, H, W)
        self.actions = torch.as_tensor(actions, dtype=torch.long, device=self.device)[None]

    def _generate(
        self, ctx: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor, noise_up: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.amp or torch.autocast("cpu", enabled=False):
            nxt = sample(self.model, ctx, actions, self.cfg, noise=noise).float()
            full = upsample(self.up, nxt, self.up_cfg, noise=noise_up).float() if self.up is not None else None
        return nxt, full

    def _replay(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`_generate` through a CUDA graph: copy into the static inputs, replay, copy the outputs out."""
        if self._graph is None:
            static_in: tuple[Any, ...] = tuple(x.clone() if x is not None else None for x in inputs)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm up (cuDNN picks its algorithms) outside the capture
                for _ in range(3):
                    self._generate(*static_in)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: play captures on its generating thread while the window's thread runs on
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                static_out = self._generate(*static_in)
            self._graph = (graph, static_in, static_out)
        graph, static_in, static_out = self._graph
        for dst, src in zip(static_in, inputs):
            if dst is not None:
                dst.copy_(src)
        graph.replay()
        return static_out[0].clone(), static_out[1].clone() if static_out[1] is not None else None

    @torch.inference_mode()
    def step(self, action: int) -> tuple[np.ndarray, np.ndarray]:
        """The player takes `action` at the newest frame; returns the frame that follows (low, full)."""
        self.actions[0, -1] = action
        ctx = self.frames.flatten(1, 2)
        b, _, c, h, w = self.frames.shape
        noise = torch.randn((b, c, h, w), generator=self.gen, device=self.device)
        noise_up = None
        if self.up is not None:
            f = self.upsampling_factor
            noise_up = torch.randn((b, c, h * f, w * f), generator=self.gen, device=self.device)
        nxt, full = (self._replay if self.cuda_graph else self._generate)(ctx, self.actions, noise, noise_up)
        self.frames = torch.cat((self.frames[:, 1:], nxt[:, None]), dim=1)
        self.actions = torch.cat((self.actions[:, 1:], self.actions[:, -1:]), dim=1)
        low = to_uint8(nxt[0]).cpu().numpy()
        if full is not None:
            return low, to_uint8(full[0]).cpu().numpy()
        if self.tiles is not None:
            return low, self.tiles(low)
        return low, np.repeat(np.repeat(low, self.upsampling_factor, 0), self.upsampling_factor, 1)
