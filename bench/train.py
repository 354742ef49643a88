"""Denoiser training throughput (fwd + bwd + AdamW step) at the default config, per speed setting,
against a plain eager fp32 baseline of the same model measured in the same run.

    .venv/bin/python bench/train.py [--steps 6] [--batch 6,32] [--device cpu|cuda] [--variants eager,cl,bf16,cl+bf16,compile]

A variant is '+'-joined settings: cl (channels_last), bf16 (autocast), compile, tf32 (TF32 matmuls).

Synthetic batches (data loading is measured by bench/loader.py). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import nullcontext

import torch

from mario_kit.hardware import resolve_device
from mario_kit.world_model.model.denoiser import Denoiser, count_parameters
from mario_kit.world_model.training.loss import window_loss
from mario_kit.world_model.training.presets import get_config

CFG = get_config("gpu")  # the 64-channel denoiser and the noise `mario-kit train --config gpu` trains with


def run(variant: str, batch: int, steps: int, device: str) -> float:
    torch.manual_seed(0)
    model = Denoiser(CFG.denoiser, n_actions=7).to(device)
    cl, bf16, comp = "cl" in variant, "bf16" in variant, "compile" in variant
    torch.backends.cuda.matmul.allow_tf32 = "tf32" in variant  # as `mario-kit train` sets it on CUDA
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)

    def loss(frames, act, mask, gen):
        return window_loss(model, CFG.noise, frames, act, mask, gen, None)

    fn = torch.compile(loss) if comp else loss
    amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 else nullcontext()
    frames = torch.rand(batch, 5, 3, 60, 64, device=device) * 2 - 1
    act = torch.randint(0, 7, (batch, 4), device=device)
    mask = torch.ones(batch, 5, dtype=torch.bool, device=device)
    gen = torch.Generator(device).manual_seed(0)

    def step():
        with amp:
            loss = fn(frames, act, mask, gen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return batch * steps / timed(step, steps, device, warm_up=3 if comp else 2)


def timed(step, steps: int, device: str, warm_up: int = 2) -> float:
    """Seconds for `steps` calls of `step` after `warm_up` untimed ones, the device's queue drained."""
    for _ in range(warm_up):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", default="6,32")
    ap.add_argument("--device", default=resolve_device("auto"))
    ap.add_argument("--variants", default="eager,cl,bf16,cl+bf16,compile")
    args = ap.parse_args()
    rows = {}
    for b in (int(x) for x in args.batch.split(",")):
        base = None
        for v in args.variants.split(","):
            sps = run(v, b, args.steps, args.device)
            base = base or sps
            rows[f"batch{b}_{v}"] = {"samples_per_s": round(sps, 2), "ratio_to_eager": round(sps / base, 3)}
            print(f"batch {b} {v}: {sps:.1f} samples/s", file=sys.stderr, flush=True)  # progress, if cut short
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name()
                if args.device.startswith("cuda")
                else f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads",
                "torch": torch.__version__,
                "model": f"denoiser of --config gpu ({count_parameters(Denoiser(CFG.denoiser, 7)):,} parameters), 64x60, "
                f"{CFG.denoiser.n_context} context frames",
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
