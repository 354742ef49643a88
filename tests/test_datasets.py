"""Dataset engineering: split, merge, filter, seed import/export, the zarr store, loader, spawns."""

import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import zarr
import gymnasium as gym
from pathlib import Path

from conftest import make_dataset, run_cli, run_here
from mario_kit import UserError
from mario_kit.emulator import replay
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode
from mario_kit.datasets.interop.seed import EXPORT_ATTR, export_seed, import_seed
from mario_kit.datasets.loader import WindowDataset, epoch_batches
from mario_kit.datasets.ops import Filter, filter_dataset, load_spawns, make_spawns, merge
from mario_kit.datasets.split import play_digest, read_split, split_dataset
from mario_kit.datasets.store import ATTR, build_store, downsample


@pytest.fixture(scope="module")
def eight(tmp_path_factory):
    d = tmp_path_factory.mktemp("eight")
    make_dataset(d, episodes=8, max_steps=12, seed=5)
    return d


def test_split_is_deterministic_stable_and_by_episode(tmp_path, eight):
    d = tmp_path / "d"
    shutil.copytree(eight, d)
    a = split_dataset(d, 25, seed=1)
    assert sorted(a) == sorted(p.name for p in Dataset(d).paths)
    assert sum(v == "test" for v in a.values()) == 2
    assert split_dataset(d, 25, seed=1, reset=True) == a
    a = split_dataset(d, 25, seed=1, reset=True, txt=tmp_path / "test_split.txt")
    assert (tmp_path / "test_split.txt").read_text().split() == sorted(f for f, s in a.items() if s == "test")
    make_dataset(d, episodes=4, max_steps=12, seed=6)  # later episodes: old assignments stay
    b = split_dataset(d, 25, seed=1)
    assert {f: b[f] for f in a} == a and len(b) == 12 and sum(v == "test" for v in b.values()) == 3
    # no window of the test split comes from a train episode
    build_store(d, tmp_path / "s.zarr", progress=False)
    test = WindowDataset(tmp_path / "s.zarr", split="test")
    train = WindowDataset(tmp_path / "s.zarr", split="train")
    m = test.m["episodes"]
    owner = lambda g: next(e["file"] for e in m if e["start"] <= g < e["start"] + e["frames"])  # noqa: E731
    assert {b[owner(g)] for g in test.targets} == {"test"}
    assert {b[owner(g)] for g in train.targets} == {"train"}
    assert len(test) + len(train) == sum(e["frames"] - 1 for e in m)


def test_the_same_seed_splits_a_recollection_the_same_way(tmp_path, eight):
    """Collecting again with the same seed gives the same episodes under other file names (a time
    and a random id): the split follows the play, not the name."""
    again = tmp_path / "again"
    make_dataset(again, episodes=8, max_steps=12, seed=5)
    assert not {p.name for p in Dataset(again).paths} & {p.name for p in Dataset(eight).paths}
    d = tmp_path / "d"
    shutil.copytree(eight, d)
    by_play = []
    for folder in (d, again):
        split = split_dataset(folder, 25, seed=1)
        by_play.append({play_digest(folder / f): s for f, s in split.items()})
    assert by_play[0] == by_play[1] and len(by_play[0]) == 8
    assert sorted(by_play[0].values()).count("test") == 2
    other = {play_digest(d / f): s for f, s in split_dataset(d, 25, seed=2, reset=True).items()}
    assert other != by_play[0]  # another seed, another split (fixed data: not a chance)


def test_merge_refuses_incompatible_and_maps_when_told(tmp_path, eight):
    right = tmp_path / "right"
    make_dataset(right, episodes=2, max_steps=10, seed=3, action_set="right")
    skip2 = tmp_path / "skip2"
    make_dataset(skip2, episodes=1, max_steps=10, seed=3, frame_skip=2)
    for extra in ([eight, right], [eight, skip2]):
        res = run_cli("dataset", "merge", *extra, "--out", tmp_path / "m")
        assert res.returncode == 2 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
    c = merge([eight, right], tmp_path / "m", action_set="simple")
    assert c["link"] == 8 and c["mapped"] == 2
    for p in Dataset(right).paths:
        with Episode(p) as src, Episode(tmp_path / "m" / p.name) as dst:
            simple = F.get_action_set("simple")
            assert [dst.action_set.meaning(a) for a in dst.actions] == [src.action_set.meaning(a) for a in src.actions]
            assert dst.action_set == simple and np.array_equal(dst.joypad, src.joypad)
    first = Dataset(eight).paths[0]
    assert (tmp_path / "m" / first.name).stat().st_ino == first.stat().st_ino  # a link, not a copy


def test_an_episode_explains_itself_to_pandas_and_h5dump(tmp_path, eight):
    """read_steps: an episode's per-step columns as a DataFrame in one call; every dataset in the
    file (imported extras too) carries a description attribute."""
    from mario_kit.datasets.episode import read_steps

    p = Dataset(eight).paths[0]
    df = read_steps(p)
    with Episode(p) as ep:
        assert list(df.index) == list(range(ep.length)) and df.index.name == "step"
        assert np.array_equal(df["actions"], ep.actions) and np.array_equal(df["x_pos"], ep.info["x_pos"])
        assert list(df["action_name"]) == [ep.action_set.meaning(a) for a in ep.actions]
        assert np.array_equal(df["terminated"], ep.column(F.TERMINATED)) and df["rewards"].dtype == np.float32
    _write_seed_files(tmp_path / "seed", [p])
    imported = import_seed(tmp_path / "seed", tmp_path / "d").paths[0]
    for path in (p, imported):
        found = {}
        with h5py.File(path) as f:
            f.visititems(
                lambda k, o: found.__setitem__(k, o.attrs.get("description")) if isinstance(o, h5py.Dataset) else None
            )
        assert all(isinstance(d, str) and len(d) > 10 for d in found.values()), found
    assert {"frames", "joypad", "info/x_pos", "extra/seed_y", "extra/seed_helperarr"} <= set(found)


