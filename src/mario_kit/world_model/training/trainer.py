"""`mario-kit train`: the whole training loop in one file.

Stages: the denoiser (next low-res frame from 4 frames and actions) and the upsampler (full-res
from low-res); `stage=both` trains one after the other in the same run folder.

RUN/ holds config.json, <stage>.pt (the last checkpoint, written atomically every epoch, at
max_steps and on Ctrl-C), log.csv and summary.json. `--resume` continues exactly: model, EMA,
optimiser and scheduler state, step, the noise generator, and the data position (each epoch's
batch order is a pure function of (seed, epoch), so the run skips the batches it already used).

Scale-out: launch with `torchrun --nproc-per-node N -m mario_kit train ...`; each rank takes
every N-th batch of the epoch's order and DDP averages gradients (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mario_kit import UserError
from mario_kit.atomic import check_writable, write_json_atomic, write_text_atomic
from mario_kit.datasets.loader import WindowDataset, epoch_batches
from mario_kit.datasets.store import read_manifest
from mario_kit.hardware import resolve_device
from mario_kit.interrupt import CtrlC
from mario_kit.trust import read_json
from mario_kit.world_model.model.checkpoint import load_checkpoint, make_checkpoint, path_of, save_atomic
from mario_kit.world_model.config import NoiseConfig, TrainConfig, check, from_dict, to_dict
from mario_kit.world_model.training.presets import check_resume
from mario_kit.world_model.model.denoiser import Denoiser, count_parameters
from mario_kit.world_model.training.loss import window_loss
from mario_kit.world_model.model.sampler import to_model


@torch.no_grad()
def ema_update(ema: torch.optim.swa_utils.AveragedModel, model: nn.Module, decay: float, n: int) -> None:
    """One EMA step after `n` earlier ones, with warm-up: decay_n = min(decay, (1 + n) / (10 + n)).
    Without the warm-up a 0.999 EMA still holds two thirds of the random initial weights after 400
    steps. One fused lerp over all parameters, and `n` comes from the host: reading the averaged
    model's counter would wait for the device every step."""
    avg: list[torch.Tensor] = list(ema.module.parameters())
    cur: list[torch.Tensor] = list(model.parameters())
    if n == 0:
        torch._foreach_copy_(avg, cur)
    else:
        torch._foreach_lerp_(avg, cur, 1.0 - min(decay, (1 + n) / (10 + n)))
    ema.n_averaged += 1


# --- device and distribution ------------------------------------------------------------------------
@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world: int = 1
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device | str:
        """Where the tensors of collectives live: CUDA for nccl, the CPU for gloo."""
        return self.device if self.device.type == "cuda" else "cpu"


def setup_runtime(cfg: TrainConfig) -> Runtime:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = torch.device(resolve_device(cfg.device))
    if dev.type == "cuda" and dev.index is None:  # auto or cuda: this rank's GPU (set_device needs an index)
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    on = lambda flag: flag == "on" or (flag == "auto" and dev.type == "cuda")  # noqa: E731
    return Runtime(dev, rank, world, on(cfg.bf16), on(cfg.channels_last), on(cfg.compile))


class _Loss(nn.Module):
    """Routes the loss through forward() so that DDP's gradient hooks see the call."""

    def __init__(self, model: Denoiser, noise: NoiseConfig):
        super().__init__()
        self.model, self.noise = model, noise

    def forward(self, frames, act, mask, gen, cond, level):
        return window_loss(self.model, self.noise, frames, act, mask, gen, cond, level)


