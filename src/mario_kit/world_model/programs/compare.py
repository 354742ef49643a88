"""`mario-kit dream`, `compare()`: the same actions in the real game and in the world model, side by side.

The real game at step T is rebuilt by replaying the episode's joypad bytes from reset (the
emulator is deterministic), then both go on with the same actions: the recorded ones, or a random
policy's. Writes a GIF (real | model | difference), per-step PSNR as CSV, and a plot.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mario_kit import UserError
from mario_kit.atomic import atomic_path, check_writable
from mario_kit.emulator import replay_to
from mario_kit.datasets.episode import Episode
from mario_kit.datasets.store import downsample
from mario_kit.world_model.training.metrics import pooled_psnr, psnr
from mario_kit.world_model.programs.world_model_env import WorldModelEnv


@dataclass(kw_only=True)
class CompareConfig:
    """`run` None: the model shipped with mario-kit. `length` steps from frame `start` of `episode`;
    `out` the GIF (its .csv: PSNR per step, its .png: the plot beside it). `sampling_steps` None:
    the run's sampler."""

    run: Path | None
    episode: Path
    out: Path
    start: int = 4
    length: int = 64
    policy: str = "recorded"  # recorded | random
    upsampler: bool = True
    device: str = "auto"
    seed: int = 0
    sampling_steps: int | None = None
    gif_fps: float = 15.0
    progress: bool = True


@dataclass
class Comparison:
    gif: Path
    csv: Path
    plot: Path
    frames: int  # steps compared: fewer than `requested` where the episode or the game ends first
    requested: int
    real: np.ndarray  # the real game's full-res frames (frames, 240, 256, 3)
    psnr_low_res_pooled: float
    psnr_full_res_pooled: float


def compare(cfg: CompareConfig) -> Comparison:
    """Step the real game and the world model from the same frame with the same actions."""
    out = Path(cfg.out)
    if cfg.policy not in ("recorded", "random"):
        raise UserError(f"--policy must be recorded or random, got {cfg.policy!r}")
    if out.suffix.lower() != ".gif":
        raise UserError("--out must name a .gif file")
    for path in (out, out.with_suffix(".csv"), out.with_suffix(".png")):
        check_writable(path)
    model = WorldModelEnv(cfg.run, cfg.upsampler, cfg.sampling_steps, cfg.device, seed=cfg.seed)
    ctx = _start(cfg.episode, cfg.start, cfg.length, model.n_context, cfg.policy)
    if model.meta["action_set"] != ctx["aset"].name:
        raise UserError(
            f"the run was trained on the {model.meta['action_set']} action set, the episode uses {ctx['aset'].name}"
        )
    actions = _actions(ctx, cfg)
    model.reset(downsample(ctx["frames"]), ctx["actions"], ctx["level"])
    real_a, fake_a, low_a = _side_by_side(model, ctx, cfg.start, actions, cfg.progress)
    lo_f, lo_r = torch.from_numpy(low_a).float(), torch.from_numpy(downsample(real_a)).float()
    hi_f, hi_r = torch.from_numpy(fake_a).float(), torch.from_numpy(real_a).float()
    p_low, p_full = psnr(lo_f, lo_r).numpy(), psnr(hi_f, hi_r).numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    _gif(real_a, fake_a, out, cfg.gif_fps)
    csv_path, png_path = out.with_suffix(".csv"), out.with_suffix(".png")
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "frame", "action", "psnr_low_res", "psnr_full_res"])
        for k in range(len(real_a)):
            w.writerow([k + 1, cfg.start + k, ctx["aset"].meaning(actions[k]), f"{p_low[k]:.3f}", f"{p_full[k]:.3f}"])
    _plot(p_low, p_full, png_path)
    return Comparison(
        out, csv_path, png_path, len(real_a), cfg.length, real_a, pooled_psnr(lo_f, lo_r), pooled_psnr(hi_f, hi_r)
    )


