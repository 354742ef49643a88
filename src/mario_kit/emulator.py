"""The only place that builds emulator environments.

We step the unwrapped nes-py env with raw joypad bytes: the same call serves collection and
replay, so a replay is bit-exact by construction. Frame skip is ours (nes-py has none).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from mario_kit import UserError

ALL_LEVELS: tuple[str, ...] = tuple(f"{w}-{s}" for w in range(1, 9) for s in range(1, 5))
ROM_MODE = "vanilla"  # gym-super-mario-bros 9 registers only the vanilla (v0) ROM for stages
DEFAULT_FRAME_SKIP = 4
# gym's x_pos is the screen page times 256 plus x on it; a castle maze's loop sends the page below 0 for
# a frame (x 65,535 in 4-4): an x from here up is no place in the stage.
X_WRAPPED = 0xFF00


def parse_levels(spec: str) -> list[str]:
    """'1-1' -> ['1-1']; '1-1,4-2' -> both; 'random' -> all 32 stages (one drawn per episode)."""
    spec = spec.strip()
    if spec == "random":
        return list(ALL_LEVELS)
    levels = [s.strip() for s in spec.split(",") if s.strip()]
    for lv in levels:
        if not re.fullmatch(r"[1-8]-[1-4]", lv):
            raise UserError(f"unknown level {lv!r}: use W-S with W in 1..8 and S in 1..4, a comma list, or 'random'")
    if not levels:
        raise UserError("no level given")
    return levels


def level_number(level: str | None) -> int:
    """A stage's number for a model that is told where it is: 1 (1-1) to 32 (8-4); 0 for anything
    else (no level recorded, 'random'), which such a model reads as "unknown"."""
    return ALL_LEVELS.index(level) + 1 if level in ALL_LEVELS else 0


def env_id(level: str) -> str:
    return f"SuperMarioBros-{level}-v0"


# The game env's Python-side state: what its rewards and `x_pos_max` are computed from. A snapshot
# carries it with the emulator's own, so a restored state steps exactly as the original did.
_TRACKERS = (
    "_time_last",
    "_x_position_max",
    "_score_last",
    "_coins_last",
    "_status_last",
    "_completion_rewarded",
    "_last_reward_components",
    "_last_reward_unclipped",
    "_last_reward_clipped",
)


@dataclass
class Snapshot:
    """The whole game at one frame (nes-py's native state and the env's reward trackers): a cache,
    never the truth; an episode that starts from one records how to get there from reset."""

    native: Any
    trackers: dict[str, Any]
    frame_count: int


@dataclass
class StepResult:
    frame: np.ndarray  # the screen after the step: a live view, valid until the next step (copy to keep)
    reward: float  # summed over the frames of the step
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    joypad: list[int]  # the joypad byte of each emulator frame actually run


# RAM addresses of the game's main loop: OperMode (1 playing a stage, 2 the end of a world) and
# OperMode_Task (3 while a stage runs; it moves on when the game leaves for a transition screen).
_OPER_MODE, _OPER_TASK, _STAGE_RUNS = 0x0770, 0x0772, 3
# A castle maze's checkpoints: ways taken right, and checkpoints passed, of the current loop (the SMB
# disassembly's MultiLoopCorrectCntr and MultiLoopPassCntr; only world 7 counts them, 0 elsewhere).
_MAZE_CORRECT, _MAZE_PASSED = 0x06D9, 0x06DA


class MarioEnv:
    """One Super Mario Bros stage, stepped with joypad bytes and a frame skip."""

    def __init__(self, level: str):
        import gymnasium as gym
        import gym_super_mario_bros  # noqa: F401  (registers the envs)

        parse_levels(level)
        self.level = level
        self.env_id = env_id(level)
        self._env: Any = gym.make(self.env_id).unwrapped  # nes-py's env: .screen, dump_state, load_state
        self.frame_count = 0
        self._end_mode = 0  # OperMode on the frame the game ended the episode (see `ending_over`)

    @property
    def screen(self) -> np.ndarray:
        """The live screen buffer (a view: copy it before keeping it)."""
        return self._env.screen

    @property
    def ram(self) -> np.ndarray:
        """The live 2 KiB of the console's RAM (a view)."""
        return self._env.ram

    def reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        frame, info = self._env.reset()
        self.frame_count = 0
        return frame.copy(), info

    def step(
        self,
        byte: int,
        frame_skip: int,
        on_frame: Callable[[np.ndarray], int | None] | None = None,
    ) -> StepResult:
        """Run up to `frame_skip` emulator frames, stopping early when the episode ends (or, once it
        has, when its ending sequence is over: see `ended`).

        `on_frame(screen)` is called after every emulator frame but the last; it may return a
        new joypad byte for the following frames (a human changing keys mid-step)."""
        total = 0.0
        joypad: list[int] = []
        was_ended = self.ended
        terminated = truncated = False
        info: dict[str, Any] = {}
        for k in range(frame_skip):
            reward, terminated, truncated, info = self.step_frame(byte)
            joypad.append(byte)
            total += reward
            if self.ending_over() if was_ended else terminated or truncated:
                break
            if on_frame is not None and k < frame_skip - 1:
                new = on_frame(self._env.screen)
                if new is not None:
                    byte = new
        return StepResult(self._env.screen, total, terminated, truncated, info, joypad)

    @property
    def ended(self) -> bool:
        """Whether the game has ended the episode (a death or the flag). The emulator still runs
        after that: each frame plays on the ending sequence (the death animation, the flag and the
        walk into the castle) with no reward, until `ending_over()`."""
        return bool(self._env.done)

    def ending_over(self) -> bool:
        """After the end: whether the game has left the stage for a transition screen (the lives
        count, the next stage or world). A death or a flag plays in the stage's own game mode and
        task; the end of a world (the axe) plays in mode 2 until the next world loads."""
        mode, task = int(self._env.ram[_OPER_MODE]), int(self._env.ram[_OPER_TASK])
        return mode != self._end_mode or (mode == 1 and task != _STAGE_RUNS)

    def maze(self) -> tuple[int, int]:
        """In a castle maze: (checkpoints passed the right way, checkpoints passed) of the loop Mario is
        in; a wrong way sends him back once the loop's checkpoints are passed. (0, 0) elsewhere."""
        ram = self._env.ram
        return int(ram[_MAZE_CORRECT]), int(ram[_MAZE_PASSED])

    def snapshot(self) -> Snapshot:
        trackers = {k: copy.copy(getattr(self._env, k)) for k in _TRACKERS if hasattr(self._env, k)}
        return Snapshot(self._env.dump_state(), trackers, self.frame_count)

    def restore(self, snap: Snapshot) -> np.ndarray:
        """Put the game back where `snap` was taken; returns its screen (a copy)."""
        self._env.load_state(snap.native)
        for k, v in snap.trackers.items():
            setattr(self._env, k, copy.copy(v))
        self.frame_count = snap.frame_count
        return self._env.screen.copy()

    def step_frame(self, byte: int) -> tuple[float, bool, bool, dict[str, Any]]:
        """One emulator frame: (reward, terminated, truncated, info). After the end (`ended`) the
        frame plays the ending sequence: no reward, terminated stays true. Replay uses it too."""
        self.frame_count += 1
        if self.ended:
            self._env._frame_advance(byte)
            return 0.0, True, False, self._env._get_info()
        _, reward, terminated, truncated, info = self._env.step(byte)
        if terminated:
            self._end_mode = int(self._env.ram[_OPER_MODE])
        return float(reward), terminated, truncated, info

    def close(self) -> None:
        self._env.close()


