"""Play inside a tiny model (headless, posted events) and dream against the real game."""

import os

import numpy as np
import pygame
import pytest
import torch
from PIL import Image

from conftest import make_store, run_cli, run_here
from mario_kit import UserError
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode
from mario_kit.datasets.ops import load_spawns, make_spawns
from mario_kit.datasets.validate import validate_dir
from mario_kit.world_model.programs.compare import CompareConfig, compare
from mario_kit.world_model.programs.world_model_env import WorldModelEnv
from mario_kit.world_model.programs.play import PlayConfig, play as play_window


def play(run, spawns, **kw):
    return play_window(PlayConfig(run=run, spawns=spawns, **kw))


def dream(run, episode, start, length, out, **kw):
    return compare(CompareConfig(run=run, episode=episode, start=start, length=length, out=out, **kw))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("play")
    make_store(d, episodes=3, seed=4)
    res = run_here(
        "train",
        "--store",
        d / "s.zarr",
        "--out",
        d / "run",
        "--config",
        "tiny",
        "--set",
        "stage=both",
        "--set",
        "max_steps=3",
        "-q",
    )
    assert res.returncode == 0, res.stderr
    make_spawns(d / "eps", d / "spawns.h5", n=2, seed=0)
    return d


def ev(kind, key):
    return pygame.event.Event(kind, key=key)


def test_play_with_posted_events_and_record(setup, tmp_path):
    D, U = pygame.KEYDOWN, pygame.KEYUP
    script = {
        0: [ev(D, pygame.K_RIGHT)],
        3: [ev(D, pygame.K_x)],
        5: [ev(U, pygame.K_x)],
        7: [ev(U, pygame.K_RIGHT)],
        8: [ev(D, pygame.K_RETURN)],
        10: [ev(D, pygame.K_LEFT)],
        12: [ev(D, pygame.K_ESCAPE)],
    }
    r = play(setup / "run", setup / "spawns.h5", sync=True, script=script, record=tmp_path / "rec")
    assert r.frames == 12
    # simple set: 1 right, 2 right+A, 0 NOOP, 6 left
    assert r.actions == [1, 1, 1, 2, 2, 1, 1, 0, 0, 0, 6, 6]
    rep = validate_dir(tmp_path / "rec")
    assert rep.ok and len(rep.good) == 2  # Enter started the second spawn: two episodes
    eps = sorted((Episode(p) for p in rep.good), key=lambda e: e.attrs["created"] + e.path.name)
    lengths = sorted(e.length for e in eps)
    assert lengths == [4, 8] and all(e.attrs["source"] == "world_model" for e in eps)
    assert sorted(a for e in eps for a in e.actions.tolist()) == sorted(r.actions)


def test_play_without_a_display_exits_2(setup):
    env = {k: v for k, v in os.environ.items() if k != "MARIO_KIT_KEYS"} | {"SDL_VIDEODRIVER": "dummy"}
    res = run_cli("play", "--run", setup / "run", "--spawn", setup / "spawns.h5", env=env, timeout=60)
    assert res.returncode == 2 and "needs a display" in res.stderr and res.stderr.count("\n") == 1


def test_play_on_a_stage_without_spawns_exits_2(setup, monkeypatch):
    monkeypatch.setenv("MARIO_KIT_KEYS", "escape@1")
    res = run_here("play", "--run", setup / "run", "--spawn", setup / "spawns.h5", "--level", "1-1,8-4")
    assert res.returncode == 0, res.stderr  # 1-1 has spawns
    res = run_here("play", "--run", setup / "run", "--spawn", setup / "spawns.h5", "--level", "8-4")
    assert res.returncode == 2 and res.stderr == "error: no spawn on 8-4: the spawns start on 1-1\n"


def test_play_headless_async_generates_at_its_own_pace(setup):
    r = play(
        setup / "run", setup / "spawns.h5", upsampler=False, fps=50, script={30: [ev(pygame.KEYDOWN, pygame.K_ESCAPE)]}
    )
    assert 1 <= r.frames <= 40 and r.model_fps > 0


def test_dream_real_half_is_exact_and_gif_has_the_frames(setup, tmp_path):
    p = Dataset(setup / "eps").paths[0]
    with Episode(p) as ep:
        start, steps = 6, min(10, ep.length - 6 + 1)
        recorded = ep.frames[start : start + steps]
    r = dream(setup / "run", p, start, steps, tmp_path / "d.gif")
    assert r.frames == steps
    assert np.array_equal(r.real, recorded)  # replay from reset rebuilt the real game exactly
    with Image.open(tmp_path / "d.gif") as im:
        assert im.n_frames == steps and im.size == (256 * 3 + 8, 12 + 240)  # a caption strip above the panes
        im.seek(0)
        first = np.asarray(im.convert("RGB"))
    assert (first[12:, :256] == recorded[0]).all(
        -1
    ).mean() > 0.95  # the left pane is the real game (GIF palette aside), under its caption
    assert first[:12].any()  # the captions are drawn
    rows = (tmp_path / "d.csv").read_text().strip().splitlines()
    assert len(rows) == steps + 1 and (tmp_path / "d.png").exists()
    res = run_here("dream", "--run", setup / "run", "--episode", p, "--start", "2", "--out", tmp_path / "x.gif")
    assert res.returncode == 2 and "--start" in res.stderr


