"""PPO agents (stable-baselines3): training and evaluation (the collector policy that plays one is
`collectors.policies.PPOPolicy`).

The agent sees the usual Mario pipeline, each step a standard wrapper: nes-py's JoypadSpace (the
action set), gymnasium's MaxAndSkipObservation (frame skip, max over the last two frames),
GrayscaleObservation, ResizeObservation (84x84), and SB3's VecFrameStack (4). The saved agent
(one SB3 zip) carries a `mario_kit` record of level, action set, frame skip and wrappers, so the
collector rebuilds exactly that pipeline from the file alone.
"""

from __future__ import annotations

import csv
import operator
import os
import re
import signal
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import GrayscaleObservation

from mario_kit import UserError
from mario_kit.agents.agent_file import KIND, N_STACK, OBS_SIZE, SCHEMA, load_ppo
from mario_kit.atomic import check_writable, write_json_atomic
from mario_kit.emulator import env_id, parse_levels
from mario_kit.interrupt import CtrlC
from mario_kit.datasets import format as F


@dataclass
class AgentConfig:
    """PPO settings. Defaults follow common Mario PPO practice (gamma 0.9, 4-frame skip with max-pool,
    84x84 gray, 4-stack, 8 envs, 10 epochs an update, an extra death penalty, rewards scaled by 0.1)
    with SB3's PPO. Fewer epochs on longer rollouts and the env's own death penalty plateaued at the
    pits of 1-1; with these defaults a CPU run clears it (docs/BENCHMARKS.md, "PPO agent")."""

    level: str = "1-1"
    action_set: str = "simple"
    frame_skip: int = 4
    timesteps: int = 1_000_000
    workers: int = 8  # envs (processes); more envs than cores keeps both cores busy while the learner waits
    max_episode_steps: int = 2500  # agent steps before truncation
    learning_rate: float = 2.5e-4
    n_steps: int = 256  # per env: 8 x 256 = 2048 steps an update
    batch_size: int = 256
    n_epochs: int = 10  # more gradient per sample: env steps, not the update, are what 2 cores lack
    gamma: float = 0.9
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.01
    # Rewards are up to +-15 a step, so with an unscaled reward the value loss (values near 100) swamps
    # the policy's gradient in the shared CNN under SB3's 0.5 gradient-norm clip. Scaled in training
    # only, after Monitor: logs and evaluations stay in game units.
    reward_scale: float = 0.1
    # Added (game units, before scaling) to the reward of a step that ends the episode without the flag.
    # The env's own death penalty (-25, clipped to -15 by nes-py like every frame's reward) comes ~10
    # steps after a fatal jump over a pit (Mario must fall off the screen),
    # where gamma 0.9 leaves a third of it: too little against the progress made while jumping.
    # Training only; truncation (time limit) is not a death. 0 turns it off.
    death_penalty: float = 50.0
    seed: int = 0
    checkpoint_every: int = 50_000  # agent steps
    eval_every: int = 50_000
    # sampled actions: the emulator is deterministic, so greedy episodes are all the same episode, and
    # a greedy agent stuck at one obstacle scores that obstacle however good its sampled play is
    eval_deterministic: bool = False
    eval_episodes: int = 5
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # extra PPO keyword arguments


def check_agent_config(cfg: AgentConfig) -> None:
    """Refuse settings that would crash or run away (a checkpoint every step wrote gigabytes in seconds)."""
    levels = parse_levels(cfg.level)
    if len(levels) != 1 or cfg.level != levels[0]:
        raise UserError(f"an agent trains on one level (W-S), got {cfg.level!r}")
    F.get_action_set(cfg.action_set)
    for name in (
        "timesteps",
        "workers",
        "n_steps",
        "batch_size",
        "n_epochs",
        "checkpoint_every",
        "eval_every",
        "eval_episodes",
        "max_episode_steps",
    ):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise UserError(f"{name.replace('_', '-')} must be an integer >= 1, got {v!r}")
    if not 1 <= cfg.frame_skip <= F.MAX_FRAME_SKIP:
        raise UserError(f"frame_skip must be in 1..{F.MAX_FRAME_SKIP}")
    if not (
        cfg.learning_rate > 0
        and 0 < cfg.gamma <= 1
        and 0 <= cfg.gae_lambda <= 1
        and cfg.clip_range > 0
        and cfg.ent_coef >= 0
        and cfg.reward_scale > 0
        and cfg.death_penalty >= 0
    ):
        raise UserError(
            "learning_rate, clip_range, reward_scale > 0; gamma in (0, 1]; gae_lambda in [0, 1]; "
            "ent_coef, death_penalty >= 0"
        )
    if not 0 <= cfg.seed < 2**63:
        raise UserError(f"seed must be in 0..2**63-1, got {cfg.seed}")


