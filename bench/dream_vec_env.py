"""Dream steps/s of DreamVecEnv (N dreams in one forward pass, the agent's observations, the reward
and end model) at several N, against the real game's agent env (the same gray 84x84 pipeline,
one emulator in this process) measured in the same run.

    .venv/bin/python bench/dream_vec_env.py [--run RUN] [--spawns SPAWNS] [--n 1,8,32,64] [--steps 20]
        [--device cpu] [--record]

RUN must hold a reward and end model (rewend.pt); the shipped model's folder by default. Prints JSON:
steps/s per N (dream steps of all N dreams together) and its ratio to the real env's steps/s;
`--record` also writes them as bench/results/dream_vec_env.json (docs/BENCHMARKS.md: bench/tables.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from mario_kit.agents.ppo import frame_observation, make_env
from mario_kit.world_model.programs.dream_vec_env import DreamVecEnv


def dream_rate(n: int, steps: int, args: argparse.Namespace) -> float:
    observe, space = frame_observation()
    env = DreamVecEnv(
        n, args.run, args.spawns, device=args.device, seed=0, observation=observe, observation_space=space
    )
    env.seed(0)
    env.reset()
    rng = np.random.default_rng(0)
    act = lambda: rng.integers(0, env.action_space.n, n)  # noqa: E731
    for _ in range(2):  # warm-up
        env.step(act())
    t = time.perf_counter()
    for _ in range(steps):
        env.step(act())
    return n * steps / (time.perf_counter() - t)


def real_rate(steps: int, action_set: str) -> float:
    env = make_env("1-1", action_set, 4, monitor=False)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(steps):
        if any(env.step(int(rng.integers(env.action_space.n)))[2:4]):
            env.reset()
    return steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None)
    ap.add_argument("--spawns", default=None)
    ap.add_argument("--n", default="1,8,32,64")
    ap.add_argument("--steps", type=int, default=20, help="batched steps timed per N")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--record", action="store_true", help="write bench/results/dream_vec_env.json")
    args = ap.parse_args()
    probe = DreamVecEnv(1, args.run, args.spawns, device=args.device)
    if not probe.predicts:
        raise SystemExit(f"error: {args.run or 'the shipped model'} has no reward and end model (rewend.pt)")
    action_set = probe.dream.meta["action_set"]
    real = real_rate(400, action_set)
    rows = {}
    for n in (int(x) for x in args.n.split(",")):
        r = dream_rate(n, args.steps, args)
        rows[f"n{n}"] = {"steps_per_s": round(r, 1), "ratio_to_real": round(r / real, 3)}
        print(f"N {n}: {r:.1f} dream steps/s ({r / real:.2f}x the real env)", flush=True)
    cpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    out = {
        "device": f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads",
        "run": str(args.run or "shipped"),
        "real_env_steps_per_s": round(real, 1),
        "dream": rows,
    }
    print(json.dumps(out, indent=2))
    if args.record:
        _record(out, args)


def _record(out: dict, args: argparse.Namespace) -> None:
    from tables import record

    rows = [["real game (agent env, 1 process)", out["real_env_steps_per_s"], "1.00"]]
    rows += [[f"dream, N = {k[1:]}", v["steps_per_s"], f"{v['ratio_to_real']:.2f}"] for k, v in out["dream"].items()]
    best = max(out["dream"].items(), key=lambda kv: kv[1]["steps_per_s"])
    headline = (
        f"{best[1]['steps_per_s']} dream steps/s at N = {best[0][1:]} ({best[1]['ratio_to_real']:.2f}x the real "
        f"game's agent env); N = 1: {out['dream']['n1']['ratio_to_real']:.2f}x"
        if "n1" in out["dream"]
        else f"{best[1]['steps_per_s']} dream steps/s at N = {best[0][1:]}"
    )
    cmd = f".venv/bin/python bench/dream_vec_env.py --n {args.n} --steps {args.steps} --device {args.device} --record"
    note = (
        f"run {out['run']}: the agent's observations (full-res frames through the tiles, gray 84x84), rewards and ends"
    )
    record("dream_vec_env", ["env", "steps/s", "ratio to the real game"], rows, cmd, headline, note)


if __name__ == "__main__":
    main()
