"""Training and scoring the reward and end model (model/rewend.py), in one file.

`mario-kit train --store STORE --out RUN --set stage=rewend` adds `rewend.pt` to a run folder (one
that holds a denoiser trained on the same action set, or a new one) and `rewend.json`, its scores on
the store's test split beside the trivial baselines (reward always 0, never an end). The store keeps
every step's reward and end (`dataset build`; FORMAT.md, "Training store"). A step is the frames
up to the one its action was taken at (`rewend.n_context`, the episode's first frame repeated before
its start), that action, and the frame after it; its targets are the reward and the end class.
Batches are drawn uniformly from the steps with the run's seed: the same seed, the same model.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as Fn

from mario_kit import UserError
from mario_kit.atomic import check_writable, write_json_atomic
from mario_kit.datasets.loader import materialize_low, store_outcomes
from mario_kit.datasets.store import read_manifest, store_array
from mario_kit.hardware import resolve_device
from mario_kit.interrupt import CtrlC
from mario_kit.world_model.config import TrainConfig, check
from mario_kit.world_model.model.checkpoint import load_checkpoint, make_checkpoint, path_of, save_atomic
from mario_kit.world_model.model.rewend import END_DEATH, END_FLAG, REWARD_SCALE, STAGE, RewEndModel
from mario_kit.world_model.model.sampler import to_model

SCORES_FILE = "rewend.json"


@dataclass
class Steps:
    """The steps of one split: `index` (S, n_context + 1) frame rows of each (the last: the frame after)."""

    low: np.ndarray
    index: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, rows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ...]:
        frames = to_model(torch.from_numpy(self.low[self.index[rows].reshape(-1)]))
        frames = frames.reshape(len(rows), self.index.shape[1], *frames.shape[1:]).to(device)
        act = torch.from_numpy(self.actions[rows].astype(np.int64)).to(device)
        return (
            frames,
            act,
            torch.from_numpy(self.rewards[rows]).to(device),
            torch.from_numpy(self.ends[rows]).to(device),
        )


def split_steps(store: Path, split: str, n_context: int) -> Steps:
    """Every step of the split's episodes (a frame with an action after it)."""
    m = read_manifest(store)
    rewards, ends = store_outcomes(store, m)
    low = np.load(materialize_low(store, m), mmap_mode="r")
    actions = np.asarray(store_array(store, "actions")[: len(rewards)], np.int16)
    rows: list[np.ndarray] = []
    for e in m["episodes"]:
        if e["split"] != split or e["frames"] < 2:
            continue
        t = np.arange(e["start"], e["start"] + e["frames"] - 1)
        ctx = np.maximum(t[:, None] + np.arange(1 - n_context, 1)[None], e["start"])
        rows.append(np.concatenate([ctx, (t + 1)[:, None]], axis=1))
    index = np.concatenate(rows) if rows else np.zeros((0, n_context + 1), np.int64)
    t = index[:, -2]
    if len(t) and (actions[t] < 0).any():
        raise UserError(f"{store}: a step without an action inside an episode; rebuild it with --force")
    return Steps(low, index, actions[t], rewards[t], ends[t])


@dataclass
class RewEndScores:
    """Scores on held-out steps, each beside its trivial baseline. Precision and recall of an end
    class are NaN where no step is (or is predicted) of that class."""

    steps: int
    reward_mae: float  # mean absolute error, game units
    zero_reward_mae: float  # the baseline: reward always 0
    reward_sign_accuracy: float  # sign of the reward (|r| < 0.5 counts as 0) right
    zero_sign_accuracy: float
    deaths: int
    death_precision: float
    death_recall: float
    flags: int
    flag_precision: float
    flag_recall: float
    no_end_accuracy: float  # the baseline "never an end": its share of right end classes
    end_accuracy: float

    def to_json(self) -> dict[str, Any]:
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def _sign(r: np.ndarray) -> np.ndarray:
    return np.where(np.abs(r) < 0.5, 0, np.sign(r))


@torch.inference_mode()
def score(model: RewEndModel, steps: Steps, device: torch.device, batch: int = 512) -> RewEndScores:
    preds: list[np.ndarray] = []
    classes: list[np.ndarray] = []
    for i in range(0, len(steps), batch):
        frames, act, _, _ = steps.batch(np.arange(i, min(i + batch, len(steps))), device)
        r_b, c_b = model.predict(frames, act)
        preds.append(r_b.float().cpu().numpy())
        classes.append(c_b.cpu().numpy())
    r_hat = np.concatenate(preds) if preds else np.zeros(0, np.float32)
    c_hat = np.concatenate(classes) if classes else np.zeros(0, np.int64)
    r, c = steps.rewards, steps.ends.astype(np.int64)

    def pr(k: int) -> tuple[float, float]:
        tp, predicted, there = float(((c_hat == k) & (c == k)).sum()), int((c_hat == k).sum()), int((c == k).sum())
        return tp / predicted if predicted else math.nan, tp / there if there else math.nan

    (dp, dr), (fp, fr) = pr(END_DEATH), pr(END_FLAG)
    mean = lambda a: float(np.mean(a)) if len(a) else math.nan  # noqa: E731
    return RewEndScores(
        len(steps), mean(np.abs(r_hat - r)), mean(np.abs(r)), mean(_sign(r_hat) == _sign(r)), mean(_sign(r) == 0),
        int((c == END_DEATH).sum()), dp, dr, int((c == END_FLAG).sum()), fp, fr, mean(c == 0), mean(c_hat == c),
    )  # fmt: skip


