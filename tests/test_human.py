"""Human collector, headless: real pygame (dummy video driver), real emulator, posted key events."""

import json
import time

import numpy as np
import pygame
import pytest

from mario_kit import UserError
from mario_kit.emulator import replay
from mario_kit.collectors import collect_human
from mario_kit.datasets.format import nearest_action
from mario_kit import gui
from mario_kit.gui import FrameLimiter, load_keymap
from mario_kit.datasets import format as F
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode
from mario_kit.datasets.validate import validate_dir

DOWN, UP = pygame.KEYDOWN, pygame.KEYUP


def ev(kind, key):
    return pygame.event.Event(kind, key=key)


def play(out, script, **kw):
    kw.setdefault("fps", 0)  # as fast as possible: the limiter is tested on its own
    return collect_human(out, script=script, wait_for_start=False, progress=False, **kw)


def episodes(d):
    return [Episode(p) for p in Dataset(d).paths]


@pytest.mark.parametrize(
    "held,aset,expected",
    [
        (("right",), "simple", "right"),
        (("right", "A", "B"), "simple", "right+A+B"),
        (("right", "A", "B", "down"), "simple", "right+A+B"),
        (("A", "B"), "simple", "A"),
        (("left", "A"), "simple", "left"),
        (("left", "A"), "complex", "left+A"),
        (("B",), "simple", "NOOP"),
        (("left",), "right", "NOOP"),
        (("up",), "complex", "up"),
        (("right", "B", "up"), "right", "right+B"),
        ((), "simple", "NOOP"),
    ],
)
def test_nearest_action(held, aset, expected):
    a = F.get_action_set(aset)
    assert a.meaning(nearest_action(held, a)) == expected


def test_scripted_keys_record_exactly_the_expected_actions_and_replay(tmp_path):
    # step s polls keys at displayed frames 4s..4s+3; a change at 4s+2 wins the step (tie -> later),
    # a change at 4s+3 does not (3 frames against 1).
    script = {
        0: [ev(DOWN, pygame.K_RIGHT)],
        8: [ev(DOWN, pygame.K_x)],
        16: [ev(UP, pygame.K_x)],
        22: [ev(UP, pygame.K_RIGHT)],
        27: [ev(DOWN, pygame.K_LEFT)],
        36: [ev(DOWN, pygame.K_ESCAPE)],
    }
    res = play(tmp_path, script)
    (ep,) = episodes(tmp_path)
    names = [ep.action_set.meaning(a) for a in ep.actions]
    assert names == ["right", "right", "right+A", "right+A", "right", "NOOP", "NOOP", "left", "left"]
    assert ep.attrs["end"] == "cut" and ep.attrs["source"] == "human"
    R, A, L = 0x80, 0x01, 0x40
    assert ep.joypad[20:28].tolist() == [R, R, 0, 0, 0, 0, 0, L]
    assert ep.joypad[8:12].tolist() == [R | A] * 4
    assert res.summary["actions"]["right+A"] == 2 and res.summary["steps"] == 9
    # keys changed inside steps: replaying the per-frame joypad bytes is still bit-exact
    frames = ep.frames[()]
    for t, (frame, _) in enumerate(replay("1-1", ep.joypad, ep.step_frames)):
        assert np.array_equal(frame, frames[t])


def test_pause_records_nothing(tmp_path):
    script = {
        0: [ev(DOWN, pygame.K_RIGHT)],
        8: [ev(DOWN, pygame.K_p)],
        20: [ev(DOWN, pygame.K_p)],
        40: [ev(DOWN, pygame.K_ESCAPE)],
    }
    play(tmp_path, script)
    (ep,) = episodes(tmp_path)
    assert ep.length == (40 - 12) // 4 and len(ep.joypad) == 4 * ep.length


def test_backspace_discards_the_episode(tmp_path):
    script = {0: [ev(DOWN, pygame.K_RIGHT)], 12: [ev(DOWN, pygame.K_BACKSPACE)], 30: [ev(DOWN, pygame.K_ESCAPE)]}
    res = play(tmp_path, script)
    (ep,) = episodes(tmp_path)
    assert ep.length == 4 and ep.attrs["end"] == "cut"  # only the second episode, cut by Esc mid-step
    assert len(res.paths) == 1 and not list(tmp_path.glob("*.partial"))


