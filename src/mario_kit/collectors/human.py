"""`collect --human`: a person plays the real emulator in a pygame window while episodes are recorded.

Every emulator frame is shown, at NES speed (60 frames/s by a deadline-based limiter); the dataset
keeps one frame per step (frame skip). Keys are tracked from KEYDOWN/KEYUP events (not
`pygame.key.get_pressed()`), so the whole input path can be driven by posted events, headless.

Keys (defaults; change them with `--keymap FILE`, JSON `{"A": ["x", "space"], ...}`):
  arrows move, X jump (A), Z run (B), Enter start the session; P pause, Backspace discard the
  current episode, N next level (when --level lists several or is 'random'), Esc quit.
Quitting (Esc or closing the window) and N save the episode in progress as end='cut' (when it
has at least one step); Backspace discards it. Finished episodes are always kept.

Held buttons map to an action of the action set by `format.nearest_action` (documented there).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mario_kit import UserError
from mario_kit.collectors.collect import CollectResult, episode_rng
from mario_kit.collectors.env import ROM_MODE, MarioEnv, env_id, parse_levels
from mario_kit.collectors.loop import DiscardEpisode, StopCollection, record_episode
from mario_kit.datasets import format as F
from mario_kit.datasets.format import action_table, nearest_action  # noqa: F401  (re-exported)
from mario_kit.gui import Controls, FrameLimiter, Screen, load_keymap, require_display, script_from_env  # noqa: F401  (re-exported)
from mario_kit.datasets.dataset import check_output_dir
from mario_kit.datasets.episode import EpisodeMeta, EpisodeWriter

class NextLevel(Exception):
    """N pressed: end the episode in progress (kept as 'cut') and play the next level."""


@dataclass
class Session:
    episodes: int = 0
    steps: int = 0
    message: str = ""


class HumanApp:
    """The pygame window and the human 'policy': draws every emulator frame, reads keys, and
    returns the action for the next frame."""

    name = "human"
    source = "human"

    def __init__(self, aset: F.ActionSet, keymap: dict[str, list[str]], scale: int = 3, fps: float = 60.0,
                 script: dict[int, list] | None = None, wait_for_start: bool = True):
        self.screen = Screen(scale, "mario-kit: human collector")
        self.pg = self.screen.pg
        self.aset, self.keymap, self.fps_target = aset, keymap, fps
        self.table = action_table(aset)
        self.controls = Controls(keymap)
        self.limiter = FrameLimiter(fps)
        self.script = script or {}
        self.frame_no = 0  # frames shown (scripted events are keyed by it)
        self.paused = False
        self.session = Session()
        self.episode_no = 0
        self.step_no = 0
        self.action = 0
        self.unmapped_warned: set[tuple[str, ...]] = set()
        self.started = not wait_for_start

    # --- policy protocol -------------------------------------------------------------
    def reset(self, rng: np.random.Generator, n_actions: int) -> None:
        self.episode_no += 1
        self.step_no = 0

    def act(self, frame: np.ndarray, info: dict[str, Any]) -> int:
        self.step_no += 1
        return self._frame(frame)

    def on_frame(self, screen: np.ndarray) -> int:
        return self._frame(screen)

    def params(self) -> dict[str, Any]:
        return {"name": "human", "keymap": self.keymap, "fps": self.fps_target}

    # --- one displayed frame ---------------------------------------------------------
    def _poll(self) -> None:
        for e in self.script.pop(self.frame_no, []):
            self.pg.event.post(e)
        for e in self.pg.event.get():
            cmd = self.controls.handle(e)
            if cmd == "quit":
                raise StopCollection(keep=True)
            if cmd == "pause":
                self.paused = not self.paused
            elif cmd == "start":
                self.started = True
            elif cmd == "discard":
                raise DiscardEpisode()
            elif cmd == "next":
                raise NextLevel()

    def _frame(self, screen: np.ndarray) -> int:
        self._poll()
        while self.paused or not self.started:  # nothing advances, nothing is recorded
            self._draw(screen, "PAUSED (P)" if self.started else "press Enter to start")
            self.frame_no += 1
            self.limiter.wait()
            self._poll()
        held = self.controls.buttons()
        self.action = int(self.table[F.buttons_to_byte(held)])
        if held and self.aset.buttons[self.action] == ("NOOP",) and held not in self.unmapped_warned:
            self.unmapped_warned.add(held)
            print(f"note: {'+'.join(held)} is not in the {self.aset.name} action set; recorded as NOOP")
        self._draw(screen)
        self.frame_no += 1
        self.limiter.wait()
        return self.action

    def _draw(self, screen: np.ndarray, banner: str = "") -> None:
        rec = self.started and not self.paused
        self.screen.draw(screen, [
            f"{'REC' if rec else '   '}  ep {self.episode_no}  step {self.step_no}  saved {self.session.episodes}",
            f"{self.aset.meaning(self.action)}   {self.limiter.fps:4.1f} fps",
        ], [banner, self.session.message], dot=rec)

    def close(self) -> None:
        self.screen.close()


def collect_human(
    out: Path, level: str = "1-1", action_set: str = "simple", frame_skip: int = 4,
    max_steps: int | None = None, episodes: int | None = None, seed: int | None = None, player: str = "",
    scale: int = 3, keymap: Path | None = None, fps: float = 60.0, script: dict[int, list] | None = None,
    wait_for_start: bool = True, progress: bool = True, steps: int | None = None, workers: int = 1,
    balance: str | None = None, **_: Any,
) -> CollectResult:
    """Run the human collector until Esc, the window closes, or `episodes` are recorded."""
    if balance is not None:
        raise UserError("--balance does not steer a human; balance human data afterwards with `mario-kit balance`")
    if steps is not None or workers != 1:
        raise UserError("--human records one player: --steps and --workers do not apply")
    if episodes is not None and episodes < 1:
        raise UserError("--episodes must be >= 1")
    if not 1 <= scale <= 8:
        raise UserError(f"--scale must be in 1..8, got {scale}")
    if not 1 <= frame_skip <= F.MAX_FRAME_SKIP:
        raise UserError(f"--frame-skip must be in 1..{F.MAX_FRAME_SKIP}, got {frame_skip}")
    levels = parse_levels(level)
    aset = F.get_action_set(action_set)
    keys = load_keymap(keymap)
    script = script if script is not None else script_from_env()
    require_display(script, "collect --human")
    out = Path(out)
    check_output_dir(out, action_set, frame_skip)
    max_steps = max_steps or 100_000
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "little") >> 1
    app = HumanApp(aset, keys, scale=scale, fps=fps, script=script, wait_for_start=wait_for_start)
    result = CollectResult([], 0, seed)
    envs: dict[str, MarioEnv] = {}
    level_i, index = 0, 0

    try:
        while episodes is None or len(result.paths) < episodes:
            rng = episode_rng(seed, index)
            lv = levels[int(rng.integers(len(levels)))] if level == "random" else levels[level_i % len(levels)]
            env = envs.get(lv) or envs.setdefault(lv, MarioEnv(lv))
            meta = EpisodeMeta(env_id=env_id(lv), level=lv, frame_skip=frame_skip, action_set=aset, source="human",
                               policy=app.params(), seed=seed, player=player, rom_mode=ROM_MODE,
                               extra={"episode_index": index})
            writer = EpisodeWriter(out, meta)
            index += 1
            try:
                end = record_episode(env, app, writer, rng, frame_skip, max_steps)
            except DiscardEpisode:
                writer.discard()
                app.session.message = "episode discarded"
                continue
            except NextLevel:
                _keep_cut(writer, result, app)
                level_i += 1
                continue
            except StopCollection as stop:
                if stop.keep:
                    _keep_cut(writer, result, app)
                else:
                    writer.discard()
                break
            except KeyboardInterrupt:
                writer.discard()
                result.interrupted = True
                break
            except BaseException:
                writer.discard()
                raise
            _keep(writer, writer.finish(end), result, app, end)
    finally:
        app.close()
        for env in envs.values():
            env.close()
    result.steps = app.session.steps
    result.summary = session_summary(result, aset)
    return result


def _keep(writer: EpisodeWriter, path: Path, result: CollectResult, app: HumanApp, end: str) -> None:
    result.paths.append(path)
    app.session.episodes += 1
    app.session.steps += writer.n_steps
    app.session.message = f"episode saved ({end}, {writer.n_steps} steps)"
    print(f"saved {path.name}: {writer.n_steps} steps, end={end}")


def _keep_cut(writer: EpisodeWriter, result: CollectResult, app: HumanApp) -> None:
    if writer.n_steps > 0:
        _keep(writer, writer.finish("cut"), result, app, "cut")
    else:
        writer.discard()


def session_summary(result: CollectResult, aset: F.ActionSet) -> dict[str, Any]:
    from mario_kit.datasets.episode import Episode

    counts = np.zeros(len(aset), dtype=np.int64)
    for p in result.paths:
        with Episode(p) as ep:
            counts += np.bincount(ep.actions, minlength=len(aset))
    return {
        "episodes": len(result.paths),
        "steps": int(counts.sum()),
        "actions": {aset.meaning(i): int(c) for i, c in enumerate(counts)},
        "folder": str(result.paths[0].parent) if result.paths else "",
    }
