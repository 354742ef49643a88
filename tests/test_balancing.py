"""Balancing strategies: decision rules, scenario keys, the persistent table, post-hoc weights."""

import numpy as np
import pytest

from conftest import run_cli, run_here
from mario_kit import UserError
from mario_kit.balancing import make_strategy
from mario_kit.balancing.hash import TABLE, load_table, merge_shards, scenario_key
from mario_kit.balancing.offline import balance_dataset
from mario_kit.datasets import format as F
from mario_kit.datasets.episode import EpisodeMeta, EpisodeWriter

SIMPLE = F.get_action_set("simple")
INFO = {"world": 1, "stage": 1, "x_pos": 100, "y_pos": 79, "status": "small"}


class Fixed:
    """A fake policy that plays a fixed sequence (cycled)."""

    source = "random"

    def __init__(self, seq):
        self.seq, self.t = list(seq), 0

    def reset(self, rng, n):
        pass

    def act(self, frame, info):
        a = self.seq[self.t % len(self.seq)]
        self.t += 1
        return a

    def params(self):
        return {"name": "fixed"}


def run(strategy, steps, info=INFO):
    strategy.reset(np.random.default_rng(0), 7)
    acts, over = [], []
    for _ in range(steps):
        acts.append(strategy.act(None, info))
        over.append(strategy.overridden)
    return acts, over


def test_repeat_rules():
    acts, over = run(make_strategy("repeat", Fixed([1]), SIMPLE, p=0.0), 20)
    assert acts == [1] * 20 and not any(over)
    acts, over = run(make_strategy("repeat", Fixed([1]), SIMPLE, p=1.0, k=3, target="NOOP"), 9)
    assert acts == [0] * 9 and all(over)
    acts, over = run(
        make_strategy("repeat", Fixed([6, 1, 1, 1, 1, 1]), SIMPLE, p=0.0, k=3, target="left", on_target=True), 6
    )
    assert acts == [6, 6, 6, 1, 1, 1] and over == [True] * 3 + [False] * 3
    s = make_strategy("repeat", Fixed([1]), SIMPLE, p=1.0, k=1, target="least")
    acts, _ = run(s, 700)
    assert np.bincount(acts, minlength=7).tolist() == [100] * 7  # steered to the uniform target exactly
    s = make_strategy("repeat", Fixed([1]), SIMPLE, p=0.2, k=[2, 5], target="NOOP,A")
    acts, over = run(s, 2000)
    runs = np.diff(np.flatnonzero(np.r_[True, np.diff(np.r_[-1, np.array(over, int), -1]) != 0]))
    assert set(np.array(acts)[over]) <= {0, 5} and 0.4 < np.mean(over) < 0.85
    assert s.params()["balance"]["strategy"] == "repeat" and s.params()["name"] == "fixed"
    del runs


def test_hash_rule_prefers_the_least_taken_action():
    s = make_strategy("hash", Fixed([1]), SIMPLE, p=1.0)
    acts, over = run(s, 14)
    assert sorted(acts[:7]) == list(range(7)) and sorted(acts[7:]) == list(range(7)) and all(over)
    s = make_strategy("hash", Fixed([1]), SIMPLE, p=0.0)
    acts, over = run(s, 10)
    assert acts == [1] * 10 and not any(over)
    # two scenarios are counted apart
    s = make_strategy("hash", Fixed([1]), SIMPLE, p=1.0)
    s.reset(np.random.default_rng(0), 7)
    a = [s.act(None, INFO) for _ in range(3)]
    b = [s.act(None, {**INFO, "x_pos": 900}) for _ in range(3)]
    assert len(set(a)) == 3 and len(set(b)) == 3 and len(s.table) == 2


def test_scenario_key_stable_and_discriminating():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 256, 3), dtype=np.uint8)
    k = scenario_key(frame, INFO)
    assert k == scenario_key(frame.copy(), dict(INFO))
    assert k == scenario_key(frame, {**INFO, "status": np.uint8(0)})  # the env's 'small' is code 0 in episode files
    assert scenario_key(frame, {**INFO, "x_pos": 110}) == k  # same 32-px bucket
    for other in ({"x_pos": 200}, {"stage": 2}, {"status": "tall"}, {"y_pos": 150}):
        assert scenario_key(frame, {**INFO, **other}) != k
    comps = ("level", "x", "screen")
    assert scenario_key(frame, INFO, comps) == scenario_key(frame.copy(), INFO, comps)
    assert scenario_key(frame, INFO, comps) != scenario_key(255 - frame, INFO, comps)


