"""The fixed evaluation set of the world model (issue 20): held-out episodes of 1-1 from three
sources, recorded with fixed seeds, every episode in the test split, built into a store with
full-res frames, so that every recipe is scored on the same frames.

    .venv/bin/python bench/evalset.py --out runs/evalset [--agent runs/ppo-1-1/agent.zip] [--seed 9000]

Sources (each --steps steps, episodes of at most 400 steps, seed S+1, S+2, S+3):
  sticky random (p 0.8); the PPO agent with random factor 0.1; the agent with `hash` balancing (p 0.5).
Without --agent only the first source is recorded (said in the JSON). Another --seed gives fresh
episodes of the same kind, for checking that nothing was tuned to the set. Prints JSON.

The agent is a wall-clock-stopped PPO run that a fresh machine does not have, so a recorded set is
frozen in the repository as a replay file (`mario-kit dataset export OUT/episodes --format replay --out
bench/data/eval`) and rebuilt from there, the same on every machine: `bench/wm_data.py`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mario_kit.atomic import write_json_atomic
from mario_kit.collectors import collect_agent, collect_random
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.split import SPLIT_FILE, SPLIT_SCHEMA
from mario_kit.datasets.store import build_store, store_info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True, help="folder: OUT/episodes and OUT/store.zarr")
    ap.add_argument("--agent", type=Path, help="PPO agent file for the agent sources")
    ap.add_argument("--steps", type=int, default=3000, help="steps per source")
    ap.add_argument("--seed", type=int, default=9000)
    args = ap.parse_args()
    eps = args.out / "episodes"
    common = dict(level="1-1", steps=args.steps, max_steps=400, workers=2)
    collect_random(eps, sticky=0.8, seed=args.seed + 1, progress=False, **common)
    sources = ["sticky random p=0.8"]
    if args.agent:
        collect_agent(eps, model=args.agent, random_factor=0.1, seed=args.seed + 2, progress=False, **common)
        collect_agent(
            eps,
            model=args.agent,
            random_factor=0.1,
            seed=args.seed + 3,
            progress=False,
            balance="hash",
            balance_kwargs={"p": 0.5},
            **common,
        )
        sources += ["agent, random factor 0.1", "agent, random factor 0.1, hash p=0.5"]
    files = sorted(Dataset(eps).index["file"])
    write_json_atomic(
        eps / SPLIT_FILE,
        {
            "schema_version": SPLIT_SCHEMA,
            "seed": None,
            "percentage": 100,
            "stratify": [],
            "assignments": {f: "test" for f in files},
        },
        sort_keys=True,
    )
    build_store(eps, args.out / "store.zarr", full_res=True, progress=False)
    info = store_info(args.out / "store.zarr")
    print(
        json.dumps(
            {
                "sources": sources,
                "seed": args.seed,
                "episodes": info["episodes"],
                "frames": info["frames"],
                "test_episodes": info["test_episodes"],
                "store": str(args.out / "store.zarr"),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
