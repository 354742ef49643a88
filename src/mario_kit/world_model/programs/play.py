"""`mario-kit play`: a person plays inside the world model.

Keys become actions (the human collector's mapping); the model generates each next frame from the
last frames and actions it conditions on (4 by default), starting from a spawn (without `--run`: the
model and spawns shipped with mario-kit). Enter: next spawn, R: restart it, P: pause,
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

from mario_kit import UserError
from mario_kit.datasets import format as F
from mario_kit.datasets.episode import EpisodeMeta, EpisodeWriter
from mario_kit.datasets.ops import Spawns, load_spawns
from mario_kit.hardware import resolve_device
from mario_kit.world_model.model import shipped
from mario_kit.world_model.programs.world_model_env import WorldModelEnv


CPU_PLAY_STEPS = 1  # play's default on a CPU: about twice the frame rate of 3 steps, with the same
# next-frame PSNR on the documented CPU run (docs/BENCHMARKS.md, "Play speed")


@dataclass
class PlayResult:
    frames: int  # model frames generated
    actions: list[int]
    episodes: list[Path]
    model_fps: float


@dataclass(kw_only=True)
class PlayConfig:
    """`run` None: the model shipped with mario-kit, and `spawns` None its spawns. `sampling_steps`
    None: the run's sampler on CUDA, CPU_PLAY_STEPS on a CPU. `bf16` None: on a CPU with bf16
    arithmetic (mario_kit.hardware.fast_bf16); not on CUDA, where batch-1 generation is faster in
    fp32 (docs/BENCHMARKS.md). `cuda_graph` None: on CUDA (without `compile`). `sync` and `script`
    (tests): one model frame per displayed frame, no thread; scripted key events by frame."""

    run: Path | None = None
    spawns: Path | None = None
    level: str | None = None  # only the spawns on these stages (a comma list)
    upsampler: bool = True
    sampling_steps: int | None = None
    upsampler_steps: int | None = None
    device: str = "auto"
    bf16: bool | None = None
    fps: float = 15.0
    scale: int = 3
    keymap: Path | None = None
    record: Path | None = None  # record each played episode here (an episode folder)
    seed: int = 0
    compile: bool = False
    cuda_graph: bool | None = None
    sync: bool = False
    script: dict[int, list] | None = None
    max_frames: int | None = None


def play(cfg: PlayConfig) -> PlayResult:
    """Open the window and play inside the world model."""
    from mario_kit.datasets.dataset import check_output_dir
    from mario_kit.gui import load_keymap, require_display, script_from_env

    if cfg.spawns is None and cfg.run is not None:
        raise UserError("--spawn SPAWNS.h5 is needed with --run (`mario-kit dataset spawn`)")
    sp = load_spawns(cfg.spawns if cfg.spawns is not None else shipped.spawns_file(), cfg.level)
    keys = load_keymap(cfg.keymap)
    script = cfg.script if cfg.script is not None else script_from_env()
    require_display(script, "play")
    dream = _world_model(cfg)
    if dream.meta["n_actions"] != len(sp.action_set) or dream.meta["action_set"] != sp.action_set.name:
        raise UserError(
            f"the run was trained on the {dream.meta['action_set']} action set, the spawns use {sp.action_set.name}"
        )
    if cfg.record is not None:
        check_output_dir(Path(cfg.record), sp.action_set.name, sp.frame_skip)
    state = _Session(dream, sp, cfg.record, cfg.seed)
    state.start(0)
    worker = None if cfg.sync else threading.Thread(target=state.generate_forever, args=(cfg.fps,), daemon=True)
    if worker:
        worker.start()
    try:
        _window(state, keys, cfg.scale, cfg.fps, cfg.sync, script or {}, cfg.max_frames)
    finally:
        state.running = False
        if worker:
            worker.join(timeout=30)
        state.finish()
    return PlayResult(state.total, state.all_actions, state.saved, state.model_fps)


def _world_model(cfg: PlayConfig) -> WorldModelEnv:
    device = resolve_device(cfg.device)
    steps = CPU_PLAY_STEPS if cfg.sampling_steps is None and device == "cpu" else cfg.sampling_steps
    dream = WorldModelEnv(
        cfg.run,
        cfg.upsampler,
        steps,
        device,
        cfg.bf16,  # None: WorldModelEnv's rule (a CPU with bf16 arithmetic)
        cfg.seed,
        cfg.compile,
        cfg.cuda_graph,
        upsampler_steps=cfg.upsampler_steps,
    )
    if cfg.upsampler and dream.up is None and dream.tiles is None:
        print("this model has no upsampler (nor tiles): its 64x60 frames are shown enlarged", flush=True)
    if cfg.compile:
        print("compiling the model (torch.compile): the first frames come after a minute or more on a CPU", flush=True)
    return dream


def _window(
    state: "_Session",
    keys: dict[str, list[str]],
    scale: int,
    fps: float,
    sync: bool,
    script: dict[int, list],
    max_frames: int | None,
) -> None:
    """The window's loop at 60 Hz: keys to the session's action and commands, the newest frame drawn."""
    from mario_kit.gui import Controls, FrameLimiter, Screen

    sp = state.sp
    table = F.action_table(sp.action_set)
    screen = Screen(scale, "mario-kit: play inside the world model")
    controls = Controls(keys)  # after the screen: pygame is initialised there
    limiter = FrameLimiter(60.0)
    shown = 0
    try:
        while max_frames is None or state.total < max_frames:
            for e in script.pop(shown, []):
                screen.pg.event.post(e)
            cmd = None
            for e in screen.pg.event.get():
                cmd = controls.handle(e) or cmd
                if cmd == "quit":
                    return
            if cmd == "pause":
                state.paused = not state.paused
            elif cmd in ("start", "next"):  # Enter and N: the next spawn
                state.request(state.spawn + 1)
            elif cmd in ("restart", "discard"):  # R (and Backspace) restart the spawn
                state.request(state.spawn)
            state.action = int(table[F.buttons_to_byte(controls.buttons())])
            if sync and not state.paused:
                state.generate_one()
            frame, n = state.latest()
            slow = state.model_fps < 0.9 * fps and not sync and n > 2
            compiling = not n and state.dream.compiled  # until the first frame: torch.compile at work
            model = f"model {state.model_fps:4.1f} fps" if n else "model compiling" if compiling else "model starting"
            banner = (
                "PAUSED (P)" if state.paused else "compiling the model: a minute or more on a CPU" if compiling else ""
            )
            screen.draw(
                frame,
                [
                    f"spawn {state.spawn % len(sp) + 1}/{len(sp)}  step {state.steps}  {sp.action_set.meaning(state.action)}",
                    f"window {limiter.fps:4.1f} fps  {model}" + ("  (model slower than target)" if slow else ""),
                ],
                [banner],
                dot=state.record is not None,
            )
            shown += 1
            if not sync:
                limiter.wait()
    finally:
        screen.close()


class _Session:
    """The state shared by the window and the generating thread."""

    def __init__(self, dream: WorldModelEnv, sp: Spawns, record: Path | None, seed: int):
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
        self.dream.reset(self.sp.low[self.spawn], self.sp.actions[self.spawn], self.sp.level_of(self.spawn))
        self.steps = 0
        with self.lock:
            self.frame = self.sp.full[self.spawn, -1]
        if self.record is not None:
            ref = self.sp.refs[self.spawn]
            meta = EpisodeMeta(
                env_id=f"SuperMarioBros-{ref['level']}-v0",
                level=ref["level"],
                frame_skip=self.sp.frame_skip,
                action_set=self.sp.action_set,
                source="world_model",
                policy={"name": "human-in-model"},
                extra={"spawn": ref, "replayable": False, "run_step": self.dream.meta["step"]},
            )
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