def run_start(
    env: MarioEnv, start: np.ndarray | None, begin: int = 0, snaps: list[Snapshot] | None = None
) -> dict[str, Any] | None:
    """Step a reset env through an episode's start prefix (the joypad bytes from the stage's reset to
    the episode's frame 0; None or empty for an episode that starts at reset); the last info, if any.
    `begin`: the env is at that frame of the prefix already; `snaps`: a snapshot is appended after
    every SNAP_EVERY-th frame (`StartCache`)."""
    info = None
    start = start if start is not None else np.zeros(0, np.uint8)
    for k in range(begin, len(start)):
        _, terminated, truncated, info = env.step_frame(int(start[k]))
        if (terminated or truncated) and k + 1 < len(start):
            raise UserError(f"the way from reset ends the game at frame {k + 1} of its {len(start)}: not a start")
        if snaps is not None and (k + 1) % SNAP_EVERY == 0:
            snaps.append(env.snapshot())
    return info


SNAP_EVERY = 64  # frames between the snapshots a StartCache keeps along a start prefix


class StartCache:
    """One process's way to the starts of many episodes: an env a stage, reset rather than built
    again, and snapshots along the last start prefix run on each stage, so that starts sharing a
    beginning (a frontier's episodes, taken in the order of their starts) run it once. Snapshots are
    a cache, never the truth: a replay's digest check stands behind every episode it rebuilds."""

    def __init__(self) -> None:
        self._envs: dict[str, MarioEnv] = {}
        self._last: dict[str, tuple[np.ndarray, list[Snapshot]]] = {}

    def start(self, level: str, start: np.ndarray | None) -> tuple[MarioEnv, dict[str, Any]]:
        """The stage's env at the episode's frame 0, and the info there."""
        env = self._envs.get(level) or self._envs.setdefault(level, MarioEnv(level))
        _, info = env.reset()
        start = start if start is not None else np.zeros(0, np.uint8)
        prev, snaps = self._last.get(level, (np.zeros(0, np.uint8), []))
        n = min(len(prev), len(start))
        common = int(np.argmin(np.append(prev[:n] == start[:n], False)))  # the shared beginning's length
        k = min(len(snaps), max(min(common, len(start) - 1), 0) // SNAP_EVERY)  # one frame at least is run
        if k:
            env.restore(snaps[k - 1])
        snaps = snaps[:k]
        info = run_start(env, start, k * SNAP_EVERY, snaps) or info
        self._last[level] = (start, snaps)
        return env, info


def replay_to(
    level: str, joypad: np.ndarray, step_frames: np.ndarray, steps: int, start: np.ndarray | None = None
) -> MarioEnv:
    """A fresh env replayed through the first `steps` steps of an episode (the real game at frame `steps`)."""
    env = MarioEnv(level)
    env.reset()
    run_start(env, start)
    n = int(np.sum(step_frames[:steps]))
    for byte in joypad[:n]:
        env.step_frame(int(byte))
    return env


def replay(
    level: str,
    joypad: np.ndarray,
    step_frames: np.ndarray,
    start: np.ndarray | None = None,
    cache: StartCache | None = None,
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Rebuild an episode in the real emulator: yields (frame, info) for frame 0..T. `start`: the
    episode's start prefix (`run_start`), for an episode that began where another left off.

    The emulator is deterministic from reset, so the joypad bytes of every frame reproduce
    every frame and every info value exactly. `cache`: reach the start through it (and keep its env
    open for the next episode)."""
    env = None
    try:
        if cache is not None:
            env, info = cache.start(level, start)
        else:
            env = MarioEnv(level)
            _, info = env.reset()
            info = run_start(env, start) or info
        yield env.screen.copy(), info
        pos = 0
        for n in step_frames:
            for byte in joypad[pos : pos + int(n)]:
                _, _, _, info = env.step_frame(int(byte))
            pos += int(n)
            yield env.screen.copy(), info
    finally:
        if cache is None and env is not None:
            env.close()
