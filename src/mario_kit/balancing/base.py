"""The strategy base class: wraps any policy and may override its action. The episode records the
strategy and its parameters (under `policy.balance`) and which steps it decided (`overridden`).
The registry of strategies is `mario_kit.balancing.STRATEGIES`."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mario_kit import UserError


class Strategy:
    """Base: delegates to the wrapped policy. Subclasses implement `choose(base_action, frame, info)`."""

    name: ClassVar[str] = ""

    def __init__(self, policy: Any, action_set: Any, **params: Any):
        self.policy, self.action_set = policy, action_set
        self.source = policy.source
        self.overridden = False
        for hook in (
            "on_frame",
            "begin",
            "before_step",
            "after_step",
            "ending_limit",
            "share",
        ):  # the loop's optional hooks pass through
            if hasattr(policy, hook):
                setattr(self, hook, getattr(policy, hook))

    def reset(self, rng: np.random.Generator, n_actions: int) -> None:
        self.rng, self.n = rng, n_actions
        self.policy.reset(rng, n_actions)

    def act(self, frame: np.ndarray, info: dict[str, Any]) -> int:
        base = int(self.policy.act(frame, info))
        action, self.overridden = self.choose(base, frame, info)
        self.overridden = self.overridden or bool(getattr(self.policy, "overridden", False))
        return action

    def choose(self, base: int, frame: np.ndarray, info: dict[str, Any]) -> tuple[int, bool]:
        raise NotImplementedError

    def own_params(self) -> dict[str, Any]:
        return {}

    def params(self) -> dict[str, Any]:
        return {**self.policy.params(), "balance": {"strategy": self.name, **self.own_params()}}

    def close(self) -> None:
        """Called when the worker ends (persist state)."""
        close = getattr(self.policy, "close", None)
        if close is not None:
            close()


def parse_actions(spec: str | list, action_set) -> list[int]:
    """'NOOP' / 'right+A,left' / [0, 6] -> action indices of the set."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for it in items:
        if isinstance(it, int) or (isinstance(it, str) and it.strip().isdigit()):
            i = int(it)
        else:
            names = [action_set.meaning(k) for k in range(len(action_set))]
            if it.strip() not in names:
                raise UserError(f"unknown action {it!r} in the {action_set.name} set; actions: {', '.join(names)}")
            i = names.index(it.strip())
        if not 0 <= i < len(action_set):
            raise UserError(f"action index {i} outside the {action_set.name} set")
        out.append(i)
    return out
