"""The README as a test: every command in its ```bash blocks runs, in order, through the real
`mario-kit` entry point (a subprocess, as a user types it), at small sizes. A command added to the
README is tested from then on.

How a README line becomes a test command (the documented substitution; nothing else changes):
- `[...]` groups are optional flags and are left out; `# ...` comments are dropped;
- `make ...` and `source ...` lines are the set-up, which the test suite already is;
- sizes: `--episodes N` -> 2, collect's `--steps N` -> 120 and `--max-steps 60` on every collect
  (episodes of at most 60 steps), `dream --length N` -> 8, `--n N` -> 2, `--min-length N` -> 10,
  `dataset export --pack N` -> 50;
  `agent train --timesteps N` -> 128 on one env with 128-step rollouts (one update);
  `train` gets `--config tiny --set max_steps=4` (a resume: `--set max_steps=8`, which a resume may
  change); `torchrun --nproc-per-node N` -> 2; `evaluate` scores 4 windows, 1 rollout of 1 and 4 steps;
- `EP.h5` is the longest episode of the folder named before it;
- `downloads/seed` (the seed project's files) is written by the test before the import;
- interactive commands get keys through MARIO_KIT_KEYS (a pygame event script): the human collector
  is started with Enter and played with Right and X (jump), `play` with Right and X, both quit with Esc;
- `serve` runs in the background on a free `--port`: one player connects, starts, runs right and quits
  (with `--invites`: a player without a token is refused), then the server gets Ctrl-C (exit 0).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

HUMAN_KEYS = "return@2,right@3,x@25,x^@45,x@150,x^@170,escape@330"
PLAY_KEYS = "right@2,x@20,x^@40,escape@90"


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith(("make ", "source ")):
                cmds.append(line)
    return cmds


def substitute(line: str, cwd: Path) -> list[str]:
    line = re.sub(r"\s+\[[^\]]*\]", "", line)  # optional flags (a value like k=[4,12] stays)
    args = shlex.split(line)
    tool, rest = args[0], args[1:]
    if tool == "torchrun":
        rest[rest.index("--nproc-per-node") + 1] = "2"
        prog = [str(Path(sys.executable).parent / "torchrun")]
    else:
        assert tool == "mario-kit", line
        prog = [sys.executable, "-m", "mario_kit"]

    def set_value(flag: str, value: str) -> None:
        if flag in rest:
            rest[rest.index(flag) + 1] = value

    cmd = rest[rest.index("mario_kit") + 1] if tool == "torchrun" else rest[0]
    set_value("--episodes", "2")
    set_value("--n", "2")
    set_value("--min-length", "10")
    if cmd == "collect":
        set_value("--steps", "120")
        rest += ["--max-steps", "60"]
    elif cmd == "dream":
        set_value("--length", "8")
    elif cmd == "dataset" and rest[1] == "export":
        set_value("--pack", "50")  # files of 1000 frames need more than the test's small datasets hold
    elif cmd == "agent" and rest[1] == "train":
        set_value("--timesteps", "128")  # one rollout, one update
        rest += ["--workers", "1", "--set", "n_steps=128", "--set", "batch_size=64", "--set", "n_epochs=1"]
    elif cmd == "train":
        rest += ["--set", "max_steps=8"] if "--resume" in rest else ["--config", "tiny", "--set", "max_steps=4"]
    elif cmd == "evaluate":
        rest += ["--windows", "4", "--rollouts", "1", "--horizons", "1,4"]
    for i, a in enumerate(rest):
        if a.endswith("/EP.h5"):
            folder = cwd / a[: -len("/EP.h5")]
            rest[i] = str(max(folder.glob("*.h5"), key=lambda p: h5py.File(p, "r").attrs["length"]))
    return prog + rest


def write_seed_files(folder: Path) -> None:
    """Two files in the seed project's layout (7-wide one-hot labels, helper arrays)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        with h5py.File(folder / f"episode_{k}.hdf5", "w") as f:
            for i in range(12):
                f.create_dataset(f"frame_{i}_x", data=rng.integers(0, 255, (240, 256, 3), dtype=np.uint8))
                f.create_dataset(f"frame_{i}_y", data=np.eye(7, dtype=np.int64)[i % 3])
                f.create_dataset(f"frame_{i}_helperarr", data=np.array([1, 0], dtype=np.int64))


