"""The frontier collector (collectors/frontier.py), through the entry point: episodes that start
where earlier ones left off stay replayable from reset, bit for bit; the archive persists and a
second run grows it; the same seed gives the same episodes; bad archives and options are refused."""

import importlib.util
import json
from pathlib import Path

import numpy as np

from conftest import run_cli
from mario_kit.collectors.frontier import (
    ARCHIVE,
    Archive,
    CELL_PX,
    CONTEXT_STEPS,
    DEATH_ENDINGS,
    FrontierPolicy,
    archive_name,
    cell_key,
    is_place,
)
from mario_kit.collectors.policies import StickyPolicy
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode
from mario_kit.datasets.interop.replay import parse_replay, read_replay
from mario_kit.emulator import MarioEnv, replay, run_start

GAME = Path(__file__).resolve().parents[1] / "bench" / "data" / "game" / "replay.json.xz"


def _collect(out, steps, *extra):
    res = run_cli("collect", "--frontier", "--steps", steps, "--seed", "1", "--out", out, "-q", *extra)
    assert res.returncode == 0, res.stderr
    return res


def _digest(folder):
    rows = []
    for p in Dataset(folder).paths:
        with Episode(p) as ep:
            start = ep.start_joypad
            rows.append((ep.actions.tobytes(), ep.joypad.tobytes(), b"" if start is None else start.tobytes()))
    return sorted(rows)


def test_frontier_episodes_replay_from_reset_and_the_archive_grows_over_runs(tmp_path):
    out = tmp_path / "fr"
    _collect(out, 600)
    archive = json.loads((out / ARCHIVE).read_text())
    first_cells = {c["key"] for c in archive["cells"]}
    assert len(first_cells) > 10 and all(len(c["tail"]) <= CONTEXT_STEPS for c in archive["cells"])
    returned = 0
    for p in Dataset(out).paths:
        with Episode(p) as ep:
            start = ep.start_joypad
            if start is None:
                continue
            returned += 1
            k = ep.attrs["extra"]["prefix_steps"]  # fewer only for a cell reached in the stage's first steps
            assert k == CONTEXT_STEPS or (1 <= k < CONTEXT_STEPS and len(start) == 0), (k, len(start))
            rebuilt = list(replay(ep.attrs["level"], ep.joypad, ep.step_frames, start))
            assert len(rebuilt) == ep.length + 1
            for t, (frame, info) in enumerate(rebuilt):
                assert np.array_equal(frame, ep.frames[t]), (p.name, t)
                assert info["x_pos"] == ep.info["x_pos"][t - 1] if t else True
    assert returned >= 3  # most episodes return to a cell; the stage's reset stays a candidate
    _check_unroll(max(Dataset(out).paths, key=_way_frames), tmp_path / "unrolled")
    # a death's ending is recorded once a place: the archive counts them, the episodes agree
    deaths: dict[str, int] = {}
    for p in Dataset(out).paths:
        with Episode(p) as ep:
            if ep.attrs["end"] == "terminated" and ep.ending_steps:
                t = ep.played_steps - 1
                key = cell_key(ep.attrs["level"], {"x_pos": ep.info["x_pos"][t], "y_pos": ep.info["y_pos"][t]})
                deaths[key] = deaths.get(key, 0) + 1
    assert deaths and deaths == archive["deaths"] and set(deaths.values()) == {DEATH_ENDINGS}
    died = sum(Episode(p).attrs["end"] == "terminated" for p in Dataset(out).paths)
    assert died > len(deaths)  # the others' endings were not recorded
    # a second run of a longer budget: the first run's episodes kept, the archive grows from where it was
    res = _collect(out, 1200)
    assert "already held" in res.stdout
    grown = {c["key"] for c in json.loads((out / ARCHIVE).read_text())["cells"]}
    assert first_cells < grown
    assert run_cli("dataset", "validate", out).returncode == 0


def _way_frames(path):
    with Episode(path) as ep:
        return 0 if ep.start_joypad is None else len(ep.start_joypad)


