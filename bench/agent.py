"""PPO throughput: training agent steps/s with 2 and 8 workers against raw stepping of the same wrapped
env, and agent collection against `collect --random` with 1 and 2 workers, measured in the same run.

    .venv/bin/python bench/agent.py [--timesteps 4096]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mario_kit.collectors import COLLECTORS, CollectConfig, collect
from mario_kit.agents.ppo import AgentConfig, make_env, train_agent


def raw_steps_per_s(n: int) -> float:
    env = make_env("1-1", "simple", 4, monitor=False)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(n):
        _, _, term, trunc, _ = env.step(int(rng.integers(7)))
        if term or trunc:
            env.reset()
    return n / (time.perf_counter() - t)


def train_steps_per_s(tmp: Path, name: str, timesteps: int, workers: int, n_steps: int) -> float:
    cfg = AgentConfig(timesteps=timesteps, workers=workers, n_steps=n_steps, checkpoint_every=10**9, eval_every=10**9)
    t = time.perf_counter()
    train_agent(cfg, tmp / name, progress=False)
    return timesteps / (time.perf_counter() - t)


def collect_steps_per_s(tmp: Path, name: str, steps: int, workers: int, model: Path | None = None) -> float:
    t = time.perf_counter()
    if model is None:
        collect(CollectConfig(out=tmp / name, policy="random", steps=steps, seed=0, workers=workers), progress=False)
    else:
        COLLECTORS["ppo"](
            out=tmp / name, model=model, random_factor=0.1, steps=steps, seed=0, workers=workers, progress=False
        )
    return steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timesteps", type=int, default=4096)
    ap.add_argument("--collect-steps", type=int, default=3000)
    args = ap.parse_args()
    r: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        r["raw_wrapped_env_agent_steps_per_s_1_process"] = raw = raw_steps_per_s(2000)
        train_agent(
            AgentConfig(timesteps=1024, workers=2, checkpoint_every=10**9, eval_every=10**9),
            tmp / "warm",
            progress=False,
        )
        for workers, n_steps in ((2, 1024), (8, 256)):  # the default 2,048 steps an update (AgentConfig's epochs)
            sps = train_steps_per_s(tmp, f"run{workers}", args.timesteps, workers, n_steps)
            r[f"ppo_training_agent_steps_per_s_{workers}_workers"] = sps
            r[f"ratio_training_{workers}_workers_to_raw"] = sps / raw
        model = tmp / "run8" / "agent.zip"
        for workers in (1, 2):
            rand = collect_steps_per_s(tmp, f"rand{workers}", args.collect_steps, workers)
            agent = collect_steps_per_s(tmp, f"agent{workers}", args.collect_steps, workers, model)
            r[f"collect_random_steps_per_s_{workers}_workers"] = rand
            r[f"collect_agent_steps_per_s_{workers}_workers"] = agent
            r[f"ratio_agent_to_random_collect_{workers}_workers"] = agent / rand
    print(json.dumps({k: round(v, 3 if k.startswith("ratio") else 1) for k, v in r.items()}, indent=2))


if __name__ == "__main__":
    main()
