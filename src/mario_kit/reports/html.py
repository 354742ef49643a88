"""One self-contained HTML page: a Jinja2 template (autoescaped), tables from pandas, plots embedded
as base64 PNGs, no external URL."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment
from markupsafe import Markup

CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}h2{margin-top:1.6em}"""


def fmt(v: Any) -> Any:
    """One number format for the whole page: integers with thousands separators, measures (floats)
    with two decimals (three below 1), also when one happens to be whole, text as it is."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        return v
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    f = float(v)
    return f"{f:,.3f}" if abs(f) < 1 else f"{f:,.2f}"


def _table(df: pd.DataFrame) -> Markup:
    return Markup(df.map(fmt).to_html(border=0, escape=True, na_rep=""))


def _img(path: Path, alt: str) -> dict[str, str]:
    return {"alt": alt, "data": base64.b64encode(path.read_bytes()).decode()}


# autoescape: dataset names (folder names) and captions are escaped wherever they appear; tables
# come escaped from pandas and are marked safe
PAGE = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string("""\
{% macro img(i) %}<img alt="{{ i.alt }}" src="data:image/png;base64,{{ i.data }}">{% endmacro %}
<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>
<title>mario-kit report: {{ names|join(', ') }}</title><style>{{ css }}</style></head><body>
<h1>mario-kit dataset report</h1><p>Datasets: {% for n in names %}<b>{{ n }}</b>{{ ', ' if not loop.last }}{% endfor %}</p>
<h2>Totals</h2>
{{ totals }}
<h2>Actions</h2>
{{ shares }}
{{ img(figs.actions) }}
{{ img(figs.transitions) }}
{% for title, table in by %}
<h3>{{ title }}</h3>
{{ table }}
{% endfor %}
<h2>Episodes</h2>
{% for title, table in cats %}
<h3>{{ title }}</h3>
{{ table }}
{% endfor %}
<h3>length and return</h3>
{{ dist }}
{{ img(figs.lengths) }}
<h2>Coverage</h2>
<h3>per stage</h3>
{{ stages }}
{{ img(figs.coverage) }}
<h2>Sample frames</h2>
{% for i in frames %}
{{ img(i) }}
{% endfor %}
<p><small>Every number is also in stats.json.</small></p></body></html>
""")


CATEGORIES = (
    ("sources", "episodes per source"),
    ("players", "episodes per player"),
    ("levels", "episodes per level"),
    ("ends", "how episodes end"),
)


STAGE_ROWS = (("episodes", "episodes"), ("frames", "frames"), ("max_x", "farthest x"),
              ("x_half_of_frames", "half the frames before x"), ("x_nine_tenths_of_frames", "9/10 of the frames before x"),
              ("left_edge_share", "share of steps at the screen's left edge"), ("deaths", "deaths"),
              ("flags", "flags (stage cleared)"), ("ending_steps", "steps after a death or flag"))  # fmt: skip


def _stages_table(stats: dict[str, dict[str, Any]]) -> Markup:
    """How far into each stage each dataset goes, and how its episodes there ended."""
    stages = sorted({lv for s in stats.values() for lv in s.get("stages", {})})
    rows = [f"{lv}: {label}" for lv in stages for _, label in STAGE_ROWS]
    cols = {
        n: [s.get("stages", {}).get(lv, {}).get(k, "") for lv in stages for k, _ in STAGE_ROWS]
        for n, s in stats.items()
    }
    return _table(pd.DataFrame(cols, index=rows))


def _category_table(stats: dict[str, dict[str, Any]], key: str) -> Markup:
    """Counts per value of one category (source, player, level, end) in each dataset."""
    keys = sorted({k for s in stats.values() for k in s[key]})
    frame = pd.DataFrame(
        {n: [s[key].get(k, 0) for k in keys] for n, s in stats.items()}, index=[k or "(none)" for k in keys]
    )
    return _table(frame)


def render(stats: dict[str, dict[str, Any]], figs: dict[str, Path]) -> str:
    names = list(stats)
    col = lambda key: [stats[n][key] for n in names]  # noqa: E731
    rows = {
        "folder": col("folder"),
        "episodes": col("episodes"),
        "steps": col("steps"),
        "frames": col("frames"),
        "hours of play": col("hours_of_play"),
        "bytes on disk": col("bytes"),
        "bytes / frame": col("bytes_per_frame"),
        "action entropy (bits)": col("action_entropy_bits"),
        "rarest action": [
            f"{stats[n]['rarest_action']} ({100 * stats[n]['rarest_action_share']:.1f} %)" for n in names
        ],
        "mean run length": [stats[n]["run_length"].get("mean") for n in names],
        "distinct scenario keys": col("scenario_keys"),
        "steps per scenario key": col("steps_per_scenario_key"),
        "duplicate-frame rate": [stats[n].get("duplicate_frame_rate", "not measured") for n in names],
        "split": [stats[n].get("split", "none") for n in names],
        "balancing weights": [", ".join(stats[n].get("weights_files", [])) or "none" for n in names],
    }
    acts = stats[names[0]]["action_names"]
    shares = pd.DataFrame(
        {n: [f"{100 * stats[n]['action_shares'].get(a, 0):.1f} %" for a in acts] for n in names}, index=acts
    )
    cats = [(title, _category_table(stats, key)) for key, title in CATEGORIES]
    dist = pd.DataFrame(
        {
            f"{n}: {what}": stats[n][field]
            for n in names
            for what, field in (("length", "episode_length"), ("return", "episode_return"))
        }
    )
    by = [
        (f"{n}: actions per {title}", _table(pd.DataFrame(stats[n][key], index=acts)))
        for n in names
        for key, title in (("actions_by_source", "source"), ("actions_by_level", "level"))
    ]
    alts = {
        "actions": "action histogram",
        "transitions": "transition matrices",
        "lengths": "episode and run lengths",
        "coverage": "coverage by x_pos",
    }
    return PAGE.render(
        names=names,
        css=Markup(CSS),
        totals=_table(pd.DataFrame(rows, index=names).T),
        shares=_table(shares),
        by=by,
        cats=cats,
        dist=_table(dist),
        stages=_stages_table(stats),
        figs={k: _img(figs[k], alt) for k, alt in alts.items()},
        frames=[_img(p, k) for k, p in figs.items() if k.startswith("frames_")],
    )
