"""The world model along the stage: `evaluate`'s scores per stage and per x bucket of the test
windows (`Evaluation.by_place`), so that a model that holds up at a stage's start and is lost past
its middle shows it. Needs a store that keeps Mario's x per frame (built since it does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mario_kit import UserError
from mario_kit.datasets.loader import WindowDataset
from mario_kit.datasets.format import PLACE_PX
from mario_kit.datasets.store import read_manifest, store_array
from mario_kit.world_model.model.sampler import rollout, sample, to_model
from mario_kit.world_model.training.metrics import pooled_psnr, to_img
from mario_kit.world_model.training.scores import PLACE_HORIZON, PlaceScores


def frame_places(store: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The stage and Mario's x of every frame of the store, or None for a store without x."""
    m = read_manifest(store)
    if not m.get("x_pos"):
        return None
    total = sum(e["frames"] for e in m["episodes"])
    x = np.asarray(store_array(store, "x_pos")[:total], np.int64)
    if x.shape != (total,):
        raise UserError(f"{store}: x_pos holds {len(x)} of its {total} frames; rebuild it with --force")
    level = np.empty(total, object)
    for e in m["episodes"]:
        level[e["start"] : e["start"] + e["frames"]] = e["level"]
    return level, x


def _groups(ds: WindowDataset, places: tuple[np.ndarray, np.ndarray]) -> dict[tuple[str, int], np.ndarray]:
    """The windows with a whole context, by the place of their first target frame."""
    level, x = places
    ok = np.flatnonzero(ds.targets - ds.episode_start >= ds.n_context)
    keys = [(str(level[ds.targets[i]]), int(x[ds.targets[i]] // PLACE_PX * PLACE_PX)) for i in ok]
    out: dict[tuple[str, int], list[int]] = {}
    for k, i in zip(keys, ok):
        out.setdefault(k, []).append(int(i))
    return {k: np.array(v) for k, v in sorted(out.items())}


def next_frames(model, sampler, ds: WindowDataset, idx: np.ndarray, gen, device: str):
    """One sampled next frame per window `idx` of `ds`: (the windows' frames (B, n+1, C, H, W) and the
    predictions (B, C, H, W), in model units; the real next frames and the last context frames,
    (B, H, W, C) uint8-range floats). `evaluate` and the scores by place sample the same way."""
    n = model.cfg.n_context
    b = ds.gather(ds.fetch(idx))
    obs = to_model(torch.from_numpy(b["obs"])).to(device)
    act, level = torch.from_numpy(b["act"]).to(device), torch.from_numpy(b["level"]).to(device)
    pred = torch.cat(
        [
            sample(model, obs[i : i + 16, :n].flatten(1, 2), act[i : i + 16], sampler, gen, level=level[i : i + 16])
            for i in range(0, len(idx), 16)
        ]
    )
    return obs, pred, torch.from_numpy(b["obs"][:, n]).float(), torch.from_numpy(b["obs"][:, n - 1]).float()


def _draw(idx: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))


@torch.no_grad()
def by_place(model, tcfg, store: Path, windows: int, rollouts: int, seed: int, gen, device: str) -> list[PlaceScores]:
    """Per place of the test split: up to `windows` next frames and `rollouts` rollouts (seeded draws)."""
    places = frame_places(store)
    if places is None:
        return []
    n, rng = model.cfg.n_context, np.random.default_rng(seed)
    near = WindowDataset(store, "test", n_context=n, horizon=1)
    far = WindowDataset(store, "test", n_context=n, horizon=PLACE_HORIZON)
    far_groups = _groups(far, places) if len(far) else {}
    out = []
    for (level, x0), idx in _groups(near, places).items():
        obs, pred, real, last = next_frames(model, tcfg.sampler, near, _draw(idx, windows, rng), gen, device)
        s = PlaceScores(
            level, x0, len(obs), round(pooled_psnr(to_img(pred.cpu()), real), 3), round(pooled_psnr(last, real), 3)
        )
        if (level, x0) in far_groups:
            _score_rollouts(s, model, tcfg, far, _draw(far_groups[level, x0], rollouts, rng), gen, device)
        out.append(s)
    return out


def _score_rollouts(s: PlaceScores, model, tcfg, ds: WindowDataset, idx: np.ndarray, gen, device: str) -> None:
    n = model.cfg.n_context
    b = ds.gather(ds.fetch(idx))
    frames = to_model(torch.from_numpy(b["obs"])).to(device)
    acts, level = torch.from_numpy(b["act"]).to(device), torch.from_numpy(b["level"]).to(device)
    gen_frames = rollout(model, frames[:, :n], acts[:, :n], acts[:, n:], tcfg.sampler, gen, level)
    real, last = torch.from_numpy(b["obs"][:, -1]).float(), torch.from_numpy(b["obs"][:, n - 1]).float()
    s.rollouts = len(idx)
    s.rollout_model_psnr_last = round(pooled_psnr(to_img(gen_frames[:, -1].cpu()), real), 3)
    s.rollout_copy_last_psnr_last = round(pooled_psnr(last, real), 3)
