"""Policies: `act(frame, info) -> action index`. A new policy is one class in POLICIES."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from mario_kit import UserError


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


def _ppo(**kw):
    from mario_kit.collectors.ppo import PPOPolicy

    return PPOPolicy(**kw)


POLICIES: dict[str, Any] = {"random": RandomPolicy, "sticky": StickyPolicy, "ppo": _ppo}