def run_server(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """`mario-kit serve ...` in the background, one scripted player (or a refused one), Ctrl-C."""
    import json
    import signal
    import socket

    from websockets.sync.client import connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        args + ["--port", str(port)], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
        url = f"ws://127.0.0.1:{port}/ws?name=readme"
        if "--invites" in args:  # refused, saying why, then closed with 4401
            with connect(url) as ws:
                assert json.loads(ws.recv())["t"] == "refused"
                with pytest.raises(Exception, match="4401"):
                    ws.recv()
        else:
            with connect(url) as ws:
                assert json.loads(ws.recv())["t"] == "hello"
                for msg in ({"t": "cmd", "cmd": "start"}, {"t": "keys", "held": ["right"]}):
                    ws.send(json.dumps(msg))
                for _ in range(40):
                    ws.recv()
                ws.send(json.dumps({"t": "cmd", "cmd": "quit"}))
                while not (isinstance(m := ws.recv(), str) and json.loads(m)["t"] == "bye"):
                    pass
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.timeout(900)  # some 40 commands, each under its own 300 s; about 3 minutes alone, 4-5 beside another test
def test_every_readme_command_runs_as_written(tmp_path):
    cmds = readme_commands()
    assert len(cmds) >= 25 and cmds[0].startswith("mario-kit collect")
    env = dict(os.environ, SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy", MPLBACKEND="Agg", COLUMNS="120")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.pop("MARIO_KIT_KEYS", None)
    ran = []
    for line in cmds:
        if "dataset import downloads/seed" in line:
            write_seed_files(tmp_path / "downloads" / "seed")
        args = substitute(line, tmp_path)
        run_env = dict(env)
        if "collect --human" in line:
            run_env["MARIO_KIT_KEYS"] = HUMAN_KEYS
        elif line.startswith("mario-kit play"):
            run_env["MARIO_KIT_KEYS"] = PLAY_KEYS
        res = (
            run_server(args, tmp_path, run_env)
            if line.startswith("mario-kit serve")
            else subprocess.run(args, cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=300)
        )
        assert res.returncode == 0 and "Traceback" not in res.stderr, (
            f"{line}\n-> {shlex.join(args)}\n{res.stdout}\n{res.stderr}"
        )
        ran.append((line, res))
    out = {line: res.stdout for line, res in ran}

    # what the interactive commands recorded is what was pressed: right, then right+A (jump)
    from mario_kit.datasets.dataset import Dataset
    from mario_kit.datasets.episode import Episode

    human = Dataset(tmp_path / "data" / "human")
    assert len(human) >= 1 and set(human.index["player"]) == {"ana"}
    acts = np.concatenate([Episode(p).actions for p in human.paths])
    names = {Episode(human.paths[0]).action_set.meaning(int(a)) for a in np.unique(acts)}
    assert {"right", "right+A"} <= names, names
    play_line = next(line for line in out if line.startswith("mario-kit play"))
    assert re.search(r"(\d+) frames generated", out[play_line])
    # the resumed run continued from the first one's 4 steps to 8, with each step logged once
    import csv

    rows = list(csv.DictReader(open(tmp_path / "runs" / "wm" / "log.csv")))
    steps = [int(r["step"]) for r in rows if r["stage"] == "denoiser" and not r["test_loss"]]
    assert steps == sorted(set(steps)) and max(int(r["step"]) for r in rows) == 8
    assert (tmp_path / "dream.gif").stat().st_size > 10_000
    assert (tmp_path / "reports" / "compare" / "report.html").exists()
    browser = Dataset(tmp_path / "data" / "browser")  # the README's served player: one episode, running right
    assert len(browser) == 1 and set(browser.index["player"]) == {"readme"}