def test_dream_steps_are_seeded_and_cuda_graphs_replay_the_eager_step(setup):
    sp = load_spawns(setup / "spawns.h5")
    ctx, acts = sp.low[0], sp.actions[0]

    def frames(seed, n=4, **kw):
        d = WorldModelEnv(setup / "run", steps=2, device=kw.pop("device", "cpu"), seed=seed, **kw)
        d.reset(ctx, acts)
        return np.stack([d.step(i % 3)[1] for i in range(n)])

    a, b, c = frames(0), frames(0), frames(1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)  # full-res frames, upsampler included
    assert not np.array_equal(frames(0, upsampler_steps=2), a)  # the tiny preset samples its upsampler in 1
    with pytest.raises(UserError, match="CUDA"):
        WorldModelEnv(setup / "run", device="cpu", cuda_graph=True)
    if torch.cuda.is_available():  # on a GPU: the graph gives the eager frames (bench/play.py checks it too)
        assert np.array_equal(frames(0, device="cuda", cuda_graph=True), frames(0, device="cuda", cuda_graph=False))


def test_a_run_with_another_n_context_plays_and_dreams_or_is_refused(setup, tmp_path):
    """n_context comes from the loaded model, not a constant: a 2-frame model dreams from step 2 and
    plays from 4-frame spawns (their last 2 frames); a start with fewer frames than it needs is refused."""
    res = run_here(
        "train",
        "--store",
        setup / "s.zarr",
        "--out",
        tmp_path / "run2",
        "--config",
        "tiny",
        "--set",
        "denoiser.n_context=2",
        "--set",
        "max_steps=2",
        "-q",
    )
    assert res.returncode == 0, res.stderr
    p = Dataset(setup / "eps").paths[0]
    r = dream(tmp_path / "run2", p, 2, 3, tmp_path / "d.gif", upsampler=False, progress=False)
    assert r.frames == 3
    with Episode(p) as ep:
        assert np.array_equal(r.real, ep.frames[2:5])
    keys = {0: [ev(pygame.KEYDOWN, pygame.K_RIGHT)], 3: [ev(pygame.KEYDOWN, pygame.K_ESCAPE)]}
    assert play(tmp_path / "run2", setup / "spawns.h5", upsampler=False, sync=True, script=keys).frames == 3
    sp = load_spawns(setup / "spawns.h5")
    d = WorldModelEnv(tmp_path / "run2", upsampler=False, device="cpu")
    with pytest.raises(UserError, match="2 past frames.*--context 2"):
        d.reset(sp.low[0][:1], sp.actions[0][:1])
    res = run_here("dream", "--run", tmp_path / "run2", "--episode", p, "--start", "1", "--out", tmp_path / "x.gif")
    assert res.returncode == 2 and "--start must be in 2.." in res.stderr


def test_dream_env_passes_gymnasium_check_env_and_steps_from_a_spawn(setup):
    from gymnasium.utils.env_checker import check_env

    from mario_kit.world_model import DreamEnv

    import warnings

    import gymnasium as gym
    import torch

    threads = torch.get_num_threads()
    env = DreamEnv(setup / "run", setup / "spawns.h5", upsampler=False, device="cpu", max_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: a spec (to make it again), spaces, seeding
        check_env(env, skip_render_check=True)
    assert env.threads == 1 and torch.get_num_threads() == threads  # steps on one thread, the caller's kept
    # a Gymnasium id: gym.make builds it (the module named in the id registers it)
    made = gym.make(
        "mario_kit.envs:mario_kit/Dream-v0",
        run=str(setup / "run"),
        spawns=str(setup / "spawns.h5"),
        upsampler=False,
        device="cpu",
        max_steps=10,
        threads=2,
    )
    assert made.spec.id == "mario_kit/Dream-v0" and made.unwrapped.threads == 2
    assert np.array_equal(made.reset(seed=3, options={"spawn": 1})[0], env.reset(seed=3, options={"spawn": 1})[0])
    a, b = made.step(1)[0].astype(int), env.step(1)[0].astype(int)
    assert np.abs(a - b).max() <= 1  # the same dream on 2 threads as on 1 (up to a sum's rounding order)
    obs, info = env.reset(seed=3, options={"spawn": 1})
    sp = load_spawns(setup / "spawns.h5")
    assert info["spawn"] == 1 and np.array_equal(obs, sp.full[1, -1]) and obs.shape == (240, 256, 3)
    frames = []
    for t in range(10):
        obs, reward, terminated, truncated, info = env.step(t % env.action_space.n)
        frames.append(obs)
        assert reward == 0.0 and not terminated and truncated == (t == 9) and obs.dtype == np.uint8
    env.reset(seed=3, options={"spawn": 1})
    again = [env.step(t % env.action_space.n)[0] for t in range(10)]
    assert all(np.array_equal(a, b) for a, b in zip(frames, again))  # the same seed, the same dream
    with pytest.raises(ValueError):
        env.step(env.action_space.n)
