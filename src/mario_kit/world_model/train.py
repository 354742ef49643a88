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
import json
import math
import os
import shutil
import signal
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
from mario_kit.atomic import atomic_path, check_writable, write_text_atomic
from mario_kit.datasets.loader import WindowDataset
from mario_kit.datasets.store import read_manifest
from mario_kit.trust import read_json
from mario_kit.world_model.configs import TrainConfig, check, check_resume, from_dict, to_dict
from mario_kit.world_model.denoiser import Denoiser, count_parameters
from mario_kit.world_model.sampler import to_model

CKPT_KIND = "mario-kit-checkpoint"
CKPT_SCHEMA = 1


# --- checkpoints ------------------------------------------------------------------------------
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
    if not isinstance(ck, dict) or ck.get("kind") != CKPT_KIND:
        raise UserError(f"{path} is not a mario-kit checkpoint")
    if ck.get("schema") != CKPT_SCHEMA:
        raise UserError(f"{path}: checkpoint schema {ck.get('schema')} (this mario-kit reads {CKPT_SCHEMA})")
    return ck


def load_model(run: str | Path, stage: str = "denoiser", ema: bool = True, device: str = "cpu") -> tuple[Denoiser, TrainConfig, dict]:
    """The trained model of a run (EMA weights when present), ready for sampling."""
    ck = load_checkpoint(Path(run) / f"{stage}.pt")
    try:
        cfg = from_dict(json.loads(ck["config"]))
        check(cfg)
        n_actions = int(ck["n_actions"])
        model = Denoiser(cfg.denoiser if stage == "denoiser" else cfg.upsampler, n_actions)
        meta = {k: ck[k] for k in ("step", "epoch", "n_actions", "action_set", "action_buttons")}
        state = ck["ema"] if ema and ck.get("ema") else ck["model"]
    except (KeyError, TypeError, ValueError, AttributeError, json.JSONDecodeError) as e:
        raise UserError(f"{run}/{stage}.pt holds a config this mario-kit cannot build ({type(e).__name__}: {e})") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise UserError(f"{run}/{stage}.pt does not match its config ({str(e).splitlines()[0]})") from None
    model.eval().to(device)
    return model, cfg, meta


