"""`repeat`: the seed project's NOOP forcing, generalised. With probability p per step, or whenever
the policy picks a target action (`on_target`), hold a target action for k steps (k fixed, or drawn
from [k_min, k_max]). Targets: action names (default NOOP), or 'least': the action whose share of
the running histogram lags its target share (uniform by default) the most."""

from __future__ import annotations

from typing import Any

import numpy as np

from mario_kit import UserError
from mario_kit.balancing.base import Strategy, parse_actions


class RepeatStrategy(Strategy):
    name = "repeat"

    def __init__(
        self,
        policy: Any,
        action_set: Any,
        target: str | list = "NOOP",
        p: float = 0.05,
        k: int | list[int] = 8,
        on_target: bool = False,
        target_distribution: list[float] | None = None,
    ):
        super().__init__(policy, action_set)
        if not 0 <= p <= 1:
            raise UserError(f"repeat: p must be in [0, 1], got {p}")
        ks = [k, k] if isinstance(k, int) else list(k)
        if len(ks) != 2 or not 1 <= ks[0] <= ks[1]:
            raise UserError(f"repeat: k must be an integer >= 1 or a range [lo, hi], got {k}")
        n = len(action_set)
        self.least = target == "least"
        self.targets = list(range(n)) if self.least else parse_actions(target, action_set)
        dist = np.asarray(target_distribution if target_distribution is not None else np.full(n, 1 / n), float)
        if dist.shape != (n,) or dist.min() < 0 or not np.isclose(dist.sum(), 1):
            raise UserError(f"repeat: target_distribution must be {n} non-negative shares summing to 1")
        self.p, self.k, self.on_target, self.dist = p, ks, on_target, dist
        self.counts = np.zeros(n, np.int64)  # running histogram of executed actions (across episodes)
        self.remaining, self.forced = 0, 0

    def reset(self, rng: np.random.Generator, n_actions: int) -> None:
        super().reset(rng, n_actions)
        self.remaining = 0

    def _pick_target(self) -> int:
        if self.least:
            share = self.counts / max(1, int(self.counts.sum()))
            deficit = self.dist - share
            best = np.flatnonzero(deficit == deficit.max())
            return int(self.rng.choice(best))
        return int(self.rng.choice(self.targets))

    def choose(self, base: int, frame, info) -> tuple[int, bool]:
        if self.remaining > 0:
            self.remaining -= 1
            action, forced = self.forced, True
        elif self.on_target and base in self.targets and not self.least:
            self.forced, self.remaining = base, int(self.rng.integers(self.k[0], self.k[1] + 1)) - 1
            action, forced = base, True
        elif self.rng.random() < self.p:
            self.forced, self.remaining = self._pick_target(), int(self.rng.integers(self.k[0], self.k[1] + 1)) - 1
            action, forced = self.forced, True
        else:
            action, forced = base, False
        self.counts[action] += 1
        return action, forced

    def own_params(self) -> dict[str, Any]:
        return {
            "target": "least" if self.least else [self.action_set.meaning(i) for i in self.targets],
            "p": self.p,
            "k": self.k,
            "on_target": self.on_target,
            "target_distribution": self.dist.round(4).tolist(),
        }