def test_filter_view(tmp_path, eight):
    idx = Dataset(eight).index
    cut = int(idx["length"].median())
    filter_dataset(eight, tmp_path / "v", Filter(min_length=cut))
    assert sorted(Dataset(tmp_path / "v").index["file"]) == sorted(idx[idx["length"] >= cut]["file"])
    with pytest.raises(UserError):
        filter_dataset(eight, tmp_path / "w", Filter(level="8-4"))
    # a split's episodes, through the command; the view keeps their assignments
    d = tmp_path / "d"
    shutil.copytree(eight, d)
    test = sorted(f for f, s in split_dataset(d, 25, seed=1).items() if s == "test")
    r = run_here("dataset", "filter", d, "--split", "test", "--out", tmp_path / "held-out")
    assert r.returncode == 0 and "2 episodes in the view" in r.stdout, r.stderr
    assert sorted(Dataset(tmp_path / "held-out").index["file"]) == test
    assert set(read_split(tmp_path / "held-out").values()) == {"test"}
    r = run_here("dataset", "filter", d, "--split", "tset", "--out", tmp_path / "x")
    assert r.returncode == 2 and "split 'tset': train or test" in r.stderr
    # a seeded sample of what passes: the same seed draws the same episodes
    drawn = []
    for k, seed in enumerate((1, 1, 2)):
        assert (
            run_here("dataset", "filter", d, "--sample", "3", "--seed", seed, "--out", tmp_path / f"s{k}").returncode
            == 0
        )
        drawn.append(sorted(Dataset(tmp_path / f"s{k}").index["file"]))
    assert len(drawn[0]) == 3 and drawn[0] == drawn[1] != drawn[2]
    r = run_here("dataset", "filter", d, "--split", "test", "--sample", "1", "--out", tmp_path / "one")
    assert r.returncode == 0 and set(Dataset(tmp_path / "one").index["file"]) < set(test)


def _write_seed_files(d, src_eps):
    d.mkdir()
    for k, p in enumerate(src_eps):
        with Episode(p) as ep, h5py.File(d / f"mario_episode_data_{k}.hdf5", "w") as f:
            for i in range(ep.length + 1):
                f[f"frame_{i}_x"] = ep.frames[i]
                if k == 0:  # one-hot over SIMPLE_MOVEMENT (the last frame: NOOP)
                    f[f"frame_{i}_y"] = np.eye(7, dtype=int)[ep.actions[i] if i < ep.length else 0]
                else:  # multi-hot [jump, left, right]
                    f[f"frame_{i}_y"] = np.array([[0, 0, 1], [1, 0, 1], [0, 1, 0], [1, 0, 0]][i % 4])
                f[f"frame_{i}_helperarr"] = np.array([float(i) / 3, float(i == ep.length)])


def test_seed_import_export_import_is_lossless(tmp_path, eight):
    seed_dir = tmp_path / "seed"
    _write_seed_files(seed_dir, Dataset(eight).paths[:2])
    first = import_seed(seed_dir, tmp_path / "a").paths
    export_seed(tmp_path / "a", tmp_path / "exported", pack=0)  # one file per episode: the originals back
    second = import_seed(tmp_path / "exported", tmp_path / "b").paths
    key = lambda p: Episode(p).attrs["extra"]["seed_file"]  # noqa: E731
    by_seed_file = {key(q): q for q in second}
    assert len(first) == len(second) == 2
    for p in first:
        with Episode(p) as a, Episode(by_seed_file[p.stem + ".hdf5"]) as b:
            assert np.array_equal(a.frames[()], b.frames[()])
            assert np.array_equal(a.actions, b.actions) and np.array_equal(a.rewards, b.rewards)
            assert np.array_equal(a.extra("seed_y"), b.extra("seed_y"))
            assert np.array_equal(a.extra("seed_helperarr"), b.extra("seed_helperarr"))
    # the exported files equal the originals, key by key
    for orig in sorted(seed_dir.iterdir()):
        (exp,) = [
            q
            for q in (tmp_path / "exported").iterdir()
            if Episode(tmp_path / "a" / (q.stem + ".h5")).attrs["extra"]["seed_file"] == orig.name
        ]
        with h5py.File(orig) as f, h5py.File(exp) as g:
            assert sorted(f) == sorted(g)
            for k in f:
                assert np.array_equal(f[k][()], g[k][()]), k
    # actions were mapped by buttons: one-hot -> the same simple action; [jump, left, right] -> buttons
    with Episode(sorted(first, key=key)[1]) as ep:
        names = [ep.action_set.meaning(a) for a in ep.actions[:4]]
        assert names == ["right", "right+A", "left", "A"]  # [0,0,1] [1,0,1] [0,1,0] [1,0,0]
    bad = tmp_path / "bad"
    bad.mkdir()
    with h5py.File(bad / "x.hdf5", "w") as f:
        f["frame_0_x"] = np.zeros((10, 10, 3), np.uint8)
    assert run_cli("dataset", "import", bad, "--out", tmp_path / "c").returncode == 2


def test_store_windows_equal_the_episodes(tmp_path, eight):
    store = tmp_path / "s.zarr"
    build_store(eight, store, full_res=True, progress=False)
    ds = WindowDataset(store, split=None, n_context=4, horizon=2, full_res=True)
    m = ds.m
    rng = np.random.default_rng(0)
    picks = rng.choice(len(ds), 20, replace=False)
    batch = ds.__getitems__(picks)
    for row, i in enumerate(picks):
        g = ds.targets[i]
        e = next(e for e in m["episodes"] if e["start"] <= g < e["start"] + e["frames"])
        k = g - e["start"]
        with Episode(eight / e["file"]) as ep:
            for j, off in enumerate(range(k - 4, k + 2)):
                if off < 0:
                    assert not batch["mask"][row, j] and batch["obs"][row, j].sum() == 0
                    continue
                assert batch["mask"][row, j]
                assert np.array_equal(batch["obs"][row, j].numpy(), downsample(ep.frames[off : off + 1])[0])
                if j < 5:
                    assert batch["act"][row, j] == ep.actions[off]
            assert np.array_equal(batch["full"][row, 0].numpy(), ep.frames[k])
            assert np.array_equal(batch["full"][row, 1].numpy(), ep.frames[k + 1])
    # the resize is the exact 4x4 mean
    f = np.random.default_rng(1).integers(0, 256, (1, 240, 256, 3), dtype=np.uint8)
    assert np.array_equal(downsample(f)[0], np.floor(f[0].reshape(60, 4, 64, 4, 3).mean((1, 3)) + 0.5).astype(np.uint8))