def batch_tensors(batch: dict[str, np.ndarray], stage: str, rt: Runtime):
    """Numpy batch -> (frames, act, mask, cond, level) on the device, floats in [-1, 1], channels first."""
    if rt.device.type == "cuda":  # from pinned memory the copy overlaps the step before it
        t = lambda a: torch.from_numpy(a).pin_memory().to(rt.device, non_blocking=True)  # noqa: E731
    else:
        t = lambda a: torch.from_numpy(a).to(rt.device)  # noqa: E731
    mask = t(batch["mask"])
    if stage == "upsampler":
        frames = to_model(t(batch["full"]))
        cond = to_model(t(batch["obs"][:, -1]))
        return frames, None, mask, cond, None
    return to_model(t(batch["obs"])), t(batch["act"]), mask, None, t(batch["level"])


# --- the loop ---------------------------------------------------------------------------------------
def train(
    store: str | Path,
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
) -> TrainSummary:
    """Train the configured stage(s) on `store` into the run folder `out`; returns the summary."""
    check(cfg)
    out, store = Path(out), Path(store)
    _check_inputs(store, cfg)  # before the run folder is touched: a mistyped --store harms nothing
    holds_run = _check_run_folder(out, cfg, resume, force)
    rt = setup_runtime(cfg)
    aside = out.with_name(f".{out.name}.replaced")  # the old run under --force, until the new one has a checkpoint
    created = not out.exists()
    if rt.main:
        try:
            if force and not resume and holds_run:
                shutil.rmtree(aside, ignore_errors=True)  # left by a --force run killed before its first checkpoint
                os.rename(out, aside)
            out.mkdir(parents=True, exist_ok=True)
            if not (resume and (out / "config.json").exists()):  # a resume writes it once its checkpoint loaded
                write_json_atomic(out / "config.json", to_dict(cfg))
        except OSError as e:
            _undo_folder(out, aside, created)
            raise UserError(f"cannot write the run folder {out}: {e.strerror or e}") from None
    if rt.world > 1:
        dist.barrier()
    summary: dict[str, Any] = {"stages": {}}
    with CtrlC() as stop:  # on every rank: a terminal's Ctrl-C reaches them all, and they stop at one step
        try:
            for stage in _stages(cfg):
                summary["stages"][stage] = _train_stage(store, cfg, out, stage, rt, resume, stop, progress)
                if stop.requested:
                    break
        except BaseException:
            if rt.main and not any(out.glob("*.pt")):  # nothing of the new run worth keeping: as before
                _undo_folder(out, aside, created)
            raise
        finally:
            if rt.main and aside.exists() and any(out.glob("*.pt")):
                shutil.rmtree(aside, ignore_errors=True)
    result = TrainSummary({k: StageResult.from_dict(v) for k, v in summary["stages"].items()}, stop.requested)
    if rt.main:
        write_json_atomic(out / "summary.json", result.to_json())
    return result


@dataclass
class StageResult:
    """One stage's figures (summary.json's `stages`): where it ran, where it stopped, its losses. A
    stage resumed after it had finished may know only its step."""

    step: int = 0
    epoch: int = 0
    train_loss: float = float("nan")
    test_loss: float | None = None  # None before the first epoch's end; nan without a test split
    samples_per_s: float = 0.0
    parameters: int = 0
    device: str = ""
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    world_size: int = 1
    max_steps: int | None = None  # set from the measured rate under time_limit
    interrupted: bool = False
    ddp_replicas_identical: bool | None = None  # checked at each epoch's end under DDP

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainSummary:
    stages: dict[str, StageResult]
    interrupted: bool  # Ctrl-C stopped the run (a checkpoint was saved; --resume continues)

    def to_json(self) -> dict[str, Any]:
        """summary.json: a stage's figures that are not known are left out."""
        stages = {k: {f: v for f, v in dataclasses.asdict(r).items() if v is not None} for k, r in self.stages.items()}
        return {"stages": stages, "interrupted": self.interrupted}


