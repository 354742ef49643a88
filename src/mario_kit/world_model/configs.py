"""Training configuration: one documented dataclass, named presets, and `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from mario_kit import UserError
from mario_kit.hardware import fast_bf16
from mario_kit.world_model.denoiser import ModelConfig
from mario_kit.world_model.sampler import SamplerConfig


def upsampler_model() -> ModelConfig:
    """DIAMOND-style upsampler (about 51 M parameters): x4, attention at the deepest level."""
    return ModelConfig(channels=[64, 64, 128, 256], depths=[2, 2, 2, 2], attn=[False, False, False, True],
                       cond_channels=2048, upsampler=True, noise_previous_obs=False)


def small_upsampler_model() -> ModelConfig:
    """A CPU-playable upsampler: half DIAMOND's channels, one block per level (`bench/play.py` times
    both). Residual (see denoiser.py): it starts at bicubic, where DIAMOND's parametrisation stayed
    below bicubic after the same short CPU training (docs/BENCHMARKS.md, "Residual upsampler")."""
    return ModelConfig(channels=[32, 32, 64, 128], depths=[1, 1, 1, 1], attn=[False, False, False, True],
                       cond_channels=256, upsampler=True, noise_previous_obs=False, residual=True)


@dataclass
class TrainConfig:
    """Everything `mario-kit train` uses. Defaults are the seed project's settings with DIAMOND's
    optimiser; `--config tiny` is for tests and CPU demos. Override with --set key=value
    (nested: denoiser.channels=[32,32,32,32]; values are JSON, bare words are strings)."""

    stage: str = "denoiser"  # denoiser | upsampler | both (denoiser first, then upsampler)
    denoiser: ModelConfig = field(default_factory=ModelConfig)  # 64x60, [64]*4, cond 256: 4.4 M parameters
    upsampler: ModelConfig = field(default_factory=upsampler_model)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # 3 Euler steps
    upsampler_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=1, sigma_max=5.0, s_cond=0.0))
    horizon: int = 1  # > 1: multi-step autoregressive training (the model's own frames become context)
    weighted: bool = False  # sample windows by the store's balancing weights
    # optimisation (DIAMOND: AdamW lr 1e-4, weight decay 1e-2, 100 warm-up steps, grad-norm clip 1)
    batch_size: int = 6
    grad_accum: int = 6
    upsampler_batch_size: int = 4
    upsampler_grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    # > 0: the learning rate falls linearly to 0 over the last decay_steps before max_steps
    # (warm-up, stable, decay): a run of known length ends on annealed weights
    decay_steps: int = 0
    decay_fraction: float = 0.0  # or: decay over this fraction of max_steps (with time_limit: of the steps it allows)
    grad_clip: float = 1.0
    epochs: int = 50  # 0: no limit, the run goes until max_steps, time_limit or Ctrl-C
    steps_first_epoch: int = 1000  # optimiser steps
    steps_per_epoch: int = 500
    upsampler_steps_per_epoch: int = 400
    max_steps: int = 0  # stop each stage after this many optimiser steps (0: no limit)
    # > 0: stop each stage after this many seconds of training; at a quarter of it, max_steps is set
    # from the measured rate so that a decay (decay_fraction) ends at the limit: a lease-sized run
    # anneals whatever the machine's speed (a resume counts its time afresh)
    time_limit: float = 0.0
    ema: float = 0.0  # EMA decay of the weights (0: off); evaluation and play use the EMA when present
    # a run folder (or stage .pt) whose weights start this run: fine-tuning on other data or settings
    # (same architecture and action set); the optimiser, step count and data order start afresh
    init: str = ""
    # run
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: str = "auto"  # autocast to bfloat16: auto = on CUDA only
    channels_last: str = "auto"  # auto = on CUDA only
    compile: str = "auto"  # torch.compile: auto = on CUDA only
    threads: int = 0  # torch CPU threads (0: torch's default)
    log_every: int = 10
    test_batches: int = 8  # batches of the test split scored at each epoch end


def tiny() -> TrainConfig:
    small = dict(channels=[16, 16, 16, 16], depths=[1, 1, 1, 1], cond_channels=32)
    return TrainConfig(
        denoiser=ModelConfig(**small),
        upsampler=ModelConfig(**small, attn=[False, False, False, True], upsampler=True, noise_previous_obs=False,
                              residual=True),
        batch_size=8, grad_accum=1, upsampler_batch_size=2, epochs=2, steps_first_epoch=20, steps_per_epoch=20,
        upsampler_steps_per_epoch=10, warmup_steps=5, lr=1e-3, log_every=5, test_batches=2,
    )


def cpu() -> TrainConfig:
    """The documented 2-hour CPU run: a 48-channel denoiser (2.9 M parameters, not the default 4.4 M:
    1.5x the samples/s, and in 111 minutes it beat the 64-channel model trained 258 minutes on 15 of
    16 evaluation figures: docs/BENCHMARKS.md, "World model quality") at batch 32 without accumulation, bf16
    autocast where the CPU has bf16 instructions and channels_last (bench/train.py), EMA weights, and
    the small upsampler (DIAMOND's is too slow to play on a CPU) sampled in 2 steps: the second, at
    sigma_min (noise level 0.3 to the model through sigma_offset_noise), removes most of the noise the
    first leaves, for a lower play frame rate (docs/BENCHMARKS.md, "CPU world-model run"). Context
    frames are noised less than DIAMOND does (median sigma 0.05 instead of 0.67): at equal CPU time it
    won the A/B table's next frame by 5.4 dB (docs/BENCHMARKS.md, "Recipes at equal budget"); and the
    sampler tells the network its (generated) context carries that median level, s_cond 0.05 rather
    than DIAMOND's 0.005: on the model shipped then (64 channels, 115 minutes) with 1 denoising step
    (play's CPU default), +0.15-0.25 dB at 32 steps and +0.2-0.4 dB at 64; mixed with 3 steps
    (docs/BENCHMARKS.md, "World model quality"). The denoiser trains at noise log-normal around the
    1-step sampler's sigma 5 (loc 1.6, scale 0.5; DIAMOND's median 0.67 left the level every 1-step
    frame is drawn at to 5 % of the samples) and the preset samples in 1 step: from scratch at 30
    CPU-minutes +2.6 dB on the next frame and level at 32 steps, as a fine-tune +0.5 dB at 32 steps over
    DIAMOND's noise, and in 103 minutes from scratch level at 32 steps with the CPU model shipped
    before the GPU one (138 minutes), 0.8 dB behind it at 64; 3-step draws of such a model are 0.9 dB
    worse on the next frame (docs/BENCHMARKS.md, "Training noise for the 1-step sampler", "Size on the
    frozen data")."""
    return TrainConfig(denoiser=ModelConfig(channels=[48, 48, 48, 48], cond_loc=-3.0, cond_scale=1.0, loc=1.6, scale=0.5),
                       sampler=SamplerConfig(steps=1, s_cond=0.05),
                       upsampler=small_upsampler_model(), upsampler_sampler=SamplerConfig(steps=2, sigma_max=5.0, s_cond=0.0),
                       batch_size=32, grad_accum=1, lr=3e-4, warmup_steps=100, epochs=0, steps_first_epoch=200,
                       steps_per_epoch=200, ema=0.999, bf16="on" if fast_bf16("cpu") else "off", channels_last="on")


def gpu() -> TrainConfig:
    """One GPU used well: the `cpu` preset's recipe (little context noise, training noise around the
    1-step sampler's sigma, 1-step sampling with s_cond 0.05: what won on the CPU) on the default
    64-channel 4.4 M denoiser, which a GPU trains fast enough to fill. Batch 128 (measured on an H100:
    about 3x the samples/s of batch 32), fp32 with TF32 and NCHW, no compile (bf16 and channels_last
    did not pay at these sizes: docs/BENCHMARKS.md, "On a GPU"), a learning rate scaled up for the
    larger batch, EMA weights, and the `cpu` preset's residual upsampler sampled in 2 steps. Made for
    short leases: epochs of 500 steps, each saved, and with max_steps or time_limit the learning rate
    decays over the last quarter (`bench/device.sh` trains it with --set time_limit=SECONDS)."""
    c = cpu()
    return TrainConfig(denoiser=dataclasses.replace(c.denoiser, channels=[64, 64, 64, 64]), sampler=c.sampler,
                       upsampler=small_upsampler_model(), upsampler_sampler=c.upsampler_sampler,
                       batch_size=128, grad_accum=1, upsampler_batch_size=32, lr=6e-4, warmup_steps=200, decay_fraction=0.25,
                       epochs=0, steps_first_epoch=500, steps_per_epoch=500, upsampler_steps_per_epoch=500, ema=0.999,
                       bf16="off", channels_last="off", compile="off")


CONFIGS = {"seed": TrainConfig, "default": TrainConfig, "tiny": tiny, "cpu": cpu, "gpu": gpu}


def get_config(name: str, overrides: list[str] | None = None) -> TrainConfig:
    if name not in CONFIGS:
        raise UserError(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    cfg = CONFIGS[name]()
    for item in overrides or []:
        apply_override(cfg, item)
    check(cfg)
    return cfg


def _parse(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def apply_override(cfg: Any, item: str) -> None:
    if "=" not in item:
        raise UserError(f"--set takes key=value, got {item!r}")
    key, value = item.split("=", 1)
    obj, parts = cfg, key.strip().split(".")
    for p in parts[:-1]:
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, p):
            raise UserError(f"unknown setting {key!r}")
        obj = getattr(obj, p)
    names = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
    if parts[-1] not in names:
        raise UserError(f"unknown setting {key!r}")
    old = getattr(obj, parts[-1])
    new = _parse(value)
    if isinstance(old, bool) and not isinstance(new, bool):
        raise UserError(f"{key} takes true or false, got {value!r}")
    if isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool):
        new = float(new)
    if old is not None and type(new) is not type(old):
        raise UserError(f"{key} takes a {type(old).__name__}, got {value!r}")
    setattr(obj, parts[-1], new)


def set_sampler(cfg: TrainConfig, items: list[str]) -> TrainConfig:
    """Apply `sampler.KEY=VALUE` / `upsampler_sampler.KEY=VALUE` overrides to a trained run's config and
    check them: the sampler is chosen at sampling time, the rest of a trained model is not."""
    for item in items:
        if not item.split("=", 1)[0].strip().startswith(("sampler.", "upsampler_sampler.")):
            raise UserError(f"only the samplers of a trained model can change (sampler.KEY=VALUE or "
                            f"upsampler_sampler.KEY=VALUE), got {item!r}")
        apply_override(cfg, item)
    check(cfg)
    return cfg


# Bounds on what a config may ask to build (a shared run's config.json, a checkpoint's): far above
# every preset (16-256 channels, 4 levels of 2 blocks, 4 frames of context, DIAMOND's upsampler's
# 2,048 condition channels), far below what a machine cannot allocate.
MAX_CHANNELS, MAX_LEVELS, MAX_DEPTH, MAX_CONTEXT, MAX_COND_CHANNELS = 1024, 8, 16, 64, 8192


def check(cfg: TrainConfig) -> None:
    if cfg.stage not in ("denoiser", "upsampler", "both"):
        raise UserError(f"stage must be denoiser, upsampler or both, got {cfg.stage!r}")
    _at_least(cfg, 1, "batch_size", "grad_accum", "upsampler_batch_size", "upsampler_grad_accum", "horizon",
              "steps_first_epoch", "steps_per_epoch", "upsampler_steps_per_epoch", "log_every", "test_batches")
    _at_least(cfg, 0, "epochs", "max_steps", "warmup_steps", "decay_steps", "threads", "seed", "weight_decay", "grad_clip")
    if cfg.decay_steps and cfg.decay_fraction:
        raise UserError("decay_steps and decay_fraction both say how long the decay is: set one of them")
    if not (0 <= cfg.decay_fraction <= 1 and math.isfinite(cfg.time_limit) and cfg.time_limit >= 0):
        raise UserError(f"decay_fraction must be in [0, 1] and time_limit >= 0, got {cfg.decay_fraction} and {cfg.time_limit}")
    if cfg.decay_steps > cfg.max_steps:
        raise UserError(f"decay_steps ({cfg.decay_steps}) needs max_steps at least as large (the decay ends there), "
                        f"got max_steps={cfg.max_steps}")
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise UserError(f"lr must be a positive number, got {cfg.lr}")
    if cfg.seed >= 2**63:
        raise UserError("seed must be < 2**63")
    for name, m in (("denoiser", cfg.denoiser), ("upsampler", cfg.upsampler)):
        if not (len(m.channels) == len(m.depths) == len(m.attn)) or not m.channels:
            raise UserError("channels, depths and attn must have the same length")
        if any(not isinstance(c, int) or c < 1 for c in m.channels + m.depths) or m.n_context < 1 or m.cond_channels < 2:
            raise UserError(f"{name}: channels, depths, n_context and cond_channels must be positive integers")
        if (len(m.channels) > MAX_LEVELS or max(m.channels) > MAX_CHANNELS or max(m.depths) > MAX_DEPTH
                or m.n_context > MAX_CONTEXT or m.cond_channels > MAX_COND_CHANNELS):
            raise UserError(f"{name}: at most {MAX_LEVELS} levels of at most {MAX_CHANNELS} channels and {MAX_DEPTH} "
                            f"blocks, n_context <= {MAX_CONTEXT}, cond_channels <= {MAX_COND_CHANNELS} (what a run or "
                            f"file may ask to build is bounded before anything is built)")
        if m.cond_channels % max(m.n_context, 1) or m.cond_channels % 2:
            raise UserError("cond_channels must be even and divisible by n_context")
        if not (m.sigma_data > 0 and 0 < m.sigma_min_train < m.sigma_max_train and m.upsampling_factor >= 1 and m.scale > 0):
            raise UserError(f"{name}: sigma_data, scale and 0 < sigma_min_train < sigma_max_train must hold, upsampling_factor >= 1")
    for name, s in (("sampler", cfg.sampler), ("upsampler_sampler", cfg.upsampler_sampler)):
        if s.steps < 1 or s.order not in (1, 2) or not (0 < s.sigma_min < s.sigma_max) or s.rho <= 0 or s.s_cond < 0:
            raise UserError(f"{name}: steps >= 1, order 1 or 2, 0 < sigma_min < sigma_max, rho > 0, s_cond >= 0")
    if not 0 <= cfg.ema < 1:
        raise UserError("ema must be in [0, 1)")
    if not 0 <= cfg.denoiser.self_ctx <= 1:
        raise UserError(f"denoiser.self_ctx is a fraction of the windows, in [0, 1], got {cfg.denoiser.self_ctx}")
    if cfg.denoiser.self_ctx and cfg.horizon < 2:
        raise UserError("denoiser.self_ctx needs horizon >= 2 (the frames it draws are the horizon's earlier ones)")
    for flag in ("bf16", "channels_last", "compile"):
        if getattr(cfg, flag) not in ("auto", "on", "off"):
            raise UserError(f"{flag} must be auto, on or off")


def _at_least(cfg: TrainConfig, lo: int, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= lo):
            raise UserError(f"{name} must be >= {lo}, got {v}")


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(d: dict[str, Any]) -> TrainConfig:
    d = dict(d)
    for k, cls in (("denoiser", ModelConfig), ("upsampler", ModelConfig), ("sampler", SamplerConfig),
                   ("upsampler_sampler", SamplerConfig)):
        d[k] = cls(**d[k])
    return TrainConfig(**d)


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
        raise UserError(f"resuming would change {shown}{' ...' if len(bad) > 3 else ''}; on --resume only "
                        f"{', '.join(SAFE_ON_RESUME)} may change (start another run with --force or another --out)")


def _get(d: dict[str, Any], dotted: str) -> Any:
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
