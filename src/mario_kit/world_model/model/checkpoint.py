"""Checkpoints: one `.pt` per stage in the run folder (RUN/denoiser.pt, RUN/upsampler.pt).

A checkpoint is a plain dict of tensors, numbers and strings (the config as JSON), so that it loads
with `torch.load(weights_only=True)`: a file a user was handed never runs code. `make_checkpoint`
is the one place that says what a checkpoint holds; training adds its resume state
(optimiser, scheduler, noise generators, data position) through `train_state`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mario_kit import UserError
from mario_kit.atomic import atomic_path
from mario_kit.world_model.config import TrainConfig, check, from_dict, to_dict
from mario_kit.world_model.model.denoiser import Denoiser

KIND = "mario-kit-checkpoint"
SCHEMA = 1
STAGES = ("denoiser", "upsampler")
META_KEYS = ("step", "epoch", "n_actions", "action_set", "action_buttons")


def path_of(run: str | Path, stage: str) -> Path:
    return Path(run) / f"{stage}.pt"


def make_checkpoint(
    stage: str,
    cfg: TrainConfig,
    model: nn.Module,
    action_set: str,
    action_buttons: list,
    ema: nn.Module | None = None,
    step: int = 0,
    epoch: int = 0,
    train_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a checkpoint holds. `ema`: the averaged copy (its `.module` for swa_utils.AveragedModel)."""
    averaged = getattr(ema, "module", ema)
    ck = {
        "kind": KIND,
        "schema": SCHEMA,
        "stage": stage,
        "config": json.dumps(to_dict(cfg)),
        "n_actions": len(action_buttons),
        "action_set": action_set,
        "action_buttons": json.dumps(action_buttons),
        "model": model.state_dict(),
        "ema": averaged.state_dict() if averaged is not None else None,
        "step": step,
        "epoch": epoch,
    }
    ck.update(train_state or {})
    return ck


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint without unpickling code (weights_only=True); refuse anything else."""
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (pickle errors, truncated files, foreign formats)
        raise UserError(f"{path} is not a readable mario-kit checkpoint ({type(e).__name__})") from None
    if not isinstance(ck, dict) or ck.get("kind") != KIND:
        raise UserError(f"{path} is not a mario-kit checkpoint")
    if ck.get("schema") != SCHEMA:
        raise UserError(f"{path}: checkpoint schema {ck.get('schema')} (this mario-kit reads {SCHEMA})")
    return ck


MAX_ACTIONS = 256  # every joypad byte: no action set has more
MAX_CONFIG_BYTES = 1 << 20


def checkpoint_config(ck: dict[str, Any]) -> TrainConfig:
    """The checkpoint's config, checked (bounds included) before anything is built from it; ValueError
    says why not (a config nested deep enough to exhaust the parser's recursion included)."""
    text = ck["config"]
    if not isinstance(text, str) or len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"config is not a JSON text of at most {MAX_CONFIG_BYTES} bytes")
    try:
        cfg = from_dict(json.loads(text))
    except RecursionError:
        raise ValueError("config nested too deep") from None
    try:
        check(cfg)
    except UserError as e:
        raise ValueError(str(e)) from None
    return cfg


def load_model(
    run: str | Path, stage: str = "denoiser", ema: bool = True, device: str = "cpu"
) -> tuple[Denoiser, TrainConfig, dict]:
    """The trained model of a run (EMA weights when present), ready for sampling."""
    ck = load_checkpoint(path_of(run, stage))
    try:
        cfg = checkpoint_config(ck)
        n_actions = int(ck["n_actions"])
        if not 1 <= n_actions <= MAX_ACTIONS:
            raise ValueError(f"n_actions {n_actions} outside 1..{MAX_ACTIONS}")
        model = Denoiser(cfg.denoiser if stage == "denoiser" else cfg.upsampler, n_actions)
        meta = {k: ck[k] for k in META_KEYS}
        state = ck["ema"] if ema and ck.get("ema") else ck["model"]
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise UserError(
            f"{run}/{stage}.pt holds a config this mario-kit cannot build ({type(e).__name__}: {e})"
        ) from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise UserError(f"{run}/{stage}.pt does not match its config ({str(e).splitlines()[0]})") from None
    model.eval().to(device)
    return model, cfg, meta
