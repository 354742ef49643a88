"""The reward and end model, the dream that predicts rewards and ends, N dreams in one batch, and a
PPO agent trained inside them: real episodes with deaths, tiny real models, the CLI."""

import json
import warnings

import numpy as np
import pytest
import torch

from conftest import run_here
from mario_kit.datasets.episode import Episode
from mario_kit.datasets.ops import make_spawns
from mario_kit.datasets.split import add_assignments
from mario_kit.datasets.store import END_DEATH, END_FLAG, read_manifest, store_array
from mario_kit.world_model.model.checkpoint import load_checkpoint, path_of, save_atomic
from mario_kit.world_model.model.rewend import load_rewend
from mario_kit.world_model.training.rewend import score, split_steps


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Sticky-random 1-1 episodes with deaths, a store, a tiny denoiser and a reward and end model."""
    d = tmp_path_factory.mktemp("rewend")
    res = run_here("collect", "--random", "--sticky", "0.8", "--steps", "600", "--max-steps", "200", "--seed", "3",
                  "--out", d / "eps", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    # held out by content: the longest death and the shortest episode, so that the test split surely holds
    # a death (`dataset split` picks a fixed set for a seed, but blindly: a death there would be chance)
    lengths, ends = {}, {}
    for p in (d / "eps").glob("*.h5"):
        with Episode(p) as ep:
            lengths[p.name], ends[p.name] = ep.length, ep.attrs["end"]
    test = {max((f for f in lengths if ends[f] == "terminated"), key=lengths.get), min(lengths, key=lengths.get)}
    add_assignments(d / "eps", {f: "test" if f in test else "train" for f in lengths})
    assert run_here("dataset", "build", d / "eps", "--out", d / "s.zarr", "-q").returncode == 0
    res = run_here(
        "train", "--store", d / "s.zarr", "--out", d / "run", "--config", "tiny", "--set", "max_steps=2", "-q"
    )
    assert res.returncode == 0, res.stderr
    res = run_here("train", "--store", d / "s.zarr", "--out", d / "run", "--config", "tiny", "--set", "stage=rewend",
                  "--set", "rewend.steps=150", "--set", "rewend.batch_size=32", "--set", "rewend.channels=[16,32,32]")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "rewend: 150 steps" in res.stdout and "death precision/recall" in res.stdout
    make_spawns(d / "eps", d / "spawns.h5", n=3, seed=0)
    return d


def test_the_store_keeps_each_steps_reward_and_the_step_that_ended_the_episode(setup):
    m = read_manifest(setup / "s.zarr")
    rewards, ends = store_array(setup / "s.zarr", "rewards")[:], store_array(setup / "s.zarr", "ends")[:]
    deaths = 0
    for e in m["episodes"]:
        with Episode(setup / "eps" / e["file"]) as ep:
            r, term = ep.column("rewards"), ep.column("terminated").astype(bool)
            s, n = e["start"], e["frames"]
            assert np.array_equal(rewards[s : s + n - 1], r) and rewards[s + n - 1] == 0
            expect = np.zeros(n, np.uint8)
            if term.any():
                expect[int(np.argmax(term))] = END_FLAG if ep.attrs["end"] == "flag" else END_DEATH
                deaths += ep.attrs["end"] == "terminated"
            assert np.array_equal(ends[s : s + n], expect)
    assert deaths >= 2  # the seed's episodes die: the end head has something to learn


def test_rewend_trains_from_the_cli_and_predicts_rewards_better_than_zero(setup):
    scores = json.loads((setup / "run" / "rewend.json").read_text())
    assert scores["steps"] == 150 and scores["config"]["channels"] == [16, 32, 32]
    t = scores["test"]
    assert t["steps"] > 100 and t["deaths"] >= 1 and 0 <= t["end_accuracy"] <= 1
    assert t["zero_reward_mae"] > 0 and t["no_end_accuracy"] > 0.9
    model, meta = load_rewend(setup / "run")
    assert meta["action_set"] == "simple" and meta["step"] == 150
    train = split_steps(setup / "s.zarr", "train", model.cfg.n_context)
    fitted = score(model, train, torch.device("cpu"))
    assert fitted.reward_mae < fitted.zero_reward_mae  # it learned the reward of the steps it saw
    res = run_here("evaluate", setup / "run", "--store", setup / "s.zarr", "--windows", "2", "--rollouts", "1",
                  "--horizons", "1", "--place-windows", "0", "--out", setup / "ev", "--device", "cpu")  # fmt: skip
    assert res.returncode == 0, res.stderr
    scored = json.loads((setup / "ev" / "evaluation.json").read_text())["rewend"]
    assert scored == {k: v for k, v in t.items() if v is not None}  # the same test steps (nulls left out)
    # a second model into the same run is refused without --force; a model of a store built
    # before rewards were kept is refused with what to do
    res = run_here("train", "--store", setup / "s.zarr", "--out", setup / "run", "--config", "tiny",
                  "--set", "stage=rewend", "--set", "rewend.steps=1")  # fmt: skip
    assert res.returncode == 2 and "--force replaces it" in res.stderr


def test_a_store_without_rewards_is_refused_in_one_line(setup, tmp_path):
    import shutil

    import zarr

    old = tmp_path / "old.zarr"
    shutil.copytree(setup / "s.zarr", old)
    g = zarr.open_group(str(old), mode="r+")
    m = dict(g.attrs["mario_kit_store"])
    del m["rewend"]
    g.attrs["mario_kit_store"] = m
    res = run_here("train", "--store", old, "--out", tmp_path / "r", "--set", "stage=rewend", "--set", "rewend.steps=1")
    assert res.returncode == 2 and "rebuild it with --force" in res.stderr and "Traceback" not in res.stderr


def _always(setup, tmp_path, cls: int):
    """A copy of the run whose reward and end model always predicts end class `cls`."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(setup / "run", run)
    ck = load_checkpoint(path_of(run, "rewend"))
    bias = ck["model"]["head.2.bias"]
    bias[1 + cls] += 1e4
    save_atomic(ck, path_of(run, "rewend"))
    return run


