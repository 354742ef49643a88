"""Proof of effect of the balancing strategies: the same policy, step budget and seed with no
strategy, `repeat` and `hash`. Prints JSON per setting: action entropy (bits), the rarest action's
share, distinct scenario keys and steps per key (the hash strategy's default key), max x_pos, deaths,
and steps/s (the strategy's overhead against no strategy).

    .venv/bin/python bench/balance.py [--steps 20000] [--workers 2]
    .venv/bin/python bench/balance.py --policy ppo --model runs/ppo-1-1/agent.zip [--random-factor 0.0]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from mario_kit.balancing.hash import episode_keys
from mario_kit.balancing.offline import entropy_bits
from mario_kit.collectors import CollectConfig, collect
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode

SETTINGS = {
    "none": (None, {}),
    "repeat NOOP p=0.05 k=8": ("repeat", {"target": "NOOP", "p": 0.05, "k": 8}),
    "repeat least p=0.1 k=[4,12]": ("repeat", {"target": "least", "p": 0.1, "k": [4, 12]}),
    "hash p=0.5": ("hash", {"p": 0.5}),
    "hash p=1.0": ("hash", {"p": 1.0}),
}


def measure(d: Path, n_actions: int) -> dict:
    acts, keys, xmax, deaths, n = [], [], [], 0, 0
    for p in Dataset(d).paths:
        with Episode(p) as ep:
            a = ep.actions
            info = ep.info
            acts.append(a)
            keys += episode_keys(info)
            xmax.append(int(info["x_pos"].max()))
            deaths += ep.attrs["end"] == "terminated"
            n += 1
    a = np.concatenate(acts)
    counts = np.bincount(a, minlength=n_actions)
    return {
        "episodes": n,
        "steps": int(len(a)),
        "entropy_bits": round(entropy_bits(counts), 3),
        "rarest_share": round(float(counts.min() / len(a)), 4),
        "distinct_keys": len(set(keys)),
        "steps_per_key": round(len(a) / len(set(keys)), 2),
        "max_x": int(max(xmax)),
        "mean_episode_max_x": round(float(np.mean(xmax)), 1),
        "deaths": int(deaths),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sticky", type=float, default=0.8)
    ap.add_argument("--policy", choices=("sticky", "ppo"), default="sticky")
    ap.add_argument("--model", help="the PPO agent (--policy ppo)")
    ap.add_argument("--random-factor", type=float, default=0.0, help="PPO: probability of a random action")
    ap.add_argument("--stochastic", action="store_true", help="PPO: sample the agent's actions instead of argmax")
    ap.add_argument("--settings", default=";".join(SETTINGS), help="semicolon-separated subset of the settings")
    args = ap.parse_args()
    if args.policy == "ppo":
        if not args.model:
            ap.error("--policy ppo needs --model")
        kwargs = {"model": args.model, "random_factor": args.random_factor, "deterministic": not args.stochastic}
        desc = (
            f"PPO agent {args.model} ({'stochastic' if args.stochastic else 'deterministic'}, random factor "
            f"{args.random_factor}), simple action set, 1-1, frame skip 4, seed 0"
        )
    else:
        kwargs, desc = (
            {"p": args.sticky},
            f"sticky random p={args.sticky}, simple action set, 1-1, frame skip 4, seed 0",
        )
    settings = [n for n in args.settings.split(";") if n]
    if "none" not in settings or not set(settings) <= set(SETTINGS):
        ap.error(f"--settings: a subset of {list(SETTINGS)} that includes none")
    out = {"policy": desc, "steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        for name in settings:
            strategy, kw = SETTINGS[name]
            d = Path(tmp) / name.replace(" ", "_")
            t = time.perf_counter()
            collect(
                CollectConfig(
                    out=d,
                    policy=args.policy,
                    policy_kwargs=kwargs,
                    steps=args.steps,
                    seed=0,
                    workers=args.workers,
                    balance=strategy,
                    balance_kwargs=kw,
                ),
                progress=False,
            )
            sps = args.steps / (time.perf_counter() - t)
            out[name] = {**measure(d, 7), "steps_per_s": round(sps, 1)}
    base = out["none"]
    for name in settings:
        r = out[name]
        r["distinct_keys_vs_none"] = round(r["distinct_keys"] / base["distinct_keys"], 3)
        r["steps_per_s_vs_none"] = round(r["steps_per_s"] / base["steps_per_s"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