def test_quit_keeps_finished_episodes(tmp_path):
    play(tmp_path, {0: [ev(DOWN, pygame.K_RIGHT)], 400: [ev(DOWN, pygame.K_ESCAPE)]}, player="ana")
    eps = sorted(episodes(tmp_path), key=lambda e: e.attrs["extra"]["episode_index"])
    assert [e.attrs["end"] for e in eps][:-1] == ["terminated"] * (len(eps) - 1) and eps[-1].attrs["end"] == "cut"
    assert len(eps) >= 2 and all(e.attrs["player"] == "ana" for e in eps)
    assert sum(e.length for e in eps) == 100  # 400 displayed frames, 4 per step, all recorded
    rep = validate_dir(tmp_path)
    assert rep.ok and len(rep.good) == len(eps)


def test_combination_outside_the_set_maps_as_documented(tmp_path, capsys):
    play(tmp_path, {0: [ev(DOWN, pygame.K_LEFT)], 8: [ev(DOWN, pygame.K_ESCAPE)]}, action_set="right")
    (ep,) = episodes(tmp_path)
    assert ep.actions.tolist() == [0, 0] and ep.joypad.tolist() == [0] * 8
    assert "left is not in the right action set; recorded as NOOP" in capsys.readouterr().out


def test_keymap_file(tmp_path):
    km = tmp_path / "keys.json"
    km.write_text(json.dumps({"A": ["space"], "right": "d"}))
    assert load_keymap(km)["A"] == ["space"]
    play(
        tmp_path / "d", {0: [ev(DOWN, pygame.K_d), ev(DOWN, pygame.K_SPACE)], 8: [ev(DOWN, pygame.K_ESCAPE)]}, keymap=km
    )
    (ep,) = episodes(tmp_path / "d")
    assert [ep.action_set.meaning(a) for a in ep.actions] == ["right+A", "right+A"]
    for bad in ({"jump": ["x"]}, {"A": ["nokey"]}):
        km.write_text(json.dumps(bad))
        with pytest.raises(UserError):
            load_keymap(km)


class FakeClock:
    """time.perf_counter and time.sleep on a clock the test owns: the limiter's pacing without the machine's."""

    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []

    def perf_counter(self) -> float:
        self.now += 50e-6  # reading the clock takes time, or the limiter's last spin would never end
        return self.now

    def sleep(self, s: float) -> None:
        assert s > 0
        self.slept.append(s)
        self.now += s


def test_frame_limiter_paces_to_its_deadlines(monkeypatch):
    """90 frames of 4 ms work at 60 fps end at 1.5 s with no drift, the fps reads 60, a frame
    never waits past its deadline, and a limiter far behind (a pause) starts again from now."""
    clock = FakeClock()
    monkeypatch.setattr(gui.time, "perf_counter", clock.perf_counter)
    monkeypatch.setattr(gui.time, "sleep", clock.sleep)
    lim = FrameLimiter(60)
    t0 = clock.now
    for i in range(90):
        clock.now += 0.004  # some work per frame
        lim.wait()
        assert clock.now == pytest.approx(t0 + (i + 1) / 60, abs=0.0016)  # sleeps to the deadline, spins the rest
    assert lim.fps == pytest.approx(60, rel=0.01)
    clock.now += 1.0  # a long pause
    lim.wait()
    before = clock.now
    lim.wait()
    assert clock.now - before == pytest.approx(1 / 60, abs=0.0016)  # no burst of frames to catch up
    assert all(s <= 1 / 60 for s in clock.slept)


def test_app_runs_at_nes_speed(tmp_path):
    t = time.perf_counter()
    res = play(tmp_path, {0: [ev(DOWN, pygame.K_RIGHT)], 90: [ev(DOWN, pygame.K_ESCAPE)]}, fps=60)
    # 90 frames at 60 fps take 1.5 s, never less (the limiter's deadlines); a busy machine may take
    # longer, which is the benchmark's business, not a test's
    assert time.perf_counter() - t >= 1.5 * 0.97
    assert res.steps == 90 // 4


def test_next_level_key_keeps_the_episode_and_moves_on(tmp_path):
    script = {0: [ev(DOWN, pygame.K_RIGHT)], 8: [ev(DOWN, pygame.K_n)], 16: [ev(DOWN, pygame.K_ESCAPE)]}
    play(tmp_path, script, level="1-1,1-2")
    eps = sorted(episodes(tmp_path), key=lambda e: e.attrs["extra"]["episode_index"])
    assert [(e.attrs["level"], e.attrs["end"], e.length) for e in eps] == [("1-1", "cut", 2), ("1-2", "cut", 2)]