def _check_run_folder(out: Path, cfg: TrainConfig, resume: bool, force: bool) -> bool:
    """Whether `out` may take this run (a resume must keep the saved config's shape); returns
    whether it already holds one."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    check_writable(out)
    holds_run = out.is_dir() and any(out.iterdir())
    if holds_run and not (resume or force):
        raise UserError(f"{out} already holds a run; use --resume to continue it or --force to start over")
    if resume and (out / "config.json").exists():
        try:
            saved = from_dict(read_json(out / "config.json", what="run config"))
        except (TypeError, KeyError, ValueError) as e:
            raise UserError(f"{out}/config.json does not describe a TrainConfig ({e})") from None
        check_resume(saved, cfg)
    return holds_run


def _check_inputs(store: Path, cfg: TrainConfig) -> None:
    """Everything about the store that would stop training, checked before any file is written."""
    m = read_manifest(store)
    if cfg.stage in ("upsampler", "both") and not m["full_res"]:
        raise UserError(f"{store} has no full-res frames for the upsampler (build it with --full-res)")
    if not any(e["split"] == "train" for e in m["episodes"]):
        raise UserError(f"{store} has no training episodes (is every episode in the test split?)")
    if cfg.init:  # refused here, before the run folder is touched
        for stage in _stages(cfg):
            path, ck = _init_checkpoint(cfg.init, stage)
            if ck["action_set"] != m["action_set"] or int(ck["n_actions"]) != len(m["action_buttons"]):
                raise UserError(
                    f"init: {path} was trained on action set {ck['action_set']}, this store has {m['action_set']}"
                )


def _stages(cfg: TrainConfig) -> list[str]:
    """The stages a run trains, in order (`both`: the denoiser, then the upsampler)."""
    return ["denoiser", "upsampler"] if cfg.stage == "both" else [cfg.stage]


def _undo_folder(out: Path, aside: Path, created: bool) -> None:
    """A run that failed before its first checkpoint: remove what it wrote, put back what --force moved."""
    if aside.exists():
        shutil.rmtree(out, ignore_errors=True)
        os.rename(aside, out)
    elif created:
        shutil.rmtree(out, ignore_errors=True)
    else:
        for name in ("config.json", "log.csv", "summary.json"):
            (out / name).unlink(missing_ok=True)


@dataclass
class _Stage:
    """One stage's training state: what a checkpoint saves and a resume restores."""

    name: str
    ds: WindowDataset
    model: Denoiser
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    ema: torch.optim.swa_utils.AveragedModel | None
    gen: torch.Generator
    step: int = 0
    epoch: int = 0
    k: int = 0  # batches of the current epoch already used
    ema_n: int | None = None  # the EMA's update count, kept on the host (read once from ema.n_averaged)

    @property
    def up(self) -> bool:
        return self.name == "upsampler"