def ema_avg_fn(decay: float):
    """EMA with warm-up: decay_n = min(decay, (1 + n) / (10 + n)) after n updates. Without the
    warm-up a 0.999 EMA still holds two thirds of the random initial weights after 400 steps."""

    def avg(averaged: torch.Tensor, current: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        d = min(decay, (1 + float(n)) / (10 + float(n)))
        return averaged * d + current * (1 - d)

    return avg


# --- data order ----------------------------------------------------------------------------------
def epoch_batches(n_windows: int, batch: int, count: int, seed: int, epoch: int,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """`count` batches of window indices for one epoch: a pure function of (seed, epoch)."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    need = count * batch
    if weights is not None:
        idx = torch.multinomial(torch.from_numpy(weights).double(), need, replacement=True, generator=g)
    else:
        perms = [torch.randperm(n_windows, generator=g) for _ in range(math.ceil(need / n_windows))]
        idx = torch.cat(perms)[:need]
    return idx.numpy().reshape(count, batch)


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


def setup_runtime(cfg: TrainConfig) -> Runtime:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
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

    def __init__(self, model: Denoiser):
        super().__init__()
        self.model = model

    def forward(self, frames, act, mask, gen, cond):
        return self.model.loss(frames, act, mask, gen, cond)


def batch_tensors(batch: dict[str, np.ndarray], stage: str, rt: Runtime):
    """Numpy batch -> (frames, act, mask, cond) on the device, floats in [-1, 1], channels first."""
    nb = rt.device.type == "cuda"
    t = lambda a: torch.from_numpy(a).to(rt.device, non_blocking=nb)  # noqa: E731
    mask = t(batch["mask"])
    if stage == "upsampler":
        frames = to_model(t(batch["full"]))
        cond = to_model(t(batch["obs"][:, -1]))
        return frames, None, mask, cond
    return to_model(t(batch["obs"])), t(batch["act"]), mask, None


# --- the loop ---------------------------------------------------------------------------------------
class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, *_: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def train(store: str | Path, cfg: TrainConfig, out: str | Path, resume: bool = False, force: bool = False,
          progress: bool = True) -> dict[str, Any]:
    """Train the configured stage(s) on `store` into the run folder `out`; returns the summary."""
    check(cfg)
    out, store = Path(out), Path(store)
    _check_inputs(store, cfg)  # before the run folder is touched: a mistyped --store harms nothing
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
    rt = setup_runtime(cfg)
    aside = out.with_name(f".{out.name}.replaced")  # the old run under --force, until the new one has a checkpoint
    created = not out.exists()
    if rt.main:
        try:
            if force and not resume and holds_run:
                shutil.rmtree(aside, ignore_errors=True)  # left by a --force run killed before its first checkpoint
                os.rename(out, aside)
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out / "config.json", json.dumps(to_dict(cfg), indent=1))
        except OSError as e:
            _undo_folder(out, aside, created)
            raise UserError(f"cannot write the run folder {out}: {e.strerror or e}") from None
    if rt.world > 1:
        dist.barrier()
    stop = _Stop()
    old = signal.signal(signal.SIGINT, stop) if rt.main else None
    summary: dict[str, Any] = {"stages": {}}
    try:
        for stage in (["denoiser", "upsampler"] if cfg.stage == "both" else [cfg.stage]):
            summary["stages"][stage] = _train_stage(store, cfg, out, stage, rt, resume, stop, progress)
            if stop.requested:
                break
    except BaseException:
        if rt.main and not any(out.glob("*.pt")):  # nothing of the new run worth keeping: as before
            _undo_folder(out, aside, created)
        raise
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
        if rt.main and aside.exists() and any(out.glob("*.pt")):
            shutil.rmtree(aside, ignore_errors=True)
    summary["interrupted"] = stop.requested
    if rt.main:
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def _check_inputs(store: Path, cfg: TrainConfig) -> None:
    """Everything about the store that would stop training, checked before any file is written."""
    m = read_manifest(store)
    if cfg.stage in ("upsampler", "both") and not m["full_res"]:
        raise UserError(f"{store} has no full-res frames for the upsampler (build it with --full-res)")
    if not any(e["split"] == "train" for e in m["episodes"]):
        raise UserError(f"{store} has no training episodes (is every episode in the test split?)")


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


def _train_stage(store: Path, cfg: TrainConfig, out: Path, stage: str, rt: Runtime, resume: bool, stop: _Stop,
                 progress: bool) -> dict[str, Any]:
    from mario_kit.progress import make_progress

    up = stage == "upsampler"
    mcfg = cfg.upsampler if up else cfg.denoiser
    n_ctx, horizon = (mcfg.n_context, 1) if up else (mcfg.n_context, cfg.horizon)
    bs, accum = (cfg.upsampler_batch_size, cfg.upsampler_grad_accum) if up else (cfg.batch_size, cfg.grad_accum)
    ds = WindowDataset(store, "train", n_context=n_ctx, horizon=horizon, full_res=up)
    if len(ds) == 0:
        raise UserError(f"{store} has no training windows (is every episode in the test split?)")
    test = WindowDataset(store, "test", n_context=n_ctx, horizon=horizon, full_res=up)
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    model = Denoiser(mcfg, ds.n_actions).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    ema = None
    if cfg.ema:
        ema = torch.optim.swa_utils.AveragedModel(model, avg_fn=ema_avg_fn(cfg.ema))
    gen = torch.Generator(rt.device).manual_seed(cfg.seed * 7919 + rt.rank)
    step = epoch = start_k = 0
    ck_path = out / f"{stage}.pt"
    if resume and ck_path.exists():
        ck = load_checkpoint(ck_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if ema is not None and ck.get("ema_full"):
            ema.load_state_dict(ck["ema_full"])
        if len(ck["gen_states"]) != rt.world:
            raise UserError(f"{ck_path} was written by {len(ck['gen_states'])} processes; resume it with as many")
        gen.set_state(ck["gen_states"][rt.rank])
        step, epoch, start_k = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        if ck.get("done") and not ((cfg.max_steps == 0 or step < cfg.max_steps) and epoch < cfg.epochs):
            return ck.get("result", {"step": step})  # finished, and a resume with more max_steps/epochs continues
    loss_mod: nn.Module = _Loss(model)
    if rt.world > 1:
        loss_mod = nn.parallel.DistributedDataParallel(loss_mod, device_ids=[rt.device] if rt.device.type == "cuda" else None)
    if rt.compile:  # static shapes: the denoiser and upsampler stages share the U-Net's code (see play.py)
        loss_mod = torch.compile(loss_mod, dynamic=False)
    amp = torch.autocast(rt.device.type, dtype=torch.bfloat16) if rt.bf16 else nullcontext()
    weights = ds.target_weights.astype(np.float64) if cfg.weighted else None
    log_path = out / "log.csv"
    if rt.main and step:
        _trim_log(log_path, stage, step)
    new_log = rt.main and not log_path.exists()
    log_f = open(log_path, "a", newline="") if rt.main else None
    log = csv.writer(log_f) if log_f else None
    if new_log:
        log.writerow(["stage", "step", "epoch", "loss", "lr", "samples_per_s", "test_loss"])
    steps_in = lambda e: cfg.steps_first_epoch if e == 0 else (cfg.upsampler_steps_per_epoch if up else cfg.steps_per_epoch)  # noqa: E731
    n_params = count_parameters(model)
    result: dict[str, Any] = {"parameters": n_params, "device": str(rt.device), "bf16": rt.bf16,
                              "channels_last": rt.channels_last, "compile": rt.compile, "world_size": rt.world}
    done = False
    last_loss = float("nan")
    t0, seen = time.perf_counter(), 0

    def save(k: int, finished: bool = False) -> None:
        gens = [gen.get_state().cpu()]
        if rt.world > 1:
            gathered = [torch.zeros_like(gens[0]) for _ in range(rt.world)]
            dist.all_gather_object(gathered, gens[0])
            gens = gathered
        if rt.main:
            save_atomic({
                "kind": CKPT_KIND, "schema": CKPT_SCHEMA, "stage": stage, "config": json.dumps(to_dict(cfg)),
                "n_actions": ds.n_actions, "action_set": ds.m["action_set"], "action_buttons": json.dumps(ds.m["action_buttons"]),
                "model": model.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
                "ema_full": ema.state_dict() if ema is not None else None,
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "gen_states": gens,
                "step": step, "epoch": epoch, "batch_in_epoch": k, "done": finished,
                "result": result if finished else None,
            }, ck_path)

    with make_progress(enabled=progress and rt.main) as bar:
        total_steps = sum(steps_in(e) for e in range(cfg.epochs))
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        task = bar.add_task(f"{stage}", total=total_steps, completed=step)
        while epoch < cfg.epochs and not done:
            n_steps = steps_in(epoch)
            order = epoch_batches(len(ds), bs, n_steps * accum * rt.world, cfg.seed, epoch, weights)
            order = order.reshape(n_steps, accum, rt.world, bs)[:, :, rt.rank]
            model.train()
            k = start_k
            while k < n_steps:
                acc = 0.0
                for a in range(accum):
                    batch = ds.gather(ds.fetch(order[k, a]))
                    frames, act, mask, cond = batch_tensors(batch, stage, rt)
                    sync = rt.world > 1 and a < accum - 1
                    with (loss_mod.no_sync() if sync else nullcontext()), amp:
                        loss = loss_mod(frames, act, mask, gen, cond) / accum
                    loss.backward()
                    acc += loss.item()
                    seen += bs
                last_loss = acc
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update_parameters(model)
                step += 1
                k += 1
                sps = seen * rt.world / (time.perf_counter() - t0)
                bar.update(task, advance=1, description=f"{stage} loss {last_loss:.4f} {sps:.1f} samples/s")
                if log and (step % cfg.log_every == 0):
                    log.writerow([stage, step, epoch, f"{last_loss:.6f}", f"{sched.get_last_lr()[0]:.3g}", f"{sps:.2f}", ""])
                    log_f.flush()
                if cfg.max_steps and step >= cfg.max_steps:
                    done = True
                    break
                interrupted = _any(stop.requested, rt)
                if interrupted:
                    stop.requested = True
                    save(k)
                    if log_f:
                        log_f.close()
                    return {**result, "step": step, "train_loss": last_loss, "samples_per_s": round(sps, 2), "interrupted": True}
            if k >= n_steps:
                epoch, k = epoch + 1, 0
            start_k = k
            test_loss = _test_loss(model, test, cfg, stage, rt, amp) if rt.main else float("nan")
            result.update(step=step, epoch=epoch, train_loss=last_loss, test_loss=test_loss,
                          samples_per_s=round(seen * rt.world / (time.perf_counter() - t0), 2))
            if log:
                log.writerow([stage, step, epoch, f"{last_loss:.6f}", f"{sched.get_last_lr()[0]:.3g}",
                              f"{result['samples_per_s']:.2f}", f"{test_loss:.6f}"])
                log_f.flush()
            finished = done or epoch >= cfg.epochs
            if rt.world > 1:
                result["ddp_replicas_identical"] = _replicas_identical(model)
            save(k, finished)
    if log_f:
        log_f.close()
    return result


def _trim_log(path: Path, stage: str, step: int) -> None:
    """Drop the rows of `stage` past `step`: a run killed after its last checkpoint logged steps that
    the resumed run logs again (each step once in log.csv)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)

    def keep(line: str) -> bool:
        cells = line.split(",")
        return len(cells) < 2 or cells[0] != stage or not cells[1].isdigit() or int(cells[1]) <= step

    kept = [ln for ln in lines if keep(ln)]
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))


def _any(flag: bool, rt: Runtime) -> bool:
    if rt.world == 1:
        return flag
    t = torch.tensor([int(flag)], device=rt.device if rt.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return bool(t.item())


def _replicas_identical(model: nn.Module) -> bool:
    flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    digest = torch.tensor([flat.double().sum().item(), (flat.double() ** 2).sum().item(), flat[::997].double().sum().item()])
    gathered = [torch.zeros_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, digest)
    return all(torch.equal(g, gathered[0]) for g in gathered)


@torch.no_grad()
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
        frames, act, mask, cond = batch_tensors(test.gather(test.fetch(idx)), stage, rt)
        with amp:
            losses.append(model.loss(frames, act, mask, gen, cond).item())
    model.train()
    return float(np.mean(losses))