def spec(cfg: AgentConfig) -> dict[str, Any]:
    return {
        "kind": KIND,
        "schema": SCHEMA,
        "level": cfg.level,
        "env_id": env_id(cfg.level),
        "action_set": cfg.action_set,
        "action_buttons": [list(b) for b in F.get_action_set(cfg.action_set).buttons],
        "frame_skip": cfg.frame_skip,
        "max_episode_steps": cfg.max_episode_steps,
        "clip_range": cfg.clip_range,
        "reward_scale": cfg.reward_scale,
        "death_penalty": cfg.death_penalty,
        "wrappers": [
            f"JoypadSpace({cfg.action_set})",
            f"MaxAndSkipObservation(skip={cfg.frame_skip})",
            "GrayscaleObservation(keep_dim=True)",
            f"ResizeObservation({OBS_SIZE})",
            "Monitor",
            f"DeathPenalty({cfg.death_penalty}, training only)",
            f"TransformReward(x{cfg.reward_scale}, training only)",
            f"VecFrameStack({N_STACK})",
        ],
    }


class DeathPenalty(gym.Wrapper):
    """Adds -penalty to the reward of a step that terminates the episode without the flag (a death on
    a stage env). Hand-written: gymnasium's TransformReward sees the reward only, not how the
    episode ended."""

    def __init__(self, env: gym.Env, penalty: float):
        super().__init__(env)
        self.penalty = penalty

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated and not info.get("flag_get"):
            reward = float(reward) - self.penalty
        return obs, reward, terminated, truncated, info


def make_env(
    level: str,
    action_set: str,
    frame_skip: int,
    max_episode_steps: int | None = None,
    monitor: bool = True,
    reward_scale: float = 1.0,
    death_penalty: float = 0.0,
):
    """One wrapped env of the agent's pipeline (without the frame stack, which is vectorised). The
    reward shaping (death penalty, then scale) comes after the Monitor: training only, logs in game units."""
    import gym_super_mario_bros  # noqa: F401
    from gymnasium.wrappers import MaxAndSkipObservation, ResizeObservation, TransformReward
    from nes_py.wrappers import JoypadSpace

    steps = max_episode_steps * frame_skip if max_episode_steps else None
    env = gym.make(env_id(level), max_episode_steps=steps)
    env = JoypadSpace(env, [list(b) for b in F.get_action_set(action_set).buttons])
    env = MaxAndSkipObservation(env, skip=frame_skip)
    env = FastGrayscaleObservation(env, keep_dim=True)
    env = ResizeObservation(env, OBS_SIZE)
    if monitor:
        from stable_baselines3.common.monitor import Monitor

        env = Monitor(env, info_keywords=("x_pos", "flag_get"))
    if death_penalty:
        env = DeathPenalty(env, death_penalty)
    if reward_scale != 1.0:
        env = TransformReward(env, partial(operator.mul, reward_scale))
    return env


_GRAY_LUT: np.ndarray | None = None


def _gray_table(gray_fn) -> np.ndarray:
    """The gray value of each of the 2^24 colours, computed once with gymnasium's own function."""
    global _GRAY_LUT
    if _GRAY_LUT is None:
        lut = np.empty(1 << 24, np.uint8)
        rgb = np.empty((1 << 16, 1, 3), np.uint8)
        lo = np.arange(1 << 16)
        rgb[:, 0, 1], rgb[:, 0, 2] = lo >> 8, lo & 255
        for r in range(256):  # in 256 slices, to keep the float64 temporaries small
            rgb[:, 0, 0] = r
            lut[r << 16 : (r + 1) << 16] = np.asarray(gray_fn(rgb)).reshape(-1)
        _GRAY_LUT = lut
    return _GRAY_LUT


