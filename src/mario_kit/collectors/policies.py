"""Policies: `act(frame, info) -> action index`. A new policy is one class in POLICIES (the human
app, `collectors.human.HumanApp`, is one too)."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from mario_kit import UserError
from mario_kit.agents.ppo import N_STACK, OBS_SIZE, load_agent, make_env, one_torch_thread
from mario_kit.collectors.frontier import FrontierPolicy
from mario_kit.collectors.human import HumanApp


@runtime_checkable
class Policy(Protocol):
    name: ClassVar[str]
    source: ClassVar[str]  # what the episode's `source` attribute says

    def reset(self, rng: np.random.Generator, n_actions: int) -> None:
        """Start an episode; `rng` is the episode's own generator (seeded per episode)."""

    def act(self, frame: np.ndarray, info: dict[str, Any]) -> int: ...

    def params(self) -> dict[str, Any]:
        """Parameters stored in the episode's `policy` attribute."""
        ...


class RandomPolicy:
    """Uniform over the action set."""

    name = "random"
    source = "random"

    def reset(self, rng: np.random.Generator, n_actions: int) -> None:
        self.rng, self.n = rng, n_actions

    def act(self, frame: np.ndarray, info: dict[str, Any]) -> int:
        return int(self.rng.integers(self.n))

    def params(self) -> dict[str, Any]:
        return {"name": self.name}


class StickyPolicy(RandomPolicy):
    """Keeps the previous action with probability `p`, else draws uniformly (which may draw it again).

    Sticky actions give long held presses (runs, high jumps) that uniform play never makes."""

    name = "sticky"

    def __init__(self, p: float = 0.8):
        if not 0.0 <= p < 1.0:
            raise UserError(f"--sticky must be in [0, 1), got {p}")
        self.p = p

    def reset(self, rng: np.random.Generator, n_actions: int) -> None:
        super().reset(rng, n_actions)
        self.prev: int | None = None

    def act(self, frame: np.ndarray, info: dict[str, Any]) -> int:
        if self.prev is None or self.rng.random() >= self.p:
            self.prev = int(self.rng.integers(self.n))
        return self.prev

    def params(self) -> dict[str, Any]:
        return {"name": self.name, "p": self.p}


class PPOPolicy:
    """The agent as a collector policy, with a random factor: with probability eps (one value per
    episode, fixed or drawn from a range) the agent's action is replaced by a uniform random one.
    `overridden` marks those steps; `params()` records the episode's eps."""

    name = "ppo"
    source = "agent"

    def __init__(
        self,
        model: str | Path,
        random_factor: float = 0.0,
        random_factor_range: tuple[float, float] | None = None,
        deterministic: bool = True,
        action_set: str | None = None,
        frame_skip: int | None = None,
    ):
        lo, hi = random_factor_range or (random_factor, random_factor)
        if not (0 <= lo <= hi <= 1):
            raise UserError("random factors must lie in [0, 1] (range: low <= high)")
        self.path = str(model)
        self.model, self.rec = load_agent(model)
        if action_set is not None and action_set != self.rec["action_set"]:
            raise UserError(f"the agent uses the {self.rec['action_set']} action set, not {action_set}")
        if frame_skip is not None and frame_skip != self.rec["frame_skip"]:
            raise UserError(f"the agent was trained with frame skip {self.rec['frame_skip']}, not {frame_skip}")
        self.range, self.deterministic = (lo, hi), deterministic
        env = make_env(self.rec["level"], self.rec["action_set"], self.rec["frame_skip"], monitor=False)
        self._obs_wrappers: list[Any] = []  # the agent's own observation wrappers, applied to our frames
        w = env
        while hasattr(w, "env"):
            if type(w).__name__ in ("FastGrayscaleObservation", "ResizeObservation"):
                self._obs_wrappers.insert(0, w)
            w = w.env
        self._env = env

    def reset(self, rng: np.random.Generator, n_actions: int) -> None:
        if n_actions != len(self.rec["action_buttons"]):
            raise UserError("the agent's action set does not match the collection's")
        self.rng, self.n = rng, n_actions
        lo, hi = self.range
        self.eps = float(lo if lo == hi else rng.uniform(lo, hi))
        self.stack: deque[np.ndarray] = deque([np.zeros((*OBS_SIZE, 1), np.uint8)] * N_STACK, maxlen=N_STACK)
        self.first = True
        self.penultimate = np.zeros((240, 256, 3), np.uint8)  # reused buffers: no 180 KB allocation a step
        self._max = np.zeros_like(self.penultimate)
        self.calls = 0
        self.overridden = False

    def _obs(self, frame: np.ndarray) -> np.ndarray:
        # MaxAndSkipObservation's max-pool of the last two frames
        x = frame if self.first else np.maximum(self.penultimate, frame, out=self._max)
        for w in self._obs_wrappers:
            x = w.observation(x)
        return x

    def on_frame(self, screen: np.ndarray) -> None:
        self.calls += 1
        if self.calls == self.rec["frame_skip"] - 1:  # the second-to-last frame of the step
            np.copyto(self.penultimate, screen)
        return None

    def agent_action(self, frame: np.ndarray) -> int:
        self.stack.append(self._obs(frame))
        self.first, self.calls = False, 0
        obs = np.concatenate(self.stack, axis=-1)[None]  # (1, 84, 84, 4), like VecFrameStack
        # one torch thread for batch-1 forward passes: a second one gains little, and its spin-waiting
        # takes the core from the emulator and the compression thread (docs/BENCHMARKS.md, "PPO agent")
        with one_torch_thread():
            if not self.deterministic:
                action, _ = self.model.predict(obs, deterministic=False)
                return int(np.asarray(action).reshape(-1)[0])
            return self._argmax(obs)

    def _argmax(self, obs: np.ndarray) -> int:
        """The deterministic action as SB3's predict computes it (channels first, /255, actor
        network, argmax) without its per-call conversions and distribution objects: faster, and tested
        equal to predict on the agent's own rollouts."""
        import torch

        pol = self.model.policy
        with torch.inference_mode():
            t = torch.as_tensor(obs).permute(0, 3, 1, 2).float().div_(255)
            latent = pol.mlp_extractor.forward_actor(pol.extract_features(t, pol.pi_features_extractor))
            return int(pol.action_net(latent).argmax(1)[0])

    def act(self, frame: np.ndarray, info: dict[str, Any]) -> int:
        a = self.agent_action(frame)
        self.overridden = bool(self.rng.random() < self.eps)
        return int(self.rng.integers(self.n)) if self.overridden else a

    def params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.path,
            "random_factor": getattr(self, "eps", None),
            "random_factor_range": list(self.range),
            "deterministic": self.deterministic,
            "agent_level": self.rec["level"],
            "agent_wrappers": self.rec["wrappers"],
        }


def frontier(archive: str = "", p: float = 0.8) -> FrontierPolicy:
    """The frontier collector's policy: return to a cell of the archive in `archive`, then sticky random."""
    return FrontierPolicy(StickyPolicy(p), archive)


POLICIES: dict[str, Any] = {
    "random": RandomPolicy,
    "sticky": StickyPolicy,
    "ppo": PPOPolicy,
    "human": HumanApp,
    "frontier": frontier,
}