def test_table_survives_restart_and_workers_merge(tmp_path):
    a = make_strategy("hash", Fixed([1]), SIMPLE, p=0.0, table_dir=tmp_path)
    b = make_strategy("hash", Fixed([2]), SIMPLE, p=0.0, table_dir=tmp_path)
    run(a, 5)
    run(b, 3, {**INFO, "x_pos": 900})
    run(b, 2)
    a.close()
    b.close()
    assert merge_shards(tmp_path) == 2 and not list(tmp_path.glob("*shard*"))
    table, meta = load_table(tmp_path / TABLE)
    k1, k2 = scenario_key(None, INFO), scenario_key(None, {**INFO, "x_pos": 900})
    assert table[k1].tolist() == [0, 5, 2, 0, 0, 0, 0] and table[k2].tolist() == [0, 0, 3, 0, 0, 0, 0]
    c = make_strategy("hash", Fixed([1]), SIMPLE, p=1.0, table_dir=tmp_path)  # a later run sees the counts
    c.reset(np.random.default_rng(0), 7)
    assert c.act(None, INFO) not in (1, 2)
    with pytest.raises(UserError):
        make_strategy("hash", Fixed([1]), SIMPLE, p=1.0, table_dir=tmp_path, x_bucket=16)  # another key


def _synthetic(d, actions_per_episode, level: str = "1-1", x0: int = 40):
    """Episodes of the given actions, Mario moving 8 px a step from x0."""
    d.mkdir(parents=True, exist_ok=True)
    frame = np.zeros(F.FRAME_SHAPE, np.uint8)
    world, stage = map(int, level.split("-"))
    for acts in actions_per_episode:
        w = EpisodeWriter(d, EpisodeMeta(f"SuperMarioBros-{level}-v0", level, 4, SIMPLE, "random"))
        w.add_frame(frame)
        for t, a in enumerate(acts):
            info = {"world": world, "stage": stage, "x_pos": x0 + 8 * t, "y_pos": 79}
            w.add_step(int(a), frame, 0.0, False, False, info, [0] * 4)
        w.finish("truncated")


def test_balance_moves_a_skewed_dataset_toward_the_target(tmp_path):
    rng = np.random.default_rng(0)
    p = np.array([0.05, 0.5, 0.2, 0.1, 0.05, 0.05, 0.05])
    _synthetic(tmp_path / "d", [rng.choice(7, 200, p=p) for _ in range(5)])
    r = balance_dataset(tmp_path / "d", tmp_path / "w.npz", "class", max_weight=100.0)
    assert max(abs(v - 1 / 7) for v in r["after"].values()) < 1e-3  # uniform target reached
    assert r["entropy_bits_after"] > r["entropy_bits_before"] + 0.3
    r = balance_dataset(tmp_path / "d", tmp_path / "w2.npz", "class", max_weight=2.0)
    assert r["after"]["right"] < r["before"]["right"] and max(r["after"].values()) > 1 / 7 + 0.01  # clipped: part way
    r = balance_dataset(tmp_path / "d", tmp_path / "h.npz", "hash", cap=0.3)
    assert r["after"]["right"] < r["before"]["right"] - 0.1
    with np.load(tmp_path / "w.npz") as z:
        assert sum(z[k].size for k in z.files if k != "__meta__") == 1000
    r = balance_dataset(tmp_path / "d", tmp_path / "r.npz", "repeat", target="right", min_run=2, share=0.7)
    assert r["after"]["right"] == pytest.approx(0.7, abs=1e-3)


def test_place_weights_give_every_stage_and_x_bucket_an_even_share(tmp_path):
    """The place strategy: a stage's start played over and over, its far part and another stage once;
    weighted, each place (stage, 512-px bucket of x) draws the same share, within max_weight."""
    rng = np.random.default_rng(0)
    d = tmp_path / "d"
    _synthetic(d, [rng.choice(7, 64) for _ in range(6)], x0=0)  # 1-1 x 0-511: 384 steps
    _synthetic(d, [rng.choice(7, 64)], x0=2048)  # 1-1 x 2048-2559: 64 steps
    _synthetic(d, [rng.choice(7, 32)], level="1-2", x0=512)  # 1-2 x 512-767: 32 steps
    r = balance_dataset(d, tmp_path / "w.npz", "place")
    places = {(p["level"], p["x_from"]): p for p in r["places"]}
    assert set(places) == {("1-1", 0), ("1-1", 2048), ("1-2", 512)}
    assert [places[k]["steps"] for k in sorted(places)] == [384, 64, 32]
    assert places["1-1", 0]["before"] == pytest.approx(0.8)
    assert all(p["after"] == pytest.approx(1 / 3, abs=1e-3) for p in r["places"])
    with np.load(tmp_path / "w.npz") as z:
        w = np.concatenate([z[k] for k in sorted(z.files) if k != "__meta__"])
    assert w.mean() == pytest.approx(1, abs=1e-5) and w.max() == pytest.approx(480 / 3 / 32, rel=1e-4)
    # capped: no step above twice the mean, so the rare places gain, but less than evenly
    capped = {
        (p["level"], p["x_from"]): p["after"]
        for p in balance_dataset(d, tmp_path / "c.npz", "place", max_weight=2.0)["places"]
    }
    assert capped["1-2", 512] == pytest.approx(2 * 32 / 480, abs=1e-3) and capped["1-1", 0] < 0.8
    soft = balance_dataset(d, tmp_path / "s.npz", "place", power=0.5, max_weight=100.0)["places"]
    assert [p["after"] for p in soft] == sorted(p["after"] for p in soft)[::-1]  # more steps, still more samples
    assert balance_dataset(d, tmp_path / "b.npz", "place", x_bucket=4096)["places"][0]["steps"] == 448
    # through the command: the table of places and the one-line summary
    res = run_here("balance", d, "--strategy", "place", "--out", tmp_path / "cli.npz")
    assert res.returncode == 0 and "place: step shares" in res.stdout, res.stderr
    assert "3 places; after weighting each holds 33.3-33.3% of the samples" in res.stdout