class FastGrayscaleObservation(GrayscaleObservation):
    """gymnasium's GrayscaleObservation, bit for bit, through a table of all 2^24 colours built once
    with that wrapper's own function: its float64 multiply-and-sum is a good part of a training env
    step, the lookup a small one (docs/BENCHMARKS.md). Equality is tested on real frames."""

    def observation(self, observation: np.ndarray) -> np.ndarray:
        f = observation.astype(np.uint32)
        g = _gray_table(self.func)[(f[..., 0] << 16) | (f[..., 1] << 8) | f[..., 2]]
        return g[..., None] if self.keep_dim else g


def frame_observation(frame_shape: tuple[int, ...] = F.FRAME_SHAPE):
    """The agent's observation of one game frame, through the very wrappers `make_env` stacks after
    the frame skip (gray, then 84x84): for envs that hand frames over themselves (the dream)."""
    from gymnasium.wrappers import ResizeObservation

    class Frames(gym.Env):
        observation_space = gym.spaces.Box(0, 255, frame_shape, np.uint8)
        action_space = gym.spaces.Discrete(1)

    gray = FastGrayscaleObservation(Frames(), keep_dim=True)
    resize = ResizeObservation(gray, OBS_SIZE)
    return lambda frame: resize.observation(gray.observation(frame)), resize.observation_space


def _worker_env(*args, **kwargs):
    """make_env in a SubprocVecEnv worker. Ctrl-C (and `timeout -s INT`) signals the whole process
    group: the learner alone handles it (saves, then closes the workers), so the workers ignore it;
    workers killed by it made closing the vec env fail after the save."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return make_env(*args, **kwargs)


def _vec_env(cfg: AgentConfig, n: int, seed: int):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack

    args = (cfg.level, cfg.action_set, cfg.frame_skip, cfg.max_episode_steps)
    shaping: dict[str, Any] = dict(reward_scale=cfg.reward_scale, death_penalty=cfg.death_penalty)
    venv: VecEnv
    if n > 1:
        venv = SubprocVecEnv([partial(_worker_env, *args, **shaping)] * n, start_method="forkserver")
    else:
        venv = DummyVecEnv([partial(make_env, *args, **shaping)])
    venv.seed(seed)
    return VecFrameStack(venv, N_STACK)


@contextmanager
def one_torch_thread():
    """Run torch on one thread inside the block, then restore the caller's setting: where env
    processes or the emulator share the cores, OpenMP's spin-waiting second thread costs more than
    it gains on small forward passes."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _cpu_ppo_class():
    """SB3's PPO, tuned for a few CPU cores (same algorithm, same saved file):
    - rollouts run the policy on one torch thread: with more, OpenMP's spin-waiting threads take
      CPU from the env processes for batch-8 forward passes that gain nothing from them;
    - the CNN's weights are channels_last (oneDNN's fast layout: a faster update, docs/BENCHMARKS.md)."""
    import torch
    from stable_baselines3 import PPO

    class CpuPPO(PPO):
        def _setup_model(self) -> None:
            super()._setup_model()
            self.policy.to(memory_format=torch.channels_last)

        def collect_rollouts(self, *args, **kwargs):
            with one_torch_thread():
                return super().collect_rollouts(*args, **kwargs)

    return CpuPPO


def load_agent(path: str | Path, device: str = "cpu", for_training: bool = False):
    """(PPO model, its mario_kit record); refuses files that are not PPO agents of this toolkit.
    Nothing in the file is unpickled (`agent_file.load_ppo`): agent files are shared like datasets."""
    return load_ppo(path, device=device, cls=_cpu_ppo_class() if for_training else None)


# --- training --------------------------------------------------------------------------------------
STOP_NOTICE = (
    "Ctrl-C: stopping after the PPO update in progress (on a CPU up to a minute), then saving the agent; "
    "Ctrl-C again to stop sooner"
)


def _new_model(cfg: AgentConfig, venv):
    return _cpu_ppo_class()(
        "CnnPolicy",
        venv,
        learning_rate=cfg.learning_rate,
        n_steps=cfg.n_steps,
        batch_size=cfg.batch_size,
        n_epochs=cfg.n_epochs,
        gamma=cfg.gamma,
        gae_lambda=cfg.gae_lambda,
        clip_range=cfg.clip_range,
        ent_coef=cfg.ent_coef,
        seed=cfg.seed,
        device="cpu",
        verbose=0,
        **cfg.hyperparameters,
    )


