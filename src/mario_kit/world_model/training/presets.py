"""Named training presets (`mario-kit train --config NAME`) and the config of a resumed run."""

from __future__ import annotations

import dataclasses
from typing import Any

from mario_kit import UserError
from mario_kit.hardware import fast_bf16
from mario_kit.world_model.config import (
    ModelConfig,
    NoiseConfig,
    SamplerConfig,
    TrainConfig,
    apply_override,
    check,
    from_dict,
    to_dict,
)


def small_upsampler_model() -> ModelConfig:
    """A CPU-playable upsampler: half DIAMOND's channels, one block per level. Residual (see
    model/denoiser.py): it starts at bicubic, where DIAMOND's parametrisation stayed below bicubic
    after the same short CPU training (docs/BENCHMARKS.md, "Residual upsampler")."""
    return ModelConfig(
        channels=[32, 32, 64, 128],
        depths=[1, 1, 1, 1],
        attn=[False, False, False, True],
        cond_channels=256,
        upsampler=True,
        residual=True,
    )


def tiny() -> TrainConfig:
    """For tests and the demo: seconds on a CPU, learns little."""
    small = dict(channels=[16, 16, 16, 16], depths=[1, 1, 1, 1], cond_channels=32)
    return TrainConfig(
        denoiser=ModelConfig(**small),  # type: ignore[arg-type]
        upsampler=ModelConfig(**small, attn=[False, False, False, True], upsampler=True, residual=True),  # type: ignore[arg-type]
        batch_size=8,
        grad_accum=1,
        upsampler_batch_size=2,
        epochs=2,
        steps_first_epoch=20,
        steps_per_epoch=20,
        upsampler_steps_per_epoch=10,
        warmup_steps=5,
        lr=1e-3,
        log_every=5,
        test_batches=2,
    )


def cpu() -> TrainConfig:
    """The 2-hour CPU run. What differs from DIAMOND, each won an A/B at equal CPU time
    (docs/BENCHMARKS.md, "World-model recipes at equal budget"; the runs: docs/BENCHMARKS_LOG.md, "Training noise for the 1-step sampler"):
    a 48-channel denoiser (more samples per second beat more channels), context frames noised little
    (cond_loc -3) and the sampler saying so (s_cond 0.05), training noise centred on the 1-step
    sampler's sigma (loc 1.6, scale 0.5) and 1-step sampling, batch 32, EMA weights, bf16 where the
    CPU has it, and the small residual upsampler in 2 steps (DIAMOND's is too slow to play on a CPU)."""
    return TrainConfig(
        denoiser=ModelConfig(channels=[48, 48, 48, 48]),
        noise=NoiseConfig(loc=1.6, scale=0.5, cond_loc=-3.0, cond_scale=1.0),
        sampler=SamplerConfig(steps=1, s_cond=0.05),
        upsampler=small_upsampler_model(),
        upsampler_sampler=SamplerConfig(steps=2, sigma_max=5.0, s_cond=0.0),
        batch_size=32,
        grad_accum=1,
        lr=3e-4,
        warmup_steps=100,
        epochs=0,
        steps_first_epoch=200,
        steps_per_epoch=200,
        ema=0.999,
        bf16="on" if fast_bf16("cpu") else "off",
        channels_last="on",
    )


def gpu() -> TrainConfig:
    """One GPU used well: the `cpu` preset's recipe on the default 64-channel denoiser, which a GPU
    trains fast enough to fill; batch 128 with a learning rate scaled for it, fp32 with TF32 (bf16,
    channels_last and compile did not pay at these sizes: docs/BENCHMARKS.md, "On a GPU"). Made for
    short leases: epochs of 500 steps, each saved, and with max_steps or time_limit the learning rate
    decays over the last quarter (`bench/device.sh` trains it with --set time_limit=SECONDS)."""
    c = cpu()
    return TrainConfig(
        denoiser=dataclasses.replace(c.denoiser, channels=[64, 64, 64, 64]),
        noise=c.noise,
        sampler=c.sampler,
        upsampler=small_upsampler_model(),
        upsampler_sampler=c.upsampler_sampler,
        batch_size=128,
        grad_accum=1,
        upsampler_batch_size=32,
        lr=6e-4,
        warmup_steps=200,
        decay_fraction=0.25,
        epochs=0,
        steps_first_epoch=500,
        steps_per_epoch=500,
        upsampler_steps_per_epoch=500,
        ema=0.999,
        bf16="off",
        channels_last="off",
        compile="off",
    )


CONFIGS = {"seed": TrainConfig, "default": TrainConfig, "tiny": tiny, "cpu": cpu, "gpu": gpu}


def get_config(name: str, overrides: list[str] | None = None) -> TrainConfig:
    if name not in CONFIGS:
        raise UserError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    cfg = CONFIGS[name]()
    for item in overrides or []:
        apply_override(cfg, item)
    check(cfg)
    return cfg


# Settings a resumed run may change: how long it runs and how it reports, not what it learns.
SAFE_ON_RESUME = ("max_steps", "time_limit", "epochs", "log_every", "test_batches", "threads", "device", "compile")


def differences(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Dotted names of the settings in which two configs differ."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    fa, fb = flat(to_dict(a)), flat(to_dict(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def check_resume(saved: TrainConfig, cfg: TrainConfig) -> None:
    """Refuse a resume that would change what the run learns (SAFE_ON_RESUME settings may change)."""
    flat_saved, flat_new = to_dict(saved), to_dict(cfg)
    bad = [k for k in differences(saved, cfg) if k not in SAFE_ON_RESUME]
    if bad:
        shown = ", ".join(f"{k}: {_get(flat_saved, k)!r} -> {_get(flat_new, k)!r}" for k in bad[:3])
        raise UserError(
            f"resuming would change {shown}{' ...' if len(bad) > 3 else ''}; on --resume only "
            f"{', '.join(SAFE_ON_RESUME)} may change (start another run with --force or another --out)"
        )


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def resume_config(saved: dict[str, Any], preset: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The config of a resumed run: the run's own config.json, with `--set` overrides of the safe
    settings. A `--config` given on resume must describe the same run."""
    try:
        base = from_dict(saved)
    except (TypeError, KeyError, ValueError) as e:
        raise UserError(f"the run's config.json does not describe a TrainConfig ({e})") from None
    if preset is not None:
        cfg = get_config(preset, overrides)
    else:
        cfg = from_dict(saved)
        for item in overrides or []:
            apply_override(cfg, item)
        check(cfg)
    check_resume(base, cfg)
    return cfg


def default_preset() -> tuple[str, str]:
    """The preset for a new run when --config is not given, and why."""
    import torch

    if torch.cuda.is_available():
        return "seed", "a CUDA GPU is present: the seed project's recipe"
    return "cpu", "no CUDA GPU: the seed preset would take days on a CPU; --config seed to insist"
