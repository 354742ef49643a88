"""PPO trained inside the dream: `mario-kit agent train --dream [--run RUN]`.

The agent is the one `agent train` makes (agents/ppo.py: the same policy, the same observation
pipeline through the same wrappers, the same agent file), so `agent eval` and `collect --agent` take
it unchanged. Only the env differs: `DreamVecEnv`, N dreams of the run (the shipped model by
default) stepped in one forward pass, the rewards and ends its reward and end model predicts. The
death penalty and reward scale of `agent train` apply to predicted deaths; the episodes' statistics
(VecMonitor) are in the game's units. The evaluations during training (`eval_every`) and `agent
eval` play the real game: what the agent learned in the dream is scored where it counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecFrameStack, VecMonitor

from mario_kit import UserError
from mario_kit.agents.agent_file import N_STACK
from mario_kit.agents.ppo import AgentConfig, frame_observation, train_agent
from mario_kit.atomic import write_json_atomic
from mario_kit.world_model.programs.dream_vec_env import DreamVecEnv

DREAM_FILE = "dream.json"  # beside the agent: which world model it learned in


class DreamShaping(VecEnvWrapper):
    """`make_env`'s training-only shaping for the dream: the death penalty on a predicted death, then
    the reward scale (after VecMonitor, so logs stay in game units); episode records as plain numbers."""

    def __init__(self, venv: VecEnv, penalty: float, scale: float):
        super().__init__(venv)
        self.penalty, self.scale = penalty, scale

    def reset(self) -> Any:
        return self.venv.reset()

    def step_wait(self) -> Any:
        obs, rewards, dones, infos = self.venv.step_wait()
        rewards = rewards - self.penalty * np.array([i.get("end") == "death" for i in infos], np.float32)
        for info in infos:  # VecMonitor's episode record holds numpy scalars; SB3 saves the last 100 of
            if "episode" in info:  # them in the agent file, whose loader refuses pickled objects
                info["episode"] = {k: v.item() if isinstance(v, np.generic) else v for k, v in info["episode"].items()}
        return obs, rewards * self.scale, dones, infos


def dream_venv(cfg: AgentConfig, run: str | Path | None, spawns: str | Path | None, device: str) -> VecEnv:
    """cfg.workers dreams of the run, seen through the agent's pipeline and frame-stacked."""
    observe, space = frame_observation()
    venv = DreamVecEnv(
        cfg.workers,
        run,
        spawns,
        device=device,
        max_steps=cfg.max_episode_steps,
        seed=cfg.seed,
        observation=observe,
        observation_space=space,
        level=cfg.level,
    )
    if venv.dream.meta["action_set"] != cfg.action_set:
        raise UserError(
            f"the world model was trained on the {venv.dream.meta['action_set']} action set: "
            f"train the agent with --action-set {venv.dream.meta['action_set']}"
        )
    if not venv.predicts:
        raise UserError(
            "the world model has no reward and end model (rewend.pt), so its dream gives no reward: "
            "train one with `mario-kit train --store STORE --out RUN --set stage=rewend`"
        )
    venv.seed(cfg.seed)
    shaped = DreamShaping(VecMonitor(venv, info_keywords=("flag_get",)), cfg.death_penalty, cfg.reward_scale)
    return VecFrameStack(shaped, N_STACK)


def train_in_dream(
    cfg: AgentConfig,
    out: str | Path,
    run: str | Path | None = None,
    spawns: str | Path | None = None,
    device: str = "cpu",
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """`train_agent` inside the dream of `run` (the shipped model when None); returns its result."""
    from mario_kit.world_model.model import shipped

    where = {"run": str(run or shipped.run_folder()), "spawns": str(spawns or shipped.spawns_file())}
    result = train_agent(cfg, out, resume, progress, make_venv=lambda c: dream_venv(c, run, spawns, device))
    write_json_atomic(Path(out) / DREAM_FILE, where)
    return {**result, "dream": where}
