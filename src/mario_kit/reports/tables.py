"""Rich tables of the statistics in `reports.stats` (terminal output of `dataset info` and the demo)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def summary_tables(s: dict[str, Any]) -> list[Table]:
    t = Table(title=f"dataset {s['folder']}", show_header=False)
    for k in ("episodes", "steps", "frames"):
        t.add_row(k, f"{s[k]:,}")
    t.add_row("bytes on disk", f"{s['bytes']:,} ({s['bytes_per_frame']:,.0f} B/frame)")
    for k in ("sources", "players", "levels", "action_sets", "frame_skips", "ends"):
        t.add_row(k.replace("_", " "), ", ".join(f"{n} {c}" for n, c in s[k].items() if n))
    tables = [t]
    for aset, counts in s["action_counts"].items():
        total = sum(counts.values()) or 1
        a = Table(title=f"actions ({aset})")
        a.add_column("action")
        a.add_column("count", justify="right")
        a.add_column("share", justify="right")
        for name, n in counts.items():
            a.add_row(name, f"{n:,}", f"{100 * n / total:.1f}%")
        tables.append(a)
    return tables