def _build_stage(store: Path, cfg: TrainConfig, stage: str, rt: Runtime) -> _Stage:
    up = stage == "upsampler"
    mcfg = cfg.upsampler if up else cfg.denoiser
    ds = WindowDataset(store, "train", n_context=mcfg.n_context, horizon=1 if up else cfg.horizon, full_res=up)
    if len(ds) == 0:
        raise UserError(f"{store} has no training windows (is every episode in the test split?)")
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = Denoiser(mcfg, ds.n_actions).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    ema = torch.optim.swa_utils.AveragedModel(model) if cfg.ema else None
    gen = torch.Generator(rt.device).manual_seed(cfg.seed * 7919 + rt.rank)
    return _Stage(stage, ds, model, opt, sched, ema, gen)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The learning rate of optimiser step `step` (from 0) over cfg.lr: a linear warm-up over
    warmup_steps, then constant, then with decay_steps (or decay_fraction of max_steps) a linear
    fall to 0 at max_steps."""
    f = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    decay = cfg.decay_steps or round(cfg.decay_fraction * cfg.max_steps)
    if decay:
        f *= min(1.0, max(0, cfg.max_steps - step) / decay)
    return f


def plan_steps(step: int, steps_done: int, elapsed: float, cfg: TrainConfig) -> int:
    """max_steps for a run with a time_limit, `elapsed` seconds and `steps_done` steps into it (now
    at `step`): the steps the measured rate fits into the time left, at least one more."""
    rate = steps_done / max(elapsed, 1e-9)
    return step + max(1, int(rate * max(0.0, cfg.time_limit - elapsed)))


def _resume(st: _Stage, ck_path: Path, cfg: TrainConfig, rt: Runtime) -> dict[str, Any] | None:
    """Restore `st` from its checkpoint; returns the stage's result when it had already finished
    (a resume with more max_steps or epochs continues a finished stage instead)."""
    ck = load_checkpoint(ck_path)
    try:
        st.model.load_state_dict(ck["model"])
        st.opt.load_state_dict(ck["optimizer"])
        st.sched.load_state_dict(ck["scheduler"])
        if st.ema is not None and ck.get("ema_full"):
            st.ema.load_state_dict(ck["ema_full"])
        if len(ck["gen_states"]) != rt.world:
            raise UserError(f"{ck_path} was written by {len(ck['gen_states'])} processes; resume it with as many")
        st.gen.set_state(ck["gen_states"][rt.rank])
        st.step, st.epoch, st.k = int(ck["step"]), int(ck["epoch"]), int(ck["batch_in_epoch"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        raise UserError(
            f"{ck_path} does not hold this run's training state ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'missing'}); start it again with --force"
        ) from None
    if ck.get("done") and not ((cfg.max_steps == 0 or st.step < cfg.max_steps) and _epochs_left(cfg, st.epoch)):
        return ck.get("result", {"step": st.step})
    return None


def _init_checkpoint(init: str, stage: str) -> tuple[Path, dict[str, Any]]:
    """The checkpoint `init` names: a run folder (its STAGE.pt) or a .pt file of that stage."""
    path = Path(init)
    path = path_of(path, stage) if path.is_dir() else path
    ck = load_checkpoint(path)
    if ck.get("stage") != stage:
        raise UserError(f"init: {path} is a {ck.get('stage')} checkpoint, not a {stage} one")
    return path, ck


def _warm_start(st: _Stage, init: str) -> None:
    """Start from another run's weights (and its EMA, which keeps averaging where it was, not from
    a copy of the first step's weights): fine-tuning. The architecture must match (the action set was
    checked with the store, _check_inputs), but for a level embedding this run adds: it starts at zero,
    so the model starts as the one it was loaded from."""
    path, ck = _init_checkpoint(init, st.name)
    try:
        _load_adding_levels(st.model, ck["model"])
        if st.ema is not None:
            _load_adding_levels(st.ema.module, ck["ema"] or ck["model"])
            st.ema.n_averaged.fill_(max(1, int(ck["step"])))
    except RuntimeError as e:
        raise UserError(f"init: {path} does not match this run's {st.name} ({str(e).splitlines()[0]})") from None


def _load_adding_levels(model: nn.Module, state: dict[str, Any]) -> None:
    """load_state_dict, strict but for a level embedding the state lacks (left as built: zeros)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"inner.level_emb.weight"}:
        raise RuntimeError(f"missing keys {missing}, unexpected keys {unexpected}")


def _save(st: _Stage, cfg: TrainConfig, rt: Runtime, path: Path, result: dict[str, Any] | None) -> None:
    """Every rank's noise generator, gathered; rank 0 writes. `result`: the finished stage's summary."""
    gens = [st.gen.get_state().cpu()]
    if rt.world > 1:
        gathered = [torch.zeros_like(gens[0]) for _ in range(rt.world)]
        dist.all_gather_object(gathered, gens[0])
        gens = gathered
    if rt.main:
        resume_state = {
            "ema_full": st.ema.state_dict() if st.ema is not None else None,
            "optimizer": st.opt.state_dict(),
            "scheduler": st.sched.state_dict(),
            "gen_states": gens,
            "batch_in_epoch": st.k,
            "done": result is not None,
            "result": result,
        }
        save_atomic(
            make_checkpoint(
                st.name,
                cfg,
                st.model,
                st.ds.m["action_set"],
                st.ds.m["action_buttons"],
                st.ema,
                st.step,
                st.epoch,
                resume_state,
            ),
            path,
        )


