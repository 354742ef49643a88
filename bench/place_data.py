"""Does a place's score follow the training data it had? For each place (stage, 512-px bucket of x)
of an `evaluate` run's `by_place` rows: the steps the training store held there, the next-frame PSNR,
the 32-step lead over copy-last, and Spearman's rank correlation of each score with the steps.

    .venv/bin/python bench/place_data.py --store runs/carry/train.zarr \\
        --evaluation runs/gpu-w1/ev/world1-eval/evaluation.json

Prints JSON (rows, correlations). Reads the store's manifest and x_pos only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from mario_kit.world_model.training.places import frame_places
from mario_kit.datasets.format import PLACE_PX


def place_table(store: Path, evaluation: Path) -> pd.DataFrame:
    places = frame_places(store)
    if places is None:
        raise SystemExit(f"{store} keeps no x_pos: rebuild it with `dataset build --force`")
    level, x = places
    where = pd.MultiIndex.from_arrays([level.astype(str), x // PLACE_PX * PLACE_PX])
    held = pd.Series(1, index=where).groupby(level=[0, 1]).sum()
    rows = []
    for p in json.loads(evaluation.read_text())["by_place"]:
        lead = p.get("rollout_model_psnr_last", np.nan) - p.get("rollout_copy_last_psnr_last", np.nan)
        rows.append(
            {
                "level": p["level"],
                "x_from": p["x_from"],
                "train_frames": int(held.get((p["level"], p["x_from"]), 0)),
                "next_frame_psnr": p["next_frame_model_psnr"],
                "next_frame_copy_last_psnr": p["next_frame_copy_last_psnr"],
                "lead_32": round(lead, 2) if np.isfinite(lead) else None,
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, required=True, help="the training store of the evaluated model")
    ap.add_argument("--evaluation", type=Path, required=True, help="an evaluation.json with by_place rows")
    args = ap.parse_args()
    t = place_table(args.store, args.evaluation)
    corr = {
        c: round(float(t["train_frames"].corr(t[c].astype(float), method="spearman")), 3)
        for c in ("next_frame_psnr", "lead_32")
    }
    print(
        json.dumps(
            {
                "places": len(t),
                "spearman_with_train_frames": corr,
                "rows": t.astype(object).where(t.notna(), None).to_dict("records"),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
