"""The world model's configuration: what a run trains and what a checkpoint holds, as dataclasses.

`ModelConfig` is a network's architecture and EDM scalings (what sampling needs), `NoiseConfig` how
training corrupts frames (what only training needs), `SamplerConfig` how frames are drawn, and
`TrainConfig` the whole run. Named presets live in `training/presets.py`; `key=value` overrides here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from mario_kit import UserError


@dataclass
class ModelConfig:
    """Architecture and EDM settings of one diffusion model (denoiser or upsampler)."""

    channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64])
    depths: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    attn: list[bool] = field(default_factory=lambda: [False, False, False, False])
    cond_channels: int = 256
    n_context: int = 4  # past frames (and actions) the denoiser sees; ignored by the upsampler
    upsampler: bool = False
    upsampling_factor: int = 4
    residual: bool = False  # upsampler only: diffuse the full-res frame minus its bicubic upsample
    # denoiser only: told which stage a window is of (an embedding of 1-1..8-4, 0 for unknown, added to
    # the condition and zero at first, so a model trained without it fine-tunes into one with it)
    levels: bool = False
    img_channels: int = 3
    sigma_data: float = 0.5
    sigma_offset_noise: float = 0.3


@dataclass
class NoiseConfig:
    """How training corrupts frames: noise level sigma = exp(N(loc, scale)) clipped to [sigma_min,
    sigma_max]; with noise_previous_obs the context frames are noised too, at exp(N(cond_loc,
    cond_scale)), and the network is told that level (DIAMOND draws both alike: the defaults; a lower
    cond_loc trusts the context more). The upsampler's context (the bicubic frame) is never noised."""

    loc: float = -0.4
    scale: float = 1.2
    sigma_min: float = 2e-3
    sigma_max: float = 20.0
    noise_previous_obs: bool = True
    cond_loc: float = -0.4
    cond_scale: float = 1.2


@dataclass
class SamplerConfig:
    steps: int = 3
    order: int = 1  # 1: Euler, 2: Heun
    sigma_min: float = 2e-3
    sigma_max: float = 5.0
    rho: float = 7.0
    s_cond: float = 0.005  # noise level the context is said to carry (matches training's noised context)


def upsampler_model() -> ModelConfig:
    """DIAMOND-style upsampler (about 51 M parameters): x4, attention at the deepest level."""
    return ModelConfig(
        channels=[64, 64, 128, 256],
        depths=[2, 2, 2, 2],
        attn=[False, False, False, True],
        cond_channels=2048,
        upsampler=True,
    )