def _optimiser_step(st: _Stage, loss_mod: Any, rows: np.ndarray, cfg: TrainConfig, rt: Runtime, amp) -> torch.Tensor:
    """One optimiser step over `rows` (grad_accum, batch) of window indices; returns the loss as a
    tensor on the device (read it only to log it: each read waits for the device)."""
    accum, total = len(rows), torch.zeros((), device=rt.device)
    for a, idx in enumerate(rows):
        frames, act, mask, cond, level = batch_tensors(st.ds.gather(st.ds.fetch(idx)), st.name, rt)
        sync = rt.world > 1 and a < accum - 1
        with loss_mod.no_sync() if sync else nullcontext(), amp:
            loss: torch.Tensor = loss_mod(frames, act, mask, st.gen, cond, level) / accum
        loss.backward()
        total += loss.detach().float()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_(st.model.parameters(), cfg.grad_clip)
    st.opt.step()
    st.sched.step()
    st.opt.zero_grad(set_to_none=True)
    if st.ema is not None:
        if st.ema_n is None:
            st.ema_n = int(st.ema.n_averaged)
        ema_update(st.ema, st.model, cfg.ema, st.ema_n)
        st.ema_n += 1
    st.step += 1
    return total


def _wrap(model: Denoiser, noise: NoiseConfig, rt: Runtime) -> Any:
    """The loss module as the loop calls it: DDP across ranks, compiled when asked."""
    loss_mod: nn.Module = _Loss(model, noise)
    if rt.world > 1:
        loss_mod = nn.parallel.DistributedDataParallel(
            loss_mod, device_ids=[rt.device] if rt.device.type == "cuda" else None
        )
    if (
        rt.compile
    ):  # static shapes: the denoiser and upsampler stages share the U-Net's code (see programs/world_model_env.py)
        return torch.compile(loss_mod, dynamic=False)
    return loss_mod


