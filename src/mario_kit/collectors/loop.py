"""The only collection loop: env step x frame skip -> EpisodeWriter. Every policy plugs in here.

A policy may also implement:
- `on_frame(screen) -> action | None`: called after each emulator frame inside a step (the human
  collector draws the screen and reads keys there). A changed action takes effect on the next
  emulator frame; the `joypad` column has every frame, and the step's recorded action is the one
  held for most of its frames (ties: the later one);
- `overridden: bool`: whether its last action replaced the base policy's (balancing, random factor);
- `begin(env, action_set, frame_skip) -> Begin | None`: start the episode somewhere other than the
  stage's reset (the frontier collector): a restored state, the joypad bytes from reset to it
  (stored as `extra/start_joypad`: the episode stays replayable) and steps to walk first;
- `before_step(env, info, action)` and `after_step(joypad, info, ended)`: see each step up to the
  game's end (not the ending sequence recorded after it);
- `ending_limit(info, limit) -> int`: how many of the `limit` ending steps to record after this end
  (the frontier records the endings of deaths at places it has few of).
Control flow from the policy: raise `DiscardEpisode`, `CutEpisode` or `StopCollection`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from mario_kit.emulator import MarioEnv, StepResult
from mario_kit.datasets import format as F
from mario_kit.datasets.episode import EpisodeWriter


# Steps recorded past a death or the flag by default: at frame skip 4, a death's animation until Mario
# has left the screen, and the slide down the pole and most of the walk into the castle. Longer ones
# add frames of a still screen; in the frontier's data deaths end most episodes, so each step here costs.
DEFAULT_ENDING_STEPS = 32
MAX_ENDING_STEPS = 4096  # above the longest ending at frame skip 1 (the end of a world)


class DiscardEpisode(Exception):
    """Raised by a policy to drop the current episode and go on with the next."""


class CutEpisode(Exception):
    """Raised by a policy to end the current episode early, kept as 'cut' (when it has a step), and go on."""


class StopCollection(Exception):
    """Raised by a policy to end the session; `keep` says whether the current episode is saved (as 'cut').
    `end`: set by the loop when the game had already ended the episode (it stopped during the
    ending): the episode is whole and is kept so, with the ending recorded until then."""

    def __init__(self, keep: bool = False):
        super().__init__("stop")
        self.keep = keep
        self.end: str | None = None


def majority_action(frame_bytes: list[int], joypad: np.ndarray, default: int) -> int:
    """The action held for most frames of a step (ties: the one held later)."""
    counts: dict[int, int] = {}
    for b in frame_bytes:
        counts[b] = counts.get(b, 0) + 1
    best = max(reversed(frame_bytes), key=lambda b: counts[b])  # max keeps the first of equals: the latest
    hits = np.flatnonzero(joypad == best)
    return int(hits[0]) if len(hits) else default


def _begin(env: MarioEnv, policy: Any, writer: EpisodeWriter, frame_skip: int) -> tuple[np.ndarray, dict, list]:
    """The episode's first frame and info, and the steps the policy wants walked before it acts."""
    begin = getattr(policy, "begin", None)
    start = begin(env, writer.meta.action_set.name, frame_skip) if begin is not None else None
    if start is None:
        frame, info = env.reset()
        return frame, info, []
    writer.add_extra(F.START_JOYPAD, start.start_joypad)
    writer.meta.extra["prefix_steps"] = len(start.steps)
    return start.frame, start.info, start.steps


def record_episode(
    env: MarioEnv,
    policy: Any,
    writer: EpisodeWriter,
    rng: np.random.Generator,
    frame_skip: int,
    max_steps: int,
    on_step: Callable[[int, dict[str, Any]], None] | None = None,
    ending_steps: int = 0,
    budget: int | None = None,
) -> str:
    """Play one episode into `writer` (not finished here). Returns how it ended:
    'terminated' (death), 'flag' (level cleared), or 'truncated' (max_steps).

    After a death or the flag, up to `ending_steps` more steps record the game's ending sequence
    (the policy still acts; the game ignores it), stopping when the game leaves the stage; the
    writer's `meta.ending_steps` says how many. `max_steps` bounds the steps up to the end, `budget`
    (None: no bound) all the steps recorded."""
    joypad = writer.meta.action_set.joypad
    policy.reset(rng, len(joypad))
    frame, info, prefix = _begin(env, policy, writer, frame_skip)
    writer.add_frame(frame)
    writer.meta.policy = policy.params()  # may hold per-episode draws (e.g. PPO's random factor)
    before, after = getattr(policy, "before_step", None), getattr(policy, "after_step", None)
    on_frame = _joypad_on_frame(policy, joypad)
    for t in range(max_steps if budget is None else min(max_steps, budget)):
        action = int(policy.act(frame, info)) if t >= len(prefix) else prefix[t]
        if before is not None:
            before(env, info, action)
        r = _step(env, policy, writer, action, frame_skip, on_frame if t >= len(prefix) else None)
        frame, info = r.frame, r.info
        if after is not None:
            after(r.joypad, info, r.terminated or r.truncated)
        if on_step is not None:
            on_step(t + 1, info)
        if r.terminated or r.truncated:
            end = "flag" if info.get("flag_get") else "terminated"
            if r.terminated:
                limit = ending_steps if budget is None else min(ending_steps, budget - writer.n_steps)
                limit = policy.ending_limit(info, limit) if hasattr(policy, "ending_limit") else limit
                try:
                    _record_ending(env, policy, writer, (frame, info), frame_skip, limit, on_frame, on_step)
                except CutEpisode:  # the game had ended it: kept as it ended, with the ending so far
                    pass
                except StopCollection as stop:
                    stop.end = end
                    raise
            return end
    return "truncated"


def _joypad_on_frame(policy: Any, joypad: np.ndarray) -> Callable[[np.ndarray], int | None] | None:
    """The policy's `on_frame`, answering joypad bytes instead of action indices (None: it has none)."""
    policy_on_frame: Any = getattr(policy, "on_frame", None)
    if policy_on_frame is None:
        return None

    def on_frame(screen: np.ndarray) -> int | None:
        a = policy_on_frame(screen)
        return None if a is None else int(joypad[a])

    return on_frame


def _step(env: MarioEnv, policy: Any, writer: EpisodeWriter, action: int, frame_skip: int, on_frame) -> StepResult:
    """One recorded step: the action held for most of its frames (a human may change keys inside it)."""
    joypad = writer.meta.action_set.joypad
    r = env.step(int(joypad[action]), frame_skip, on_frame)
    if on_frame is not None:
        action = majority_action(r.joypad, joypad, action)
    overridden = bool(getattr(policy, "overridden", False))
    writer.add_step(action, r.frame, r.reward, r.terminated, r.truncated, r.info, r.joypad, overridden=overridden)
    return r


def _record_ending(
    env: MarioEnv, policy: Any, writer: EpisodeWriter, last: tuple, frame_skip: int, limit: int, on_frame, on_step
) -> None:
    """Steps past the end while the game plays its ending, up to `limit` of them. `last`: the end
    step's (frame, info), what the policy sees first."""
    frame, info = last
    for _ in range(limit):
        if env.ending_over():
            break
        r = _step(env, policy, writer, int(policy.act(frame, info)), frame_skip, on_frame)
        writer.meta.ending_steps += 1
        frame, info = r.frame, r.info
        if on_step is not None:
            on_step(writer.n_steps, info)
