"""Random collector, episode format round trip, replay, seeding, workers."""

import numpy as np
import pytest

from conftest import make_dataset, run_cli
from mario_kit.emulator import MarioEnv, replay, replay_to
from mario_kit.collectors.policies import RandomPolicy, StickyPolicy
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode


def test_roundtrip_matches_an_independent_env(small_dataset):
    """Step gymnasium's own JoypadSpace env with the recorded actions: frames, rewards and info
    must equal what the file holds."""
    import gymnasium as gym
    from gym_super_mario_bros.actions import SIMPLE_MOVEMENT
    from nes_py.wrappers import JoypadSpace

    paths = Dataset(small_dataset).paths
    assert len(paths) == 2
    for p in paths:
        with Episode(p) as ep:
            assert ep.attrs["schema_version"] == F.SCHEMA_VERSION
            assert ep.attrs["frame_skip"] == 4 and ep.attrs["level"] == "1-1"
            assert ep.action_set.buttons == tuple(tuple(b) for b in SIMPLE_MOVEMENT)
            T = ep.length
            assert ep.frames.shape == (T + 1, 240, 256, 3) and ep.actions.shape == (T,)
            env = JoypadSpace(gym.make("SuperMarioBros-1-1-v0"), SIMPLE_MOVEMENT)
            obs, _ = env.reset()
            assert np.array_equal(ep.frames[0], obs)
            for t, a in enumerate(ep.actions[: ep.played_steps]):  # gym's env stops at the end: no ending
                total = 0.0
                for _ in range(4):
                    obs, r, term, trunc, info = env.step(int(a))
                    total += r
                    if term or trunc:
                        break
                assert np.array_equal(ep.frames[t + 1], obs), f"frame {t + 1}"
                assert ep.rewards[t] == pytest.approx(total)
                assert ep.info["x_pos"][t] == info["x_pos"] and ep.info["time"][t] == info["time"]
                assert ep.info["status"][t] == F.STATUS_CODES[info["status"]]
                assert ep.info["left_x_pos"][t] == info["left_x_pos"]
            assert bool(term) == bool(ep.column(F.TERMINATED)[ep.played_steps - 1]) or ep.attrs["end"] == "truncated"
            env.close()


def test_replay_is_bit_exact(small_dataset):
    for p in Dataset(small_dataset).paths:
        with Episode(p) as ep:
            frames = ep.frames[()]
            replayed = list(replay(ep.attrs["level"], ep.joypad, ep.step_frames))
            assert len(replayed) == len(frames)
            for t, (frame, info) in enumerate(replayed):
                assert np.array_equal(frame, frames[t]), f"frame {t}"
                if t:
                    assert info["x_pos"] == ep.info["x_pos"][t - 1]


def test_same_seed_same_episodes_and_other_seed_differs(tmp_path, small_dataset):
    again = make_dataset(tmp_path / "a")
    first = Dataset(small_dataset).paths
    for p, q in zip(sorted(first, key=_index), sorted(again, key=_index)):
        with Episode(p) as a, Episode(q) as b:
            assert np.array_equal(a.actions, b.actions)
            assert np.array_equal(a.frames[()], b.frames[()])
    other = make_dataset(tmp_path / "b", seed=8)
    acts = lambda ps: sorted(tuple(Episode(p).actions) for p in ps)  # noqa: E731
    assert acts(other) != acts(first)


def _index(p):
    with Episode(p) as ep:
        return ep.attrs["extra"]["episode_index"]


def test_sticky_and_uniform_policy_statistics():
    n, N = 7, 40_000
    for p in (0.0, 0.8):
        pol = StickyPolicy(p)
        pol.reset(np.random.default_rng(0), n)
        a = np.array([pol.act(None, {}) for _ in range(N)])
        same = np.mean(a[1:] == a[:-1])
        assert same == pytest.approx(p + (1 - p) / n, abs=0.01)
        assert np.bincount(a, minlength=n) / N == pytest.approx(np.full(n, 1 / n), abs=0.02)
        # mean run length of a sticky policy is 1 / (1 - P(same))
        runs = np.diff(np.flatnonzero(np.r_[True, a[1:] != a[:-1], True]))
        assert runs.mean() == pytest.approx(1 / (1 - same), rel=0.05)
    pol = RandomPolicy()
    pol.reset(np.random.default_rng(1), 5)
    a = np.array([pol.act(None, {}) for _ in range(N)])
    assert np.mean(a[1:] == a[:-1]) == pytest.approx(0.2, abs=0.01)