def _check_unroll(path, out):
    """bench/unroll.py plays an episode again from reset: the way there becomes recorded steps, and
    the episode's own steps follow with the same frames."""
    spec = importlib.util.spec_from_file_location("bench_unroll", Path(__file__).parents[1] / "bench" / "unroll.py")
    unroll = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unroll)
    got = unroll.unroll(path, out)
    with Episode(path) as ep, Episode(got["file"]) as new:
        way = got["way_steps"]
        assert way * ep.attrs["frame_skip"] == len(ep.start_joypad) > 0 and new.length == way + ep.length
        assert new.start_joypad is None and new.attrs["end"] == ep.attrs["end"]
        assert np.array_equal(new.frames[way:], ep.frames[:]) and np.array_equal(new.actions[way:], ep.actions)


def test_one_worker_repeats_its_episodes_and_two_workers_share_their_cells(tmp_path):
    """The same seed gives the same episodes with one worker. Two workers write an archive file each
    and take in each other's: a worker's archive holds places that only the other worker's episodes
    reached, and every episode after a worker's first exchange (at its 5th: from then on it may start
    at the other's cells) replays from reset. Those before replay as one worker's do (the test above)."""
    _collect(tmp_path / "a", 300)
    _collect(tmp_path / "b", 300)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    out = tmp_path / "c"
    _collect(out, 1600, "--workers", "2")  # at least 6 episodes each: both save at the 5th and at the end
    names = [archive_name(0, 2), archive_name(1, 2)]
    assert {p.name for p in out.glob("mario-kit.frontier*.json")} == set(names)
    visited: list[set[str]] = [set(), set()]
    replayed = 0
    for p in Dataset(out).paths:
        with Episode(p) as ep:
            level, info, index = ep.attrs["level"], ep.info, ep.attrs["extra"]["episode_index"]
            seen = {cell_key(level, {"x_pos": x, "y_pos": y}) for x, y in zip(info["x_pos"], info["y_pos"])}
            visited[index % 2] |= seen
            if index // 2 >= 5:
                frames = [f for f, _ in replay(level, ep.joypad, ep.step_frames, ep.start_joypad)]
                assert all(np.array_equal(f, ep.frames[t]) for t, f in enumerate(frames)), p.name
                replayed += 1
    assert replayed >= 2, replayed
    taken = []
    for w in (0, 1):
        keys = {c["key"] for c in json.loads((out / names[w]).read_text())["cells"]}
        taken.append(keys - visited[w])
        assert taken[w] <= visited[1 - w], w  # what it did not reach itself, the other did
    assert any(taken)  # the worker that finished last took in the other's final archive


def test_a_frontier_dataset_travels_as_a_replay_file(tmp_path):
    """Export without frames, import by replaying: the start prefixes come back and rebuild every frame."""
    _collect(tmp_path / "fr", 300)
    assert run_cli("dataset", "export", tmp_path / "fr", "--format", "replay", "--out", tmp_path / "x").returncode == 0
    res = run_cli("dataset", "import", tmp_path / "x", "--format", "replay", "--out", tmp_path / "back")
    assert res.returncode == 0, res.stderr
    assert _digest(tmp_path / "back") == _digest(tmp_path / "fr")
    for p in Dataset(tmp_path / "fr").paths:
        with Episode(p) as a, Episode(tmp_path / "back" / p.name) as b:
            assert np.array_equal(a.frames[()], b.frames[()])
    # a way from reset that ends the game before it ends (a garbled file) is refused, nothing imported
    import h5py

    victim = next(p for p in Dataset(tmp_path / "fr").paths if Episode(p).start_joypad is not None)
    with h5py.File(victim, "r+") as f:
        del f["extra/start_joypad"]
        f.create_dataset("extra/start_joypad", data=np.full(5000, 0x80, np.uint8))  # runs into the first Goomba
    assert run_cli("dataset", "export", tmp_path / "fr", "--format", "replay", "--out", tmp_path / "y").returncode == 0
    res = run_cli("dataset", "import", tmp_path / "y", "--format", "replay", "--out", tmp_path / "bad")
    assert res.returncode == 2 and "ends the game" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").glob("*.h5"))


