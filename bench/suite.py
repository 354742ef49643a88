"""Where the test suite's CPU time goes: `make test`'s pytest command with this file as a plugin, which
records each test's CPU time (its worker's, and that of the processes it started and waited for), then
a JSON summary by file (in `make test`'s scheduling order) and the costliest tests.

    .venv/bin/python bench/suite.py [--top 30] [PYTEST ARGS ...]

CPU time, not wall clock, because the suite is CPU-bound on 2 cores and the machines are noisy: what a
trim saves shows here whatever else ran. Not counted: daemons a test starts without waiting for them
(Ray's), xdist's own start-up and collection.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_OUT = "MARIO_KIT_SUITE_CPU_DIR"


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):  # noqa: ANN001, ARG001 - pytest's hook signature
    before = _cpu()
    yield
    after = _cpu()
    row = {"test": item.nodeid, "own_s": after[0] - before[0], "children_s": after[1] - before[1]}
    with open(Path(os.environ[_OUT]) / f"{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def summary(rows: list[dict], top: int) -> dict:
    by_file: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        f = by_file[r["test"].split("::")[0]]
        f[0], f[1], f[2] = f[0] + r["own_s"], f[1] + r["children_s"], f[2] + 1
    cost = lambda r: r["own_s"] + r["children_s"]  # noqa: E731
    return {
        "tests": len(rows),
        "cpu_s": round(sum(map(cost, rows)), 1),
        "children_s": round(sum(r["children_s"] for r in rows), 1),
        "files": [
            {"file": k, "cpu_s": round(v[0] + v[1], 1), "children_s": round(v[1], 1), "tests": v[2]}
            for k, v in sorted(by_file.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))
        ],
        "costliest": [{"test": r["test"], "cpu_s": round(cost(r), 1)} for r in sorted(rows, key=cost)[::-1][:top]],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--top", type=int, default=30, help="how many of the costliest tests to list")
    args, pytest_args = ap.parse_known_args()
    with tempfile.TemporaryDirectory() as out:
        # this file alone on the plugin path (bench/ holds ray.py and collect.py, which would shadow packages)
        (Path(out) / "mk_suite_cpu.py").write_text(Path(__file__).read_text())
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [out, os.environ.get("PYTHONPATH")])))
        env.update({_OUT: out, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy", "MPLBACKEND": "Agg"})
        xdist = ["-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"]
        cmd = [sys.executable, "-m", "pytest", *xdist, "-p", "mk_suite_cpu", "-q", *pytest_args]
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for p in Path(out).glob("*.jsonl") for line in p.read_text().splitlines()]
    print(json.dumps({"pytest_exit": rc, "wall_s": round(wall, 1), **summary(rows, args.top)}, indent=1))


if __name__ == "__main__":
    main()