def _train_stage(
    store: Path, cfg: TrainConfig, out: Path, stage: str, rt: Runtime, resume: bool, stop: CtrlC, progress: bool
) -> dict[str, Any]:
    from mario_kit.progress import make_progress

    cfg = dataclasses.replace(cfg)  # a time_limit sets this stage's max_steps
    st, ended = _start_stage(store, cfg, out, stage, rt, resume)
    if ended is not None:
        return ended
    test = WindowDataset(store, "test", n_context=st.ds.n_context, horizon=st.ds.horizon, full_res=st.up)
    ck_path = path_of(out, stage)
    loss_mod = _wrap(st.model, noise_of(cfg, stage), rt)
    amp = torch.autocast(rt.device.type, dtype=torch.bfloat16) if rt.bf16 else nullcontext()
    weights = st.ds.target_weights.astype(np.float64) if cfg.weighted else None
    bs, accum = (cfg.upsampler_batch_size, cfg.upsampler_grad_accum) if st.up else (cfg.batch_size, cfg.grad_accum)
    result: dict[str, Any] = {"parameters": count_parameters(st.model), "device": str(rt.device), "bf16": rt.bf16}
    result |= {"channels_last": rt.channels_last, "compile": rt.compile, "world_size": rt.world}
    loss_t, t0, seen, step0 = torch.tensor(float("nan")), time.perf_counter(), 0, st.step
    planned = not cfg.time_limit
    sps = lambda: round(seen * rt.world / (time.perf_counter() - t0), 2)  # noqa: E731
    with _Log(out / "log.csv", stage, st.step, rt.main) as log, make_progress(enabled=progress and rt.main) as bar:
        task = bar.add_task(stage, total=_total_steps(cfg, st.up), completed=st.step)
        while _epochs_left(cfg, st.epoch):
            n_steps = _steps_in(cfg, st.epoch, st.up)
            order = epoch_batches(len(st.ds), bs, n_steps * accum * rt.world, cfg.seed, st.epoch, weights)
            order = order.reshape(n_steps, accum, rt.world, bs)[:, :, rt.rank]
            st.model.train()
            done = False
            while st.k < n_steps and not done:
                loss_t = _optimiser_step(st, loss_mod, order[st.k], cfg, rt, amp)
                st.k += 1
                seen += bs * accum
                bar.update(task, advance=1)
                if st.step % cfg.log_every == 0:
                    log.row(st, loss_t.item(), sps())
                    bar.update(task, description=f"{stage} loss {loss_t.item():.4f} {sps():.1f} samples/s")
                elapsed = time.perf_counter() - t0
                if not planned and _any(elapsed >= cfg.time_limit / 4, rt):
                    planned = True
                    plan = _agreed(plan_steps(st.step, st.step - step0, elapsed, cfg), rt)
                    cfg.max_steps = result["max_steps"] = min(plan, cfg.max_steps or plan)
                    bar.update(task, total=cfg.max_steps)
                done = bool(cfg.max_steps and st.step >= cfg.max_steps)
                done = done or bool(cfg.time_limit and _any(elapsed >= cfg.time_limit, rt))
                if not done and _any(stop.requested, rt):
                    stop.requested = True
                    _save(st, cfg, rt, ck_path, None)
                    return dict(result, step=st.step, train_loss=loss_t.item(), samples_per_s=sps(), interrupted=True)
            if st.k >= n_steps:
                st.epoch, st.k = st.epoch + 1, 0
            test_loss = _test_loss(st.model, test, cfg, stage, rt, amp) if rt.main else float("nan")
            loss = loss_t.item()
            result.update(step=st.step, epoch=st.epoch, train_loss=loss, test_loss=test_loss, samples_per_s=sps())
            log.row(st, loss, result["samples_per_s"], test_loss)
            if rt.world > 1:
                result["ddp_replicas_identical"] = _replicas_identical(st.model)
            finished = done or not _epochs_left(cfg, st.epoch)
            _save(st, cfg, rt, ck_path, result if finished else None)
            if finished:
                break
    return result


def _start_stage(
    store: Path, cfg: TrainConfig, out: Path, stage: str, rt: Runtime, resume: bool
) -> tuple[_Stage, dict[str, Any] | None]:
    """The stage built, resumed from its checkpoint or warm-started from `init`; with the result
    when the checkpoint says the stage already finished."""
    st = _build_stage(store, cfg, stage, rt)
    ck_path = path_of(out, stage)
    if resume and ck_path.exists():
        ended = _resume(st, ck_path, cfg, rt)
        if rt.main:  # the checkpoint fits: now the run's config takes the resume's safe changes
            write_json_atomic(out / "config.json", to_dict(cfg))
        return st, ended
    if cfg.init:
        _warm_start(st, cfg.init)
    return st, None


def _steps_in(cfg: TrainConfig, epoch: int, up: bool) -> int:
    if epoch == 0:
        return cfg.steps_first_epoch
    return cfg.upsampler_steps_per_epoch if up else cfg.steps_per_epoch


def _epochs_left(cfg: TrainConfig, epoch: int) -> bool:
    return not cfg.epochs or epoch < cfg.epochs  # epochs 0: no limit


def _total_steps(cfg: TrainConfig, up: bool) -> int | None:
    """The steps the run will take, for the progress bar; None (no total, no ETA) for a run that goes
    until Ctrl-C, or until a time_limit has set max_steps from its rate."""
    total = sum(_steps_in(cfg, e, up) for e in range(cfg.epochs)) if cfg.epochs else None
    if cfg.max_steps:
        return min(total, cfg.max_steps) if total else cfg.max_steps
    return total


