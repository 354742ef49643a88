"""CLI: info, validate, bad input (exit 2, one line, nothing harmed), crash safety."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import make_dataset, run_cli
from mario_kit.datasets.validate import validate_dir


def _one_line_error(res):
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in res.stderr
    return lines


def test_version_and_help():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("mario-kit ")
    res = run_cli("--help")
    assert res.returncode == 0 and "collect" in res.stdout and "dataset" in res.stdout


def test_info_json_counts(small_dataset):
    res = run_cli("dataset", "info", small_dataset, "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    from mario_kit.datasets.episode import Episode

    eps = [Episode(p) for p in sorted(small_dataset.glob("*.h5"))]
    assert s["episodes"] == 2
    assert s["steps"] == sum(e.length for e in eps)
    assert s["frames"] == s["steps"] + 2
    counts = np.bincount(np.concatenate([e.actions for e in eps]), minlength=7)
    assert list(s["action_counts"]["simple"].values()) == counts.tolist()
    assert s["bytes"] == sum(os.path.getsize(e.path) for e in eps)
    assert s["sources"] == {"random": 2} and s["levels"] == {"1-1": 2}
    res = run_cli("dataset", "info", small_dataset)
    assert res.returncode == 0 and "right+A" in res.stdout


def test_validate_reports_truncated_foreign_and_partial(tmp_path, small_dataset):
    d = tmp_path / "d"
    shutil.copytree(small_dataset, d)
    good = sorted(d.glob("*.h5"))
    res = run_cli("dataset", "validate", d, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["good"] == 2
    # truncated copy of a real episode
    trunc = d / "truncated.h5"
    data = good[0].read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    # a foreign HDF5 file and a stray text file
    with h5py.File(d / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)
    (d / "notes.txt").write_text("hello")
    # a temp file left by a killed writer
    (d / "20260101T000000-random-1-1-0000000000000000.h5.partial").write_bytes(b"\x89HDF")
    res = run_cli("dataset", "validate", d, "--json")
    assert res.returncode == 1
    rep = json.loads(res.stdout)
    bad = {b["file"]: b["reason"] for b in rep["bad"]}
    assert set(bad) == {"truncated.h5", "foreign.h5"} and rep["ignored"] == ["notes.txt"]  # a stray file is no error
    assert "not a mario-kit episode" in bad["foreign.h5"]
    assert rep["good"] == 2 and len(rep["partial"]) == 1
    # a corrupted frame chunk inside an otherwise intact file
    corrupt = d / "corrupt.h5"
    shutil.copy(good[1], corrupt)
    with h5py.File(corrupt, "r") as f:
        offset = f["frames"].id.get_chunk_info(1).byte_offset
    with open(corrupt, "r+b") as fh:
        fh.seek(offset + 10)
        fh.write(b"\xff" * 64)
    rep = validate_dir(d)
    assert any(p.name == "corrupt.h5" and "do not decode" in r for p, r in rep.bad)


def test_bad_input_exits_2_with_one_line(tmp_path, small_dataset):
    cases = [
        ("collect", "--random", "--episodes", "1", "--level", "9-9", "--out", tmp_path / "a"),
        ("collect", "--random", "--episodes", "1", "--action-set", "nope", "--out", tmp_path / "a"),
        ("collect", "--random", "--episodes", "1", "--sticky", "1.5", "--out", tmp_path / "a"),
        ("collect", "--random", "--out", tmp_path / "a"),  # neither --episodes nor --steps
        ("collect", "--episodes", "1", "--out", tmp_path / "a"),  # no collector
        ("collect", "--random", "--human", "--episodes", "1", "--out", tmp_path / "a"),  # two collectors
        ("collect", "--human", "--workers", "2", "--out", tmp_path / "a"),
        ("collect", "--human", "--scale", "0", "--out", tmp_path / "a"),
        ("dataset", "info", tmp_path / "empty"),
        ("dataset", "info", tmp_path / "missing"),
    ]
    (tmp_path / "empty").mkdir()
    for args in cases:
        lines = _one_line_error(run_cli(*args))
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, lines)
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_refuses_incompatible_or_foreign_folders_and_harms_nothing(tmp_path, small_dataset):
    d = tmp_path / "d"
    shutil.copytree(small_dataset, d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    for extra in (["--action-set", "right"], ["--frame-skip", "2"]):
        lines = _one_line_error(run_cli("collect", "--random", "--episodes", "1", "--out", d, *extra))
        assert "holds episodes with action set" in lines[0]
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    (d / "photo.jpg").write_bytes(b"\xff\xd8")  # not a dataset's file: probably the wrong folder
    lines = _one_line_error(run_cli("collect", "--random", "--episodes", "1", "--out", d))
    assert "not episodes" in lines[0] and "photo.jpg" in lines[0]
    (d / "photo.jpg").unlink()
    # what people and mario-kit keep beside episodes (notes, weights from `balance`) is no obstacle
    (d / "readme.txt").write_text("mine")
    assert run_cli("balance", d, "--out", d / "weights.npz").returncode == 0
    res = run_cli("collect", "--random", "--episodes", "1", "--max-steps", "20", "--out", d, "-q")
    assert res.returncode == 0 and "collected 1 episode," in res.stdout, res.stdout + res.stderr
    rep = json.loads(run_cli("dataset", "validate", d, "--json").stdout)
    assert rep["ok"] and rep["good"] == 3 and sorted(rep["ignored"]) == ["readme.txt", "weights.npz"]
    f = tmp_path / "file"
    f.write_text("x")
    lines = _one_line_error(run_cli("collect", "--random", "--episodes", "1", "--out", f / "sub"))
    assert "cannot write" in lines[0]
    lines = _one_line_error(run_cli("collect", "--random", "--episodes", "1", "--out", f))
    assert "not a folder" in lines[0]


def test_validate_refuses_nothing_to_validate(tmp_path):
    """An empty folder or a wrong path is an error (exit 2), not '0 good, 0 bad'."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("mine")
    for d in ("empty", "notes", "missing"):
        lines = _one_line_error(run_cli("dataset", "validate", tmp_path / d))
        assert len(lines) == 1 and ("nothing to validate" in lines[0] or "not a folder" in lines[0]), lines


