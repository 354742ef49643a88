"""PPO agent: tiny training, resume, evaluation, and collecting with a random factor."""

import json

import numpy as np
import pytest

from conftest import run_here
from mario_kit.collectors import COLLECTORS
from mario_kit.agents.ppo import AgentConfig, load_agent, train_agent
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode

TINY = dict(workers=1, n_steps=128, batch_size=64, n_epochs=1, checkpoint_every=128, eval_every=10**9, eval_episodes=1)


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo") / "run"
    r = train_agent(AgentConfig(timesteps=256, **TINY), out, progress=False)
    assert r["timesteps"] == 256
    return out


def test_resume_continues_the_step_count(agent_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(agent_run, run)
    rows_before = (run / "logs" / "progress.csv").read_text().splitlines()
    r = train_agent(AgentConfig(timesteps=512, **TINY), run, resume=True, progress=False)
    assert r["timesteps"] == 512
    rows = (run / "logs" / "progress.csv").read_text().splitlines()  # appended, not overwritten (SB3 opens it "w")
    # old rows kept (SB3 widens them when new columns appear), new ones after them, one header
    assert all(new.startswith(old) for old, new in zip(rows_before, rows)) and len(rows) > len(rows_before)
    assert sum(r.startswith("time/") for r in rows) == 1
    model, rec = load_agent(run / "agent.zip")
    assert model.num_timesteps == 512 and rec["level"] == "1-1" and rec["action_set"] == "simple"
    steps = sorted(int(p.stem.split("_")[1]) for p in (run / "checkpoints").glob("ppo_*_steps.zip"))
    assert steps[-1] == 512 and 256 in steps
    with pytest.raises(Exception):
        train_agent(AgentConfig(timesteps=512, **TINY), run, resume=False, progress=False)


def test_ctrl_c_saves_the_agent_and_exits_130(tmp_path):
    """Ctrl-C reaches the whole process group (the env workers too): the run saves and says so."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mario_kit",
            "agent",
            "train",
            "--timesteps",
            "100000",
            "--workers",
            "2",
            "--set",
            "n_steps=64",
            "--set",
            "batch_size=64",
            "--set",
            "n_epochs=1",
            "--quiet",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    t0 = time.time()
    try:
        while (
            not (out / "logs" / "progress.csv").exists()
            or len((out / "logs" / "progress.csv").read_text().splitlines()) < 3
        ):
            assert time.time() - t0 < 300 and proc.poll() is None, (
                proc.communicate()[1] if proc.poll() is not None else "timeout"
            )
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: learner and workers alike
        printed, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed wait leaves no training behind
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "interrupted" in printed and "Traceback" not in err, err
    assert "stopping after the PPO update in progress" in err  # said at once: the update may take a while
    model, _ = load_agent(out / "agent.zip")
    assert model.num_timesteps >= 2 * 128  # the two logged updates at least


def test_eval_cli_and_bad_models(agent_run, tmp_path):
    res = run_here("agent", "eval", agent_run / "agent.zip", "--episodes", "1", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert set(r) == {"mean_return", "mean_max_x", "best_max_x", "completion_rate"} and r["best_max_x"] >= 40
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04junk")
    for path in (tmp_path / "x.zip", tmp_path / "missing.zip"):
        res = run_here("agent", "eval", path)
        assert res.returncode == 2 and res.stderr.startswith("error:")
    res = run_here(
        "collect",
        "--agent",
        "ppo",
        "--model",
        agent_run / "agent.zip",
        "--action-set",
        "right",
        "--episodes",
        "1",
        "--out",
        tmp_path / "c",
    )
    assert res.returncode == 2 and "action set" in res.stderr


def _collect(out, model, **kw):
    return COLLECTORS["ppo"](out=out, model=model, progress=False, seed=3, max_steps=60, **kw)


def test_random_factor_one_is_uniform_random(agent_run, tmp_path):
    _collect(tmp_path, agent_run / "agent.zip", random_factor=1.0, episodes=6)
    acts = np.concatenate([Episode(p).actions for p in Dataset(tmp_path).paths])
    over = np.concatenate([Episode(p).column("overridden") for p in Dataset(tmp_path).paths])
    assert over.all() and len(acts) >= 150
    share = np.bincount(acts, minlength=7) / len(acts)
    assert np.abs(share - 1 / 7).max() < 0.07  # a uniform draw over 7 actions
    assert all(Episode(p).attrs["policy"]["random_factor"] == 1.0 for p in Dataset(tmp_path).paths)


def test_random_factor_zero_matches_the_agents_own_predictions(agent_run, tmp_path):
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    from mario_kit.agents.ppo import make_env

    _collect(tmp_path, agent_run / "agent.zip", random_factor=0.0, episodes=1)
    (p,) = Dataset(tmp_path).paths
    model, rec = load_agent(agent_run / "agent.zip")
    with Episode(p) as ep:
        assert not ep.column("overridden").any() and ep.attrs["source"] == "agent"
        # an independent pipeline: gymnasium's own wrappers and SB3's frame stack, stepped with the recorded actions
        venv = VecFrameStack(DummyVecEnv([lambda: make_env("1-1", "simple", 4, monitor=False)]), 4)
        obs = venv.reset()
        for a in ep.actions:
            pred, _ = model.predict(obs, deterministic=True)
            assert int(pred[0]) == int(a)
            obs, _, done, _ = venv.step(np.array([a]))
            if done[0]:
                break
        venv.close()


def test_per_episode_factors_are_drawn_and_stored(agent_run, tmp_path):
    _collect(tmp_path, agent_run / "agent.zip", random_factor_range=(0.1, 0.4), episodes=3)
    eps = [Episode(p).attrs["policy"]["random_factor"] for p in Dataset(tmp_path).paths]
    assert len(set(eps)) == 3 and all(0.1 <= e <= 0.4 for e in eps)


def test_fast_grayscale_equals_gymnasiums_wrapper_bit_for_bit():
    from gymnasium.wrappers import GrayscaleObservation

    from mario_kit.agents.ppo import FastGrayscaleObservation, make_env

    env = make_env("1-1", "simple", 4, monitor=False)
    w = env
    while not isinstance(w, FastGrayscaleObservation):
        w = w.env
    ref = GrayscaleObservation(w.env, keep_dim=True)  # gymnasium's own, on the same inner env
    rng = np.random.default_rng(0)
    frame, _ = w.env.reset(seed=0)
    frames = [frame]
    for _ in range(60):
        frames.append(w.env.step(int(rng.integers(7)))[0])
    noise = rng.integers(0, 256, (240, 256, 3), dtype=np.uint8)
    noise[:40] = noise[:40, :, :1]  # grey pixels: r = g = b, where float rounding could bite
    for f in frames + [noise]:
        want = ref.observation(f)
        assert want.shape == (240, 256, 1) and np.array_equal(w.observation(f), want)
    env.close()


def test_training_rewards_are_scaled_after_the_monitor():
    from stable_baselines3.common.monitor import Monitor

    from mario_kit.agents.ppo import make_env

    raw = make_env("1-1", "simple", 4, monitor=False)
    scaled = make_env("1-1", "simple", 4, monitor=True, reward_scale=0.1)
    raw.reset(seed=0)
    scaled.reset(seed=0)
    total = 0.0
    for _ in range(40):  # the emulator is deterministic: the same actions give the same rewards
        _, r, done, cut, _ = raw.step(3)  # right + A
        s = scaled.step(3)[1]
        assert float(s) == pytest.approx(0.1 * float(r))
        total += float(r)
        if done or cut:
            break
    monitor = scaled.env
    assert isinstance(monitor, Monitor) and total > 50
    assert sum(monitor.rewards) == pytest.approx(total)  # logged returns stay in game units


def test_workers_close_after_an_interrupt_between_two_replies():
    """Ctrl-C can stop step_wait after it has read some workers' replies: closing must not wait
    for those again (SB3's own close() hangs there)."""
    import threading

    from mario_kit.agents.ppo import _vec_env, close_vec_env

    venv = _vec_env(AgentConfig(workers=2), 2, seed=0)
    venv.reset()
    inner = venv.unwrapped
    inner.step_async(np.zeros(2, dtype=np.int64))
    inner.remotes[0].recv()  # step_wait read the first reply, then the interrupt came
    done = threading.Event()
    t = threading.Thread(target=lambda: (close_vec_env(venv), done.set()), daemon=True)
    t.start()
    assert done.wait(60), "closing the vec env hung"
    assert inner.closed and not any(p.is_alive() for p in inner.processes)


def test_death_penalty_lands_on_the_death_step_only():
    """Walking right into the first Goomba kills Mario: the penalty is added on that step and no
    other (scaled with the rest), while a time-limit truncation is not a death."""
    from mario_kit.agents.ppo import make_env

    raw = make_env("1-1", "simple", 4, monitor=False)
    shaped = make_env("1-1", "simple", 4, monitor=True, reward_scale=0.1, death_penalty=50.0)
    raw.reset(seed=0)
    shaped.reset(seed=0)
    diffs, ends, total = [], [], 0.0
    for _ in range(400):
        _, r, done, cut, info = raw.step(1)  # right: walks into the Goomba
        s = shaped.step(1)
        total += float(r)
        diffs.append(float(s[1]) - 0.1 * float(r))
        ends.append((done, cut, info["flag_get"]))
        if done or cut:
            break
    assert ends[-1] == (True, False, False), "Mario should die at the first Goomba"
    assert diffs[-1] == pytest.approx(-5.0) and np.allclose(diffs[:-1], 0.0)
    assert sum(shaped.env.env.rewards) == pytest.approx(total)  # the Monitor logs game units, no penalty

    cut_env = make_env("1-1", "simple", 4, max_episode_steps=5, monitor=False, death_penalty=50.0)
    cut_env.reset(seed=0)
    for _ in range(5):
        _, r, done, cut, _ = cut_env.step(0)
    assert cut and not done and float(r) > -50


def test_cpu_ppo_rolls_out_on_one_thread_and_keeps_channels_last(agent_run):
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    from mario_kit.agents.ppo import make_env

    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # under `make test`'s workers torch starts with 1: the restore would go unseen
    seen = []

    class Record(BaseCallback):
        def _on_step(self) -> bool:
            seen.append(torch.get_num_threads())
            return True

    try:
        model, _ = load_agent(agent_run / "agent.zip", for_training=True)
        conv = model.policy.features_extractor.cnn[0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        saved = conv.detach().clone()
        model.set_env(VecFrameStack(DummyVecEnv([lambda: make_env("1-1", "simple", 4)]), 4))
        model.n_steps = model.rollout_buffer.buffer_size = 16
        model.set_logger(Logger(None, []))  # SB3's default logger would leave an SB3-<time> folder in /tmp
        model.learn(16, callback=Record(), reset_num_timesteps=False)
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2
    finally:  # a failure above must not leave the worker's later tests on 2 threads
        torch.set_num_threads(threads)
    assert model.policy.features_extractor.cnn[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain, _ = load_agent(agent_run / "agent.zip")  # the collector's load: plain SB3 PPO, same weights
    assert torch.equal(plain.policy.features_extractor.cnn[0].weight, saved)


def test_stochastic_evaluation_is_seeded_and_leaves_torchs_generator_alone(agent_run):
    import torch

    from mario_kit.agents.ppo import evaluate_agent

    model, rec = load_agent(agent_run / "agent.zip")
    rec = {**rec, "max_episode_steps": 150}  # a short episode is enough here
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = evaluate_agent(model, rec, episodes=2, deterministic=False, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    b = evaluate_agent(model, rec, episodes=2, deterministic=False, seed=5)
    assert a == b and set(a) == {"mean_return", "mean_max_x", "best_max_x", "completion_rate"}
    assert 0 < a["mean_max_x"] <= a["best_max_x"]
