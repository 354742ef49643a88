"""The main job on small built-in defaults: what `make demo` runs.

collect a sticky-random dataset -> inspect it -> report -> split and build the training store -> train a tiny
world model briefly -> dream a GIF against the real game, and one with the model shipped with
mario-kit beside it (and write spawns for `mario-kit play`).
Each stage prints where its artefact is. Minutes on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mario_kit import UserError
from mario_kit.collectors import CollectConfig, collect
from mario_kit.datasets.dataset import Dataset
from mario_kit.reports.stats import summary
from mario_kit.reports.tables import summary_tables

MARKER = "mario-kit.demo.json"


@dataclass
class DemoConfig:
    out: Path = Path("demo")
    episodes: int = 6
    max_steps: int = 300
    workers: int = 2
    seed: int = 0
    train_steps: int = 200  # tiny denoiser, optimiser steps
    dream_steps: int = 24
    force: bool = False  # replace a previous demo folder (only one that has the demo's marker)


def prepare_out(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UserError(f"{out} exists; pass --force to replace a previous demo there")
        if not (out / MARKER).exists():
            raise UserError(f"{out} is not a mario-kit demo folder (no {MARKER}); refusing to delete it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(json.dumps({"demo": True}))


def run(cfg: DemoConfig, echo=print) -> dict[str, Path]:
    from mario_kit.datasets.ops import make_spawns
    from mario_kit.datasets.split import split_dataset
    from mario_kit.datasets.store import build_store
    from mario_kit.world_model.model import shipped
    from mario_kit.world_model.training.presets import get_config
    from mario_kit.world_model.training.trainer import train

    prepare_out(cfg.out, cfg.force)
    a: dict[str, Path] = {}
    episodes = a["episodes"] = cfg.out / "episodes"
    echo(f"[1/6] collect: {cfg.episodes} sticky-random episodes of 1-1 -> {episodes}")
    sticky = CollectConfig(out=episodes, policy="sticky", policy_kwargs={"p": 0.8}, episodes=cfg.episodes)
    res = collect(dataclasses.replace(sticky, max_steps=cfg.max_steps, seed=cfg.seed, workers=cfg.workers))
    echo(f"      seed {res.seed}; `mario-kit dataset info {episodes}`:")
    for table in summary_tables(summary(Dataset(episodes))):
        echo(table)

    store = a["store"] = cfg.out / "store.zarr"
    echo(f"[2/6] split (test 34 %) and build the training store -> {store}")
    split_dataset(episodes, 34, seed=cfg.seed)
    build_store(episodes, store)

    from mario_kit.reports.report import make_report

    rep = a["report"] = cfg.out / "report" / "report.html"
    echo(f"[3/6] report (with the split) -> {rep}")
    make_report([episodes], cfg.out / "report", progress=False)

    run_dir = a["run"] = cfg.out / "run"
    echo(f"[4/6] train a tiny denoiser for {cfg.train_steps} steps -> {run_dir}")
    tcfg = get_config("tiny", [f"max_steps={cfg.train_steps}", "epochs=1000", f"seed={cfg.seed}"])
    r = train(store, tcfg, run_dir).stages["denoiser"]
    echo(
        f"      train loss {r.train_loss:.4f}, test loss {r.test_loss if r.test_loss is not None else float('nan'):.4f}, {r.samples_per_s} samples/s"
    )

    _dream(cfg, episodes, run_dir, a, echo)

    spawns = a["spawns"] = cfg.out / "spawns.h5"
    echo(f"[6/6] spawns for play -> {spawns}")
    make_spawns(episodes, spawns, n=8, seed=cfg.seed)
    echo("done. artefacts:")
    for k, v in a.items():
        echo(f"  {k}: {v}")
    prog = command_name()
    echo(f"play inside the model (needs a display): {prog} play --run {run_dir} --spawn {spawns}")
    if shipped.available():
        echo(f"or inside the model shipped with mario-kit: {prog} play")
    if prog != "mario-kit":
        echo("(or `source .venv/bin/activate` first, and then type mario-kit)")
    return a


def _dream(cfg: DemoConfig, episodes: Path, run_dir: Path, a: dict[str, Path], echo: Callable[..., Any]) -> None:
    """Step 5: the largest test episode, real game beside the demo's model (and the shipped one)."""
    from mario_kit.datasets.split import read_split
    from mario_kit.world_model.model import shipped
    from mario_kit.world_model.programs.compare import CompareConfig, compare

    split = read_split(episodes)
    test = [p for p in Dataset(episodes).paths if split.get(p.name) == "test"]
    ep = max(test, key=lambda p: p.stat().st_size)
    gif = a["dream"] = cfg.out / "dream.gif"
    echo(f"[5/6] dream: {ep.name} from step 4, real game | model | difference -> {gif}")
    d = compare(CompareConfig(run=run_dir, episode=ep, length=cfg.dream_steps, out=gif, upsampler=False, seed=cfg.seed))
    a["dream_psnr_csv"], a["dream_psnr_plot"] = d.csv, d.plot
    echo(
        f"      {d.frames} steps, PSNR vs the real game {d.psnr_low_res_pooled:.2f} dB at 64x60 (a tiny model, briefly trained)"
    )
    if shipped.available():
        gif2 = a["dream_shipped"] = cfg.out / "dream-shipped.gif"
        echo(f"      the same with the model shipped with mario-kit -> {gif2}")
        d2 = compare(CompareConfig(run=None, episode=ep, length=cfg.dream_steps, out=gif2, seed=cfg.seed))
        a["dream_shipped_psnr_csv"], a["dream_shipped_psnr_plot"] = d2.csv, d2.plot
        echo(f"      {d2.frames} steps, PSNR vs the real game {d2.psnr_low_res_pooled:.2f} dB at 64x60")


def command_name() -> str:
    """How to call mario-kit from here: `mario-kit` when it is on PATH, else the script beside this
    Python (make demo runs .venv's Python without activating .venv)."""
    script = Path(sys.executable).parent / "mario-kit"
    found = shutil.which("mario-kit")
    if found and Path(found).resolve() == script.resolve():
        return "mario-kit"
    return os.path.relpath(script) if script.exists() else f"{sys.executable} -m mario_kit"