def test_steps_means_recorded_steps_and_the_moved_spellings_say_where_they_went(tmp_path):
    """--steps is recorded steps (collect); play's and evaluate's denoising steps are --sampling-steps and
    dream's length --length: their old --steps is refused in one line naming the new option."""
    for args, new in (
        (["play", "--steps", "3"], "--sampling-steps 3"),
        (["evaluate", tmp_path, "--store", tmp_path, "--steps", "1"], "--sampling-steps 1"),
        (["dream", "--episode", tmp_path / "x.h5", "--start", "5", "--steps", "8"], "--length 8"),
    ):
        lines = _one_line_error(run_cli(*args))
        assert len(lines) == 1 and new in lines[0], lines
    assert "--sampling-steps" in run_cli("play", "--help").stdout and "--length" in run_cli("dream", "--help").stdout


def _wait_for(pred, timeout=60.0):
    t0 = time.time()
    while not pred():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def _start_collect(d, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mario_kit",
            "collect",
            "--random",
            "--episodes",
            "500",
            "--max-steps",
            "40",
            "--seed",
            "1",
            "--out",
            str(d),
            "-q",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_sigkill_leaves_finished_episodes_valid(tmp_path):
    d = tmp_path / "d"
    for workers in ("1", "2"):
        proc = _start_collect(d, "--workers", workers)
        n0 = len(list(d.glob("*.h5"))) if d.exists() else 0
        _wait_for(lambda: d.exists() and len(list(d.glob("*.h5"))) >= n0 + 3)
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers at once
        proc.wait()
        time.sleep(0.5)
        rep = validate_dir(d)
        assert rep.ok, rep.bad
        assert len(rep.partial) <= int(workers)
        assert len(rep.good) >= n0 + 3
        for p in rep.partial:
            p.unlink()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_discards_current_episode_and_keeps_the_rest(tmp_path, workers):
    d = tmp_path / "d"
    proc = _start_collect(d, "--workers", workers)
    _wait_for(lambda: d.exists() and len(list(d.glob("*.h5"))) >= 2)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in out
    rep = validate_dir(d)
    assert rep.ok and not rep.partial and len(rep.good) >= 2
    # the summary counts what was kept: the discarded episode's steps are not in it
    kept = sum(int(h5py.File(p, "r").attrs["length"]) for p in rep.good)
    assert f"collected {len(rep.good)} episodes, {kept:,} steps" in out, out


def test_every_options_help_shows_its_default_and_keeps_brackets():
    """Help texts are plain (no rich markup eating "[simple; ...]"); every option with a default shows it."""
    import typer

    from mario_kit.cli import app

    root = typer.main.get_command(app)
    checked = 0

    def walk(cmd, ctx):
        nonlocal checked
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, type(ctx)(sub, info_name=name, parent=ctx))
        for p in cmd.params:
            rec = p.get_help_record(ctx)
            if rec is None or p.name == "help" or getattr(p, "is_flag", False) and p.default is False:
                continue
            if p.default not in (None, "", [], ()):
                assert "[default:" in rec[1], (cmd.name, p.name, rec)
                checked += 1

    walk(root, root.make_context("mario-kit", ["--help"], resilient_parsing=True))
    assert checked > 40
    res = run_cli("collect", "--help")
    text = " ".join(res.stdout.split())  # wrapped at 80 columns
    assert "[simple; an agent's own set]" in text and "default_rng([seed, i])" in text


def test_interactive_commands_without_a_display_exit_2(tmp_path, small_dataset):
    env = dict(os.environ, SDL_VIDEODRIVER="dummy")
    env.pop("MARIO_KIT_KEYS", None)
    res = run_cli("collect", "--human", "--out", tmp_path / "h", env=env)
    assert res.returncode == 2 and "needs a display" in res.stderr and res.stderr.count("\n") == 1
    assert not (tmp_path / "h").exists()


def test_split_of_three_episodes_has_a_test_episode(tmp_path, small_dataset):
    import shutil

    d = tmp_path / "d"
    shutil.copytree(small_dataset, d)
    make_dataset(d, episodes=1, seed=9)
    res = run_cli("dataset", "split", d, "--percentage", "15")
    assert res.returncode == 0 and "2 train, 1 test" in res.stdout, res.stdout
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy2(sorted(small_dataset.glob("*.h5"))[0], one)
    res = run_cli("dataset", "split", one, "--percentage", "15")
    assert res.returncode == 0 and "warning: no test episode" in res.stderr
