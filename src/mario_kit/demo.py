"""The main job on small built-in defaults: what `make demo` runs.

Today: collect a small sticky-random dataset and print its statistics. Each stage prints where
its artefact is. Stages are added here as the toolkit grows (report, build, train, dream).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

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
    prepare_out(cfg.out, cfg.force)
    artefacts: dict[str, Path] = {}
    episodes = cfg.out / "episodes"
    echo(f"[1] collect: {cfg.episodes} sticky-random episodes of 1-1 -> {episodes}")
    res = collect(CollectConfig(out=episodes, policy="sticky", policy_kwargs={"p": 0.8}, episodes=cfg.episodes,
                                max_steps=cfg.max_steps, seed=cfg.seed, workers=cfg.workers))
    artefacts["episodes"] = episodes
    echo(f"    seed {res.seed}; `mario-kit dataset info {episodes}`:")
    for table in summary_tables(summary(Dataset(episodes))):
        echo(table)
    echo("done. artefacts:")
    for k, v in artefacts.items():
        echo(f"  {k}: {v}")
    return artefacts