class _Log:
    """log.csv, written by rank 0 only, closed however the stage ends. A resumed run first drops the
    rows past its checkpoint, which it is about to log again."""

    HEADER = ["stage", "step", "epoch", "loss", "lr", "samples_per_s", "test_loss"]

    def __init__(self, path: Path, stage: str, step: int, enabled: bool):
        self.path, self.stage, self.step, self.enabled = path, stage, step, enabled
        self.file: Any = None

    def __enter__(self) -> "_Log":
        if self.enabled:
            _trim_log(self.path, self.stage, self.step, ",".join(self.HEADER) + "\n")
            self.file = open(self.path, "a", newline="")
            self.writer = csv.writer(self.file)
        return self

    def row(self, st: _Stage, loss: float, sps: float, test_loss: float | None = None) -> None:
        if self.file is None:
            return
        self.writer.writerow(
            [
                self.stage,
                st.step,
                st.epoch,
                f"{loss:.6f}",
                f"{st.sched.get_last_lr()[0]:.3g}",
                f"{sps:.2f}",
                "" if test_loss is None else f"{test_loss:.6f}",
            ]
        )
        self.file.flush()

    def __exit__(self, *exc: Any) -> None:
        if self.file is not None:
            self.file.close()


def _trim_log(path: Path, stage: str, step: int, header: str) -> None:
    """log.csv as the run stands at `step` of `stage`: the header first, and none of the rows a killed
    run logged past its last checkpoint (or before its first: step 0), which the resumed run logs
    again, nor a row cut off by the kill. Each step once in log.csv."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # torn by the kill

    def keep(line: str) -> bool:
        cells = line.split(",")
        return cells[0] != stage or not cells[1].isdigit() or int(cells[1]) <= step

    kept = [header] + [ln for ln in lines if ln != header and len(ln.split(",")) >= 2 and keep(ln)]
    if kept != lines:
        write_text_atomic(path, "".join(kept))


def _any(flag: bool, rt: Runtime) -> bool:
    if rt.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=rt.comm_device)
    dist.all_reduce(t)
    return bool(t.item())


def _agreed(value: int, rt: Runtime) -> int:
    """Rank 0's value on every rank (ranks that measured their own rate would stop apart)."""
    if rt.world == 1:
        return value
    t = torch.tensor([value], device=rt.comm_device)
    dist.broadcast(t, 0)
    return int(t.item())


def _replicas_identical(model: nn.Module) -> bool:
    flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    digest = torch.tensor(
        [flat.double().sum().item(), (flat.double() ** 2).sum().item(), flat[::997].double().sum().item()]
    )
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    return all(torch.equal(g, gathered[0]) for g in gathered)


@torch.no_grad()
def noise_of(cfg: TrainConfig, stage: str) -> NoiseConfig:
    """The training noise of a stage."""
    return cfg.upsampler_noise if stage == "upsampler" else cfg.noise


def _test_loss(model: Denoiser, test: WindowDataset, cfg: TrainConfig, stage: str, rt: Runtime, amp) -> float:
    """Mean denoising loss on fixed test batches (a fixed noise generator: comparable across epochs)."""
    if len(test) == 0:
        return float("nan")
    model.eval()
    gen = torch.Generator(rt.device).manual_seed(12345)
    bs = cfg.upsampler_batch_size if stage == "upsampler" else cfg.batch_size
    order = epoch_batches(len(test), min(bs, len(test)), cfg.test_batches, 999, 0)
    losses = []
    for idx in order:
        frames, act, mask, cond, level = batch_tensors(test.gather(test.fetch(idx)), stage, rt)
        with amp:
            losses.append(window_loss(model, noise_of(cfg, stage), frames, act, mask, gen, cond, level).item())
    model.train()
    return float(np.mean(losses))
