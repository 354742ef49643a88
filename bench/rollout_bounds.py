"""What a long rollout's PSNR asks of a world model (issue 20): baselines that know part of the future,
scored on the windows `mario-kit evaluate` draws (same seed, same count), at each horizon:

  copy_last           the last context frame (evaluate's baseline)
  scroll_oracle       that frame moved by the real game's scroll, new columns repeating its border
                      (evaluate's second baseline: perfect scroll, no knowledge of the level ahead)
  scroll_oracle_offN  the same moved N px too far: what a small scroll error costs
  future_edge         the scroll oracle with the scrolled-in columns taken from the real frame: a
                      perfect drawing of the new scenery, Mario and the enemies left where they were

    .venv/bin/python bench/rollout_bounds.py --store runs/eval/store.zarr [--rollouts 16] [--seed 0]

Prints JSON (pooled PSNR of the last step of each horizon, dB; the real scroll in 64x60 pixels).
"""

from __future__ import annotations

import argparse
import json

import torch

from mario_kit.datasets.loader import WindowDataset
from mario_kit.world_model.training.evaluate import _pick
from mario_kit.world_model.training.metrics import HUD_ROWS, pooled_psnr, scroll_so_far, shift_frames


def bounds(store: str, h: int, rollouts: int, seed: int, n: int = 4) -> dict:
    ds = WindowDataset(store, "test", n_context=n, horizon=h)
    b = ds.gather(ds.fetch(_pick(ds, rollouts, seed)))
    real, last = torch.from_numpy(b["obs"][:, n:]).float(), torch.from_numpy(b["obs"][:, n - 1]).float()
    dx = scroll_so_far(real, last)[:, -1]
    goal = real[:, -1]
    out = {
        "rollouts": len(real),
        "real_scroll_px": round(float(dx.float().mean()), 2),
        "copy_last": round(pooled_psnr(last, goal), 2),
    }
    oracle = shift_frames(last, dx)  # the scroll oracle's last step, from the scroll already measured
    out["scroll_oracle"] = round(pooled_psnr(oracle, goal), 2)
    for off in (1, 2):
        out[f"scroll_oracle_off{off}"] = round(pooled_psnr(shift_frames(last, dx + off), goal), 2)
    w, rows = goal.shape[-2], HUD_ROWS * goal.shape[-3] // 60
    cols = torch.arange(w)[None, :]
    new = ((cols >= w - dx[:, None]) | (cols < -dx[:, None]))[:, None, :, None].expand_as(goal).clone()
    new[:, :rows] = False
    out["future_edge"] = round(pooled_psnr(torch.where(new, goal, oracle), goal), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--horizons", default="1,8,32,64")
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    res = {f"rollout_{h}": bounds(a.store, h, a.rollouts, a.seed) for h in map(int, a.horizons.split(","))}
    print(json.dumps({"store": a.store, "seed": a.seed, **res}, indent=1))


if __name__ == "__main__":
    main()
