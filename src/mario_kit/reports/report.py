"""`mario-kit report DIR [DIR2 ...] --out OUT`: report.html (self-contained), *.png, stats.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mario_kit import UserError
from mario_kit.atomic import check_writable, output_dir, write_json_atomic, write_text_atomic
from mario_kit.datasets.dataset import Dataset
from mario_kit.reports.html import render
from mario_kit.reports.plots import plot_all
from mario_kit.reports.stats import dataset_stats


def make_report(
    dirs: list[str | Path], out: str | Path, frames: bool = True, sample: int | None = None, progress: bool = True
) -> dict[str, Any]:
    from mario_kit.progress import make_progress

    if not dirs:
        raise UserError("give at least one dataset folder")
    out = Path(out)
    check_writable(out)
    stats: dict[str, dict[str, Any]] = {}
    with make_progress(enabled=progress, transient=True) as bar:
        for d in dirs:
            ds = Dataset(d).require_episodes(valid=False)  # the report names the files it skips
            name = Path(d).name or str(d)
            while name in stats:
                name += "'"
            task = bar.add_task(f"frames of {name}", total=int(ds.index["frames"].sum()) if frames else 0)
            stats[name] = dataset_stats(
                ds, frames=frames, sample=sample, progress=lambda n, t=task: bar.update(t, advance=n)
            )
    if len({tuple(s["action_names"]) for s in stats.values()}) > 1:
        raise UserError("the datasets use different action sets; report them separately")
    with output_dir(out):
        figs = plot_all(stats, out)
        write_text_atomic(out / "report.html", render(stats, figs))
        clean = {n: {k: v for k, v in s.items() if not k.startswith("_")} for n, s in stats.items()}
        write_json_atomic(out / "stats.json", clean)
    return {"html": out / "report.html", "stats": clean, "figures": figs}