def train_agent(
    cfg: AgentConfig, out: str | Path, resume: bool = False, progress: bool = True, make_venv: Any = None
) -> dict[str, Any]:
    """Train (or resume) a PPO agent into the run folder `out`. `make_venv(cfg)`: the vectorised env
    it learns in, frame-stacked, instead of the game's (the dream: programs/dream_agent.py)."""
    check_agent_config(cfg)
    out = Path(out)
    ckdir = out / "checkpoints"
    if out.exists() and any(out.iterdir()) and not resume:
        raise UserError(f"{out} already holds an agent run; use --resume to continue it")
    check_writable(out)
    rec = spec(cfg)
    start = _latest_checkpoint(out) if resume else None
    model = None
    if start is not None:  # loaded (and refused, if hostile) before anything is started or written
        model, old = load_agent(start, for_training=True)
        if {k: old[k] for k in ("level", "action_set", "frame_skip")} != {
            k: rec[k] for k in ("level", "action_set", "frame_skip")
        }:
            raise UserError(f"{start} was trained with another level, action set or frame skip")
    try:
        ckdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run folder {out}: {e.strerror or e}") from None
    venv = make_venv(cfg) if make_venv is not None else _vec_env(cfg, cfg.workers, cfg.seed)
    if model is not None:
        model.set_env(venv)
    else:
        model = _new_model(cfg, venv)
    model.mario_kit = rec
    model.set_logger(_logger(out / "logs", model.num_timesteps if start is not None else None))
    write_json_atomic(out / "agent-config.json", asdict(cfg))

    ctrl_c = CtrlC(notice=STOP_NOTICE)
    callbacks = _callbacks(cfg, rec, out, ctrl_c, model.num_timesteps)
    remaining = max(0, cfg.timesteps - model.num_timesteps)
    try:
        with ctrl_c:
            if remaining:
                model.learn(remaining, callback=callbacks, reset_num_timesteps=False, progress_bar=progress)
        interrupted = ctrl_c.requested
    except KeyboardInterrupt:  # a second Ctrl-C
        interrupted = True
    finally:
        model.save(ckdir / f"ppo_{model.num_timesteps}_steps.zip", include=["mario_kit"])
        model.save(out / "agent.zip", include=["mario_kit"])
        close_vec_env(venv)
        model.logger.close()  # progress.csv (and TensorBoard's file) flushed and closed
    return {"timesteps": int(model.num_timesteps), "agent": str(out / "agent.zip"), "interrupted": interrupted}


def close_vec_env(venv) -> None:
    """Close the env workers, also after Ctrl-C. SB3's SubprocVecEnv.close() first reads the reply of
    every worker when a step is pending; Ctrl-C between two of step_wait's per-worker reads leaves
    replies that were already read, and close() waits for them forever (it hung at the end of a
    2-hour run, after the save). The pending replies are not needed: skip them, and each worker,
    once its step is done, reads the close command and exits."""
    inner = venv.unwrapped
    if getattr(inner, "waiting", False):
        inner.waiting = False
    venv.close()


