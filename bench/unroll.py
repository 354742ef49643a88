"""One frontier episode played again from its stage's reset: the way the collector took to its start
(`extra/start_joypad`, no frames stored) becomes recorded steps, so `mario-kit dream` can start
anywhere along it. This is how the world model is shown running through a stage from its middle on
held-out play (issue 43's 128-step look): a frontier episode that ends at the flag, unrolled, is a
whole run from reset to the flag.

    .venv/bin/python bench/unroll.py EPISODE.h5 --out FOLDER

Prints the new file, its steps (the way there, then the episode's own) and the x position at every
64th step; checks that the unrolled joypad bytes are exactly the way's followed by the episode's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from mario_kit.collectors.loop import majority_action, record_episode
from mario_kit.datasets.episode import Episode, EpisodeMeta, EpisodeWriter
from mario_kit.emulator import MarioEnv


class _Replay:
    """A policy that plays a fixed list of actions."""

    def __init__(self, actions: list[int]) -> None:
        self.actions, self.t = actions, 0

    def reset(self, rng: np.random.Generator, n_actions: int) -> None:  # noqa: ARG002 - the policy protocol
        self.t = 0

    def act(self, frame: np.ndarray, info: dict[str, Any]) -> int:  # noqa: ARG002
        self.t += 1
        return self.actions[self.t - 1]

    def params(self) -> dict[str, Any]:
        return {"kind": "unrolled"}


def _fail(line: str) -> NoReturn:
    print(f"error: {line}", file=sys.stderr)
    raise SystemExit(2)


def way_actions(way: np.ndarray | None, skip: int, joypad: np.ndarray, name: str) -> list[int]:
    """The action of each step of the way from reset (its joypad bytes, `skip` frames a step)."""
    if way is None or len(way) % skip:
        _fail(f"{name}: no start prefix of whole {skip}-frame steps")
    return [majority_action(list(way[k : k + skip]), joypad, 0) for k in range(0, len(way), skip)]


def unroll(path: Path, out: Path) -> dict[str, Any]:
    with Episode(path) as ep:
        a, start = ep.attrs, ep.start_joypad
        meta = EpisodeMeta(a["env_id"], a["level"], int(a["frame_skip"]), ep.action_set, "unrolled", seed=a["seed"])
        way = way_actions(start, meta.frame_skip, meta.action_set.joypad, path.name)
        own, expect = [int(x) for x in ep.actions], np.concatenate([start, ep.joypad])
        ending = ep.ending_steps
    out.mkdir(parents=True, exist_ok=True)
    env = MarioEnv(meta.level)
    try:
        with EpisodeWriter(out, meta) as writer:  # a failure leaves no partial file behind
            n = len(way) + len(own) - ending
            end = record_episode(
                env, _Replay(way + own), writer, np.random.default_rng(0), meta.frame_skip, n, ending_steps=ending
            )
            writer.meta.extra["way_steps"] = len(way)
            new = writer.finish(end)
    finally:
        env.close()
    with Episode(new) as ep:
        got, x = ep.joypad, ep.info["x_pos"]
    if not np.array_equal(got, expect):
        _fail(f"{new.name}: the unrolled joypad bytes differ from the way's and the episode's")
    return {
        "file": str(new),
        "way_steps": len(way),
        "own_steps": len(own),
        "end": end,
        "x_every_64": [int(v) for v in x[::64]],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("episode", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    print(json.dumps(unroll(args.episode, args.out), indent=1))


if __name__ == "__main__":
    main()
