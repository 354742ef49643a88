"""PPO throughput: training agent steps/s with 2 workers against raw stepping of the same wrapped env,
and agent collection against `collect --random`, measured in the same run.

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
from mario_kit.collectors.ppo import AgentConfig, make_env, train_agent


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timesteps", type=int, default=4096)
    ap.add_argument("--collect-steps", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = raw_steps_per_s(2000)
        cfg = AgentConfig(timesteps=args.timesteps, workers=2, n_steps=512, batch_size=256, n_epochs=4,
                          checkpoint_every=10**9, eval_every=10**9)
        train_agent(AgentConfig(timesteps=1024, workers=2, checkpoint_every=10**9, eval_every=10**9), Path(tmp) / "warm", progress=False)
        t = time.perf_counter()
        train_agent(cfg, Path(tmp) / "run", progress=False)
        train_sps = args.timesteps / (time.perf_counter() - t)
        t = time.perf_counter()
        collect(CollectConfig(out=Path(tmp) / "rand", policy="random", steps=args.collect_steps, seed=0), progress=False)
        rand_sps = args.collect_steps / (time.perf_counter() - t)
        t = time.perf_counter()
        COLLECTORS["ppo"](out=Path(tmp) / "agent", model=Path(tmp) / "run" / "agent.zip", random_factor=0.1,
                          steps=args.collect_steps, seed=0, progress=False)
        agent_sps = args.collect_steps / (time.perf_counter() - t)
    print(json.dumps({
        "raw_wrapped_env_agent_steps_per_s_1_process": round(raw, 1),
        "ppo_training_agent_steps_per_s_2_workers": round(train_sps, 1),
        "ratio_training_to_raw": round(train_sps / raw, 3),
        "collect_random_steps_per_s": round(rand_sps, 1),
        "collect_agent_steps_per_s": round(agent_sps, 1),
        "ratio_agent_to_random_collect": round(agent_sps / rand_sps, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
