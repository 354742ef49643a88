"""Collectors record episodes. COLLECTORS maps a CLI collector name to a function: the collector's
own options by name, the options every collector shares (`CollectOptions`: the fields of
`CollectConfig`) as further keywords, an option not given keeping its default. Each builds a
`CollectConfig` for its policy and runs the one collection loop (`collect.collect`); a new collector
is one policy class in `policies.POLICIES` and one function here."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, TypedDict, Unpack

from mario_kit import UserError
from mario_kit.collectors.collect import CollectConfig, CollectResult, run_collection


def collect(cfg: CollectConfig, progress: bool = True) -> CollectResult:
    """Collect episodes into `cfg.out` (created if missing; appended to if compatible): with worker
    processes, or with `cfg.ray` as Ray tasks (`collectors.distributed`)."""
    backend: Any = None
    if cfg.ray:
        from mario_kit.collectors.distributed import collect_on_ray as backend, preflight

        preflight(cfg)  # Ray installed, the cluster answering: before anything is written
    return run_collection(cfg, progress, backend)


FRONTIER_MAX_STEPS = 100  # a frontier episode: the return, then this many steps of exploration at most


class CollectOptions(TypedDict, total=False):
    """The options of `CollectConfig` every collector takes (see its field comments)."""

    level: str
    action_set: str
    frame_skip: int
    max_steps: int
    ending_steps: int
    episodes: int
    steps: int
    seed: int
    workers: int
    player: str
    balance: str
    balance_kwargs: dict[str, Any]
    ray: bool
    ray_address: str
    ray_write: str


def collect_random(
    out: Path, *, sticky: float | None = None, progress: bool = True, **options: Unpack[CollectOptions]
) -> CollectResult:
    """Uniform random play, or sticky (the previous action kept with probability `sticky`)."""
    policy, kwargs = ("sticky", {"p": sticky}) if sticky is not None else ("random", {})
    return collect(CollectConfig(out=out, policy=policy, policy_kwargs=kwargs, **options), progress=progress)


def collect_frontier(
    out: Path, *, sticky: float | None = None, progress: bool = True, **options: Unpack[CollectOptions]
) -> CollectResult:
    """Return to the edge of what was seen and explore from there (collectors/frontier.py): whole
    stages without an agent. Its archive grows in `out` over runs; an episode is the return (a few
    steps) and `max_steps` of sticky-random exploration (`sticky`, default 0.8)."""
    options.setdefault("max_steps", FRONTIER_MAX_STEPS)
    kwargs = {"archive": str(out), "p": 0.8 if sticky is None else sticky}
    return collect(CollectConfig(out=out, policy="frontier", policy_kwargs=kwargs, **options), progress=progress)


def collect_agent(
    out: Path,
    *,
    model: Path | None = None,
    random_factor: float = 0.0,
    random_factor_range: tuple[float, float] | None = None,
    deterministic: bool = True,
    progress: bool = True,
    **options: Unpack[CollectOptions],
) -> CollectResult:
    """The PPO agent with a random factor; the action set defaults to the agent's own."""
    from mario_kit.agents.ppo import load_agent

    if model is None:
        raise UserError("--agent ppo needs --model AGENT.zip (from `mario-kit agent train`)")
    _, rec = load_agent(model)
    options.setdefault("action_set", rec["action_set"])
    kwargs = {
        "model": str(model),
        "random_factor": random_factor,
        "random_factor_range": random_factor_range,
        "deterministic": deterministic,
        "action_set": options["action_set"],
        "frame_skip": options.get("frame_skip", 4),
    }
    return collect(CollectConfig(out=out, policy="ppo", policy_kwargs=kwargs, **options), progress=progress)


def collect_human(
    out: Path,
    *,
    scale: int = 3,
    keymap: Path | None = None,
    fps: float = 60.0,
    script: dict[int, list] | None = None,
    wait_for_start: bool = True,
    progress: bool = True,
    **options: Unpack[CollectOptions],
) -> CollectResult:
    """A person plays in a pygame window until Esc, the window closes, or `episodes` are saved.
    `script` (tests, benches; or MARIO_KIT_KEYS): key events posted at given frames, headless."""
    from mario_kit.collectors.human import session_summary
    from mario_kit.datasets import format as F
    from mario_kit.gui import load_keymap, require_display, script_from_env

    if not 1 <= scale <= 8:
        raise UserError(f"--scale must be in 1..8, got {scale}")
    options.setdefault("max_steps", 100_000)
    cfg = CollectConfig(out=out, policy="human", **options)
    cfg.check()
    keys = load_keymap(keymap)
    script = script if script is not None else script_from_env()
    require_display(script, "collect --human")
    cfg.policy_kwargs = {
        "action_set": cfg.action_set,
        "keymap": keys,
        "scale": scale,
        "fps": fps,
        "script": script,
        "wait_for_start": wait_for_start,
        "random_levels": cfg.level == "random",
    }
    result = collect(cfg, progress=progress)
    result.summary = session_summary(result.paths, F.get_action_set(cfg.action_set))
    return result


COLLECTORS: dict[str, Callable[..., CollectResult]] = {
    "random": collect_random,
    "human": collect_human,
    "ppo": collect_agent,
    "frontier": collect_frontier,
}

__all__ = ["COLLECTORS", "CollectConfig", "CollectOptions", "CollectResult", "collect"]