def _callbacks(cfg: AgentConfig, rec: dict[str, Any], run: Path, ctrl_c: CtrlC, start_steps: int) -> Any:
    """What SB3 calls during learning: stop on Ctrl-C, checkpoints with the agent's record, evaluations."""
    from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback

    class Save(CheckpointCallback):
        def _on_step(self) -> bool:
            if self.n_calls % self.save_freq == 0:
                self.model.save(self._checkpoint_path(extension="zip"), include=["mario_kit"])
            return True

    class Eval(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.last = start_steps

        def _on_step(self) -> bool:
            if self.model.num_timesteps - self.last >= cfg.eval_every:
                self.last = self.model.num_timesteps
                r = evaluate_agent(
                    self.model, rec, cfg.eval_episodes, deterministic=cfg.eval_deterministic, seed=cfg.seed + 1
                )
                for k, v in r.items():
                    self.logger.record(f"eval/{k}", v)
                _append_csv(run / "eval.csv", {"timesteps": self.model.num_timesteps, **r})
            return True

    class Stop(BaseCallback):
        """Ctrl-C as a flag (interrupt.CtrlC): learning stops at the next env step, between two
        of SB3's calls, instead of a KeyboardInterrupt landing wherever the learner happens to be."""

        def _on_step(self) -> bool:
            return not ctrl_c.requested

    save = Save(max(1, cfg.checkpoint_every // cfg.workers), str(run / "checkpoints"), name_prefix="ppo")
    return CallbackList([Stop(), save, Eval()])


def _logger(folder: Path, resumed_at: int | None):
    """SB3's logger writing progress.csv (and TensorBoard when installed). SB3's CSV writer opens the
    file with "w": a resumed run would erase its history, so the CSV is reopened for appending,
    without the rows a crashed run logged after its last checkpoint (they are logged again)."""
    from stable_baselines3.common.logger import CSVOutputFormat, KVWriter, Logger, make_output_format

    class AppendCSV(CSVOutputFormat):
        def __init__(self, path: Path, after: int | None):
            if after is None or not path.exists() or path.stat().st_size == 0:
                super().__init__(str(path))
                return
            lines = path.read_text().splitlines(keepends=True)
            keys = lines[0].rstrip("\n").split(",")
            col = keys.index("time/total_timesteps") if "time/total_timesteps" in keys else None

            def keep(line: str) -> bool:
                cells = line.rstrip("\n").split(",")
                try:
                    return col is None or int(float(cells[col])) <= after
                except (ValueError, IndexError):
                    return True

            path.write_text(lines[0] + "".join(ln for ln in lines[1:] if keep(ln)))
            self.file = open(path, "r+")
            self.file.seek(0, os.SEEK_END)
            self.keys, self.separator, self.quotechar = keys, ",", '"'

    folder.mkdir(parents=True, exist_ok=True)
    formats: list[KVWriter] = [AppendCSV(folder / "progress.csv", resumed_at)]
    if _has_tensorboard():
        formats.append(make_output_format("tensorboard", str(folder)))
    return Logger(str(folder), formats)


def _has_tensorboard() -> bool:
    try:
        import tensorboard  # noqa: F401

        return True
    except ImportError:
        return False


def _latest_checkpoint(out: Path) -> Path | None:
    steps = {p: re.fullmatch(r"ppo_(\d+)_steps\.zip", p.name) for p in out.glob("checkpoints/ppo_*_steps.zip")}
    cks = sorted((int(m.group(1)), p) for p, m in steps.items() if m)
    return cks[-1][1] if cks else None


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def evaluate_agent(
    model, rec: dict[str, Any], episodes: int = 10, deterministic: bool = True, seed: int = 0, progress: bool = False
) -> dict[str, float]:
    """Mean return, mean and best max x_pos, and the rate of finishing the level."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    env = VecFrameStack(
        DummyVecEnv(
            [
                lambda: make_env(
                    rec["level"], rec["action_set"], rec["frame_skip"], rec["max_episode_steps"], monitor=False
                )
            ]
        ),
        N_STACK,
    )
    env.seed(seed)
    import torch

    from mario_kit.progress import make_progress

    returns, xs, flags = [], [], []
    with (
        torch.random.fork_rng(),
        make_progress(enabled=progress, transient=True) as bar,
    ):  # seeded sampling; training's generator left alone
        torch.manual_seed(seed)
        task = bar.add_task("evaluating", total=episodes)
        for _ in range(episodes):
            obs: Any = env.reset()
            done, total, xmax, flag = False, 0.0, 0, False
            while not done:
                action, _ = model.predict(obs, deterministic=deterministic)
                obs, r, d, info = env.step(action)
                total += float(r[0])
                xmax = max(xmax, int(info[0].get("x_pos", 0)))
                flag = flag or bool(info[0].get("flag_get"))
                done = bool(d[0])
            returns.append(total)
            xs.append(xmax)
            flags.append(flag)
            bar.update(task, advance=1)
    env.close()
    return {
        "mean_return": round(float(np.mean(returns)), 2),
        "mean_max_x": round(float(np.mean(xs)), 1),
        "best_max_x": int(np.max(xs)),
        "completion_rate": round(float(np.mean(flags)), 3),
    }