def test_bad_strategies_and_parameters_exit_2(tmp_path):
    _synthetic(tmp_path / "d", [[1, 2, 3]])
    for args in (
        ["balance", tmp_path / "d", "--strategy", "nope", "--out", tmp_path / "w.npz"],
        ["balance", tmp_path / "d", "--strategy", "hash", "--set", "cap=2", "--out", tmp_path / "w.npz"],
        ["balance", tmp_path / "d", "--strategy", "class", "--set", "bogus=1", "--out", tmp_path / "w.npz"],
        ["balance", tmp_path / "d", "--strategy", "place", "--set", "power=2", "--out", tmp_path / "w.npz"],
        ["balance", tmp_path / "d", "--strategy", "place", "--set", "x_bucket=0", "--out", tmp_path / "w.npz"],
        ["balance", tmp_path / "d", "--strategy", "place", "--set", "max_weight=0.5", "--out", tmp_path / "w.npz"],
        ["collect", "--random", "--steps", "5", "--balance", "nope", "--out", tmp_path / "c"],
        [
            "collect",
            "--random",
            "--steps",
            "5",
            "--balance",
            "repeat",
            "--balance-set",
            "target=jump",
            "--out",
            tmp_path / "c",
        ],
    ):
        res = run_here(*args)
        assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr, (
            args,
            res.stderr,
        )


def test_build_takes_weights_only_for_the_dataset_they_were_computed_for(tmp_path):
    """A weights file names each episode's length and actions digest: `dataset build --weights`
    refuses it for another dataset, for an episode changed since, and a file that says nothing."""
    rng = np.random.default_rng(1)
    _synthetic(tmp_path / "a", [rng.choice(7, 30) for _ in range(3)])
    _synthetic(tmp_path / "b", [rng.choice(7, 30) for _ in range(3)])
    assert run_cli("balance", tmp_path / "a", "--out", tmp_path / "a.npz").returncode == 0
    ok = run_cli(
        "dataset", "build", tmp_path / "a", "--out", tmp_path / "a.zarr", "--weights", tmp_path / "a.npz", "-q"
    )
    assert ok.returncode == 0, ok.stderr
    res = run_cli("dataset", "build", tmp_path / "b", "--out", tmp_path / "b.zarr", "--weights", tmp_path / "a.npz")
    assert res.returncode == 2 and "computed for another dataset" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "b.zarr").exists()
    # an episode of a, replaced under the same name by one with other actions
    (first,) = sorted((tmp_path / "a").glob("*.h5"))[:1]
    other = sorted((tmp_path / "b").glob("*.h5"))[0]
    first.unlink()
    other.rename(first)
    res = run_cli("dataset", "build", tmp_path / "a", "--out", tmp_path / "a2.zarr", "--weights", tmp_path / "a.npz")
    assert res.returncode == 2 and first.name in res.stderr and "actions differ" in res.stderr
    np.savez(tmp_path / "bare.npz", **{first.name: np.ones(30, np.float32)})  # hand-made: says nothing
    res = run_cli("dataset", "build", tmp_path / "a", "--out", tmp_path / "a3.zarr", "--weights", tmp_path / "bare.npz")
    assert res.returncode == 2 and "does not say which episodes" in res.stderr


def test_collect_with_strategies_records_them(tmp_path):
    from mario_kit.collectors import CollectConfig, collect
    from mario_kit.datasets.dataset import Dataset
    from mario_kit.datasets.episode import Episode

    for name, kw in (("repeat", {"p": 0.2, "k": 4}), ("hash", {"p": 0.5})):
        d = tmp_path / name
        collect(CollectConfig(out=d, steps=150, seed=1, balance=name, balance_kwargs=kw), progress=False)
        eps = [Episode(p) for p in Dataset(d).paths]
        assert all(e.attrs["policy"]["balance"]["strategy"] == name for e in eps)
        over = np.concatenate([e.column("overridden") for e in eps])
        assert 0.1 < over.mean() < 0.9
    table, _ = load_table(tmp_path / "hash" / TABLE)
    assert sum(int(c.sum()) for c in table.values()) == 150
    # the keys recomputed from the episode files are the keys the live strategy counted
    from mario_kit.balancing.hash import episode_keys

    recorded = {k for p in Dataset(tmp_path / "hash").paths for k in episode_keys(Episode(p).info)[1:]}
    assert recorded <= set(table)