def _arrays(store):
    g = zarr.open_group(str(store), mode="r")
    m = g.attrs[ATTR]
    eps = [{k: v for k, v in e.items() if k != "mtime_ns"} for e in m["episodes"]]
    return g["low"][:], g["actions"][:], g["weights"][:], eps, m["sums"]


def test_incremental_and_resumed_builds_equal_a_full_build(tmp_path, eight, monkeypatch):
    d = tmp_path / "d"
    d.mkdir()
    paths = Dataset(eight).paths
    for p in paths[:3]:
        shutil.copy2(p, d / p.name)
    assert build_store(d, tmp_path / "inc.zarr", progress=False).added == 3
    for p in paths[3:]:
        shutil.copy2(p, d / p.name)
    r = build_store(d, tmp_path / "inc.zarr", progress=False)
    assert (r.added, r.kept) == (5, 3)
    build_store(d, tmp_path / "full.zarr", progress=False)
    full = _arrays(tmp_path / "full.zarr")
    for a, b in zip(_arrays(tmp_path / "inc.zarr"), full):
        assert np.array_equal(np.asarray(a), np.asarray(b)) if isinstance(a, np.ndarray) else a == b

    # a build killed inside its 4th episode (arrays grown, manifest not yet updated) resumes exactly;
    # its frames are written a few at a time (in the middle of episodes), as a long episode's are
    import mario_kit.datasets.store as store_mod

    calls = {"n": 0}
    real = store_mod.file_checksum

    def dying(path):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(store_mod, "file_checksum", dying)
    monkeypatch.setattr(store_mod._Appender, "FLUSH_FRAMES", 5)
    with pytest.raises(KeyboardInterrupt):
        build_store(d, tmp_path / "killed.zarr", progress=False)
    monkeypatch.setattr(store_mod, "file_checksum", real)
    g = zarr.open_group(str(tmp_path / "killed.zarr"), mode="r")
    assert len(g.attrs[ATTR]["episodes"]) == 3 and g["low"].shape[0] > sum(
        e["frames"] for e in g.attrs[ATTR]["episodes"]
    )
    assert build_store(d, tmp_path / "killed.zarr", progress=False).added == 5
    for a, b in zip(_arrays(tmp_path / "killed.zarr"), full):
        assert np.array_equal(np.asarray(a), np.asarray(b)) if isinstance(a, np.ndarray) else a == b

    # a changed episode is detected
    with h5py.File(d / paths[0].name, "r+") as f:
        f.attrs["player"] = "changed"
    with pytest.raises(UserError, match="changed since"):
        build_store(d, tmp_path / "inc.zarr", progress=False)


