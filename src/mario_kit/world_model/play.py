"""`mario-kit play`: a person plays inside the world model.

Keys become actions (the human collector's mapping); the model generates each next frame from the
last 4 frames and actions, starting from a spawn. Enter: next spawn, R: restart it, P: pause,
Esc: quit. The window never waits for the model: generation runs on its own thread at its own
pace (capped at --fps, 15 by default: NES speed at frame skip 4), the window redraws at 60 Hz with
the newest frame, and the overlay shows both rates. `--record DIR` saves each spawn session as an
episode (source = world_model; not replayable in the emulator).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mario_kit import UserError
from mario_kit.datasets import format as F_
from mario_kit.datasets.episode import EpisodeMeta, EpisodeWriter
from mario_kit.datasets.ops import Spawns, load_spawns
from mario_kit.hardware import fast_bf16
from mario_kit.world_model.sampler import SamplerConfig, sample, to_model, to_uint8, upsample
from mario_kit.world_model.train import load_model


CPU_PLAY_STEPS = 1  # play's default on a CPU: about 23 frames/s here, against 9-11 at 3 steps, with the
# same next-frame PSNR on the documented CPU run (SSIM 0.950 vs 0.956; docs/BENCHMARKS.md)


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a GPU is present, else "cpu"."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


class Dream:
    """The model as a game: `step(action)` -> the next frame (low res, and full res).

    On CUDA the whole step (every denoising step and the upsampler) is one captured CUDA graph by
    default: at batch 1 these small U-Nets are bound by kernel launches, not arithmetic (an H100:
    18 -> 34 frames/s with DIAMOND's upsampler, the same frames; docs/BENCHMARKS.md)."""

    def __init__(self, run: str | Path, upsampler: bool = True, steps: int | None = None, device: str = "auto",
                 bf16: bool = False, seed: int = 0, compile: bool = False, cuda_graph: bool | None = None,
                 channels_last: bool | None = None, upsampler_steps: int | None = None):
        device = resolve_device(device)
        self.model, cfg, self.meta = load_model(run, "denoiser", device=device)
        self.up = None
        if upsampler and (Path(run) / "upsampler.pt").exists():
            self.up, ucfg, _ = load_model(run, "upsampler", device=device)
            self.up_cfg = ucfg.upsampler_sampler
            if upsampler_steps:
                self.up_cfg.steps = upsampler_steps
        if channels_last is None:  # 1.1-1.2x faster on the CPU, same results; on CUDA the default stays
            channels_last = device == "cpu"  # the layout of the measured configuration (34 frames/s)
        if channels_last:
            for m in (self.model, self.up):
                if m is not None:
                    m.to(memory_format=torch.channels_last)
        if compile:  # inference-only graphs with frozen weights (constant folding, prepacked oneDNN
            # convolutions): ~1.4x on this CPU at 3 steps, after about a minute of compiling.
            # dynamic=False: denoiser and upsampler share the U-Net's code; with automatic dynamic
            # shapes the second size recompiles symbolically and inductor fails on the padding's modulo.
            opts = {"freezing": True}
            self.model = torch.compile(self.model, options=opts, dynamic=False)
            if self.up is not None:
                self.up = torch.compile(self.up, options=opts, dynamic=False)
        self.cfg = SamplerConfig(**{**vars(cfg.sampler), **({"steps": steps} if steps else {})})
        self.device = torch.device(device)
        self.cuda_graph = (self.device.type == "cuda" and not compile) if cuda_graph is None else cuda_graph
        if self.cuda_graph and self.device.type != "cuda":
            raise UserError("CUDA graphs need a CUDA device")
        self._graph: tuple | None = None  # (graph, static inputs, static outputs), captured at the first step
        # autocast's weight-cast cache must be off while a graph is captured (torch.cuda.graphs' notes)
        self.amp = torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=not self.cuda_graph) if bf16 else None
        self.gen = torch.Generator(device).manual_seed(seed)

    def reset(self, low: np.ndarray, actions: np.ndarray) -> None:
        """Start from n context frames (n, 60, 64, 3) uint8 and the actions taken at them."""
        self.frames = to_model(torch.from_numpy(np.ascontiguousarray(low))).to(self.device)[None]  # (1, n, C, H, W)
        self.actions = torch.as_tensor(actions, dtype=torch.long, device=self.device)[None]

    def _generate(self, ctx: torch.Tensor, actions: torch.Tensor, noise: torch.Tensor,
                  noise_up: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        with self.amp or torch.autocast("cpu", enabled=False):
            nxt = sample(self.model, ctx, actions, self.cfg, noise=noise).float()
            full = upsample(self.up, nxt, self.up_cfg, noise=noise_up).float() if self.up is not None else None
        return nxt, full

    def _replay(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`_generate` through a CUDA graph: copy into the static inputs, replay, copy the outputs out."""
        if self._graph is None:
            static_in = tuple(x.clone() if x is not None else None for x in inputs)
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
        return tuple(x.clone() if x is not None else None for x in static_out)

    @torch.inference_mode()
    def step(self, action: int) -> tuple[np.ndarray, np.ndarray]:
        """The player takes `action` at the newest frame; returns the frame that follows (low, full)."""
        self.actions[0, -1] = action
        ctx = self.frames.flatten(1, 2)
        b, _, c, h, w = self.frames.shape
        noise = torch.randn((b, c, h, w), generator=self.gen, device=self.device)
        noise_up = None
        if self.up is not None:
            f = self.up.cfg.upsampling_factor
            noise_up = torch.randn((b, c, h * f, w * f), generator=self.gen, device=self.device)
        nxt, full = (self._replay if self.cuda_graph else self._generate)(ctx, self.actions, noise, noise_up)
        self.frames = torch.cat((self.frames[:, 1:], nxt[:, None]), dim=1)
        self.actions = torch.cat((self.actions[:, 1:], self.actions[:, -1:]), dim=1)
        low = to_uint8(nxt[0]).cpu().numpy()
        full_np = to_uint8(full[0]).cpu().numpy() if full is not None else np.repeat(np.repeat(low, 4, 0), 4, 1)
        return low, full_np


@dataclass
class PlayResult:
    frames: int  # model frames generated
    actions: list[int]
    episodes: list[Path]
    model_fps: float


def play(run: str | Path, spawns: str | Path, upsampler: bool = True, steps: int | None = None, device: str = "auto",
         bf16: bool | None = None, fps: float = 15.0, scale: int = 3, keymap: Path | None = None, record: Path | None = None,
         sync: bool = False, script: dict[int, list] | None = None, max_frames: int | None = None,
         seed: int = 0, compile: bool = False, cuda_graph: bool | None = None,
         upsampler_steps: int | None = None) -> PlayResult:
    """Open the window and play. `sync` (tests): one model frame per displayed frame, no thread.
    `bf16` None: on a CPU with bf16 arithmetic (mario_kit.hardware.fast_bf16); not on CUDA, where
    batch-1 generation is faster in fp32 (an H100 with CUDA graphs: 34.1 vs 30.5 frames/s with the
    upsampler). `cuda_graph` None: on CUDA (without `compile`)."""
    from mario_kit.datasets.dataset import check_output_dir
    from mario_kit.gui import Controls, FrameLimiter, Screen, load_keymap, require_display, script_from_env

    sp = load_spawns(spawns)
    controls_keymap = load_keymap(keymap)
    script = script if script is not None else script_from_env()
    require_display(script, "play")
    device = resolve_device(device)
    if steps is None and device == "cpu":
        steps = CPU_PLAY_STEPS
    if bf16 is None:
        bf16 = device == "cpu" and fast_bf16("cpu")
    dream = Dream(run, upsampler, steps, device, bf16, seed, compile, cuda_graph, upsampler_steps=upsampler_steps)
    if dream.meta["n_actions"] != len(sp.action_set) or dream.meta["action_set"] != sp.action_set.name:
        raise UserError(f"the run was trained on the {dream.meta['action_set']} action set, the spawns use {sp.action_set.name}")
    if record is not None:
        check_output_dir(Path(record), sp.action_set.name, sp.frame_skip)
    table = F_.action_table(sp.action_set)
    screen = Screen(scale, "mario-kit: play inside the world model")
    controls = Controls(controls_keymap)
    limiter = FrameLimiter(60.0)
    state = _Session(dream, sp, record, seed)
    state.start(0)
    result = PlayResult(0, [], [], 0.0)
    worker = None if sync else threading.Thread(target=state.generate_forever, args=(fps,), daemon=True)
    if worker:
        worker.start()
    script = script or {}
    shown = 0
    try:
        while True:
            for e in script.pop(shown, []):
                screen.pg.event.post(e)
            cmd = None
            for e in screen.pg.event.get():
                cmd = controls.handle(e) or cmd
                if cmd == "quit":
                    break
            if cmd == "quit":
                break
            if cmd == "pause":
                state.paused = not state.paused
            elif cmd == "start":
                state.request(state.spawn + 1)
            elif cmd in ("restart", "discard"):  # R (and Backspace) restart the spawn
                state.request(state.spawn)
            elif cmd == "next":
                state.request(state.spawn + 1)
            state.action = int(table[F_.buttons_to_byte(controls.buttons())])
            if sync and not state.paused:
                state.generate_one()
            frame, n = state.latest()
            slow = state.model_fps < 0.9 * fps and not sync and n > 2
            screen.draw(frame, [
                f"spawn {state.spawn % len(sp) + 1}/{len(sp)}  step {state.steps}  {sp.action_set.meaning(state.action)}",
                f"window {limiter.fps:4.1f} fps  model {state.model_fps:4.1f} fps" + ("  (model slower than target)" if slow else ""),
            ], ["PAUSED (P)" if state.paused else ""], dot=record is not None)
            shown += 1
            limiter.wait() if not sync else None
            if max_frames is not None and state.total >= max_frames:
                break
    finally:
        state.running = False
        if worker:
            worker.join(timeout=30)
        state.finish()
        screen.close()
    result.frames, result.actions, result.episodes, result.model_fps = state.total, state.all_actions, state.saved, state.model_fps
    return result


class _Session:
    """The state shared by the window and the generating thread."""

    def __init__(self, dream: Dream, sp: Spawns, record: Path | None, seed: int):
        self.dream, self.sp, self.record = dream, sp, record
        self.lock = threading.Lock()
        self.action = 0
        self.paused = False
        self.running = True
        self.pending: int | None = None
        self.total = 0
        self.steps = 0
        self.all_actions: list[int] = []
        self.saved: list[Path] = []
        self.writer: EpisodeWriter | None = None
        self.model_fps = 0.0
        self._stamps: list[float] = []
        self.spawn = 0

    def start(self, i: int) -> None:
        self.finish()
        self.spawn = i % len(self.sp)
        self.dream.reset(self.sp.low[self.spawn], self.sp.actions[self.spawn])
        self.steps = 0
        with self.lock:
            self.frame = self.sp.full[self.spawn, -1]
        if self.record is not None:
            ref = self.sp.refs[self.spawn]
            meta = EpisodeMeta(env_id=f"SuperMarioBros-{ref['level']}-v0", level=ref["level"], frame_skip=self.sp.frame_skip,
                               action_set=self.sp.action_set, source="world_model", policy={"name": "human-in-model"},
                               extra={"spawn": ref, "replayable": False, "run_step": self.dream.meta["step"]})
            self.writer = EpisodeWriter(self.record, meta)
            self.writer.add_frame(self.frame)

    def request(self, i: int) -> None:
        self.pending = i

    def generate_one(self) -> None:
        if self.pending is not None:
            i, self.pending = self.pending, None
            self.start(i)
        a = self.action
        _, full = self.dream.step(a)
        with self.lock:
            self.frame = full
            self.total += 1
            self.steps += 1
            self.all_actions.append(a)
        if self.writer is not None:
            byte = int(self.sp.action_set.joypad[a])
            self.writer.add_step(a, full, 0.0, False, False, {}, [byte] * self.sp.frame_skip)
        now = time.perf_counter()
        self._stamps = (self._stamps + [now])[-16:]
        if len(self._stamps) > 1:
            self.model_fps = (len(self._stamps) - 1) / (self._stamps[-1] - self._stamps[0])

    def generate_forever(self, fps: float) -> None:
        period = 1.0 / fps if fps > 0 else 0.0
        nxt = time.perf_counter()
        while self.running:
            if self.paused:
                time.sleep(0.01)
                nxt = time.perf_counter()
                continue
            self.generate_one()
            nxt += period
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.perf_counter()

    def latest(self) -> tuple[np.ndarray, int]:
        with self.lock:
            return self.frame, self.total

    def finish(self) -> None:
        if self.writer is not None:
            if self.writer.n_steps:
                self.saved.append(self.writer.finish("cut"))
            else:
                self.writer.discard()
            self.writer = None

