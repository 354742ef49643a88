"""Play speed: model frames/s of `WorldModelEnv.step` (denoise 64x60, optionally upsample to 240x256) on this
device, for the default denoiser (4.4 M) and the upsamplers (DIAMOND's 51 M sampled in 1 step, the
`cpu` preset's 3.5 M in its 2 steps, or 1 where the name says up1; the shipped tile lookup, `tiles_`),
per setting. Random weights: speed does not depend on them.

    .venv/bin/python bench/play.py [--frames 20] [--device cpu] [--compile] [--only compile,up_]

Prints JSON: frames/s per variant and the ratio to the fp32 3-step baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mario_kit.hardware import resolve_device
from mario_kit.world_model.config import TrainConfig
from mario_kit.world_model.training.presets import cpu
from mario_kit.world_model.model.denoiser import Denoiser
from mario_kit.world_model.programs.world_model_env import WorldModelEnv
from mario_kit.world_model.model.checkpoint import make_checkpoint, save_atomic
from mario_kit.datasets.format import ACTION_SETS
from mario_kit.world_model.model import shipped
from mario_kit.world_model.model.tiles import FILE as TILES_FILE


def fake_run(d: Path, small_upsampler: bool = False, tiles: bool = False) -> None:
    """Random weights of the default denoiser and an upsampler; with tiles, the shipped tile upsampler
    (a lookup: its speed depends on the table, not on weights) in place of a diffusion one."""
    cfg = cpu() if small_upsampler else TrainConfig()
    d.mkdir(parents=True, exist_ok=True)
    if tiles:
        shutil.copyfile(shipped.FOLDER / TILES_FILE, d / TILES_FILE)
    stages = [("denoiser", cfg.denoiser)] + ([] if tiles else [("upsampler", cfg.upsampler)])
    for stage, m in stages:
        torch.manual_seed(0)
        model = Denoiser(m, 7)
        buttons = [list(b) for b in ACTION_SETS["simple"].buttons]
        save_atomic(make_checkpoint(stage, cfg, model, "simple", buttons), d / f"{stage}.pt")


PAUSE: int | None = None  # --pause-group: a background job's process group, stopped while timing


def fps(
    run: Path,
    frames: int,
    device: str,
    steps: int,
    up: bool,
    bf16: bool,
    cl: bool | None,
    mode: str = "",
    up_steps: int | None = None,
) -> float:
    """mode: "" (eager), "compile" (torch.compile) or "graph" (the step as one CUDA graph); cl None: play's layout."""
    graph = (mode == "graph") if device.startswith("cuda") else None
    dr = WorldModelEnv(
        run,
        upsampler=up,
        steps=steps,
        device=device,
        bf16=bf16,
        compile=mode == "compile",
        cuda_graph=graph,
        channels_last=cl,
        upsampler_steps=up_steps,
    )
    rng = np.random.default_rng(0)
    dr.reset(rng.integers(0, 256, (4, 60, 64, 3), dtype=np.uint8), np.zeros(4, np.int64))
    for _ in range(2):
        dr.step(1)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    if PAUSE:
        os.killpg(PAUSE, signal.SIGSTOP)
    try:
        t = time.perf_counter()
        for _ in range(frames):
            dr.step(1)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return frames / (time.perf_counter() - t)
    finally:
        if PAUSE:
            os.killpg(PAUSE, signal.SIGCONT)


