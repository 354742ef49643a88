"""Issue 44's question, DIAMOND's: with a fixed budget of real-game steps, does an agent learn more
in the game or in a world model trained on those steps? On one stage, with the commands users type:

(a) `mario-kit agent train` on BUDGET real steps;
(b) `mario-kit collect --frontier` for BUDGET real steps, `dataset build`, `mario-kit train` (the
    denoiser for --wm-seconds, then `--set stage=rewend`), `bench/tiles.py` (the tile upsampler fit
    on those frames and the model's predictions of them), `dataset spawn`, then `mario-kit agent train
    --dream` until its processes have used the CPU time (a) used, times 1 + --extra;
both scored by `mario-kit agent eval --stochastic` in the real game (20 episodes).

    .venv/bin/python bench/dream_budget.py [--out runs/budget] [--level 1-1] [--budget 100000]
        [--wm-seconds 3600] [--extra 0] [--eval-every 20000] [--episodes 20] [--record]

Every phase leaves its files in --out and is skipped when they are there: an interrupted run goes on
where it stopped, and a world model trained elsewhere (a GPU, `bench/device.sh`, on OUT/data/store.zarr)
is used when it is put at OUT/wm. CPU time is the process tree's (user + system, read from /proc
every second): it moves less than wall time when other work shares the machine, but threads that
spin while they wait for a core still add to it, so (a) and (b)'s PPO are best run on an idle
machine. Prints JSON; `--record` writes
bench/results/dream_budget.json and the curves (mean max x of the evaluations during training
against CPU minutes) as docs/dream-budget.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MK = [sys.executable, "-m", "mario_kit"]
TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int, seen: dict[int, float]) -> float:
    """CPU seconds of `root` and its descendants so far: each process's own user + system time, kept
    in `seen` after it ends (its parent's children-time would count it twice)."""
    parent, own = {}, {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(d.name)] = int(fields[1])
            own[int(d.name)] = (int(fields[11]) + int(fields[12])) / TICK
    ours, grew = {root}, True
    while grew:
        new = {p for p, pp in parent.items() if pp in ours} - ours
        ours, grew = ours | new, bool(new)
    seen.update({p: own[p] for p in ours if p in own})
    return sum(seen.values())


def shown(cmd: list[str]) -> str:
    """The command as a user types it: `mario-kit ...`, or the script's name and arguments."""
    words = ["mario-kit", *cmd[3:]] if cmd[:3] == MK else [Path(cmd[0]).name, *cmd[1:]]
    return " ".join(words)


def run(cmd: list[str], log: Path, cpu_limit: float | None = None, watch: Path | None = None) -> dict[str, Any]:
    """Run a command (its output to `log`), measuring its tree's CPU and wall time; with `cpu_limit`,
    Ctrl-C (SIGINT to its group: `agent train` saves and stops) once the tree has used that much.
    `watch`: a CSV whose new rows are stamped with the CPU seconds at which they appeared."""
    print("$", shown(cmd), flush=True)
    t0, seen, stamps, stopped = time.monotonic(), {}, [], False
    with open(log, "w") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        while p.poll() is None:
            time.sleep(1.0)
            cpu = tree_cpu(p.pid, seen)
            if watch is not None and watch.exists():
                rows = sum(1 for _ in open(watch)) - 1
                stamps += [round(cpu, 1)] * max(0, rows - len(stamps))
            if cpu_limit is not None and cpu >= cpu_limit and not stopped:
                os.killpg(p.pid, signal.SIGINT)
                stopped = True
    if p.returncode != (130 if stopped else 0):  # 130: the Ctrl-C sent at the limit
        raise SystemExit(f"error: `{shown(cmd)}` failed (exit {p.returncode}); see {log}")
    return {"cpu_s": round(sum(seen.values()), 1), "wall_s": round(time.monotonic() - t0, 1), "eval_cpu_s": stamps}


def phase(out: Path, name: str, cmds: list[list[str]], clears: tuple[Path, ...] = (), **kw: Any) -> dict[str, Any]:
    """Run the commands of one phase unless its record (OUT/NAME.json) exists; returns the record.
    `clears`: what the phase writes, removed first when an interrupted run left it."""
    done = out / f"{name}.json"
    if done.exists():
        return json.loads(done.read_text())
    for folder in clears:  # an interrupted phase starts again, so that its CPU time is whole
        if folder.exists():
            print(f"{folder}: left by an interrupted run, removed", flush=True)
            shutil.rmtree(folder)
    costs = [run(c, out / f"{name}-{i}.log", **kw) for i, c in enumerate(cmds)]
    r = {
        "cpu_s": round(sum(c["cpu_s"] for c in costs), 1),
        "wall_s": round(sum(c["wall_s"] for c in costs), 1),
        "eval_cpu_s": costs[-1]["eval_cpu_s"],
        "commands": [shown(c) for c in cmds],
    }
    done.write_text(json.dumps(r, indent=1))
    return r


def agent_cmd(args: argparse.Namespace, out: Path, steps: int) -> list[str]:
    every = str(args.eval_every)
    return MK + ["agent", "train", "--level", args.level, "--timesteps", str(steps), "--seed", str(args.seed),
                 "--eval-every", every, "--checkpoint-every", every, "--out", str(out), "-q"]  # fmt: skip


def world_model(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """(b)'s data, store, denoiser, reward and end model, tiles and spawns: one phase each. A denoiser
    already at OUT/wm (trained elsewhere on OUT/data/store.zarr) is kept and its time not counted."""
    data, store, wm = out / "data" / "episodes", out / "data" / "store.zarr", out / "wm"
    collect = MK + ["collect", "--frontier", "--level", args.level, "--steps", str(args.budget), "--workers", "2",
                    "--seed", str(args.seed + 700), "--out", str(data), "-q"]  # fmt: skip
    split = MK + ["dataset", "split", str(data), "--percentage", "10", "--seed", str(args.seed)]
    rec = {"data": phase(out, "data", [collect, split, MK + ["dataset", "build", str(data), "--out", str(store), "-q"]],
                         clears=(out / "data",))}  # fmt: skip
    if (wm / "denoiser.pt").exists() and not (out / "denoiser.json").exists():
        (out / "denoiser.json").write_text(json.dumps({"cpu_s": 0.0, "wall_s": 0.0, "commands": ["trained elsewhere"]}))
    train = MK + ["train", "--store", str(store), "--out", str(wm), "--config", "cpu", "--set", f"seed={args.seed}"]
    rec["denoiser"] = phase(out, "denoiser", [train + ["--set", f"time_limit={args.wm_seconds}", "-q"]], clears=(wm,))
    rec["rewend"] = phase(
        out,
        "rewend",
        [
            MK
            + [
                "train",
                "--store",
                str(store),
                "--out",
                str(wm),
                "--set",
                "stage=rewend",
                "--set",
                f"rewend.steps={args.rewend_steps}",
                "-q",
            ]
        ],
    )
    tiles = [sys.executable, str(ROOT / "bench" / "tiles.py"), "--train", str(data), "--test", str(data),
             "--run", str(wm), "--predict-levels", args.level, "--frames", "8000", "--dream-episodes", "0", "--out", str(wm / "tiles.h5")]  # fmt: skip
    spawn = MK + ["dataset", "spawn", str(data), "--out", str(out / "spawns.h5"), "--n", "64", "--split", "train",
                  "--seed", str(args.seed), "--force"]  # fmt: skip
    rec["tiles"] = phase(out, "tiles", [tiles, spawn])
    return rec


def score(agent: Path, episodes: int, seed: int) -> dict[str, Any]:
    """`agent eval --stochastic` in the real game, kept beside the agent (AGENT.score.json): seeded,
    so a rerun (`--record`) reads it instead of playing the episodes again."""
    kept = agent.with_suffix(f".score-{episodes}-{seed}.json")
    if not kept.exists():
        cmd = MK + [
            "agent",
            "eval",
            str(agent),
            "--episodes",
            str(episodes),
            "--stochastic",
            "--seed",
            str(seed),
            "--json",
        ]
        kept.write_text(subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout)
    return json.loads(kept.read_text())


def curve(run_dir: Path, stamps: list[float]) -> list[dict[str, Any]]:
    """The evaluations during training (eval.csv), each with the CPU seconds at which it was written."""
    path = run_dir / "eval.csv"
    rows = list(csv.DictReader(open(path))) if path.exists() else []
    return [
        {"timesteps": int(r["timesteps"]), "mean_max_x": float(r["mean_max_x"]), "cpu_s": s}
        for r, s in zip(rows, stamps)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "budget")
    ap.add_argument("--level", default="1-1")
    ap.add_argument("--budget", type=int, default=100_000, help="real-game steps of each side")
    ap.add_argument("--wm-seconds", type=int, default=3600, help="the denoiser's training time (b)")
    ap.add_argument("--rewend-steps", type=int, default=3000, help="the reward and end model's optimiser steps")
    ap.add_argument("--extra", type=float, default=0.0, help="(b)'s PPO CPU time over (a)'s, as a fraction")
    ap.add_argument("--eval-every", type=int, default=20_000)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    a = phase(
        out, "real", [agent_cmd(args, out / "real", args.budget)], (out / "real",), watch=out / "real" / "eval.csv"
    )
    b = world_model(args, out)
    limit = a["cpu_s"] * (1 + args.extra)
    dream_cmd = agent_cmd(args, out / "dream", 10**9) + [
        "--dream",
        "--run",
        str(out / "wm"),
        "--spawn",
        str(out / "spawns.h5"),
    ]
    d = phase(out, "dream", [dream_cmd], (out / "dream",), cpu_limit=limit, watch=out / "dream" / "eval.csv")
    r = {
        "level": args.level,
        "budget_real_steps": args.budget,
        "extra": args.extra,
        "real": {**a, "score": score(out / "real" / "agent.zip", args.episodes, args.seed + 1)},
        "world_model": b,
        "dream": {**d, "score": score(out / "dream" / "agent.zip", args.episodes, args.seed + 1)},
        "curves": {"real": curve(out / "real", a["eval_cpu_s"]), "dream": curve(out / "dream", d["eval_cpu_s"])},
        "evaluate": json.loads((out / "wm" / "rewend.json").read_text())
        if (out / "wm" / "rewend.json").exists()
        else None,
    }
    (out / "result.json").write_text(json.dumps(r, indent=1))
    print(json.dumps({k: r[k] for k in ("real", "dream")}, indent=1, default=str))
    if args.record:
        _record(r, args)


def _plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for side, label in (("real", "(a) PPO in the game"), ("dream", "(b) PPO in the dream")):
        c = r["curves"][side]
        ax.plot([p["cpu_s"] / 60 for p in c], [p["mean_max_x"] for p in c], "o-", label=label)
    ax.set_xlabel("CPU minutes of PPO training (both cores' time added)")
    ax.set_ylabel("mean max x, real game (5 sampled)")
    ax.set_title(f"{r['level']}, {r['budget_real_steps']:,} real steps each")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _record(r: dict[str, Any], args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from tables import record

    a, d = r["real"]["score"], r["dream"]["score"]
    rows = [
        [side, f"{x['mean_max_x']:.0f}", x["best_max_x"], f"{x['completion_rate']:.2f}", f"{c['cpu_s'] / 60:.0f}"]
        for side, x, c in (("(a) PPO, 100k real steps", a, r["real"]), ("(b) PPO in the dream", d, r["dream"]))
    ]
    wm = sum(r["world_model"][k]["cpu_s"] for k in r["world_model"]) / 60
    rows.append(["(b) its data, world model, rewend, tiles", "", "", "", f"{wm:.0f}"])
    verdict = "beats" if d["mean_max_x"] >= a["mean_max_x"] else "trails"
    headline = f"{args.level}, {args.budget:,} real steps: the dream agent {verdict} PPO in the game ({d['mean_max_x']:.0f} vs {a['mean_max_x']:.0f} mean max x)"
    cmd = f".venv/bin/python bench/dream_budget.py --budget {args.budget} --wm-seconds {args.wm_seconds} --extra {args.extra} --record"
    cols = ["side", f"mean max x ({args.episodes} sampled)", "best max x", "flag rate", "CPU minutes"]
    record("dream_budget", cols, rows, cmd, headline, "curves: docs/dream-budget.png")
    _plot(r, ROOT / "docs" / "dream-budget.png")


if __name__ == "__main__":
    main()