def _check_run(out: Path, action_set: str, force: bool) -> None:
    """A run folder takes a reward and end model beside a denoiser of the same action set."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    check_writable(out)
    if path_of(out, STAGE).exists() and not force:
        raise UserError(f"{out} already holds a reward and end model; --force replaces it")
    den = path_of(out, "denoiser")
    if den.exists() and load_checkpoint(den).get("action_set") != action_set:
        raise UserError(f"{out}'s denoiser was trained on another action set than this store's {action_set}")


def train_rewend(
    store: str | Path, cfg: TrainConfig, out: str | Path, force: bool = False, progress: bool = True
) -> dict:
    """Train the reward and end model of `cfg.rewend` on the store's train split into `out`; returns
    what `rewend.json` holds (the config, the steps trained, the test split's scores)."""
    check(cfg)
    store, out, rc = Path(store), Path(out), cfg.rewend
    m = read_manifest(store)
    _check_run(out, m["action_set"], force)
    train, test = split_steps(store, "train", rc.n_context), split_steps(store, "test", rc.n_context)
    if not len(train):
        raise UserError(f"{store} has no training steps (is every episode in the test split?)")
    device = torch.device(resolve_device(cfg.device))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = RewEndModel(rc, len(m["action_buttons"])).to(device)
    steps = min(rc.steps, cfg.max_steps) if cfg.max_steps else rc.steps  # max_steps caps every stage
    step, interrupted = _fit(model, train, dataclasses.replace(rc, steps=steps), cfg.seed, device, progress)
    result: dict[str, Any] = {
        "steps": step,
        "interrupted": interrupted,
        "train_steps": len(train),
        "config": asdict(rc),
    }
    result["test"] = score(model.eval(), test, device).to_json() if len(test) else None
    out.mkdir(parents=True, exist_ok=True)
    ck = make_checkpoint(STAGE, cfg, model, m["action_set"], m["action_buttons"], step=step)
    save_atomic({**ck, "result": {k: v for k, v in result.items() if k != "test"}}, path_of(out, STAGE))
    write_json_atomic(out / SCORES_FILE, result)
    return result


def _prior_shift(ends: np.ndarray, share: float) -> torch.Tensor:
    """log(p / q) per end class: p the classes' shares among the steps, q their shares in batches
    whose `share` is drawn from the ending steps alone (0 for a class no step has)."""
    p = np.bincount(ends, minlength=3)[:3] / max(len(ends), 1)
    end_p = p.copy()
    end_p[0] = 0.0
    q = (1 - share) * p + share * end_p / max(end_p.sum(), 1e-12)
    shift = np.where((p > 0) & (q > 0), np.log(np.maximum(p, 1e-12) / np.maximum(q, 1e-12)), 0.0)
    return torch.tensor(shift, dtype=torch.float32)


def _fit(
    model: RewEndModel, train: Steps, rc: Any, seed: int, device: torch.device, progress: bool
) -> tuple[int, bool]:
    """rc.steps AdamW steps (Huber on the reward in units of nes-py's clip, cross-entropy on the end);
    the learning rate falls linearly to 0 over the last quarter. Ctrl-C stops at a step."""
    from mario_kit.progress import make_progress

    opt = torch.optim.AdamW(model.parameters(), lr=rc.lr, weight_decay=1e-2)
    decay = max(1, rc.steps // 4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (rc.steps - s) / decay))
    rng = np.random.default_rng(seed)
    ends = np.flatnonzero(train.ends)
    k = round(rc.batch_size * rc.end_share) if len(ends) else 0
    model.end_shift.copy_(_prior_shift(train.ends, k / rc.batch_size))
    step = 0
    with CtrlC() as stop, make_progress(enabled=progress) as bar:
        task = bar.add_task("rewend", total=rc.steps)
        while step < rc.steps and not stop.requested:
            rows = np.concatenate([rng.choice(ends, k), rng.integers(0, len(train), rc.batch_size - k)])
            frames, act, r, c = train.batch(rows, device)
            r_hat, logits = model(frames, act)
            loss = Fn.smooth_l1_loss(r_hat / REWARD_SCALE, r / REWARD_SCALE, beta=0.1) + Fn.cross_entropy(
                logits, c.long()
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(task, advance=1, description=f"rewend loss {loss.item():.4f}")
    return step, stop.requested