def _actions(ctx: dict[str, Any], cfg: CompareConfig) -> list[int]:
    """The actions taken at frames start-1, start, ..., start+steps-2 (each leads to the next frame)."""
    recorded, start = ctx["recorded"], cfg.start
    if cfg.policy == "recorded":
        return [int(recorded[start - 1 + k]) for k in range(ctx["steps"])]
    rng = np.random.default_rng(cfg.seed)
    return [int(recorded[start - 1])] + [int(rng.integers(len(ctx["aset"]))) for _ in range(ctx["steps"] - 1)]


def _start(episode: str | Path, start: int, steps: int, n_ctx: int, policy: str) -> dict[str, Any]:
    """What the dream starts from: the `n_ctx` frames before `start`, their actions, and what it
    takes to rebuild the real game there (level, joypad bytes)."""
    with Episode(episode) as ep:
        T = ep.length
        if not n_ctx <= start <= T:
            raise UserError(f"--start must be in {n_ctx}..{T} for this episode of {T} steps")
        if ep.attrs.get("extra", {}).get("replayable") is False:
            raise UserError(f"{Path(episode).name} cannot be replayed in the emulator (imported or dreamed)")
        if policy == "recorded":
            steps = min(steps, T - start + 1)
        if steps < 1:
            raise UserError("--steps must be >= 1")
        return {
            "frames": ep.read_frames(start - n_ctx, start),
            "actions": ep.actions[start - n_ctx : start],
            "aset": ep.action_set,
            "frame_skip": int(ep.attrs["frame_skip"]),
            "level": ep.attrs["level"],
            "joypad": ep.joypad,
            "start_joypad": ep.start_joypad,
            "step_frames": ep.step_frames,
            "recorded": ep.actions,
            "steps": steps,
        }


def _side_by_side(
    model: WorldModelEnv, ctx: dict[str, Any], start: int, actions: list[int], progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same actions in the real game (rebuilt at frame start-1 by replay) and in the model:
    (real full-res, model full-res, model low-res) frames, up to the real game's end."""
    from mario_kit.progress import make_progress

    aset = ctx["aset"]
    env = replay_to(ctx["level"], ctx["joypad"], ctx["step_frames"], start - 1, ctx["start_joypad"])
    real, fake, fake_low = [], [], []
    try:
        with make_progress(enabled=progress, transient=True) as bar:
            task = bar.add_task("dreaming", total=len(actions))
            for a in actions:
                r = env.step(int(aset.joypad[a]), ctx["frame_skip"])
                real.append(r.frame.copy())
                low, full = model.step(a)
                fake.append(full)
                fake_low.append(low)
                bar.update(task, advance=1)
                if r.terminated or r.truncated:
                    break
    finally:
        env.close()
    return np.stack(real), np.stack(fake), np.stack(fake_low)


def _gif(real: np.ndarray, fake: np.ndarray, path: Path, fps: float) -> None:
    from PIL import Image

    from PIL import ImageDraw

    diff = np.clip(np.abs(real.astype(np.int16) - fake.astype(np.int16)) * 2, 0, 255).astype(np.uint8)
    sep = np.full((real.shape[1], 4, 3), 255, np.uint8)
    head = 12  # a caption strip above the panes
    w = real.shape[2]
    tiles = []
    for k, (r, f, d) in enumerate(zip(real, fake, diff)):
        body = np.concatenate([r, sep, f, sep, d], axis=1)
        img = Image.fromarray(np.concatenate([np.zeros((head, body.shape[1], 3), np.uint8), body]))
        draw = ImageDraw.Draw(img)
        for i, text in enumerate(("real game", "world model", "difference x2")):
            draw.text((i * (w + 4) + 4, 1), text, fill=(255, 255, 255))
        draw.text((img.width - 60, 1), f"step {k + 1}", fill=(255, 255, 0))
        tiles.append(img)
    tmp = path.with_name(f".{path.name}.tmp.gif")
    tiles[0].save(tmp, save_all=True, append_images=tiles[1:], duration=int(1000 / fps), loop=0, optimize=False)
    tmp.replace(path)


def _plot(p_low: np.ndarray, p_full: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(1, len(p_low) + 1)
    ax.plot(x, p_low, label="64x60")
    ax.plot(x, p_full, label="240x256")
    ax.set_xlabel("steps into the dream")
    ax.set_ylabel("PSNR vs the real game (dB)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
