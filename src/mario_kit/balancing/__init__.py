"""Balancing: rebalance the action classes of a dataset.

Online, while collecting, a strategy wraps the policy (`--balance`): `repeat` (forced repeats of an
under-represented action) and `hash` (in a scenario seen before, the action taken least there).
Offline, `offline.balance_dataset` writes sampling weights for data already recorded. A new
strategy is one `Strategy` subclass registered in STRATEGIES.
"""

from __future__ import annotations

import inspect
from typing import Any

from mario_kit import UserError
from mario_kit.balancing.base import Strategy
from mario_kit.balancing.hash import HashStrategy
from mario_kit.balancing.repeat import RepeatStrategy

STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (RepeatStrategy, HashStrategy)}


def make_strategy(name: str, policy: Any, action_set: Any, **params: Any) -> Strategy:
    """Strategy `name` around `policy`; unknown names and parameters are refused in one line."""
    strategies = STRATEGIES
    if name not in strategies:
        raise UserError(f"unknown balancing strategy {name!r}; choose one of {', '.join(strategies)}")
    accepted = [
        p
        for p in inspect.signature(strategies[name].__init__).parameters
        if p not in ("self", "policy", "action_set", "table_dir")
    ]
    unknown = sorted(set(params) - set(accepted) - {"table_dir"})
    if unknown:
        raise UserError(
            f"--balance {name} has no parameter {', '.join(unknown)}; its parameters: {', '.join(accepted)}"
        )
    try:
        return strategies[name](policy, action_set, **params)
    except TypeError as e:
        raise UserError(f"bad parameters for --balance {name}: {e}") from None
