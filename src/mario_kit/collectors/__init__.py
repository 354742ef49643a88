"""Collectors record episodes. COLLECTORS maps a CLI collector name to a function taking the
`collect` command's options; a new collector is one function registered here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mario_kit.collectors.collect import CollectConfig, CollectResult, collect


_KEYS = ("out", "level", "action_set", "frame_skip", "max_steps", "episodes", "steps", "seed", "workers", "player",
         "balance", "balance_kwargs")


def collect_random(*, sticky: float | None = None, progress: bool = True, **options: Any) -> CollectResult:
    policy, kwargs = ("sticky", {"p": sticky}) if sticky is not None else ("random", {})
    cfg = CollectConfig(policy=policy, policy_kwargs=kwargs, **{k: options[k] for k in _KEYS if options.get(k) is not None})
    return collect(cfg, progress=progress)


def collect_agent(*, model: Path | None = None, random_factor: float = 0.0,
                  random_factor_range: tuple[float, float] | None = None, deterministic: bool = True,
                  progress: bool = True, **options: Any) -> CollectResult:
    """The PPO agent with a random factor; the action set defaults to the agent's own."""
    from mario_kit import UserError
    from mario_kit.collectors.ppo import load_agent

    if model is None:
        raise UserError("--agent ppo needs --model AGENT.zip (from `mario-kit agent train`)")
    _, rec = load_agent(model)
    options = {k: options[k] for k in _KEYS if options.get(k) is not None}
    options.setdefault("action_set", rec["action_set"])
    kwargs = {"model": str(model), "random_factor": random_factor, "random_factor_range": random_factor_range,
              "deterministic": deterministic, "action_set": options["action_set"], "frame_skip": options.get("frame_skip", 4)}
    return collect(CollectConfig(policy="ppo", policy_kwargs=kwargs, **options), progress=progress)


def collect_human(**options: Any) -> CollectResult:
    from mario_kit.collectors.human import collect_human as run

    return run(**{k: v for k, v in options.items() if v is not None})  # an option not given keeps its default


COLLECTORS: dict[str, Callable[..., CollectResult]] = {"random": collect_random, "human": collect_human, "ppo": collect_agent}

__all__ = ["COLLECTORS", "CollectConfig", "CollectResult", "collect", "Path"]
