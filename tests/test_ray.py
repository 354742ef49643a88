"""collect --ray on a local Ray (2 CPUs): the same episodes as --workers, a killed worker's episode
retried without a duplicate, Ctrl-C, the shared-storage check, the shared hash table, the missing extra.

One Ray instance serves the module: tests in this process use it directly, CLI runs join it with
--ray-address (a fresh `ray.init` costs about 8 s, joining about 2)."""

import importlib.util
import json
import os
import signal
import subprocess
from typing import Any
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_cli

from mario_kit import UserError
from mario_kit.collectors import CollectConfig, collect

if importlib.util.find_spec("ray") is None:  # the dev extra installs it; the missing-extra test fakes its absence
    pytest.skip("Ray is not installed (pip install 'mario-kit[ray]')", allow_module_level=True)
ray = None  # imported by the fixture, not at collection: importing Ray changes sys.path for every test


@pytest.fixture(scope="module")
def cluster():
    global ray
    import ray as ray_module

    ray = ray_module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def episodes_by_index(folder: Path) -> dict[int, tuple[dict, dict]]:
    """Every episode's attributes (but the creation time) and arrays, by episode index."""
    out = {}
    for f in sorted(folder.glob("*.h5")):
        with h5py.File(f) as h:
            attrs = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in h.attrs.items() if k != "created"}
            data: dict[str, Any] = {}
            h.visititems(lambda n, o: data.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        i = json.loads(attrs["extra"])["episode_index"]
        assert i not in out, f"episode {i} twice in {folder}"
        out[i] = (attrs, data)
    return out


def assert_same_episodes(a: Path, b: Path) -> int:
    ea, eb = episodes_by_index(a), episodes_by_index(b)
    assert sorted(ea) == sorted(eb)
    for i in ea:
        assert ea[i][0] == eb[i][0], i
        assert ea[i][1].keys() == eb[i][1].keys()
        for k in ea[i][1]:
            assert np.array_equal(ea[i][1][k], eb[i][1][k]), (i, k)
    return sum(v[0]["length"] for v in ea.values())


STEPS = ["--random", "--sticky", "0.8", "--steps", "500", "--max-steps", "300", "--seed", "11", "-q"]


def test_ray_gives_the_episodes_of_one_worker(tmp_path, cluster):
    """--steps: the budget is spent in episode order and the last episode cut exactly where one
    worker cuts it, so the files equal a single worker's (creation times aside)."""
    r = run_cli("collect", *STEPS, "--out", tmp_path / "ray", "--ray", "--ray-address", cluster)
    assert r.returncode == 0, r.stderr
    assert "500 steps" in r.stdout
    collect(
        CollectConfig(
            out=tmp_path / "one", policy="sticky", policy_kwargs={"p": 0.8}, steps=500, max_steps=300, seed=11
        ),
        progress=False,
    )
    assert assert_same_episodes(tmp_path / "ray", tmp_path / "one") == 500
    ray = episodes_by_index(tmp_path / "ray")
    whole = CollectConfig(out=tmp_path / "whole", policy="sticky", policy_kwargs={"p": 0.8}, max_steps=300, seed=11)
    whole.episodes = len(ray)
    collect(whole, progress=False)  # the same episodes, no budget to cut the last one
    lengths = {i: v[0]["length"] for i, v in episodes_by_index(tmp_path / "whole").items()}
    last = max(ray)
    assert all(ray[i][0]["length"] == lengths[i] for i in ray if i != last) and ray[last][0]["length"] < lengths[last]
    # the same command again: every episode is already there, none is recorded twice
    r = run_cli("collect", *STEPS, "--out", tmp_path / "ray", "--ray", "--ray-address", cluster)
    assert r.returncode == 0 and "collected 0 episodes" in r.stdout and "already held" in r.stdout, r.stdout + r.stderr
    assert assert_same_episodes(tmp_path / "ray", tmp_path / "one") == 500


def test_ray_episodes_equal_workers_and_shared_writes(tmp_path, cluster):
    """--episodes: the same files from --workers 2 and from Ray tasks writing into the folder."""
    kw = dict(policy="sticky", policy_kwargs={"p": 0.8}, episodes=4, max_steps=120, seed=3)
    collect(CollectConfig(out=tmp_path / "w", workers=2, **kw), progress=False)
    res = collect(CollectConfig(out=tmp_path / "r", ray=True, ray_write="shared", **kw), progress=False)
    assert len(res.paths) == 4 and all(p.parent == (tmp_path / "r").resolve() for p in res.paths)
    assert assert_same_episodes(tmp_path / "w", tmp_path / "r") == res.steps
    assert not list((tmp_path / "r").glob(".mario-kit-ray-probe-*"))


def test_shared_storage_check_names_the_blind_node(tmp_path, cluster):
    from mario_kit.collectors.distributed import check_shared_storage

    check_shared_storage(ray, tmp_path)  # every node of this cluster sees the folder
    with pytest.raises(UserError, match="do not see"):
        check_shared_storage(ray, tmp_path, sees=lambda path, token: False)  # as a node without the mount


def test_killed_worker_episode_is_retried_once(tmp_path, cluster):
    """SIGKILL of a worker in the middle of an episode: Ray runs it again; the folder ends equal to
    a clean run's, episode for episode, with no duplicate and no .partial."""
    args = ["--random", "--sticky", "0.8", "--episodes", "6", "--max-steps", "300", "--seed", "1", "-q"]
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mario_kit",
            "collect",
            *args,
            "--out",
            str(tmp_path / "k"),
            "--ray",
            "--ray-address",
            cluster,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    deadline = time.time() + 60
    while killed is None and time.time() < deadline and p.poll() is None:
        for d in Path("/proc").iterdir():
            try:
                if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::run_episode"):
                    time.sleep(0.3)  # well into the episode
                    os.kill(int(d.name), signal.SIGKILL)
                    killed = int(d.name)
                    break
            except (OSError, ProcessLookupError):
                continue
        time.sleep(0.05)
    out, err = p.communicate(timeout=120)
    assert killed is not None, "no episode task was seen running"
    assert p.returncode == 0, err
    r = run_cli("collect", *args, "--out", tmp_path / "clean", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert assert_same_episodes(tmp_path / "k", tmp_path / "clean") > 0
    assert not list((tmp_path / "k").glob("*.partial"))


def test_ctrl_c_keeps_finished_episodes(tmp_path, cluster):
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mario_kit",
            "collect",
            "--random",
            "--episodes",
            "200",
            "--max-steps",
            "200",
            "--seed",
            "2",
            "-q",
            "--out",
            str(tmp_path / "c"),
            "--ray",
            "--ray-address",
            cluster,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not list((tmp_path / "c").glob("*.h5")) and time.time() < deadline:
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    kept = episodes_by_index(tmp_path / "c")
    assert 1 <= len(kept) < 200 and f"collected {len(kept)} episode" in out
    assert not list((tmp_path / "c").glob("*.partial"))
    r = run_cli("dataset", "validate", tmp_path / "c")
    assert r.returncode == 0, r.stdout + r.stderr


def test_two_workers_steer_by_one_shared_table(tmp_path, cluster):
    """`hash` with p=1 always takes the least-taken action of the scenario. Through the shared
    table each worker's episode avoids what the other took, so every scenario's counts stay within
    one of each other; with the table not shared (each worker its own) they do not."""
    from mario_kit.balancing.hash import HashStrategy
    from mario_kit.collectors.distributed import _ActorExchange, _HashTable, pack, unpack
    from mario_kit.collectors.collect import episode_rng
    from mario_kit.collectors.loop import record_episode
    from mario_kit.collectors.policies import StickyPolicy
    from mario_kit.datasets import format as F
    from mario_kit.datasets.episode import EpisodeMeta, EpisodeWriter
    from mario_kit.emulator import MarioEnv

    aset = F.get_action_set("simple")
    env = MarioEnv("1-1")
    meta = EpisodeMeta(env_id="SuperMarioBros-1-1-v0", level="1-1", frame_skip=4, action_set=aset, source="random")
    spread = {}
    for share in (True, False):
        actor = ray.remote(_HashTable).remote({})
        workers = [
            HashStrategy(StickyPolicy(0.8), aset, p=1.0, exchange=_ActorExchange(actor, share)) for _ in range(2)
        ]
        steps = 0
        for i in range(4):  # episodes 0..3, the workers taking turns
            s = workers[i % 2]
            with EpisodeWriter(tmp_path, meta) as w:
                record_episode(env, s, w, episode_rng(0, i), 4, 150)
                steps += w.n_steps
                w.discard()
            s.flush()
        table = unpack(*ray.get(actor.exchange.remote(pack({}), -1))[1])
        assert sum(int(c.sum()) for c in table.values()) == steps  # every count handed in, once
        spread[share] = [int(c.max() - c.min()) for c in table.values()]
    env.close()
    assert max(spread[True]) == 1
    assert max(spread[False]) == 2 and spread[False].count(2) >= 5


def test_hash_counts_of_a_ray_collection_reach_the_folder_table(tmp_path, cluster):
    from mario_kit.balancing.hash import TABLE, load_table

    r = run_cli(
        "collect",
        "--random",
        "--episodes",
        "3",
        "--max-steps",
        "80",
        "--seed",
        "4",
        "--balance",
        "hash",
        "--out",
        tmp_path / "h",
        "--ray",
        "--ray-address",
        cluster,
        "-q",
    )
    assert r.returncode == 0, r.stderr
    table, meta = load_table(tmp_path / "h" / TABLE)
    steps = sum(v[0]["length"] for v in episodes_by_index(tmp_path / "h").values())
    assert sum(int(c.sum()) for c in table.values()) == steps and meta["n_actions"] == 7
    assert not list((tmp_path / "h").glob("mario-kit.balance-hash.shard-*"))


def test_frontier_on_ray_grows_one_archive_and_its_episodes_replay(tmp_path, cluster):
    """--frontier --ray: the tasks hand their cells to one actor and take each other's; the driver
    writes the cluster's archive into the folder (seeded from it on the next run). Every episode,
    some starting at cells another task found, replays from the stage's reset bit for bit."""
    from mario_kit.collectors.frontier import ARCHIVE, cell_key
    from mario_kit.datasets.dataset import Dataset
    from mario_kit.datasets.episode import Episode
    from mario_kit.emulator import replay

    out = tmp_path / "fr"
    common = ["--frontier", "--seed", "1", "--out", out, "--ray", "--ray-address", cluster, "-q"]
    assert (r := run_cli("collect", "--steps", "800", *common)).returncode == 0, r.stderr
    assert [p.name for p in out.glob("mario-kit.frontier*.json")] == [ARCHIVE]
    first = {c["key"] for c in json.loads((out / ARCHIVE).read_text())["cells"]}
    visited, returned = set(), 0
    for path in Dataset(out).paths:
        with Episode(path) as ep:
            level, x, y = ep.attrs["level"], ep.info["x_pos"], ep.info["y_pos"]
            visited |= {cell_key(level, {"x_pos": x[t], "y_pos": y[t]}) for t in range(ep.played_steps - 1)}
            returned += ep.start_joypad is not None
            frames = [f for f, _ in replay(level, ep.joypad, ep.step_frames, ep.start_joypad)]
            assert len(frames) == ep.length + 1
            assert all(np.array_equal(f, ep.frames[t]) for t, f in enumerate(frames)), path.name
    assert returned >= 3 and visited <= first  # every place any task reached is in the one archive
    assert (r := run_cli("collect", "--steps", "1600", *common)).returncode == 0, r.stderr
    assert "already held" in r.stdout
    assert first < {c["key"] for c in json.loads((out / ARCHIVE).read_text())["cells"]}


def test_without_ray_the_flag_says_how_to_get_it(tmp_path):
    fake = tmp_path / "site"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = run_cli("collect", "--random", "--episodes", "1", "--out", tmp_path / "x", "--ray", env=env)
    assert r.returncode == 2
    assert "pip install 'mario-kit[ray]'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_agent_collector_on_ray_matches_one_worker(tmp_path, cluster):
    """The agent file travels through the object store; the episodes equal one worker's and
    name the file the user gave."""
    from mario_kit.agents.ppo import AgentConfig, train_agent
    from mario_kit.collectors import collect_agent

    train_agent(
        AgentConfig(
            timesteps=128,
            workers=1,
            n_steps=128,
            batch_size=64,
            n_epochs=1,
            checkpoint_every=128,
            eval_every=10**9,
            eval_episodes=1,
        ),
        tmp_path / "run",
        progress=False,
    )
    kw = dict(model=tmp_path / "run" / "agent.zip", random_factor=0.2, episodes=2, max_steps=60, seed=4, progress=False)
    collect_agent(tmp_path / "one", **kw)
    collect_agent(tmp_path / "ray", ray=True, **kw)
    assert assert_same_episodes(tmp_path / "one", tmp_path / "ray") > 0
    policy = json.loads(next(iter(episodes_by_index(tmp_path / "ray").values()))[0]["policy"])
    assert policy["model"] == str(tmp_path / "run" / "agent.zip")


def test_a_cluster_that_does_not_answer_fails_at_once(tmp_path):
    t = time.time()
    r = run_cli(
        "collect", "--random", "--episodes", "1", "--out", tmp_path / "x", "--ray", "--ray-address", "127.0.0.1:1"
    )
    assert (
        r.returncode == 2 and "cannot reach the Ray cluster at 127.0.0.1:1" in r.stderr and "Traceback" not in r.stderr
    )
    assert time.time() - t < 30 and not (tmp_path / "x").exists()


def test_hash_table_answers_with_the_changes_since_a_version(monkeypatch):
    """The actor's class alone: a caller gets the keys changed after its version; one further behind
    than the kept log gets the whole table; counts add up."""
    from mario_kit.collectors.distributed import _HashTable, pack, unpack

    monkeypatch.setattr(_HashTable, "KEEP", 3)
    h = _HashTable({7: np.array([1, 0])})
    v0, full = h.exchange(pack({}), -1)
    assert v0 == 0 and unpack(*full).keys() == {7}
    for i in range(10):
        v, _ = h.exchange(pack({i: np.array([1, 2])}), None)
    assert v == 10
    _, recent = h.exchange(pack({9: np.array([1, 0])}), 9)
    assert {k: c.tolist() for k, c in unpack(*recent).items()} == {9: [2, 2]}
    _, behind = h.exchange(pack({}), v0)  # its version fell out of the log: everything
    assert unpack(*behind).keys() == set(range(10)) | {7}
    assert {k: c.tolist() for k, c in unpack(*h.counts_added()).items()}[9] == [2, 2]