def test_a_store_built_at_a_higher_compression_level_holds_the_same_frames_in_fewer_bytes(tmp_path, eight):
    fast, small = tmp_path / "fast.zarr", tmp_path / "small.zarr"
    info = {}
    for store, extra in ((fast, []), (small, ["--compression-level", "19"])):
        r = run_here("dataset", "build", eight, "--out", store, "--json", *extra)
        assert r.returncode == 0, r.stderr
        info[store] = json.loads(r.stdout)
    assert (info[fast]["compression_level"], info[small]["compression_level"]) == (3, 19)
    low = lambda s: sum(f.stat().st_size for f in (s / "low").rglob("*") if f.is_file())  # noqa: E731
    assert low(small) < 0.9 * low(fast)
    for a, b in zip(_arrays(small), _arrays(fast)):
        assert np.array_equal(np.asarray(a), np.asarray(b)) if isinstance(a, np.ndarray) else a == b
    # a store is extended at its own level: another one is refused in one line, --force rebuilds at it
    r = run_here("dataset", "build", eight, "--out", small, "--compression-level", "3")
    assert r.returncode == 2 and "built at compression level 19 (--force rebuilds it at 3)" in r.stderr, r.stderr
    assert run_here("dataset", "build", eight, "--out", small).returncode == 0  # no level: its own
    r = run_here("dataset", "build", eight, "--out", small, "--compression-level", "3", "--force", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["compression_level"] == 3
    assert run_here("dataset", "build", eight, "--out", small, "--compression-level", "23").returncode == 2


def test_corrupted_store_chunk_is_reported(tmp_path, eight):
    store = tmp_path / "s.zarr"
    build_store(eight, store, progress=False)
    chunk = store / "low" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = b"\x00" * 16
    chunk.write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt"):
        WindowDataset(store)
    assert not list((store / "_cache").glob("*.npy"))


def test_weights_and_weighted_sampling(tmp_path, eight):
    from mario_kit.balancing.offline import save_weights

    paths = Dataset(eight).paths
    w = {}
    for k, p in enumerate(paths):
        n = Episode(p).length
        w[p.name] = np.full(n, 10.0 if k == 0 else 0.0, np.float32)
    save_weights(tmp_path / "w.npz", w, {p.name: Episode(p).actions for p in paths})
    store = tmp_path / "s.zarr"
    build_store(eight, store, weights=tmp_path / "w.npz", progress=False)
    ds = WindowDataset(store, split=None)
    assert set(np.unique(ds.target_weights)) <= {0.0, 10.0}
    first = ds.m["episodes"][[e["file"] for e in ds.m["episodes"]].index(paths[0].name)]
    order = epoch_batches(len(ds), 64, 1, seed=0, epoch=0, weights=ds.target_weights.astype(np.float64))
    idx = ds.fetch(order[0])["index"]
    assert ((idx >= first["start"]) & (idx < first["start"] + first["frames"])).all()


def test_batch_order_is_a_pure_function_of_seed_and_epoch(tmp_path, eight):
    """What training and its exact resume rely on (the loader's workers went with make_loader)."""
    store = tmp_path / "s.zarr"
    build_store(eight, store, progress=False)
    ds = WindowDataset(store, split=None)
    a, b = (epoch_batches(len(ds), 8, 5, seed=3, epoch=1) for _ in range(2))
    assert a.shape == (5, 8) and np.array_equal(a, b)
    assert not np.array_equal(a, epoch_batches(len(ds), 8, 5, seed=3, epoch=2))
    first = epoch_batches(len(ds), 8, len(ds) // 8, seed=3, epoch=0)
    assert len(np.unique(first)) == first.size  # one epoch without weights: each window at most once
    batch = ds.gather(ds.fetch(a[0]))
    assert np.array_equal(batch["index"], ds.targets[a[0]]) and batch["obs"].shape == (8, 5, 60, 64, 3)


def test_spawns_rebuild_the_real_game(tmp_path, eight):
    out = make_spawns(eight, tmp_path / "sp.h5", n=3, seed=1)
    with h5py.File(out) as f:
        refs = json.loads(f.attrs["spawns"])
        assert f["full"].shape == (3, 4, 240, 256, 3) and f["low"].shape == (3, 4, 60, 64, 3)
        for s, ref in enumerate(refs):
            with Episode(eight / ref["file"]) as ep:
                t = ref["step"]
                assert np.array_equal(f["full"][s], ep.frames[t - 4 : t])
                assert np.array_equal(f["actions"][s], ep.actions[t - 4 : t])
                frames = [fr for fr, _ in replay(ep.attrs["level"], ep.joypad, ep.step_frames)]
                assert np.array_equal(frames[t - 1], f["full"][s, -1])
    assert run_cli("dataset", "spawn", eight, "--out", out).returncode == 2  # exists, no --force


def test_spawns_per_level_reach_every_stage_and_load_by_level(tmp_path, eight):
    d = tmp_path / "d"
    shutil.copytree(eight, d)
    make_dataset(d, episodes=2, max_steps=12, seed=9, level="1-2")
    res = run_cli("dataset", "spawn", d, "--out", tmp_path / "sp.h5", "--n", "3", "--per-level", "--seed", "4")
    assert res.returncode == 0, res.stderr
    sp = load_spawns(tmp_path / "sp.h5")
    assert sp.levels == ["1-1", "1-2"] and [r["level"] for r in sp.refs] == ["1-1"] * 3 + ["1-2"] * 3
    assert len(load_spawns(make_spawns(d, tmp_path / "all.h5", n=3, seed=4))) == 3  # without it, 3 in all
    two = load_spawns(tmp_path / "sp.h5", "1-2")
    assert two.refs == sp.refs[3:] and np.array_equal(two.full, sp.full[3:]) and np.array_equal(two.low, sp.low[3:])
    assert len(load_spawns(tmp_path / "sp.h5", "1-2,1-1")) == 6
    with pytest.raises(UserError, match="no spawn on 2-1: the spawns start on 1-1, 1-2"):
        load_spawns(tmp_path / "sp.h5", "2-1")


def test_action_sets_are_the_emulators_and_the_tools_import_without_it():
    from gym_super_mario_bros.actions import COMPLEX_MOVEMENT, RIGHT_ONLY, SIMPLE_MOVEMENT

    for name, lst in (("right", RIGHT_ONLY), ("simple", SIMPLE_MOVEMENT), ("complex", COMPLEX_MOVEMENT)):
        assert F.ACTION_SETS[name].buttons == tuple(tuple(b) for b in lst)
    # a GPU machine that trains from a store has no emulator: the store, loader, training, evaluation
    # and play modules (and the CLI) must import without it
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('gym_super_mario_bros', 'nes_py', 'gymnasium', 'pygame', 'stable_baselines3'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mario_kit.cli, mario_kit.datasets.store, mario_kit.datasets.loader\n"
        "import mario_kit.world_model.training.trainer, mario_kit.world_model.training.evaluate, mario_kit.world_model.programs.play\n"
        "print(len(mario_kit.datasets.format.ACTION_SETS['simple']))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "7", res.stderr


def _seed_file(path, frames, labels, helper=None):
    with h5py.File(path, "w") as f:
        for i, x in enumerate(frames):
            f[f"frame_{i}_x"] = x
            f[f"frame_{i}_y"] = labels[i]
            if helper is not None:
                f[f"frame_{i}_helperarr"] = helper[i]


def test_seed_import_reads_every_layout_splits_at_resets_and_lands_whole(tmp_path, eight):
    """The seed's generators write windows in which the game resets after a death: the level's first
    frame comes back. Human files have no helper arrays; agent files use [W, A, S, D] labels."""
    eps = [Episode(p) for p in Dataset(eight).paths[:3]]
    frames = [e.frames[()] for e in eps]
    assert all(np.array_equal(f[0], frames[0][0]) for f in frames)  # every episode starts on the level's first frame
    src = tmp_path / "seed"
    src.mkdir()
    joined = np.concatenate(frames)  # three episodes, two resets inside one file
    n = len(joined)
    wasd = np.array([[0, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0]])  # D, W+D, A, S, W+A
    life = np.zeros(n, np.int64)
    life[len(frames[0])] = 1  # the first episode ended in a death: the reset frame carries the flag
    helper = np.stack([np.arange(n) % 3, life], axis=1).astype(np.int64)
    _seed_file(src / "agent.hdf5", joined, wasd[np.arange(n) % 5], helper)
    wad = np.array([[0, 0, 1], [1, 0, 1]])
    _seed_file(src / "human.hdf5", frames[1], wad[np.arange(len(frames[1])) % 2])  # no helper arrays
    s = import_seed(src, tmp_path / "d", level="1-1", player="ana", source="human")
    assert s.files == 2 and s.layouts == {"wasd4": 1, "wad3": 1} and not s.skipped
    assert s.episodes == 4 and s.steps == sum(len(f) - 1 for f in frames) + len(frames[1]) - 1  # 3 from the agent file
    by_file = {}
    for p in s.paths:
        with Episode(p) as ep:
            by_file.setdefault(ep.attrs["extra"]["seed_file"], []).append(ep.attrs["extra"]["seed_frames"])
            assert ep.attrs["player"] == "ana" and ep.attrs["source"] == "human" and ep.attrs["level"] == "1-1"
    starts = np.cumsum([0] + [len(f) for f in frames])
    assert sorted(by_file["agent.hdf5"]) == [[int(a), int(b)] for a, b in zip(starts[:-1], starts[1:])]
    with Episode([p for p in s.paths if Episode(p).attrs["extra"]["seed_frames"] == [0, len(frames[0])]][0]) as ep:
        assert np.array_equal(ep.frames[()], frames[0]) and ep.attrs["end"] == "terminated"
        names = [ep.action_set.meaning(a) for a in ep.actions[:5]]
        assert names == ["right", "right+A", "left", "NOOP", "left"]  # W+A: simple has no left+A
        assert np.array_equal(ep.rewards[:3], [1, 2, 0]) and ep.extra("seed_helperarr").dtype == np.int64
    (human,) = [p for p in s.paths if Episode(p).attrs["extra"]["seed_file"] == "human.hdf5"]
    with Episode(human) as ep:
        assert not ep.attrs["extra"]["helper_array"] and ep.rewards.sum() == 0 and ep.attrs["end"] == "cut"
    assert s.remapped["left+A -> left"] > 0
    # the same files again: skipped by content; a folder with one bad file: nothing lands
    again = import_seed(src, tmp_path / "d")
    assert again.episodes == 0 and len(again.skipped) == 2 and "already imported" in again.skipped[0][1]
    with h5py.File(src / "zz-bad.hdf5", "w") as f:
        f["frame_0_x"] = np.zeros((240, 256, 3), np.uint8)
        f["frame_1_x"] = np.zeros((240, 256, 3), np.uint8)
        f["frame_0_y"] = np.zeros(5)
        f["frame_1_y"] = np.zeros(5)
    res = run_cli("dataset", "import", src, "--out", tmp_path / "e")
    assert res.returncode == 2 and "zz-bad.hdf5" in res.stderr and "nothing was imported" in res.stderr
    assert not (tmp_path / "e").exists()


def test_seed_export_packs_files_the_seeds_loader_reads(tmp_path, eight):
    ds = Dataset(eight)
    s = export_seed(eight, tmp_path / "packed", pack=30, labels="wad3", remainder="keep")
    total = int(ds.index["frames"].sum())
    assert [p.name for p in s.files] == [f"mario_episode_data_{k}.hdf5" for k in range(-(-total // 30))]
    # read back as the seed's loader does: N frames a file, (240, 256, 3) uint8 RGB, labels of the config's width
    frames, ys, helper = [], [], []
    for p in s.files:
        with h5py.File(p, "r") as f:
            n = 30 if p != s.files[-1] else total % 30 or 30
            assert len(f) == 3 * n
            for i in range(n):
                x = f[f"frame_{i}_x"][()]
                assert x.shape == (240, 256, 3) and x.dtype == np.uint8 and f[f"frame_{i}_y"].shape == (3,)
                frames.append(x)
                ys.append(f[f"frame_{i}_y"][()])
                helper.append(f[f"frame_{i}_helperarr"][()])
    originals = [Episode(p) for p in ds.paths]
    assert np.array_equal(np.stack(frames), np.concatenate([e.frames[()] for e in originals]))
    at = 0
    for prev, ep in zip([None, *originals], originals):  # each join carries the life flag of a death before it
        assert helper[at][1] == float(prev is not None and prev.attrs["end"] == "terminated")
        for t, a in enumerate(ep.actions):
            held = set(ep.action_set.buttons[a]) - {"NOOP", "B"}
            assert {b for b, on in zip(("A", "left", "right"), ys[at + t]) if on} == held
        at += ep.length + 1
    assert any("B" in k for k in s.remapped) or not any(
        "B" in e.action_set.meaning(a) for e in originals for a in e.actions
    )
    # dropping the remainder leaves whole files only; the packed files import back into the same frames
    d = export_seed(eight, tmp_path / "dropped", pack=30)  # the default
    assert len(d.files) == total // 30 and d.dropped_frames == total % 30
    back = import_seed(tmp_path / "packed", tmp_path / "back")
    assert back.steps + back.episodes + back.short_segments == total


def test_seed_export_by_default_writes_only_files_the_seed_reads(tmp_path, eight):
    """The seed's loader and process_dataset_hdf5.py read 1000 frames from every file: the default
    writes whole files only (refusing a dataset too small for one), and every other choice says which
    of the seed's and DIAMOND's tools will not read what it wrote."""
    total = int(Dataset(eight).index["frames"].sum())
    assert total < 1000
    res = run_cli("dataset", "export", eight, "--format", "seed", "--out", tmp_path / "a")
    assert res.returncode == 2 and "--remainder keep" in res.stderr and not (tmp_path / "a").exists()
    res = run_cli(
        "dataset",
        "export",
        eight,
        "--format",
        "seed",
        "--out",
        tmp_path / "b",
        "--remainder",
        "keep",
        "--labels",
        "wasd4",
    )
    assert res.returncode == 0 and f"the last file has {total} frames" in res.stderr
    with h5py.File(tmp_path / "b" / "mario_episode_data_0.hdf5") as f:
        assert len(f) == 3 * total and EXPORT_ATTR in f.attrs
        ys = np.stack([f[f"frame_{i}_y"][()] for i in range(total)])
    acts = np.concatenate([np.append(Episode(p).actions, 0) for p in Dataset(eight).paths])  # last frames: NOOP
    assert (acts == 0).any() and (ys[acts == 0] == 0).all()  # NOOP is [0, 0, 0, 0], as the seed's WASD encoder
    assert not ys[:, 2].any()  # S is never set
    res = run_cli("dataset", "export", eight, "--format", "seed", "--out", tmp_path / "c", "--pack", "30")
    assert res.returncode == 0 and "files of 30 frames" in res.stderr and "last file" not in res.stderr
    assert len(list((tmp_path / "c").iterdir())) == total // 30
    res = run_cli("dataset", "export", eight, "--format", "seed", "--out", tmp_path / "d", "--pack", "0")
    assert res.returncode == 0 and "neither reads these files" in res.stderr


def test_spawns_in_the_seed_layout(tmp_path, eight):
    """DIAMOND's play script loads <dir>/<k>/{low_res, full_res, act, next_act}.npy: frames channels
    first in BGR (what DIAMOND's loader makes of the seed's RGB files: sky [252, 136, 104]), actions as
    (n, 3) / (k, 3) int64 multi-hot [jump, left, right] as the seed's committed spawns, or --labels."""
    res = run_cli("dataset", "spawn", eight, "--format", "seed", "--out", tmp_path / "sp", "--n", "3", "--seed", "2")
    assert res.returncode == 0, res.stderr
    from pathlib import Path

    from mario_kit.datasets.ops import load_spawns

    ref = load_spawns(make_spawns(eight, tmp_path / "sp.h5", n=3, seed=2))  # the same draw in mario-kit's layout
    assert sorted(p.name for p in (tmp_path / "sp").iterdir()) == ["0", "1", "2"]
    for k in range(3):
        d = tmp_path / "sp" / str(k)
        low, full = np.load(d / "low_res.npy"), np.load(d / "full_res.npy")
        assert low.shape == (4, 3, 60, 64) and full.shape == (4, 3, 240, 256) and low.dtype == full.dtype == np.uint8
        assert full[0, :, 40, 128].tolist() == [252, 136, 104]  # the sky, blue first
        assert np.array_equal(full.transpose(0, 2, 3, 1)[..., ::-1], ref.full[k])
        assert np.array_equal(low.transpose(0, 2, 3, 1)[..., ::-1], ref.low[k])
        act, nxt = np.load(d / "act.npy"), np.load(d / "next_act.npy")
        assert act.shape == (4, 3) and act.dtype == np.int64 and set(np.unique(act)) <= {0, 1}
        wad = lambda a: {b for b in ref.action_set.buttons[a] if b in ("A", "left", "right")}  # noqa: E731
        assert [{b for b, on in zip(("A", "left", "right"), y) if on} for y in act] == [wad(a) for a in ref.actions[k]]
        with Episode(Path(ref.refs[k]["dataset"]) / ref.refs[k]["file"]) as ep:
            assert nxt.shape == (ep.length - ref.refs[k]["step"], 3)
            assert [{b for b, on in zip(("A", "left", "right"), y) if on} for y in nxt] == [
                wad(a) for a in ep.actions[ref.refs[k]["step"] :]
            ]
    res = run_cli(
        "dataset",
        "spawn",
        eight,
        "--format",
        "seed",
        "--out",
        tmp_path / "sp7",
        "--n",
        "3",
        "--seed",
        "2",
        "--labels",
        "onehot7",
    )
    assert res.returncode == 0, res.stderr
    assert np.array_equal(
        np.load(tmp_path / "sp7" / "0" / "act.npy").argmax(1), ref.actions[0]
    )  # simple is one-hot's set
    res = run_cli("dataset", "spawn", eight, "--out", tmp_path / "x.h5", "--labels", "wad3")
    assert res.returncode == 2 and "--format seed" in res.stderr and "Traceback" not in res.stderr


def test_minari_export_loads_back_exactly(tmp_path, small_dataset):
    minari = pytest.importorskip("minari")
    root = tmp_path / "minari"
    res = run_cli(
        "dataset", "export", small_dataset, "--format", "minari", "--out", root, "--dataset-id", "mario/test-v0"
    )
    assert res.returncode == 0, res.stderr
    import os

    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        m = minari.load_dataset("mario/test-v0")
        eps = list(m.iterate_episodes())
        envs = [m.recover_environment(), m.recover_environment(eval_env=True)]  # the real game, the dataset's wrappers
    finally:
        os.environ.pop("MINARI_DATASETS_PATH")
    for env in envs:
        assert env.spec.id == "mario_kit/SuperMarioBros-v0" and env.action_space == m.action_space
        obs, _ = env.reset(seed=0)
        assert np.array_equal(obs, eps[0].observations[0])
        for t, a in enumerate(eps[0].actions[:10]):  # frame for frame the recorded episode
            obs, reward, *_ = env.step(int(a))
            assert np.array_equal(obs, eps[0].observations[t + 1]) and reward == pytest.approx(eps[0].rewards[t])
        env.close()
    ds = Dataset(small_dataset)
    assert m.total_episodes == len(ds) and m.total_steps == int(ds.index["length"].sum())
    for got, p in zip(eps, ds.paths):
        with Episode(p) as ep:
            assert np.array_equal(got.observations, ep.frames[()])  # lossless
            assert np.array_equal(got.actions, ep.actions) and np.allclose(got.rewards, ep.rewards)
            assert np.array_equal(got.terminations, ep.column("terminated")) and np.array_equal(
                got.infos["x_pos"][1:], ep.info["x_pos"]
            )
    text = (root / "mario" / "test-v0" / "data" / "metadata.json").read_text()
    meta = json.loads(text)
    assert meta["mario_kit"]["action_set"] == "simple" and meta["mario_kit"]["frame_skip"] == 4
    assert len(text) < 1_400_000 and m.observation_space == gym.spaces.Box(0, 255, (240, 256, 3), np.uint8)
    assert str(small_dataset) not in text and str(Path.cwd()) not in text  # no local path travels
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "minari"), "show", "mario/test-v0"],
        capture_output=True,
        text=True,
        env={**os.environ, "MINARI_DATASETS_PATH": str(root)},
        timeout=120,
    )
    assert shown.returncode == 0 and "mario_kit/SuperMarioBros-v0" in shown.stdout, shown.stdout + shown.stderr
    assert (
        run_cli(
            "dataset", "export", small_dataset, "--format", "minari", "--out", root, "--dataset-id", "mario/test-v0"
        ).returncode
        == 2
    )
    assert (
        run_cli(
            "dataset", "export", small_dataset, "--format", "minari", "--out", root, "--dataset-id", "bad id"
        ).returncode
        == 2
    )


def test_a_death_the_seeds_recorder_dropped_comes_back_from_the_replay(tmp_path):
    """The seed's recorders reset after the step that dies and never record its frame, nor set the life
    flag on a stage env: the import replays the action at the frame before the reset, and the death it
    shows is the episode's last step (terminated, end=terminated), the frame the real game showed."""
    make_dataset(tmp_path / "real", episodes=2, max_steps=300, seed=1, ending_steps=0)  # both die (48, 44 steps)
    eps = [Episode(p) for p in Dataset(tmp_path / "real").paths]
    assert [e.attrs["end"] for e in eps] == ["terminated", "terminated"]
    frames = np.concatenate([e.frames[:-1] for e in eps])  # the dying frames were never recorded
    ys = np.eye(7, dtype=np.int64)[np.concatenate([e.actions for e in eps])]
    helper = np.stack([np.concatenate([[0], eps[0].rewards[:-1], [0], eps[1].rewards[:-1]]), np.zeros(len(frames))], 1)
    (tmp_path / "seed").mkdir()
    _seed_file(tmp_path / "seed" / "mario_episode_data_0.hdf5", frames, ys, helper)
    s = import_seed(tmp_path / "seed", tmp_path / "d")
    first, second = sorted(s.paths, key=lambda p: Episode(p).attrs["extra"]["seed_segment"])
    with Episode(first) as ep:
        assert ep.attrs["end"] == "terminated" and ep.attrs["extra"]["death_step_replayed"] is True
        assert ep.length == eps[0].length and ep.column(F.TERMINATED).tolist() == [False] * (ep.length - 1) + [True]
        assert np.array_equal(ep.frames[()], eps[0].frames[()]) and np.array_equal(ep.joypad, eps[0].joypad)
    with Episode(second) as ep:  # the file ends: no reset says the game ended, nothing is added
        assert (
            ep.attrs["end"] == "cut" and ep.length == eps[1].length - 1 and not ep.attrs["extra"]["death_step_replayed"]
        )
    assert s.steps == eps[0].length + eps[1].length - 1
    # exported back with its own labels: the file's frames only, byte for byte
    export_seed(tmp_path / "d", tmp_path / "back", pack=0)
    with h5py.File(tmp_path / "back" / (first.stem + ".hdf5")) as f:
        assert len(f) == 3 * eps[0].length and EXPORT_ATTR not in f.attrs


def test_imported_episodes_that_the_emulator_reproduces_are_replayable(tmp_path, eight):
    """Our own export, imported back: the replay reproduces every frame, so the joypad record and the
    info columns come back too, and the episode is marked replayable."""
    export_seed(eight, tmp_path / "x", pack=0, labels="onehot7")
    s = import_seed(tmp_path / "x", tmp_path / "back")
    assert s.replayable == s.episodes == len(Dataset(eight))
    originals = {Episode(p).frames[0].tobytes() + Episode(p).frames[-1].tobytes(): p for p in Dataset(eight).paths}
    for p in s.paths:
        with Episode(p) as got:
            assert got.attrs["extra"]["replayable"] is True
            with Episode(originals[got.frames[0].tobytes() + got.frames[-1].tobytes()]) as ref:
                assert np.array_equal(got.joypad, ref.joypad) and np.array_equal(got.step_frames, ref.step_frames)
                assert np.array_equal(got.info["x_pos"], ref.info["x_pos"]) and got.length == ref.length
    # a file whose frames the emulator does not reproduce keeps repeated bytes and is not replayable
    src = tmp_path / "noise"
    src.mkdir()
    rng = np.random.default_rng(0)
    _seed_file(
        src / "n.hdf5", rng.integers(0, 255, (4, 240, 256, 3), dtype=np.uint8), np.eye(7, dtype=int)[[1, 1, 1, 0]]
    )
    (ep,) = import_seed(src, tmp_path / "n").paths
    with Episode(ep) as got:
        assert got.attrs["extra"]["replayable"] is False and list(got.step_frames) == [4, 4, 4]


def _h5_contents(path):
    """{dataset path: array} and the root attributes of an HDF5 file."""
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda k, o: out.__setitem__(k, o[()]) if isinstance(o, h5py.Dataset) else None)
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    return out, attrs


def test_a_replay_import_can_keep_some_stages_and_go_on_past_an_episode_that_differs(tmp_path):
    """`import_replay(levels=...)` (bench/wm_data.py --levels): the episodes of those stages only,
    each the same file as exported; `sample=` the episodes `dataset filter --sample` would draw. An episode whose frames replay to another digest stops an import
    and leaves nothing; with keep_going it alone is left out, named, and out of the split file."""
    import lzma

    from mario_kit.datasets.interop.replay import export_replay, import_replay

    src = make_dataset(tmp_path / "src", episodes=4, max_steps=8, seed=3, level="1-1,1-2")
    levels = {p.name: Episode(p).attrs["level"] for p in src}
    assert set(levels.values()) == {"1-1", "1-2"}, levels
    export_replay(tmp_path / "src", tmp_path / "x")
    r = import_replay(tmp_path / "x", tmp_path / "back", levels=["1-2"])
    kept = sorted(p.name for p in Dataset(tmp_path / "back").paths)
    assert r.episodes == len(kept) and kept == sorted(n for n, lv in levels.items() if lv == "1-2")
    for name in kept:
        assert np.array_equal(Episode(tmp_path / "back" / name).frames[:], Episode(tmp_path / "src" / name).frames[:])
    drawn = Filter(sample=2, seed=1).apply(Dataset(tmp_path / "src").index)["file"].tolist()
    r = import_replay(tmp_path / "x", tmp_path / "drawn", sample=2, seed=1)  # as `dataset filter --sample` draws
    assert r.episodes == 2 and sorted(p.name for p in Dataset(tmp_path / "drawn").paths) == sorted(drawn)
    split_dataset(tmp_path / "src", 50, seed=0)
    export_replay(tmp_path / "src", tmp_path / "x", force=True)
    packed = tmp_path / "x" / "replay.json.xz"
    doc = json.loads(lzma.decompress(packed.read_bytes()))
    bad = doc["episodes"][1]
    bad["frames_xxh3_128"] = "0" * 32
    packed.write_bytes(lzma.compress(json.dumps(doc).encode()))
    with pytest.raises(UserError, match="replayed frames differ"):
        import_replay(packed, tmp_path / "stop", workers=2)
    assert not (tmp_path / "stop").exists()
    r = import_replay(packed, tmp_path / "on", workers=2, keep_going=True)
    assert r.differ == [bad["file"]] and r.episodes == 3
    assert sorted(p.name for p in Dataset(tmp_path / "on").paths) == sorted(set(levels) - {bad["file"]})
    assert set(read_split(tmp_path / "on")) == set(levels) - {bad["file"]}


def test_replay_export_and_import_give_back_every_episode_exactly(tmp_path, eight):
    """`dataset export --format replay` keeps a dataset without its frames; `import --format replay`
    replays it in the emulator into the same files: every dataset, frames included, every attribute,
    the file names and the split. A second import skips what is there; bad files change nothing."""
    import lzma

    src = tmp_path / "src"
    shutil.copytree(eight, src)
    split_dataset(src, 25, seed=0)
    res = run_cli("dataset", "export", src, "--format", "replay", "--out", tmp_path / "x")
    assert res.returncode == 0, res.stderr
    packed = tmp_path / "x" / "replay.json.xz"
    frames = sum(Episode(p).frames.size for p in Dataset(src).paths)
    assert packed.stat().st_size * 1000 < frames  # frames are what it leaves out
    res = run_cli(
        "dataset", "import", tmp_path / "x", "--format", "replay", "--out", tmp_path / "back", "--workers", "2"
    )
    assert res.returncode == 0, res.stderr
    assert f"replayed {len(Dataset(src))} episodes" in res.stdout
    assert [p.name for p in Dataset(tmp_path / "back").paths] == [p.name for p in Dataset(src).paths]
    for p in Dataset(src).paths:
        (a, a_attrs), (b, b_attrs) = _h5_contents(p), _h5_contents(tmp_path / "back" / p.name)
        assert sorted(a) == sorted(b) and a_attrs == b_attrs
        for k in a:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert (
        json.loads((tmp_path / "back" / "mario-kit.split.json").read_text())["assignments"]
        == json.loads((src / "mario-kit.split.json").read_text())["assignments"]
    )
    res = run_cli("dataset", "import", packed, "--format", "replay", "--out", tmp_path / "back")
    assert res.returncode == 0 and f"the {len(Dataset(src))} episodes of the file are already in" in res.stdout

    doc = json.loads(lzma.decompress(packed.read_bytes()))

    def write(name, change):
        d = json.loads(json.dumps(doc))
        change(d)
        (tmp_path / name).mkdir()
        (tmp_path / name / "replay.json.xz").write_bytes(lzma.compress(json.dumps(d).encode()))
        return tmp_path / name

    last = lambda d: d["episodes"][-1]  # noqa: E731
    cases = {
        "frames": lambda d: last(d).update(frames_xxh3_128="0" * 32),  # found after the others were written
        "name": lambda d: last(d).update(file="../escape.h5"),
        "short": lambda d: last(d).update(data=last(d)["data"][:-8]),
        "dtype": lambda d: last(d)["arrays"][0].update(dtype="<f8"),
        "attrs": lambda d: last(d)["attrs"].update(level="9-9"),
        "schema": lambda d: d.update(schema_version=2),
    }
    imports = ["dataset", "import", "--format", "replay"]
    for name, change in cases.items():
        workers = ["--workers", "2" if name == "frames" else "1"]
        res = run_cli(*imports, write(name, change), "--out", tmp_path / f"out-{name}", *workers)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, (name, res.stderr)
        assert not (tmp_path / f"out-{name}").exists(), name  # all or nothing: not even the folder
    assert "replayed frames differ" in run_cli(*imports, tmp_path / "frames", "--out", tmp_path / "out-frames").stderr
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "replay.json.xz").write_bytes(b"not xz")
    assert run_cli(*imports, tmp_path / "junk", "--out", tmp_path / "o").returncode == 2
    assert run_cli(*imports, tmp_path / "x", "--level", "1-2", "--out", tmp_path / "o").returncode == 2
    before = packed.read_bytes()
    no_force = run_cli("dataset", "export", src, "--format", "replay", "--out", tmp_path / "x")
    assert no_force.returncode == 2
    assert packed.read_bytes() == before


ONE_ONE, WORLD_ONE = {"1-1"}, {"1-1", "1-2", "1-3", "1-4"}
GAME = {f"{w}-{s}" for w in range(1, 9) for s in range(1, 5)}
FROZEN = {  # name: (sources, levels, steps, splits), as bench/data/README.md says
    "eval": ({"random", "agent"}, ONE_ONE, 9_000, {"test"}),
    "eval-fresh": ({"random", "agent"}, ONE_ONE, 9_000, {"test"}),
    "mix": ({"random", "agent"}, ONE_ONE, 80_000, {"train", "test"}),
    "world1": ({"frontier"}, WORLD_ONE, 80_000, {"train", "test"}),
    "world1-eval": ({"frontier"}, WORLD_ONE, 80_000, {"test"}),
    "game": ({"frontier"}, GAME, 224_000, {"train", "test"}),
    "game-eval": ({"frontier"}, GAME, 224_000, {"test"}),
}


@pytest.mark.parametrize("name", list(FROZEN))
def test_the_frozen_world_model_data_replays_on_this_emulator(tmp_path, name):
    """bench/data keeps the world model's evaluation sets and training mix as replay files, rebuilt by
    bench/wm_data.py on any machine. Each parses, holds what docs/BENCHMARKS.md says it holds, and its
    shortest episode of each source replays to the recorded frames here: a changed emulator, which
    would quietly change every figure measured on them, fails this test."""
    from pathlib import Path

    from mario_kit.datasets.interop.replay import parse_replay, read_replay, replay_episode

    path = Path(__file__).resolve().parents[1] / "bench" / "data" / name / "replay.json.xz"
    eps = parse_replay(read_replay(path), path)
    steps = sum(e["attrs"]["length"] for e in eps)
    sources, levels, total, splits = FROZEN[name]
    assert {e["attrs"]["source"] for e in eps} == sources
    assert {e["attrs"]["level"] for e in eps} == levels
    assert steps == total and {e["split"] for e in eps} == splits
    starts = [e for e in eps if "extra/start_joypad" in e["arrays"] and len(e["arrays"]["extra/start_joypad"])]
    assert bool(starts) == (sources == {"frontier"})  # frontier episodes start where others left off
    picks = [min((e for e in eps if e["attrs"]["source"] == s), key=lambda e: e["attrs"]["length"]) for s in sources]
    if starts:  # and the farthest start of them all: the longest way from reset, replayed
        picks.append(max(starts, key=lambda e: len(e["arrays"]["extra/start_joypad"])))
    for e in picks:
        p, n = replay_episode(e, tmp_path)
        assert n == e["attrs"]["length"] and Episode(p).frames.shape[0] == n + 1
        p.unlink()