def test_bad_archives_and_options_are_refused_in_one_line(tmp_path):
    out = tmp_path / "fr"
    out.mkdir()
    (out / ARCHIVE).write_text("{not json")
    res = run_cli("collect", "--frontier", "--steps", "50", "--out", out)
    assert res.returncode == 2 and "frontier archive" in res.stderr and "Traceback" not in res.stderr, res.stderr
    (out / ARCHIVE).write_text(json.dumps({"kind": "mario-kit-frontier-archive", "schema": 1, "action_set": "right",
                                           "frame_skip": 4, "cells": []}))  # fmt: skip
    res = run_cli("collect", "--frontier", "--steps", "50", "--out", out)
    assert res.returncode == 2 and "action set right" in res.stderr
    import base64
    import zlib

    bomb = base64.b64encode(zlib.compress(bytes(1 << 22))).decode()  # 4 MiB of joypad bytes from 4 KB
    empty = base64.b64encode(zlib.compress(b"")).decode()
    ok = {"key": "1-1:3:5", "start": empty, "tail": [], "x": 100, "visits": 1, "chosen": 0}
    for cell, says, deaths in (
        (ok, "deaths at '../x'", {"../x": 1}),
        (ok, "deaths at '1-1:3:5'", {"1-1:3:5": -1}),
        (ok, "deaths at '1-1:3:5'", {"1-1:3:5": "many"}),
    ) + tuple((c, says, {}) for c, says in (
        ({"key": "1-1:3:5", "start": bomb, "tail": [], "x": 100, "visits": 1, "chosen": 0}, "longer than"),
        ({"key": "1-1:3:5", "start": empty, "tail": [9], "x": 100, "visits": 1, "chosen": 0}, "action set"),
        ({"key": "../x", "start": empty, "tail": [], "x": 100, "visits": 1, "chosen": 0}, "cell key"),
        ({"key": "1-1:3:5", "start": bomb[:40], "tail": [], "x": 100, "visits": 1, "chosen": 0}, "cut short"),
    )):  # fmt: skip
        doc = {
            "kind": "mario-kit-frontier-archive",
            "schema": 1,
            "action_set": "simple",
            "frame_skip": 4,
            "cells": [cell],
            "deaths": deaths,
        }
        (out / ARCHIVE).write_text(json.dumps(doc))
        res = run_cli("collect", "--frontier", "--steps", "50", "--out", out)
        assert res.returncode == 2 and says in res.stderr and res.stderr.count("\n") == 1, res.stderr
    (out / ARCHIVE).unlink()
    (out / ARCHIVE).symlink_to(tmp_path / "elsewhere.json")
    res = run_cli("collect", "--frontier", "--steps", "50", "--out", out)
    assert res.returncode == 2 and "symbolic link" in res.stderr
    assert not Dataset(out).paths  # nothing recorded


def test_a_cell_is_the_stage_and_32_pixel_buckets():
    env = MarioEnv("1-1")
    _, info = env.reset()
    key = cell_key("1-1", info)
    assert key == f"1-1:{info['x_pos'] // CELL_PX}:{info['y_pos'] // CELL_PX}"
    assert is_place(info) and not is_place({**info, "x_pos": 0xFFFF})  # a maze's loop, for a frame
    assert env.maze() == (0, 0) and cell_key("1-1", info, env.maze()) == key  # no maze: the key as ever
    maze_key = cell_key("7-4", info, (1, 2))
    assert maze_key == f"7-4:{info['x_pos'] // CELL_PX}:{info['y_pos'] // CELL_PX}:1-2"
    cell = {"key": maze_key, "start": "eJwDAAAAAAE=", "tail": [], "x": 40, "visits": 1, "chosen": 0}  # zlib of b""
    doc = {"kind": "mario-kit-frontier-archive", "schema": 1, "action_set": "simple", "frame_skip": 4,
           "cells": [cell], "deaths": {maze_key: 1}}  # fmt: skip
    assert list(Archive.from_json(doc, "simple", 4).cells) == [maze_key]  # an archive file holds such keys
    env.close()


