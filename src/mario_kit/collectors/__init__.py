"""Collectors record episodes. COLLECTORS maps a CLI collector name to a function taking the
`collect` command's options; a new collector is one function registered here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from mario_kit.collectors.collect import CollectConfig, CollectResult, collect


def collect_random(*, sticky: float | None = None, progress: bool = True, **options: Any) -> CollectResult:
    policy, kwargs = ("sticky", {"p": sticky}) if sticky is not None else ("random", {})
    keys = ("out", "level", "action_set", "frame_skip", "max_steps", "episodes", "steps", "seed", "workers", "player")
    cfg = CollectConfig(policy=policy, policy_kwargs=kwargs, **{k: options[k] for k in keys if options.get(k) is not None})
    return collect(cfg, progress=progress)


def collect_human(**options: Any) -> CollectResult:
    from mario_kit.collectors.human import collect_human as run

    return run(**options)


COLLECTORS: dict[str, Callable[..., CollectResult]] = {"random": collect_random, "human": collect_human}

__all__ = ["COLLECTORS", "CollectConfig", "CollectResult", "collect", "Path"]
