"""DIAMOND's own denoiser training step beside ours, at the same batch on the same device.

    python bench/diamond_step.py --diamond PATH [--device cuda] [--batch 32,128] [--steps 20]

PATH is a checkout of github.com/eloialonso/diamond (not vendored here: nothing of it is copied into
this project); its `src/` goes on sys.path and its `models.diffusion.Denoiser` is built with its Atari
config (configs/agent/default.yaml: 64 channels, depths 2, 4 frames of context, sigma_offset_noise 0.3).
Its `utils` module imports omegaconf and wandb, which the denoiser never calls: where they are missing,
empty modules stand in. One step: DIAMOND's forward (its loss over one autoregressive step), backward,
gradient clipping at 1.0 and AdamW (its optimiser settings), on 64x64 frames (its U-Net halves the
size three times: 60 rows do not divide); ours (bench/train.py's `run`) on 60x64, eager, TF32 matmuls
as `mario-kit train` sets them. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch

from train import run as ours, timed


def load_diamond(path: Path):
    src = path / "src"
    if not (src / "models" / "diffusion" / "denoiser.py").is_file():
        sys.exit(f"error: {path} is not a checkout of DIAMOND (no src/models/diffusion/denoiser.py)")
    for name in ("omegaconf", "wandb"):
        try:
            __import__(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.OmegaConf = object  # type: ignore[attr-defined]
            sys.modules[name] = stub
    sys.path.insert(0, str(src))
    from data import Batch  # type: ignore[import-not-found]
    from models.diffusion import Denoiser, DenoiserConfig, InnerModelConfig, SigmaDistributionConfig  # type: ignore[import-not-found]

    inner = InnerModelConfig(3, 4, 256, [2, 2, 2, 2], [64, 64, 64, 64], [0, 0, 0, 0], num_actions=7)
    model = Denoiser(DenoiserConfig(inner, sigma_data=0.5, sigma_offset_noise=0.3))
    model.setup_training(SigmaDistributionConfig(loc=-0.4, scale=1.2, sigma_min=2e-3, sigma_max=20))
    return model, Batch


def diamond_rate(path: Path, batch: int, steps: int, device: str) -> tuple[float, int]:
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    model, Batch = load_diamond(path)
    model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2, eps=1e-8)
    z = torch.zeros(batch, 5, device=device)
    b = Batch(
        obs=torch.rand(batch, 5, 3, 64, 64, device=device) * 2 - 1,
        act=torch.randint(0, 7, (batch, 5), device=device),
        rew=z,
        end=z.long(),
        trunc=z.long(),
        mask_padding=torch.ones(batch, 5, dtype=torch.bool, device=device),
        info=[],
        segment_ids=[],
    )

    def step() -> None:
        loss, _ = model(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return batch * steps / timed(step, steps, device), sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--diamond", type=Path, required=True, help="a checkout of github.com/eloialonso/diamond")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", default="32,128")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    rows = {}
    for bs in (int(x) for x in args.batch.split(",")):
        theirs, n_params = diamond_rate(args.diamond, bs, args.steps, args.device)
        mine = ours("eager+tf32", bs, args.steps, args.device)
        rows[f"batch{bs}"] = {
            "diamond_samples_per_s": round(theirs, 2),
            "ours_samples_per_s": round(mine, 2),
            "ours_over_diamond": round(mine / theirs, 3),
            "diamond_parameters": n_params,
        }
        print(f"batch {bs}: DIAMOND {theirs:.1f}, ours {mine:.1f} samples/s", file=sys.stderr, flush=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(json.dumps({"device": device, "torch": torch.__version__, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