def test_dream_env_returns_predicted_rewards_and_ends_on_a_predicted_death(setup, tmp_path):
    from gymnasium.utils.env_checker import check_env

    from mario_kit.world_model import DreamEnv

    env = DreamEnv(setup / "run", setup / "spawns.h5", device="cpu", max_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(1)
    assert info["predicted"] and isinstance(reward, float) and reward != 0.0
    assert terminated == (info["end"] is not None)
    dying = DreamEnv(_always(setup, tmp_path, END_DEATH), setup / "spawns.h5", device="cpu", max_steps=10)
    dying.reset(seed=0)
    _, _, terminated, truncated, info = dying.step(1)
    assert terminated and not truncated and info["end"] == "death" and not info["flag_get"]


def test_dream_vec_env_steps_n_dreams_resets_on_ends_and_is_seeded(setup, tmp_path):
    from mario_kit.world_model.programs.dream_vec_env import DreamVecEnv

    def rollout(run, steps=4):
        v = DreamVecEnv(3, run, setup / "spawns.h5", device="cpu", max_steps=3, seed=0)
        v.seed(7)
        out = [v.reset()]
        for t in range(steps):
            obs, rewards, dones, infos = v.step(np.array([0, 1, 2]))
            out.append((obs, rewards, dones, infos))
        return out

    a, b = rollout(setup / "run"), rollout(setup / "run")
    assert a[0].shape == (3, 240, 256, 3) and np.array_equal(a[0], b[0])
    # bfloat16 by default where the CPU has bf16 arithmetic (several times faster there), fp32 on request
    from mario_kit.hardware import fast_bf16

    v = lambda **kw: DreamVecEnv(1, setup / "run", setup / "spawns.h5", device="cpu", **kw).dream  # noqa: E731
    assert (v().amp is not None) == fast_bf16("cpu") and v(bf16=False).amp is None and v(bf16=True).amp is not None
    for (oa, ra, da, ia), (ob, rb, db, _) in zip(a[1:], b[1:]):
        assert np.array_equal(oa, ob) and np.array_equal(ra, rb) and np.array_equal(da, db)  # same seed, same dreams
        assert all(i["predicted"] for i in ia)
    # without a predicted end each dream is truncated at max_steps (3) and starts again from a spawn
    ends = [(d, i) for _, _, d, i in a[1:]]
    for t, (d, infos) in enumerate(ends):
        for k in range(3):
            if infos[k]["end"] is None:
                assert d[k] == (t == 2) == infos[k]["TimeLimit.truncated"]
    dying = rollout(_always(setup, tmp_path, END_DEATH), steps=1)
    obs, _, dones, infos = dying[1]
    assert dones.all() and all(i["end"] == "death" and "terminal_observation" in i for i in infos)
    assert all(i["terminal_observation"].shape == (240, 256, 3) for i in infos)


def test_a_ppo_agent_trained_in_the_dream_loads_in_agent_eval_and_plain_sb3(setup, tmp_path):
    from stable_baselines3 import PPO

    small = "--timesteps 64 --workers 4 --set n_steps=16 --set batch_size=32 --set n_epochs=1 --eval-every 100000"
    short = "--set max_episode_steps=6"  # episodes end: the file keeps their records
    dream = ["--dream", "--run", setup / "run", "--spawn", setup / "spawns.h5", "--out", tmp_path / "ag"]
    res = run_here("agent", "train", *dream, *small.split(), *short.split(), "-q")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "ag" / "dream.json").read_text())["run"] == str(setup / "run")
    res = run_here("agent", "eval", tmp_path / "ag" / "agent.zip", "--episodes", "1", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["mean_max_x"] > 0  # scored in the real game
    model = PPO.load(tmp_path / "ag" / "agent.zip", device="cpu")
    assert model.observation_space.shape == (4, 84, 84) and model.num_timesteps == 64  # channels first in SB3
    assert len(model.ep_info_buffer) >= 4 and all(isinstance(e["r"], float) for e in model.ep_info_buffer)
    # --run without --dream is refused; a run without a reward and end model too
    res = run_here("agent", "train", "--run", setup / "run", "--out", tmp_path / "x")
    assert res.returncode == 2 and "--dream" in res.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "denoiser.pt").write_bytes((setup / "run" / "denoiser.pt").read_bytes())
    (bare / "config.json").write_text((setup / "run" / "config.json").read_text())
    res = run_here("agent", "train", "--dream", "--run", bare, "--spawn", setup / "spawns.h5", "--out", tmp_path / "y")
    assert res.returncode == 2 and "stage=rewend" in res.stderr