def test_two_workers_write_the_same_episodes_as_one(tmp_path):
    one = make_dataset(tmp_path / "one", episodes=4, max_steps=25, seed=11)
    two = make_dataset(tmp_path / "two", episodes=4, max_steps=25, seed=11, workers=2)
    assert len(two) == 4 and len({p.name for p in two}) == 4
    key = lambda ps: sorted((_index(p), tuple(Episode(p).actions)) for p in ps)  # noqa: E731
    assert key(one) == key(two)


def test_steps_budget_is_exact_and_folder_appends(tmp_path):
    d = tmp_path / "d"
    cfg_paths = make_dataset(d, episodes=1, max_steps=10)
    from mario_kit.collectors import CollectConfig, collect

    res = collect(CollectConfig(out=d, steps=77, max_steps=30, seed=3), progress=False)
    assert res.steps == 77
    ds = Dataset(d)
    assert len(ds) == len(cfg_paths) + len(res.paths)
    assert ds.index["length"].sum() == 77 + Episode(cfg_paths[0]).length
    assert all(ds.index["length"] <= 30)


def test_the_same_command_again_continues_and_never_duplicates(tmp_path):
    """Re-running a seeded collection into its folder records nothing twice: what is there counts as
    done (and says so), a larger --episodes/--steps adds the episodes after it, another seed adds others."""
    args = ["collect", "--random", "--sticky", "0.8", "--max-steps", "20", "--seed", "1", "--out", tmp_path / "d", "-q"]
    assert run_cli(*args, "--episodes", "3").returncode == 0
    again = run_cli(*args, "--episodes", "3")
    assert (
        again.returncode == 0 and "already held 3 episodes" in again.stdout and "collected 0 episodes" in again.stdout
    )
    assert len(Dataset(tmp_path / "d")) == 3
    more = run_cli(*args, "--episodes", "5")
    assert more.returncode == 0 and "collected 2 episodes" in more.stdout, more.stdout + more.stderr
    fresh = make_dataset(tmp_path / "fresh", episodes=5, max_steps=20, seed=1)
    key = lambda ps: sorted((_index(p), tuple(Episode(p).actions)) for p in ps)  # noqa: E731
    assert key(Dataset(tmp_path / "d").paths) == key(fresh)  # the very episodes of one run of 5, none twice
    steps = ["collect", "--random", "--max-steps", "20", "--seed", "2", "--steps", "50", "--out", tmp_path / "s", "-q"]
    assert run_cli(*steps).returncode == 0 and run_cli(*steps).returncode == 0
    assert int(Dataset(tmp_path / "s").index["length"].sum()) == 50
    other = run_cli(*args[:-5], "--seed", "9", "--out", tmp_path / "d", "-q", "--episodes", "1")
    assert other.returncode == 0 and "collected 1 episode," in other.stdout and len(Dataset(tmp_path / "d")) == 6


def test_env_frame_skip_stops_at_episode_end():
    env = MarioEnv("1-1")
    env.reset()
    r = env.step(0, 4)
    assert len(r.joypad) == 4 and r.frame.shape == F.FRAME_SHAPE
    assert np.shares_memory(r.frame, env.screen)  # a view: no copy per step
    env.close()


