"""N dreams stepped in one forward pass, as a stable-baselines3 `VecEnv`: what an agent learns in.

`DreamEnv` steps one dream a call; PPO asks for a batch of envs each step, and the denoiser, the
upsampler and the reward and end model each run once for the whole batch here. Each dream starts
from a spawn drawn with the env's seeded generator (among those on `level`'s stages, when given:
`agent train --dream` passes the level the agent is scored on) and starts again from another when
it ends (a predicted death or flag, or `max_steps`): SB3's auto-reset, the last frame in
`info["terminal_observation"]`. `observation` maps each 240x256x3 frame to what the agent sees
(by default the frame itself, as `DreamEnv` gives it; `agent train --dream` passes its own pipeline).
`bf16` None: bfloat16 autocast on a CPU with bf16 arithmetic (`hardware.fast_bf16`), as `play`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from mario_kit import UserError
from mario_kit.datasets.ops import load_spawns
from mario_kit.world_model.programs.dream_env import _torch_threads, outcome
from mario_kit.world_model.programs.world_model_env import WorldModelEnv


class DreamVecEnv(VecEnv):
    render_mode = None  # frames come back as observations; there is no window

    def __init__(
        self,
        n_envs: int,
        run: str | Path | None = None,
        spawns: str | Path | None = None,
        device: str = "auto",
        max_steps: int = 1000,
        seed: int = 0,
        threads: int = 0,
        observation: Callable[[np.ndarray], np.ndarray] | None = None,
        observation_space: gym.spaces.Box | None = None,
        bf16: bool | None = None,
        level: str | None = None,
    ):
        from mario_kit.world_model.model import shipped

        if n_envs < 1 or max_steps < 1:
            raise UserError("n_envs and max_steps must be >= 1")
        run = shipped.run_folder() if run is None else run
        self.spawns = load_spawns(shipped.spawns_file() if spawns is None else spawns, level)
        self.dream = WorldModelEnv(run, device=device, seed=seed, bf16=bf16)
        if self.dream.meta["action_set"] != self.spawns.action_set.name:
            raise UserError(
                f"the run was trained on {self.dream.meta['action_set']}, the spawns use another action set"
            )
        self.predicts = self.dream.rewend is not None
        self.observation = observation or (lambda frame: frame)
        space = observation_space or gym.spaces.Box(0, 255, self.spawns.full.shape[2:], np.uint8)
        super().__init__(n_envs, space, gym.spaces.Discrete(len(self.spawns.action_set)))
        self.max_steps, self.threads = max_steps, threads if self.dream.device.type == "cpu" else 0
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(n_envs, np.int64)
        self.spawn = np.zeros(n_envs, np.int64)
        self._actions = np.zeros(n_envs, np.int64)

    def _draw(self, i: int | None = None) -> None:
        """Start dream i (all with None) from a spawn drawn with the env's generator."""
        rows = range(self.num_envs) if i is None else [i]
        for r in rows:
            self.spawn[r], self.t[r] = self.rng.integers(len(self.spawns)), 0
        if i is None:
            levels = [self.spawns.level_of(int(s)) for s in self.spawn]
            self.dream.reset_batch(self.spawns.low[self.spawn], self.spawns.actions[self.spawn], levels)
        else:
            s = int(self.spawn[i])
            self.dream.reset_row(i, self.spawns.low[s], self.spawns.actions[s], self.spawns.level_of(s))

    def reset(self) -> np.ndarray:
        if self._seeds[0] is not None:  # VecEnv.seed(s): the same seed, the same starts and dreams
            self.rng = np.random.default_rng(self._seeds[0])
            self.dream.gen.manual_seed(int(self._seeds[0]))
        self._reset_seeds()
        self._draw()
        return np.stack([self.observation(f) for f in self.spawns.full[self.spawn, -1]])

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
        with _torch_threads(self.threads):
            out = self.dream.step_batch(self._actions)
        self.t += 1
        obs = np.stack([self.observation(f) for f in out.full])
        rewards, dones, infos = np.zeros(self.num_envs, np.float32), np.zeros(self.num_envs, bool), []
        for i in range(self.num_envs):
            rewards[i], end = outcome(out, i)
            truncated = end is None and self.t[i] >= self.max_steps
            info: dict[str, Any] = {"predicted": self.predicts, "end": end, "flag_get": end == "flag"}
            info["TimeLimit.truncated"] = truncated
            if end is not None or truncated:
                dones[i], info["terminal_observation"] = True, obs[i]
                self._draw(i)
                obs[i] = self.observation(self.spawns.full[self.spawn[i], -1])
            infos.append(info)
        return obs, rewards, dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        raise AttributeError(f"DreamVecEnv has no per-env {method_name}")

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices: Any) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        return [indices] if isinstance(indices, int) else list(indices)


__all__ = ["DreamVecEnv"]
