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
- `before_step(env, info, action)` and `after_step(joypad, info, ended)`: see each step.
Control flow from the policy: raise `DiscardEpisode`, `CutEpisode` or `StopCollection`.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from mario_kit.emulator import MarioEnv
from mario_kit.datasets import format as F
from mario_kit.datasets.episode import EpisodeWriter


class DiscardEpisode(Exception):
    """Raised by a policy to drop the current episode and go on with the next."""


class CutEpisode(Exception):
    """Raised by a policy to end the current episode early, kept as 'cut' (when it has a step), and go on."""


class StopCollection(Exception):
    """Raised by a policy to end the session; `keep` says whether the current episode is saved (as 'cut')."""

    def __init__(self, keep: bool = False):
        super().__init__("stop")
        self.keep = keep


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
) -> str:
    """Play one episode into `writer` (not finished here). Returns how it ended:
    'terminated' (death), 'flag' (level cleared), or 'truncated' (max_steps)."""
    joypad = writer.meta.action_set.joypad
    policy.reset(rng, len(joypad))
    frame, info, prefix = _begin(env, policy, writer, frame_skip)
    writer.add_frame(frame)
    writer.meta.policy = policy.params()  # may hold per-episode draws (e.g. PPO's random factor)
    before, after = getattr(policy, "before_step", None), getattr(policy, "after_step", None)
    policy_on_frame: Any = getattr(policy, "on_frame", None)

    def joypad_on_frame(screen: np.ndarray) -> int | None:
        a = policy_on_frame(screen)
        return None if a is None else int(joypad[a])

    on_frame = joypad_on_frame if policy_on_frame is not None else None

    for t in range(max_steps):
        action = int(policy.act(frame, info)) if t >= len(prefix) else prefix[t]
        if before is not None:
            before(env, info, action)
        r = env.step(int(joypad[action]), frame_skip, on_frame if t >= len(prefix) else None)
        if on_frame is not None:
            action = majority_action(r.joypad, joypad, action)
        writer.add_step(
            action,
            r.frame,
            r.reward,
            r.terminated,
            r.truncated,
            r.info,
            r.joypad,
            overridden=bool(getattr(policy, "overridden", False)),
        )
        frame, info = r.frame, r.info
        if after is not None:
            after(r.joypad, info, r.terminated or r.truncated)
        if on_step is not None:
            on_step(t + 1, info)
        if r.terminated or r.truncated:
            return "flag" if info.get("flag_get") else "terminated"
    return "truncated"