def test_a_death_is_recorded_through_its_animation_and_replays(tmp_path):
    """The recording goes on after the first dying frame until the game leaves the stage:
    the end step is where `terminated` turns true, the ending's steps carry no reward, the frames move
    (Mario's death jump), and the replay export and import rebuild every frame. --ending-steps 0 gives
    the same episodes cut at the end step, as gym-super-mario-bros' stage envs end them."""
    paths = make_dataset(tmp_path / "d", episodes=3, max_steps=300, seed=3, ending_steps=64)  # room for all of it
    cut = make_dataset(tmp_path / "cut", episodes=3, max_steps=300, seed=3, ending_steps=0)
    for p, q in zip(paths, cut):
        with Episode(p) as ep, Episode(q) as old:
            assert ep.attrs["end"] == old.attrs["end"] == "terminated" and old.ending_steps == 0
            T, n = ep.length, ep.ending_steps
            assert 0 < n < 64 and ep.played_steps == old.length == T - n
            term = ep.column(F.TERMINATED)
            assert not term[: T - n - 1].any() and term[T - n - 1 :].all()
            assert (ep.rewards[T - n :] == 0).all() and ep.rewards[T - n - 1] < 0  # the death's penalty
            assert np.array_equal(ep.frames[: T - n + 1], old.frames[()]) and np.array_equal(
                ep.actions[: T - n], old.actions
            )
            ending = ep.frames[T - n :]
            assert len({f.tobytes() for f in ending}) > 10  # the animation moves (it also pauses)
            env = replay_to(ep.attrs["level"], ep.joypad, ep.step_frames, T)
            assert env.ended and env.ending_over()  # it stopped because the game left the stage
            env.close()
    exported = run_cli("dataset", "export", tmp_path / "d", "--format", "replay", "--out", tmp_path / "r")
    assert exported.returncode == 0, exported.stderr
    back = run_cli("dataset", "import", tmp_path / "r", "--format", "replay", "--out", tmp_path / "back")
    assert back.returncode == 0, back.stderr  # the import replays every frame and checks its digest
    for p in paths:
        with Episode(p) as ep, Episode(tmp_path / "back" / p.name) as again:
            assert again.ending_steps == ep.ending_steps and np.array_equal(again.frames[()], ep.frames[()])


def _flag_begin(env: MarioEnv):
    """The frozen world-1 data's shortest episode that reaches 1-1's flag, as a start: its way from
    reset and its steps (up to the flag)."""
    from pathlib import Path

    from mario_kit.collectors.frontier import Begin
    from mario_kit.datasets.interop.replay import parse_replay, read_replay
    from mario_kit.emulator import run_start

    path = Path(__file__).parents[1] / "bench/data/world1/replay.json.xz"
    flags = [
        e for e in parse_replay(read_replay(path), path) if e["attrs"]["end"] == "flag" and e["attrs"]["level"] == "1-1"
    ]
    e = min(flags, key=lambda e: e["attrs"]["length"] - e["attrs"].get("ending_steps", 0))
    start = np.asarray(e["arrays"][f"{F.EXTRA_GROUP}/{F.START_JOYPAD}"], np.uint8)
    _, info = env.reset()
    info = run_start(env, start) or info
    played = e["attrs"]["length"] - e["attrs"].get("ending_steps", 0)
    return Begin(env.screen.copy(), info, start, [int(a) for a in e["arrays"][F.ACTIONS][:played]])


@pytest.mark.parametrize("limit", [64, 200])
def test_the_flag_is_recorded_through_the_walk_into_the_castle(tmp_path, limit):
    """From a frozen episode that reaches 1-1's flag in a few steps: the slide and the walk into the castle
    follow (x grows past the pole), `end` is still `flag`, the limit caps the ending, and with room the
    ending stops where the game leaves the stage. Replay rebuilds it frame for frame."""
    from mario_kit.collectors.loop import record_episode
    from mario_kit.datasets.episode import EpisodeMeta, EpisodeWriter

    class WalkToFlag(RandomPolicy):
        def begin(self, env, action_set, frame_skip):
            self.walk = _flag_begin(env)
            return self.walk

    env = MarioEnv("1-1")
    meta = EpisodeMeta(env.env_id, "1-1", 4, F.get_action_set("simple"), "test")
    policy = WalkToFlag()
    with EpisodeWriter(tmp_path, meta) as w:
        end = record_episode(env, policy, w, np.random.default_rng(0), 4, 50, ending_steps=limit)
        path = w.finish(end)
    with Episode(path) as ep:
        n, T, k = ep.ending_steps, ep.length, len(policy.walk.steps)
        assert end == ep.attrs["end"] == "flag" and ep.played_steps == k
        assert ep.info["flag_get"][k - 1] and ep.info["x_pos"][-1] > ep.info["x_pos"][k - 1] + 16  # on to the castle
        assert n == 64 if limit == 64 else 64 < n < limit
        replayed = replay_to("1-1", ep.joypad, ep.step_frames, T, ep.start_joypad)
        assert np.array_equal(replayed.screen, ep.frames[T]) and replayed.ending_over() == (limit == 200)
        replayed.close()
    env.close()