def same_frames(run: Path, device: str, n: int = 8) -> dict:
    """The CUDA-graph step against the eager one from the same seed: largest uint8 difference over n
    frames, low and full res (fp32; a graph replays the eager kernels, so expect 0 or a rounding unit)."""
    out = {}
    try:
        dreams = [WorldModelEnv(run, upsampler=True, steps=3, device=device, cuda_graph=g) for g in (False, True)]
        rng = np.random.default_rng(1)
        ctx = rng.integers(0, 256, (4, 60, 64, 3), dtype=np.uint8)
        for d in dreams:
            d.reset(ctx, np.zeros(4, np.int64))
        lows, fulls = [], []
        for i in range(n):
            (l0, f0), (l1, f1) = (d.step(i % 7) for d in dreams)
            lows.append(np.abs(l0.astype(int) - l1).max())
            fulls.append(np.abs(f0.astype(int) - f1).max())
        out = {"frames": n, "max_abs_low": int(max(lows)), "max_abs_full": int(max(fulls))}
    except Exception as e:
        out = {"error": f"{type(e).__name__}: {e}"[:300]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--device", default=resolve_device("auto"))
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to start)")
    only = "comma list: keep the variants whose name holds one of these (the first kept is the ratios' baseline)"
    ap.add_argument("--only", default="", help=only)
    pause = "process group of a background job (a training run) to SIGSTOP while timing: figures of an idle machine"
    ap.add_argument("--pause-group", type=int, help=pause)
    args = ap.parse_args()
    global PAUSE
    PAUSE = args.pause_group
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        run, small, tiled = Path(tmp) / "big", Path(tmp) / "small", Path(tmp) / "tiles"
        fake_run(run)
        fake_run(small, small_upsampler=True)
        fake_run(tiled, tiles=True)
        variants = [
            ("low_3steps_fp32", 3, False, False, False),
            ("low_3steps_bf16", 3, False, True, False),
            ("low_3steps_channels_last", 3, False, False, True),
            ("low_3steps_bf16_channels_last", 3, False, True, True),
            ("low_2steps_bf16", 2, False, True, False),
            ("low_1step_bf16", 1, False, True, False),
            ("up_3steps_fp32", 3, True, False, False),
            ("up_3steps_bf16", 3, True, True, False),
            ("up_1step_bf16_channels_last", 1, True, True, True),
            ("small_up_3steps_bf16_channels_last", 3, "small", True, True),
            ("small_up_2steps_bf16_channels_last", 2, "small", True, True),
            ("small_up_1step_bf16_channels_last", 1, "small", True, True),  # play's CPU default
            ("small_up1_1step_bf16_channels_last", 1, "small", True, True, "", 1),
            ("tiles_1step_bf16", 1, "tiles", True, None),  # play with the shipped model (bf16 where fast, its layout)
            ("tiles_1step_fp32", 1, "tiles", False, None),  # the same on a CPU without bf16 arithmetic
            ("tiles_3steps_fp32", 3, "tiles", False, None),  # play on CUDA (there as a CUDA graph: _graph)
        ]
        if args.compile:
            variants += [
                ("low_3steps_bf16_channels_last_compile", 3, False, True, True, "compile"),
                ("low_2steps_bf16_channels_last_compile", 2, False, True, True, "compile"),
                ("small_up_3steps_bf16_channels_last_compile", 3, "small", True, True, "compile"),
                ("up_3steps_bf16_channels_last_compile", 3, True, True, True, "compile"),
            ]
        if args.device.startswith("cuda"):  # play's default on CUDA: the step as one CUDA graph
            variants += [(f"{n}_graph", *rest[:4], "graph", *rest[5:]) for n, *rest in variants if len(rest) in (4, 6)]
        if args.only:
            variants = [v for v in variants if any(k in v[0] for k in args.only.split(","))]
        base = None
        for name, steps, up, bf16, cl, *more in variants:  # more: mode, upsampler steps
            r, n = {"small": (small, args.frames // 2), "tiles": (tiled, args.frames)}.get(
                str(up), (run, args.frames if not up else max(4, args.frames // 4))
            )
            try:
                v = fps(r, n, args.device, steps, bool(up), bf16, cl, *more)
            except Exception as e:  # one variant failing (a compiler, a capture) must not lose the others
                rows[name] = {"error": f"{type(e).__name__}: {e}"[:300]}
                continue
            base = base or v
            rows[name] = {"frames_per_s": round(v, 2), "ratio_to_fp32_3steps": round(v / base, 3)}
            print(f"{name}: {v:.2f} frames/s", file=sys.stderr, flush=True)
        if args.device.startswith("cuda"):
            rows["graph_vs_eager"] = same_frames(run, args.device)
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name()
                if args.device.startswith("cuda")
                else f"{platform.machine()} CPU, {os.cpu_count()} cores",
                "torch": torch.__version__,
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