@dataclass
class RewEndConfig:
    """The reward and end model (model/rewend.py, trained by training/rewend.py): a small CNN on the
    frames around a step. Apart from the denoiser: it trains in minutes on a CPU, from the same store."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 64, 128])  # stride-2 convolutions
    n_context: int = 2  # frames up to the one the action was taken at; the frame after it is added
    batch_size: int = 128
    lr: float = 1e-3
    steps: int = 3000  # optimiser steps (the learning rate falls linearly to 0 over the last quarter)
    # share of each batch drawn from the steps that ended an episode (about 1 in 100 steps; the rest
    # drawn uniformly): more deaths and flags seen; the end head is shifted back to the true prior
    end_share: float = 0.125


@dataclass
class TrainConfig:
    """Everything `mario-kit train` uses. Defaults are the seed project's settings with DIAMOND's
    optimiser; presets (`--config`) are in training/presets.py. Override with --set key=value
    (nested: denoiser.channels=[32,32,32,32]; values are JSON, bare words are strings)."""

    stage: str = "denoiser"  # denoiser | upsampler | both (denoiser first, then upsampler) | rewend
    denoiser: ModelConfig = field(default_factory=ModelConfig)  # 64x60, [64]*4, cond 256: 4.4 M parameters
    upsampler: ModelConfig = field(default_factory=upsampler_model)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)  # 3 Euler steps
    upsampler_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=1, sigma_max=5.0, s_cond=0.0))
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # the denoiser's training noise
    upsampler_noise: NoiseConfig = field(default_factory=lambda: NoiseConfig(noise_previous_obs=False))
    rewend: RewEndConfig = field(default_factory=RewEndConfig)  # the reward and end model (stage rewend)
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
        moved = f" (training noise moved: {_moved_to(parts)})" if _moved_to(parts) else ""
        raise UserError(f"unknown setting {key!r}{moved}")
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
            raise UserError(
                f"only the samplers of a trained model can change (sampler.KEY=VALUE or "
                f"upsampler_sampler.KEY=VALUE), got {item!r}"
            )
        apply_override(cfg, item)
    check(cfg)
    return cfg


def _moved_to(parts: list[str]) -> str:
    """The new name of a training-noise setting given in the old `denoiser.loc` layout, or ''."""
    if len(parts) == 2 and parts[0] in ("denoiser", "upsampler") and parts[1] in _NOISE_KEYS:
        return f"{'noise' if parts[0] == 'denoiser' else 'upsampler_noise'}.{_NOISE_KEYS[parts[1]]}"
    return ""


# Bounds on what a config may ask to build (a shared run's config.json, a checkpoint's): far above
# every preset (16-256 channels, 4 resolutions of 2 blocks, 4 frames of context, DIAMOND's upsampler's
# 2,048 condition channels), far below what a machine cannot allocate.
MAX_CHANNELS, MAX_RESOLUTIONS, MAX_DEPTH, MAX_CONTEXT, MAX_COND_CHANNELS = 1024, 8, 16, 64, 8192


def check(cfg: TrainConfig) -> None:
    if cfg.stage not in ("denoiser", "upsampler", "both", "rewend"):
        raise UserError(f"stage must be denoiser, upsampler, both or rewend, got {cfg.stage!r}")
    r = cfg.rewend
    if not (r.channels and all(isinstance(c, int) and 1 <= c <= 512 for c in r.channels) and len(r.channels) <= 6):
        raise UserError("rewend.channels: 1 to 6 integers in 1..512")
    if not (1 <= r.n_context <= MAX_CONTEXT and r.batch_size >= 1 and r.steps >= 1 and r.lr > 0):
        raise UserError(f"rewend: n_context in 1..{MAX_CONTEXT}; batch_size, steps >= 1; lr > 0")
    if not 0 <= r.end_share < 1:
        raise UserError("rewend.end_share must be in [0, 1)")
    _at_least(cfg, 1, "batch_size", "grad_accum", "upsampler_batch_size", "upsampler_grad_accum", "horizon")
    _at_least(cfg, 1, "steps_first_epoch", "steps_per_epoch", "upsampler_steps_per_epoch", "log_every", "test_batches")
    _at_least(
        cfg, 0, "epochs", "max_steps", "warmup_steps", "decay_steps", "threads", "seed", "weight_decay", "grad_clip"
    )
    if cfg.decay_steps and cfg.decay_fraction:
        raise UserError("decay_steps and decay_fraction both say how long the decay is: set one of them")
    if not (0 <= cfg.decay_fraction <= 1 and math.isfinite(cfg.time_limit) and cfg.time_limit >= 0):
        raise UserError(
            f"decay_fraction must be in [0, 1] and time_limit >= 0, got {cfg.decay_fraction} and {cfg.time_limit}"
        )
    if cfg.decay_steps > cfg.max_steps:
        raise UserError(
            f"decay_steps ({cfg.decay_steps}) needs max_steps at least as large (the decay ends there), "
            f"got max_steps={cfg.max_steps}"
        )
    if not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise UserError(f"lr must be a positive number, got {cfg.lr}")
    if cfg.seed >= 2**63:
        raise UserError("seed must be < 2**63")
    for name, m in (("denoiser", cfg.denoiser), ("upsampler", cfg.upsampler)):
        _check_model(name, m)
    for name, n in (("noise", cfg.noise), ("upsampler_noise", cfg.upsampler_noise)):
        if not (0 < n.sigma_min < n.sigma_max and n.scale > 0 and n.cond_scale > 0):
            raise UserError(f"{name}: 0 < sigma_min < sigma_max, scale > 0 and cond_scale > 0 must hold")
    for name, s in (("sampler", cfg.sampler), ("upsampler_sampler", cfg.upsampler_sampler)):
        if s.steps < 1 or s.order not in (1, 2) or not (0 < s.sigma_min < s.sigma_max) or s.rho <= 0 or s.s_cond < 0:
            raise UserError(f"{name}: steps >= 1, order 1 or 2, 0 < sigma_min < sigma_max, rho > 0, s_cond >= 0")
    if not 0 <= cfg.ema < 1:
        raise UserError("ema must be in [0, 1)")
    for flag in ("bf16", "channels_last", "compile"):
        if getattr(cfg, flag) not in ("auto", "on", "off"):
            raise UserError(f"{flag} must be auto, on or off")


def _check_model(name: str, m: ModelConfig) -> None:
    """An architecture that can be built, and within the bounds a run or a file may ask for."""
    if not (len(m.channels) == len(m.depths) == len(m.attn)) or not m.channels:
        raise UserError("channels, depths and attn must have the same length")
    if any(not isinstance(c, int) or c < 1 for c in m.channels + m.depths) or m.n_context < 1 or m.cond_channels < 2:
        raise UserError(f"{name}: channels, depths, n_context and cond_channels must be positive integers")
    if (
        len(m.channels) > MAX_RESOLUTIONS
        or max(m.channels) > MAX_CHANNELS
        or max(m.depths) > MAX_DEPTH
        or m.n_context > MAX_CONTEXT
        or m.cond_channels > MAX_COND_CHANNELS
    ):
        raise UserError(
            f"{name}: at most {MAX_RESOLUTIONS} resolutions of at most {MAX_CHANNELS} channels and {MAX_DEPTH} "
            f"blocks, n_context <= {MAX_CONTEXT}, cond_channels <= {MAX_COND_CHANNELS} (what a run or "
            f"file may ask to build is bounded before anything is built)"
        )
    if m.cond_channels % max(m.n_context, 1) or m.cond_channels % 2:
        raise UserError("cond_channels must be even and divisible by n_context")
    if m.upsampler and m.levels:
        raise UserError(f"{name}: levels conditions the denoiser only")
    if not (m.sigma_data > 0 and m.upsampling_factor >= 1):
        raise UserError(f"{name}: sigma_data > 0 and upsampling_factor >= 1 must hold")


def _at_least(cfg: TrainConfig, lo: int, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= lo):
            raise UserError(f"{name} must be >= {lo}, got {v}")


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(d: dict[str, Any]) -> TrainConfig:
    d = _upgrade(dict(d))
    for k, cls in (
        ("denoiser", ModelConfig),
        ("upsampler", ModelConfig),
        ("sampler", SamplerConfig),
        ("upsampler_sampler", SamplerConfig),
        ("noise", NoiseConfig),
        ("upsampler_noise", NoiseConfig),
    ):
        d[k] = cls(**d[k])
    d["rewend"] = RewEndConfig(**d.get("rewend", {}))  # configs written before it hold none
    return TrainConfig(**d)


# Training noise used to sit in each ModelConfig; runs and checkpoints written then still load.
_NOISE_KEYS = {
    "loc": "loc",
    "scale": "scale",
    "cond_loc": "cond_loc",
    "cond_scale": "cond_scale",
    "sigma_min_train": "sigma_min",
    "sigma_max_train": "sigma_max",
    "noise_previous_obs": "noise_previous_obs",
}
_REMOVED = ("self_ctx", "changed_weight")  # experiments that lost (docs/BENCHMARKS_LOG.md); 0 meant off


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A config of the layout before NoiseConfig, moved into it (the run trains the same)."""
    for model, noise in (("denoiser", "noise"), ("upsampler", "upsampler_noise")):
        m = d.get(model)
        if noise in d or not isinstance(m, dict):
            continue
        m = dict(m)
        for key in _REMOVED:
            if m.pop(key, 0):
                raise ValueError(f"{model}.{key} is an experiment this mario-kit no longer has")
        d[noise] = {new: m.pop(old) for old, new in _NOISE_KEYS.items() if old in m}
        d[model] = m
    return d
