"""matplotlib (Agg) figures of the report; each compares the datasets side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mario_kit.reports.stats import X_BIN as BIN


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    _plt().close(fig)
    return path


def plot_all(stats: dict[str, dict[str, Any]], out: Path) -> dict[str, Path]:
    """Every figure of the report, one PNG each, for one or more datasets side by side."""
    names = list(stats)
    figs = {
        "actions": _actions(stats, names, out),
        "transitions": _transitions(stats, names, out),
        "lengths": _lengths(stats, names, out),
        "coverage": _coverage(stats, names, out),
    }
    for k, n in enumerate(names):
        path = _sample_frames(stats[n], n, out / f"frames_{k}.png")
        if path is not None:
            figs[f"frames_{k}"] = path
    return figs


def _actions(stats: dict[str, dict[str, Any]], names: list[str], out: Path) -> Path:
    acts = stats[names[0]]["action_names"]
    fig, ax = _plt().subplots(figsize=(8, 3.5))
    w = 0.8 / len(names)
    for k, n in enumerate(names):
        shares = [stats[n]["action_shares"].get(a, 0) for a in acts]
        ax.bar(np.arange(len(acts)) + k * w, shares, w, label=n)
    ax.set_xticks(np.arange(len(acts)) + 0.4 - w / 2, acts, rotation=30)
    ax.set_ylabel("share of steps")
    ax.set_title("action histogram")
    ax.legend(fontsize=8)
    return _save(fig, out / "actions.png")


def _transitions(stats: dict[str, dict[str, Any]], names: list[str], out: Path) -> Path:
    plt = _plt()
    acts = stats[names[0]]["action_names"]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.6), squeeze=False)
    for ax, n in zip(axes[0], names):
        t = np.array(stats[n]["transitions"], float)
        t = t / np.maximum(t.sum(1, keepdims=True), 1)
        im = ax.imshow(t, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(acts)), acts, rotation=90, fontsize=7)
        ax.set_yticks(range(len(acts)), acts, fontsize=7)
        ax.set_title(f"{n}: P(next | action)", fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(out / "transitions.png", dpi=90)  # not _save: its tight layout fights the shared colour bar
    plt.close(fig)
    return out / "transitions.png"


def _lengths(stats: dict[str, dict[str, Any]], names: list[str], out: Path) -> Path:
    fig, (a1, a2) = _plt().subplots(1, 2, figsize=(10, 3.4))
    for n in names:
        if stats[n]["episode_lengths"]:
            a1.hist(stats[n]["episode_lengths"], bins=30, alpha=0.5, label=n)
        rl = stats[n]["run_length_histogram"]
        if rl:
            a2.plot([int(k) for k in rl], list(rl.values()), marker="o", label=n)
    a1.set_xlabel("episode length (steps)")
    a1.set_title("episode lengths")
    a2.set_xlabel("run length (steps an action is held; 30 = 30+)")
    a2.set_yscale("log")
    a2.set_title("how long actions are held")
    a1.legend(fontsize=8)
    return _save(fig, out / "lengths.png")


def _coverage(stats: dict[str, dict[str, Any]], names: list[str], out: Path) -> Path:
    levels = sorted({lv for n in names for lv in stats[n]["coverage_x"]})[:4]
    fig, axes = _plt().subplots(max(len(levels), 1), 1, figsize=(9, 2.6 * max(len(levels), 1)), squeeze=False)
    for ax, lv in zip(axes[:, 0], levels):
        for n in names:
            cov = stats[n]["coverage_x"].get(lv, {})
            if cov:  # every bin drawn, empty ones at 0: no line across a gap, no legend entry for no data
                xs = np.arange(0, max(int(x) for x in cov) + 2 * BIN, BIN)
                ax.step(xs, [cov.get(int(x), cov.get(str(x), 0)) for x in xs], where="post", label=f"{n}: steps")
            dx = stats[n]["death_x"].get(lv, {})
            if dx:
                ax.scatter([int(x) for x in dx], list(dx.values()), marker="x", label=f"{n}: deaths")
        ax.set_title(f"level {lv}: where the data is (steps per {BIN} px of x_pos) and where players die")
        ax.set_xlabel("x_pos")
        ax.legend(fontsize=7)
    return _save(fig, out / "coverage.png")


def _sample_frames(st: dict[str, Any], name: str, path: Path) -> Path | None:
    frames = st.get("_sample_frames") or []
    if not frames:
        return None
    fig, axes = _plt().subplots(1, len(frames), figsize=(2 * len(frames), 2.1), squeeze=False)
    captions = st.get("_sample_captions") or [""] * len(frames)
    for ax, f, c in zip(axes[0], frames, captions):
        ax.imshow(f)
        ax.set_title(c, fontsize=7)
        ax.axis("off")
    fig.suptitle(f"{name}: sample frames", fontsize=9)
    return _save(fig, path)
