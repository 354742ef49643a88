"""The real game as mario-kit records it, as a Gymnasium environment (`mario_kit/SuperMarioBros-v0`).

One stage; Discrete actions of an action set, each held for `frame_skip` emulator frames (rewards
summed, the last frame returned, stopping early when the episode ends): the collectors' loop, frame
for frame. An exported dataset names it with its level, action set and frame skip, so that Minari's
`recover_environment()` rebuilds the game its episodes were recorded in.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from mario_kit.datasets import format as F
from mario_kit.emulator import DEFAULT_FRAME_SKIP, MarioEnv
from mario_kit.envs import GAME_ENTRY, GAME_ID


def game_spec(level: str, action_set: str, frame_skip: int) -> gym.envs.registration.EnvSpec:
    """The env spec of the game a dataset was recorded in (JSON-serialisable: Minari stores it)."""
    return gym.envs.registration.EnvSpec(
        GAME_ID, GAME_ENTRY, kwargs={"level": level, "action_set": action_set, "frame_skip": int(frame_skip)}
    )


class GameEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 60 / DEFAULT_FRAME_SKIP}

    def __init__(
        self,
        level: str = "1-1",
        action_set: str = "simple",
        frame_skip: int = DEFAULT_FRAME_SKIP,
        render_mode: str | None = None,
    ):
        if not 1 <= int(frame_skip) <= F.MAX_FRAME_SKIP:
            raise ValueError(f"frame_skip must be in 1..{F.MAX_FRAME_SKIP}")
        self.action_set, self.frame_skip = F.get_action_set(action_set), int(frame_skip)
        self.game = MarioEnv(level)
        self.action_space = gym.spaces.Discrete(len(self.action_set))
        self.observation_space = gym.spaces.Box(0, 255, F.FRAME_SHAPE, np.uint8)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": 60 / self.frame_skip}
        self.spec = game_spec(level, action_set, self.frame_skip)  # gym.make sets its own
        self._frame = np.zeros(F.FRAME_SHAPE, np.uint8)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)  # the game has no randomness: every reset is the stage's first frame
        self._frame, info = self.game.reset()
        return self._frame.copy(), dict(info)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action!r} outside Discrete({len(self.action_set)})")
        r = self.game.step(int(self.action_set.joypad[int(action)]), self.frame_skip)
        self._frame = r.frame.copy()
        return self._frame.copy(), float(r.reward), bool(r.terminated), bool(r.truncated), dict(r.info)

    def render(self) -> np.ndarray | None:
        return self._frame.copy() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        self.game.close()
