"""The tile upsampler (world_model/model/tiles.py) on real emulator frames: fit on some frames of 1-1,
it draws frames it has not seen far closer to the real 256x240 frame than bicubic does; its file
round-trips, and a file that is not one is refused in one line before anything is read."""

import h5py
import numpy as np
import pytest

from mario_kit import UserError
from mario_kit.datasets.store import downsample
from mario_kit.emulator import MarioEnv
from mario_kit.world_model.model import tiles


def _psnr(a, b):
    return 10 * np.log10(255**2 / ((a.astype(np.float64) - b) ** 2).mean())


@pytest.fixture(scope="module")
def frames():
    """240 steps of 1-1, right held and A for 5 steps in 6 (past x 1,500: pipes, pits, bricks, Goombas)."""
    env = MarioEnv("1-1")
    frame, _ = env.reset()
    out = [frame]
    for t in range(240):
        r = env.step(0x80 | (0x01 if t % 6 < 5 else 0), 4)  # joypad bits: 0x80 right, 0x01 A
        out.append(r.frame.copy())
        assert not r.terminated
    env.close()
    assert r.info["x_pos"] > 1500
    return np.stack(out)


def test_tiles_draw_unseen_frames_closer_to_the_game_than_bicubic(frames):
    train, test = frames[::2], frames[1::2]  # every other frame: the test frames were never fit on
    up = tiles.fit(downsample(train), train)
    low = downsample(test)
    full, known = up.upsample(low)
    assert full.shape == test.shape and full.dtype == np.uint8
    assert _psnr(full, test) > _psnr(tiles.bicubic(low), test) + 3, (_psnr(full, test), _psnr(tiles.bicubic(low), test))
    assert 0.9 < known <= 1.0
    assert np.array_equal(up(low[0]), full[0])  # one frame or a batch: the same pixels
    seen = up(downsample(train[:4]))
    assert _psnr(seen, train[:4]) > _psnr(full, test)  # what it was fit on it draws best


def test_chained_tables_and_keys_seen_once_dropped(frames):
    """`then` looks a pixel up in the second tables only where the first know nothing; `min_count`
    drops keys seen fewer times (what a model's noise makes)."""
    low, full = downsample(frames[:60]), frames[:60]
    once, twice = tiles.fit(low, full, ((1, 1),)), tiles.fit(low, full, ((1, 1),), min_count=2)
    assert 0 < len(twice.keys[0]) < len(once.keys[0]) and np.isin(twice.keys[0], once.keys[0]).all()
    alone = tiles.fit(low, full, ((1, 0),))
    chained = twice.then(alone)
    assert chained.tiers == ((1, 1), (1, 0))
    out, known = chained.upsample(low)
    _, known_first = twice.upsample(low)
    assert known == 1.0 and known_first < 1.0  # every pixel of these frames is in the pixel-alone tier
    assert _psnr(out, full) > _psnr(alone(low), full)  # the 3x3 tier first is closer than the pixel alone


def test_a_tiles_file_round_trips_and_bad_ones_are_refused(frames, tmp_path, monkeypatch):
    up = tiles.fit(downsample(frames[:40]), frames[:40])
    up.save(tmp_path / "t.h5")
    back = tiles.load(tmp_path / "t.h5")
    low = downsample(frames[40:60])
    assert back.tiers == up.tiers and np.array_equal(back(low), up(low))

    def broken(name, change):
        path = tmp_path / name
        up.save(path)
        with h5py.File(path, "a") as f:
            change(f)
        return path

    def unsort(f):
        k = f["keys_0"][()]
        del f["keys_0"]
        f["keys_0"] = k[::-1].copy()

    def widen(f):
        del f["blocks_1"]
        f["blocks_1"] = np.zeros((len(f["keys_1"]), 47), np.uint8)

    def group(f):
        del f["keys_0"]
        f.create_group("keys_0")

    cases = [
        (broken("kind.h5", lambda f: f.attrs.__setitem__("kind", "other")), "not a mario-kit tiles file"),
        (broken("group.h5", group), "lacks keys_0"),
        (broken("tiers.h5", lambda f: f.attrs.__setitem__("tiers", "[[0, 9]]")), "tiers out of range"),
        (broken("sorted.h5", unsort), "not sorted"),
        (broken("blocks.h5", widen), "want (n,), (n, 48)"),
    ]
    (tmp_path / "link.h5").symlink_to(tmp_path / "t.h5")
    cases.append((tmp_path / "link.h5", "symbolic link"))
    for path, says in cases:
        with pytest.raises(UserError, match=None) as e:
            tiles.load(path)
        assert says in str(e.value) and "\n" not in str(e.value), (path.name, str(e.value))
    monkeypatch.setattr(tiles, "MAX_ENTRIES", len(up.keys[0]))  # the first tier fits, the second not
    with pytest.raises(UserError, match="entries in all"):
        tiles.load(tmp_path / "t.h5")
