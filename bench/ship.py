"""Write the model that ships with mario-kit (src/mario_kit/world_model/model/shipped/) from a trained run.

    .venv/bin/python bench/ship.py RUN --spawns SPAWNS.h5 --evaluation RUN/eval/evaluation.json [--evaluation ...] \
        --recipe "..." --command "..." [--upsampler] [--set sampler.s_cond=0.05]

Weights only (EMA when present), 16-bit, with the run's config, the recipe and command given, the
commit and the evaluation figures in model.json, and every file's SHA-256 (checked on load).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from mario_kit.world_model.config import from_dict, set_sampler, to_dict
from mario_kit.world_model.model.shipped import FOLDER, ship


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    ap.add_argument("--spawns", type=Path, required=True)
    ap.add_argument(
        "--evaluation",
        type=Path,
        action="append",
        required=True,
        help="evaluation.json (repeatable: recorded by its folder's name)",
    )
    ap.add_argument("--recipe", required=True, help="how the training data was recorded")
    ap.add_argument("--command", required=True, help="the training command")
    ap.add_argument("--upsampler", action="store_true", help="ship the upsampler too (when it beats bicubic)")
    ap.add_argument(
        "--set",
        dest="sampler_set",
        action="append",
        default=[],
        help="sampler.KEY=VALUE: ship another sampler than the run's (measured with evaluate --set)",
    )
    ap.add_argument("--out", type=Path, default=FOLDER)
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    evaluation = {p.parent.name: json.loads(p.read_text()) for p in args.evaluation}
    config = to_dict(set_sampler(from_dict(json.loads((args.run / "config.json").read_text())), args.sampler_set))
    record = {
        "recipe": args.recipe,
        "command": args.command,
        "commit": commit,
        "config": config,
        "sampler_set": args.sampler_set,
        "evaluation": evaluation,
    }
    m = ship(args.run, args.spawns, args.out, record, upsampler=args.upsampler)
    print(json.dumps({"out": str(args.out), "bytes": m["bytes"], "files": m["files"]}, indent=2))


if __name__ == "__main__":
    main()