def test_a_sigkill_mid_run_loses_no_episode_and_the_command_finishes_after_it(tmp_path):
    """Killed mid-run: every finished episode is valid and replayable, the archive file (written every
    few episodes, atomically) still parses, and the same command run again completes the budget."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "fr"
    cmd = [
        sys.executable,
        "-m",
        "mario_kit",
        "collect",
        "--frontier",
        "--steps",
        "3000",
        "--seed",
        "2",
        "--out",
        out,
        "-q",
    ]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (out / ARCHIVE).exists() or len(list(out.glob("*.h5"))) < 12:
        assert time.time() - t0 < 240 and proc.poll() is None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {p.name for p in out.glob("*.h5")}
    json.loads((out / ARCHIVE).read_text())
    for p in out.glob("*.partial"):
        p.unlink()  # what validate reports and a user removes; the rest is whole
    assert run_cli("dataset", "validate", out).returncode == 0
    _collect_seed = run_cli("collect", "--frontier", "--steps", "3000", "--seed", "2", "--out", out, "-q")
    assert _collect_seed.returncode == 0, _collect_seed.stderr
    assert kept < {p.name for p in out.glob("*.h5")}
    assert sum(Episode(p).length for p in Dataset(out).paths) >= 3000


def _lossy_way() -> np.ndarray:
    """The way from 4-3's reset to the one frame of bench/data's `game` (recorded before the check)
    whose nes-py snapshot restores inexactly: its frontier episode starts there and does not replay."""
    eps = parse_replay(read_replay(GAME), GAME)
    (ep,) = [e for e in eps if "9b718e3fc48e403c" in e["file"]]
    return np.asarray(ep["arrays"]["extra/start_joypad"])


def _walk(start: np.ndarray, steps: int) -> list[int]:
    """From 4-3's reset along `start`, `steps` steps of right through a frontier policy's step hooks:
    the start lengths of the cells its archive keeps."""
    env = MarioEnv("4-3")
    env.reset()
    pol = FrontierPolicy(StickyPolicy())
    pol.reset(np.random.default_rng(0), 7)
    assert pol.begin(env, "simple", 4) is None  # an empty archive in memory: the stage's reset
    info = run_start(env, start) or {}
    pol.path = bytearray(start.tobytes())  # the way so far, as if the episode had walked it
    for _ in range(steps):
        pol.before_step(env, info, 1)
        r = env.step(0x80, 4)  # right
        info = r.info
        pol.after_step(r.joypad, info, False)
    pol.close()
    env.close()
    assert pol.archive is not None
    return sorted({len(c.start) for c in pol.archive.cells.values()})


def test_a_cell_whose_snapshot_does_not_restore_exactly_is_not_kept():
    """At one frame of 4-3 nes-py's snapshot, restored, plays on a pixel off from the game it was
    taken from (Mario's speed and x), with RAM and screen equal at the restore. A cell is kept only
    where its snapshot, restored elsewhere and played on with the bytes since, reaches the live game:
    from that frame none is, four frames on the cells are; from four frames before, they are at once."""
    way = _lossy_way()
    assert len(way) == 616
    live, other = MarioEnv("4-3"), MarioEnv("4-3")
    live.reset(), other.reset()
    run_start(live, way)
    other.restore(live.snapshot())
    assert np.array_equal(other.ram, live.ram) and np.array_equal(other.screen, live.screen)
    other.step_frame(0x80), live.step_frame(0x80)
    assert not np.array_equal(other.ram, live.ram)  # the state a snapshot leaves out
    assert _walk(way, CONTEXT_STEPS) == []
    assert _walk(way, CONTEXT_STEPS + 1) == [620]
    assert _walk(way[:612], CONTEXT_STEPS) == [612]
