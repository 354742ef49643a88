"""How much of each stage the collectors reach at equal recorded-step budgets: sticky random, sticky
random with `hash` balancing, and the frontier collector, in the same run on the same machine.

    .venv/bin/python bench/frontier.py [--levels 1-1|all] [--steps 20000] [--seed 0] [--collectors ...]
        [--ending-steps N] [--ppo-data runs/mix/episodes] [--record] [--from-log STDERR_OF_A_RUN]

Per stage and collector: the farthest x reached, whether and after how many recorded steps the flag
(or axe) was first reached (episodes in index order), the steps recorded after deaths and flags
(`--ending-steps`), distinct cells (the frontier's `cell_key`,
counted the same way for every collector), action entropy, and recorded steps/s with its ratio to
sticky random's. Prints JSON; `--record` also writes bench/results/frontier.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mario_kit.collectors import collect_frontier, collect_random
from mario_kit.collectors.frontier import cell_key, is_place
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode
from mario_kit.emulator import ALL_LEVELS, X_WRAPPED

COLLECTORS = ("sticky", "sticky+hash", "frontier")
# The PPO agent is not trained here (hours on 2 cores): its row measures the frozen agent episodes of the
# shipped model's data, bench/data/mix, seed 300 (`collect --agent ppo --random-factor 0.1 --steps 20000
# --max-steps 1000`, bench/data/README.md: recorded before endings were, with an agent of 155k steps).
# Its steps/s is bench/agent.py's.
PPO_SEED = 300


def run(name: str, out: Path, level: str, steps: int, seed: int, ending_steps: int | None) -> float:
    """Seconds the collection took."""
    t = time.perf_counter()
    common: dict[str, Any] = dict(level=level, steps=steps, seed=seed, progress=False)
    if ending_steps is not None:
        common["ending_steps"] = ending_steps
    if name == "frontier":
        collect_frontier(out, **common)
    else:
        balance = dict(balance="hash", balance_kwargs={"p": 0.5}) if name == "sticky+hash" else {}
        collect_random(out, sticky=0.8, **common, **balance)
    return time.perf_counter() - t


def measure(out: Path, level: str, seed: int | None = None) -> dict[str, Any]:
    """The row of the episodes in `out` (`seed`: only those recorded with it)."""
    eps = []
    for p in Dataset(out).paths:
        with Episode(p) as ep:
            if seed is not None and ep.attrs["seed"] != seed:
                continue
            info = {k: ep.info[k] for k in ("x_pos", "y_pos")}
            eps.append(
                (ep.attrs["extra"]["episode_index"], ep.length, ep.played_steps, ep.attrs["end"], info, ep.actions)
            )
    eps.sort(key=lambda e: e[0])
    total, first_flag, cells, ending = 0, None, set(), 0
    counts = np.zeros(16, np.int64)
    for _, n, played, end, info, actions in eps:
        if end == "flag" and first_flag is None:
            first_flag = total + played  # the step the flag was reached in
        total += n
        ending += n - played
        places = [{"x_pos": x, "y_pos": y} for x, y in zip(info["x_pos"], info["y_pos"])]
        cells |= {cell_key(level, p) for p in places if is_place(p)}
        counts += np.bincount(actions, minlength=16)[:16]
    share = counts[counts > 0] / counts.sum()
    return {
        "steps": total,
        "ending_steps": ending,
        "farthest_x": int(max(int(x[x < X_WRAPPED].max(initial=0)) for x in (e[4]["x_pos"] for e in eps))),
        "flags": sum(e[3] == "flag" for e in eps),
        "steps_to_first_flag": first_flag,
        "cells": len(cells),
        "action_entropy_bits": round(float(-(share * np.log2(share)).sum()), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="1-1", help="comma list of stages, or all (the 32)")
    ap.add_argument("--collectors", default=",".join(COLLECTORS), help="comma list of " + ", ".join(COLLECTORS))
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ending-steps", type=int, default=None, help="collect's --ending-steps [its default]")
    ap.add_argument("--record", action="store_true", help="write bench/results/frontier.json")
    ap.add_argument("--from-log", type=Path, help="rebuild the rows from the per-stage lines of a run's stderr")
    ap.add_argument(
        "--ppo-data",
        type=Path,
        help="1-1's PPO row from these episodes: bench/data/mix replayed (its seed-300 agent half, see PPO_NOTE)",
    )
    args = ap.parse_args()
    rows: dict[str, dict[str, Any]] = {}
    names = args.collectors.split(",")
    levels = list(ALL_LEVELS) if args.levels == "all" else args.levels.split(",")
    if args.from_log:  # a long run cut short (or run in parts): its finished stages
        for line in args.from_log.read_text().splitlines():
            if line.startswith("{"):
                rows |= {f"{lv} {n}": r for lv, per in json.loads(line).items() for n, r in per.items()}
        levels = []
    with tempfile.TemporaryDirectory() as tmp:
        for level in levels:
            for name in names:
                out = Path(tmp) / f"{level}-{name}"
                seconds = run(name, out, level, args.steps, args.seed, args.ending_steps)
                r = measure(out, level)
                r["steps_per_s"] = round(r["steps"] / seconds, 1)
                rows[f"{level} {name}"] = r
            base = rows[f"{level} sticky"]["steps_per_s"] if "sticky" in names else None
            for name in names:
                r = rows[f"{level} {name}"]
                r["ratio_to_sticky"] = round(r["steps_per_s"] / base, 3) if base else None
            print(json.dumps({level: {n: rows[f"{level} {n}"] for n in names}}), file=sys.stderr, flush=True)
    if args.ppo_data:  # beside 1-1's other rows
        ppo = measure(args.ppo_data, "1-1", seed=PPO_SEED) | {"steps_per_s": None, "ratio_to_sticky": None}
        rows = dict(sorted((rows | {"1-1 ppo": ppo}).items(), key=lambda kv: ALL_LEVELS.index(kv[0].split()[0])))
    print(json.dumps({"steps_per_collector": args.steps, "seed": args.seed, "rows": rows}, indent=1))
    if args.record:
        _record(rows, args)


def _speed(r: dict[str, Any]) -> str:
    if r["steps_per_s"] is None:
        return "frozen episodes (bench/agent.py)"
    return f"{r['steps_per_s']}" + (f" ({r['ratio_to_sticky']})" if r["ratio_to_sticky"] else "")


def _record(rows: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    from tables import record

    cols = ["stage, collector", "farthest x", "flag first reached after (steps)", "flags", "cells",
            "steps of endings", "action entropy (bits)", "steps/s (ratio to sticky)"]  # fmt: skip
    table = [
        [k, r["farthest_x"], r["steps_to_first_flag"] or "not reached", r["flags"], r["cells"], r.get("ending_steps", ""),
         r["action_entropy_bits"], _speed(r)]
        for k, r in rows.items()
    ]  # fmt: skip
    front = {k: r for k, r in rows.items() if k.endswith("frontier")}
    reached = [k.split()[0] for k, r in front.items() if r["steps_to_first_flag"]]
    headline = f"frontier: the flag in {len(reached)} of {len(front)} stages within {args.steps:,} steps" + (
        f" ({', '.join(reached)})" if reached else ""
    )
    command = (
        f".venv/bin/python bench/frontier.py --levels {args.levels} --steps {args.steps} --seed {args.seed}"
        + (f" --ppo-data {args.ppo_data}" if args.ppo_data else "")
        + " --record"
    )
    record("frontier", cols, table, command, headline, f"{args.steps:,} recorded steps per collector and stage")


if __name__ == "__main__":
    main()
