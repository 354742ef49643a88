"""One self-contained HTML page: tables from pandas, plots embedded as base64 PNGs, no external URL."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}h2{margin-top:1.6em}"""


def fmt(v: Any) -> Any:
    """One number format for the whole page: integers with thousands separators, other numbers with
    two decimals (three below 1), text as it is."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return v
    if float(v).is_integer() and abs(v) >= 1 or isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return f"{v:,.3f}" if abs(v) < 1 else f"{v:,.2f}"


def _table(df: pd.DataFrame) -> str:
    return df.map(fmt).to_html(border=0, escape=True, na_rep="")


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render(stats: dict[str, dict[str, Any]], figs: dict[str, Path]) -> str:
    names = list(stats)
    rows = {
        "folder": [stats[n]["folder"] for n in names],
        "episodes": [stats[n]["episodes"] for n in names],
        "steps": [stats[n]["steps"] for n in names],
        "frames": [stats[n]["frames"] for n in names],
        "hours of play": [stats[n]["hours_of_play"] for n in names],
        "bytes on disk": [stats[n]["bytes"] for n in names],
        "bytes / frame": [stats[n]["bytes_per_frame"] for n in names],
        "action entropy (bits)": [stats[n]["action_entropy_bits"] for n in names],
        "rarest action": [f"{stats[n]['rarest_action']} ({100 * stats[n]['rarest_action_share']:.1f} %)" for n in names],
        "mean run length": [stats[n]["run_length"].get("mean") for n in names],
        "distinct scenario keys": [stats[n]["scenario_keys"] for n in names],
        "steps per scenario key": [stats[n]["steps_per_scenario_key"] for n in names],
        "duplicate-frame rate": [stats[n].get("duplicate_frame_rate", "not measured") for n in names],
        "split": [stats[n].get("split", "none") for n in names],
        "balancing weights": [", ".join(stats[n].get("weights_files", [])) or "none" for n in names],
    }
    totals = pd.DataFrame(rows, index=names).T
    acts = stats[names[0]]["action_names"]
    shares = pd.DataFrame({n: [f"{100 * stats[n]['action_shares'].get(a, 0):.1f} %" for a in acts] for n in names}, index=acts)
    cats = []
    for key, title in (("sources", "episodes per source"), ("players", "episodes per player"), ("levels", "episodes per level"),
                       ("ends", "how episodes end")):
        keys = sorted({k for n in names for k in stats[n][key]})
        cats.append(f"<h3>{title}</h3>" + _table(pd.DataFrame({n: [stats[n][key].get(k, 0) for k in keys] for n in names},
                                                              index=[k or "(none)" for k in keys])))
    dist = pd.DataFrame({f"{n}: {what}": stats[n][field] for n in names
                         for what, field in (("length", "episode_length"), ("return", "episode_return"))})
    by = []
    for n in names:
        for key, title in (("actions_by_source", "source"), ("actions_by_level", "level")):
            d = pd.DataFrame(stats[n][key], index=acts)
            by.append(f"<h3>{html.escape(n)}: actions per {title}</h3>" + _table(d))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>mario-kit report: {html.escape(', '.join(names))}</title><style>{CSS}</style></head><body>",
        f"<h1>mario-kit dataset report</h1><p>Datasets: {', '.join(f'<b>{html.escape(n)}</b>' for n in names)}</p>",
        "<h2>Totals</h2>", _table(totals),
        "<h2>Actions</h2>", _table(shares), _img(figs["actions"], "action histogram"), _img(figs["transitions"], "transition matrices"),
        *by,
        "<h2>Episodes</h2>", *cats, "<h3>length and return</h3>", _table(dist), _img(figs["lengths"], "episode and run lengths"),
        "<h2>Coverage</h2>", _img(figs["coverage"], "coverage by x_pos"),
        "<h2>Sample frames</h2>", *[_img(p, k) for k, p in figs.items() if k.startswith("frames_")],
        "<p><small>Every number is also in stats.json.</small></p></body></html>",
    ]
    return "\n".join(parts)
