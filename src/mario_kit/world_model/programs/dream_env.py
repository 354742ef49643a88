"""The world model as a Gymnasium environment, so that agents can be run inside the dream.

`DreamEnv()` uses the model and spawns that ship with mario-kit; `DreamEnv(run, spawns)` any
trained run. Reset starts from a spawn (`options={"spawn": i}`, else one drawn with the env's
seeded generator; `level` keeps the spawns on those stages, a comma list); a step takes an action
index of the run's action set and returns the generated frame (240x256x3 uint8: the run's
upsampler's, diffusion or tiles, or the 64x60 frame enlarged).
With a reward and end model in the run (`rewend.pt`: `mario-kit train --set stage=rewend`) a step
returns its predicted reward (gym-super-mario-bros' units) and terminates on a predicted death or
flag; `info["predicted"]` says so and `info["end"]` names the end. Without one the reward is 0 and
an episode never terminates. Either way it is truncated after `max_steps` steps. `DreamVecEnv`
(programs/dream_vec_env.py) steps N dreams in one forward pass for agents that learn inside them.

Registered with Gymnasium as `mario_kit/Dream-v0` (`mario_kit.envs`): `gym.make("mario_kit/Dream-v0")`
after `import mario_kit.envs`, or `gym.make("mario_kit.envs:mario_kit/Dream-v0")` alone.
On the CPU a step runs on `threads` torch threads (1 by default, a rate that holds when other
processes want the cores, as an agent's env workers do; 0, torch's default, is faster on a machine
the dream has to itself: docs/BENCHMARKS.md, "DreamEnv threads"). The setting is restored after each
step, so an agent's own torch work keeps its threads. `bf16` None: bfloat16 autocast on a CPU with
bf16 arithmetic (`hardware.fast_bf16`), as `play`; False for fp32.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import gymnasium as gym
import numpy as np

from mario_kit.datasets.ops import load_spawns
from mario_kit.envs import DREAM_ENTRY, DREAM_ID
from mario_kit.world_model.model.rewend import END_NAMES
from mario_kit.world_model.programs.world_model_env import DreamStep, WorldModelEnv


class DreamEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        run: str | Path | None = None,
        spawns: str | Path | None = None,
        upsampler: bool = True,
        steps: int | None = None,
        device: str = "auto",
        max_steps: int = 1000,
        render_mode: str | None = None,
        threads: int = 1,
        bf16: bool | None = None,
        level: str | None = None,
    ):
        from mario_kit.world_model.model import shipped

        if threads < 0:
            raise ValueError("threads must be >= 1 (0: torch's default)")
        self.spec = gym.envs.registration.EnvSpec(
            DREAM_ID,
            DREAM_ENTRY,
            kwargs={  # gym.make sets its own
                "run": None if run is None else str(run),
                "spawns": None if spawns is None else str(spawns),
                "upsampler": upsampler,
                "steps": steps,
                "device": device,
                "max_steps": max_steps,
                "threads": threads,
                "bf16": bf16,
                "level": level,
            },
        )

        run = shipped.run_folder() if run is None else run
        spawns = shipped.spawns_file() if spawns is None else spawns
        self.spawns = load_spawns(spawns, level)
        self.dream = WorldModelEnv(run, upsampler=upsampler, steps=steps, device=device, bf16=bf16)
        if self.dream.meta["action_set"] != self.spawns.action_set.name:
            from mario_kit import UserError

            raise UserError(
                f"the run was trained on the {self.dream.meta['action_set']} action set, "
                f"the spawns use {self.spawns.action_set.name}"
            )
        self.action_set = self.spawns.action_set
        self.action_space = gym.spaces.Discrete(len(self.action_set))
        self.observation_space = gym.spaces.Box(0, 255, self.spawns.full.shape[2:], np.uint8)
        self.max_steps, self.render_mode = max_steps, render_mode
        self._frame = self.spawns.full[0, -1]
        self._t = 0
        self.threads = threads if self.dream.device.type == "cpu" else 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:  # the same seed, the same dream
            self.dream.gen.manual_seed(seed)
        i = (options or {}).get("spawn")
        i = int(self.np_random.integers(len(self.spawns))) if i is None else int(i) % len(self.spawns)
        self.dream.reset(self.spawns.low[i], self.spawns.actions[i], self.spawns.level_of(i))
        self._frame, self._t = self.spawns.full[i, -1], 0
        return self._frame.copy(), {"spawn": i, "ref": dict(self.spawns.refs[i])}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        if not self.action_space.contains(int(action)):
            raise ValueError(f"action {action!r} outside Discrete({len(self.action_set)})")
        with _torch_threads(self.threads):
            out = self.dream.step_batch(np.array([int(action)]))
        self._frame, self._t = out.full[0], self._t + 1
        reward, end = outcome(out, 0)
        info = {"step": self._t, "predicted": out.reward is not None, "end": end, "flag_get": end == "flag"}
        return self._frame.copy(), reward, end is not None, self._t >= self.max_steps, info

    def render(self) -> np.ndarray | None:
        return self._frame.copy() if self.render_mode == "rgb_array" else None


def outcome(out: DreamStep, i: int) -> tuple[float, str | None]:
    """Dream i's predicted reward and end ("death", "flag" or None); 0 and None without a model."""
    if out.reward is None or out.end is None:
        return 0.0, None
    return float(out.reward[i]), END_NAMES[int(out.end[i])]


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to n (0: left as they are) for the block, then restored."""
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(old)


__all__ = ["DreamEnv", "outcome"]
