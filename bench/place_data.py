"""Does a place's score follow the training data it had? For each place (stage, 512-px bucket of x)
of an `evaluate` run's `by_place` rows: the steps the training store held there, the next-frame PSNR,
the 32-step lead over copy-last, and Spearman's rank correlation of each score with the steps.

    .venv/bin/python bench/place_data.py --store runs/carry/train.zarr \\
        --evaluation runs/gpu-w1/ev/world1-eval/evaluation.json

`--against NAME=EVALUATION` (repeatable) adds another model's evaluation of the same set (same seed:
the same windows and rollouts) as columns and says, per model, how far it moved each score from the
first one's, over all places and over the thin ones (fewer training frames than `--thin`).
`by_world`: each model's means over a world's places and how many places meet issue 43's targets
(next frame >= 35 dB, 32-step lead >= +3 dB).

Prints JSON (rows, correlations, comparisons). Reads the store's manifest and x_pos only.
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


def scores(evaluation: Path) -> pd.DataFrame:
    """(level, x_from) -> next-frame PSNR and 32-step lead over copy-last of one evaluation."""
    rows = [
        {
            "level": p["level"],
            "x_from": p["x_from"],
            "next_frame_psnr": p["next_frame_model_psnr"],
            "lead_32": p.get("rollout_model_psnr_last", np.nan) - p.get("rollout_copy_last_psnr_last", np.nan),
        }
        for p in json.loads(evaluation.read_text())["by_place"]
    ]
    return pd.DataFrame(rows).set_index(["level", "x_from"])


def compare(t: pd.DataFrame, name: str, other: Path, thin: int) -> dict:
    """Add `other`'s scores to `t` as NAME columns; how it moved each score from t's, in dB."""
    o = scores(other).reindex(pd.MultiIndex.from_frame(t[["level", "x_from"]]))
    out: dict = {}
    for col in ("next_frame_psnr", "lead_32"):
        t[f"{col}_{name}"] = o[col].round(2).to_numpy()
        d = o[col].to_numpy() - t[col].astype(float).to_numpy()
        few = (t["train_frames"] < thin).to_numpy()
        ok = np.isfinite(d)
        out[col] = {
            "mean_change": round(float(d[ok].mean()), 2),
            "places_better": int((d[ok] > 0).sum()),
            "places": int(ok.sum()),
            f"mean_change_under_{thin}_frames": round(float(d[ok & few].mean()), 2) if (ok & few).any() else None,
            "mean_change_others": round(float(d[ok & ~few].mean()), 2) if (ok & ~few).any() else None,
        }
    return out


def by_world(t: pd.DataFrame, names: list[str]) -> list[dict]:
    """Per world: places, mean scores and places at the targets, for the first model and each NAME."""
    rows = []
    for world, g in t.groupby(t["level"].str[0]):
        row: dict = {
            "world": int(world),
            "places": len(g),
            "copy_last_next_frame": round(g["next_frame_copy_last_psnr"].mean(), 2),
        }
        for suffix in ["", *(f"_{n}" for n in names)]:
            nf, lead = g[f"next_frame_psnr{suffix}"].astype(float), g[f"lead_32{suffix}"].astype(float)
            row |= {
                f"next_frame{suffix}": round(nf.mean(), 2),
                f"places_35_db{suffix}": int((nf >= 35).sum()),
                f"lead_32{suffix}": round(lead.mean(), 2),
                f"places_lead_3_db{suffix}": f"{int((lead >= 3).sum())} of {int(lead.notna().sum())}",
            }
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, required=True, help="the training store of the evaluated model")
    ap.add_argument("--evaluation", type=Path, required=True, help="an evaluation.json with by_place rows")
    ap.add_argument("--against", action="append", default=[], metavar="NAME=PATH", help="another evaluation")
    ap.add_argument("--thin", type=int, default=3000, help="a place with fewer training frames is thin")
    args = ap.parse_args()
    t = place_table(args.store, args.evaluation)
    moved = {}
    for item in args.against:
        name, _, path = item.partition("=")
        if not name or not path:
            ap.error(f"--against takes NAME=PATH, got {item!r}")
        moved[name] = compare(t, name, Path(path), args.thin)
    corr = {
        c: round(float(t["train_frames"].corr(t[c].astype(float), method="spearman")), 3)
        for c in ("next_frame_psnr", "lead_32")
    }
    print(
        json.dumps(
            {
                "places": len(t),
                "spearman_with_train_frames": corr,
                "against": moved,
                "by_world": by_world(t, list(moved)),
                "rows": t.astype(object).where(t.notna(), None).to_dict("records"),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
