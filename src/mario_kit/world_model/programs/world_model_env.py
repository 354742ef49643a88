"""The world model as a game: `WorldModelEnv.step(action)` gives the next frame, as an emulator would.

Apart from any window (DIAMOND keeps `envs/world_model_env.py` apart from `game/`): `play` drives it
from the keyboard, `dream` side by side with the real emulator, `bench/play.py` times it. What the
model needs (how many past frames, the upsampling factor) comes from the loaded run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from mario_kit import UserError
from mario_kit.emulator import level_number
from mario_kit.hardware import fast_bf16, resolve_device
from mario_kit.world_model.model import rewend, shipped, tiles
from mario_kit.world_model.model.checkpoint import load_model, path_of
from mario_kit.world_model.model.denoiser import Denoiser
from mario_kit.world_model.config import SamplerConfig
from mario_kit.world_model.model.sampler import sample, to_model, to_uint8, upsample


@dataclass
class DreamStep:
    """What one step of N dreams gave: frames (N, 60, 64, 3) and (N, 240, 256, 3) uint8; with the
    run's reward and end model, the predicted reward (N,) float32 and end class (N,) (rewend.END_*)."""

    low: np.ndarray
    full: np.ndarray
    reward: np.ndarray | None = None
    end: np.ndarray | None = None


class WorldModelEnv:
    """The model as a game: `step(action)` -> the next frame (low res, and full res); `step_batch`
    steps N dreams (`reset_batch`, `reset_row`) in one forward pass.

    On CUDA the whole step (every denoising step and the upsampler) is one captured CUDA graph by
    default: at batch 1 these small U-Nets are bound by kernel launches, not arithmetic (the same
    frames, faster: docs/BENCHMARKS.md, "On a GPU"). `bf16` None, what `play`, `DreamEnv` and
    `DreamVecEnv` pass by default: bfloat16 autocast on a CPU with bf16 arithmetic
    (`hardware.fast_bf16`), fp32 elsewhere."""

    def __init__(
        self,
        run: str | Path | None = None,
        upsampler: bool = True,
        steps: int | None = None,
        device: str = "auto",
        bf16: bool | None = False,
        seed: int = 0,
        compile: bool = False,
        cuda_graph: bool | None = None,
        channels_last: bool | None = None,
        upsampler_steps: int | None = None,
        rewards: bool = True,
    ):
        device = resolve_device(device)
        if bf16 is None:
            bf16 = device == "cpu" and fast_bf16("cpu")
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
        self.rewend: rewend.RewEndModel | None = None  # the run's reward and end model, when it has one
        if rewards and rewend.path_of(run, rewend.STAGE).exists():
            self.rewend, rmeta = rewend.load_rewend(run, device)
            if rmeta["action_set"] != self.meta["action_set"] or self.rewend.cfg.n_context > self.n_context:
                raise UserError(f"{run}/rewend.pt does not fit its denoiser (action set, or more context frames)")

    @property
    def upsampling_factor(self) -> int:
        """Full-res size over low-res size (the upsampler's; 4 for the NES frame)."""
        return self.up.cfg.upsampling_factor if self.up is not None else 4

    def reset(self, low: np.ndarray, actions: np.ndarray, level: str | None = None) -> None:
        """Start from context frames (n, 60, 64, 3) uint8 and the actions taken at them; the last
        `n_context` are used, and fewer than that are refused. `level` ('1-1'): the stage they are
        of, which a model trained with `levels` is told (None: unknown; other models ignore it)."""
        self.reset_batch(np.asarray(low)[None], np.asarray(actions)[None], [level])

    def reset_batch(self, low: np.ndarray, actions: np.ndarray, levels: list[str | None] | None = None) -> None:
        """Start N dreams: context frames (N, n, 60, 64, 3) uint8, actions (N, n) and the N stages
        (None: all unknown), as `reset`."""
        if low.shape[1] < self.n_context or actions.shape[1] < low.shape[1]:
            raise UserError(
                f"the model conditions on {self.n_context} past frames; this start gives {low.shape[1]} "
                f"(make spawns with `dataset spawn --context {self.n_context}`)"
            )
        low, actions = low[:, -self.n_context :], actions[:, actions.shape[1] - self.n_context :]
        frames = to_model(torch.from_numpy(np.ascontiguousarray(low)).flatten(0, 1)).to(self.device)
        if self._graph is not None and self._graph[1][0].shape[0] != len(low):
            self._graph = None  # captured for another number of dreams
        self.frames = frames.reshape(len(low), self.n_context, *frames.shape[1:])  # (N, n, C, H, W)
        self.actions = torch.as_tensor(np.asarray(actions), dtype=torch.long, device=self.device)
        numbers = [level_number(lv) for lv in levels] if levels is not None else [0] * len(low)
        if len(numbers) != len(low):
            raise UserError(f"{len(low)} starts but {len(numbers)} levels")
        self.level = torch.tensor(numbers, dtype=torch.long, device=self.device)

    @torch.inference_mode()
    def reset_row(self, i: int, low: np.ndarray, actions: np.ndarray, level: str | None = None) -> None:
        """Start dream i of the batch again from context frames (n, 60, 64, 3), their actions and stage."""
        low, actions = low[-self.n_context :], np.asarray(actions)[len(actions) - self.n_context :]
        self.frames[i] = to_model(torch.from_numpy(np.ascontiguousarray(low))).to(self.device)
        self.actions[i] = torch.as_tensor(actions, dtype=torch.long, device=self.device)
        self.level[i] = level_number(level)

    def _generate(
        self,
        ctx: torch.Tensor,
        actions: torch.Tensor,
        level: torch.Tensor,
        noise: torch.Tensor,
        noise_up: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.amp or torch.autocast("cpu", enabled=False):
            nxt = sample(self.model, ctx, actions, self.cfg, noise=noise, level=level).float()
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
        out = self.step_batch(np.array([action]))
        return out.low[0], out.full[0]

    @torch.inference_mode()
    def step_batch(self, actions: np.ndarray) -> DreamStep:
        """Each dream takes its action (N,) at its newest frame; one forward pass for all of them."""
        self.actions[:, -1] = torch.as_tensor(np.asarray(actions), dtype=torch.long, device=self.device)
        ctx = self.frames.flatten(1, 2)
        b, _, c, h, w = self.frames.shape
        noise = torch.randn((b, c, h, w), generator=self.gen, device=self.device)
        noise_up = None
        if self.up is not None:
            f = self.upsampling_factor
            noise_up = torch.randn((b, c, h * f, w * f), generator=self.gen, device=self.device)
        gen_step = self._replay if self.cuda_graph else self._generate
        nxt, full = gen_step(ctx, self.actions, self.level, noise, noise_up)
        reward = end = None
        if self.rewend is not None:
            k = self.rewend.cfg.n_context
            r, e = self.rewend.predict(torch.cat((self.frames[:, -k:], nxt[:, None]), dim=1), self.actions[:, -1])
            reward, end = r.float().cpu().numpy(), e.cpu().numpy()
        self.frames = torch.cat((self.frames[:, 1:], nxt[:, None]), dim=1)
        self.actions = torch.cat((self.actions[:, 1:], self.actions[:, -1:]), dim=1)
        low = to_uint8(nxt).cpu().numpy()
        if full is not None:
            big = to_uint8(full).cpu().numpy()
        elif self.tiles is not None:
            big = self.tiles(low)  # the whole batch in one lookup
        else:
            f = self.upsampling_factor
            big = np.repeat(np.repeat(low, f, 1), f, 2)
        return DreamStep(low, big, reward, end)