@pytest.mark.parametrize("stop", ["cut", "quit"])
def test_a_player_who_stops_during_the_ending_keeps_the_whole_episode(tmp_path, stop):
    """The game had ended the episode: cutting or quitting during its ending keeps it as it ended
    (end=terminated, the ending so far), never as 'cut' with ending steps (a file no reader opens)."""
    from mario_kit.collectors.loop import CutEpisode, StopCollection, record_episode
    from mario_kit.datasets.episode import EpisodeMeta, EpisodeWriter

    class RightThenStop(RandomPolicy):
        def act(self, frame, info):
            self.calls = getattr(self, "calls", 0) + 1
            if self.dead and self.calls - self.dead == 3:
                raise CutEpisode() if stop == "cut" else StopCollection(keep=False)
            if info.get("is_dying") and not self.dead:
                self.dead = self.calls
            return 1  # right: into the first Goomba

        def reset(self, rng, n):
            super().reset(rng, n)
            self.dead = 0

    env = MarioEnv("1-1")
    meta = EpisodeMeta(env.env_id, "1-1", 4, F.get_action_set("simple"), "test")
    with EpisodeWriter(tmp_path, meta) as w:
        try:
            end = record_episode(env, RightThenStop(), w, np.random.default_rng(0), 4, 500, ending_steps=32)
        except StopCollection as e:
            assert stop == "quit" and e.end == "terminated"
            end = e.end
        path = w.finish(end)
    env.close()
    with Episode(path) as ep:  # opens: the attributes agree
        assert ep.attrs["end"] == "terminated" and ep.ending_steps == 3  # the acts before the stop


def test_a_start_cache_replays_frontier_episodes_exactly_as_from_reset(monkeypatch):
    """`StartCache` (how `import_replay` reaches frontier starts): one env a stage, reset not rebuilt,
    and a snapshot restored where the next start shares its beginning with the last one. Episodes of
    the frozen world-1 data with a long shared beginning give the same frames and info both ways."""
    from pathlib import Path

    from mario_kit.datasets.interop.replay import start_order, parse_replay, read_replay
    from mario_kit.emulator import SNAP_EVERY, StartCache

    path = Path(__file__).parents[1] / "bench/data/world1/replay.json.xz"
    eps = [e for e in parse_replay(read_replay(path), path) if e["attrs"]["level"] == "1-2"]
    eps = [eps[i] for i in start_order(eps)]
    starts = [np.asarray(e["arrays"].get(f"{F.EXTRA_GROUP}/{F.START_JOYPAD}", []), np.uint8) for e in eps]

    def shared(a: np.ndarray, b: np.ndarray) -> int:
        n = min(len(a), len(b))
        return int(np.argmin(np.append(a[:n] == b[:n], False)))

    k = next(i for i in range(1, len(eps)) if shared(starts[i - 1], starts[i]) >= 3 * SNAP_EVERY)
    restored = []
    monkeypatch.setattr(
        MarioEnv, "restore", lambda self, snap, f=MarioEnv.restore: restored.append(snap) or f(self, snap)
    )
    cache = StartCache()
    for e, start in zip(eps[k - 1 : k + 1], starts[k - 1 : k + 1]):
        jp, sf = e["arrays"][F.JOYPAD], e["arrays"][F.STEP_FRAMES]
        cached = [(f.copy(), dict(i)) for f, i in replay("1-2", jp, sf, start, cache)]
        fresh = [(f.copy(), dict(i)) for f, i in replay("1-2", jp, sf, start)]
        assert len(cached) == len(fresh) == e["attrs"]["length"] + 1
        for (fa, ia), (fb, ib) in zip(cached, fresh):
            assert np.array_equal(fa, fb) and ia == ib
    assert len(restored) == 1 and restored[0].frame_count >= 3 * SNAP_EVERY  # the second start's shared part
    assert len(cache._envs) == 1
