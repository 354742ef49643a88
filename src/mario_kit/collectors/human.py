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
`HumanApp` is a policy like the others (`collectors.policies.POLICIES["human"]`): it runs through
the one collection loop (`collect._episodes`), choosing the level itself (the N key's cursor) and
hearing how each episode ended (the window's messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mario_kit.collectors.loop import CutEpisode, DiscardEpisode, StopCollection
from mario_kit.datasets import format as F
from mario_kit.gui import Controls, FrameLimiter, Screen


@dataclass
class Session:
    episodes: int = 0
    steps: int = 0
    message: str = ""


class Player:
    """What every human player shares as a policy (the pygame window, a browser: `serve`): episode
    and step counters, the level choice (N moves the cursor on), and `_frame(screen) -> action`,
    called at every emulator frame, which subclasses implement."""

    name = "human"
    source = "human"
    interactive = True  # records until the player quits: --episodes is optional, --steps and --workers do not apply
    random_levels = started = paused = False
    level_cursor = episode_no = step_no = 0

    def reset(self, rng: np.random.Generator, n_actions: int) -> None:
        self.episode_no += 1
        self.step_no = 0

    def act(self, frame: np.ndarray, info: dict[str, Any]) -> int:
        self.step_no += 1
        return self._frame(frame)

    def on_frame(self, screen: np.ndarray) -> int:
        return self._frame(screen)

    def _frame(self, screen: np.ndarray) -> int:
        raise NotImplementedError

    def apply(self, cmd: str) -> None:
        """A session command (gui.SESSION_KEYS): quit and next keep the episode in progress as
        'cut', discard drops it, pause (once started) holds everything, start begins."""
        if cmd == "quit":
            raise StopCollection(keep=True)
        if cmd == "start":
            self.started = True
        elif cmd == "pause" and self.started:
            self.paused = not self.paused
        elif cmd == "discard":
            raise DiscardEpisode()
        elif cmd == "next":
            self.level_cursor += 1
            raise CutEpisode()

    def choose_level(self, rng: np.random.Generator, levels: list[str]) -> str:
        """'random': drawn per episode; a list: played in order from the cursor that N moves on."""
        if self.random_levels:
            return levels[int(rng.integers(len(levels)))]
        return levels[self.level_cursor % len(levels)]


class HumanApp(Player):
    """The pygame window and the human 'policy': draws every emulator frame, reads keys, and
    returns the action for the next frame."""

    def __init__(
        self,
        action_set: str,
        keymap: dict[str, list[str]],
        scale: int = 3,
        fps: float = 60.0,
        script: dict[int, list] | None = None,
        wait_for_start: bool = True,
        random_levels: bool = False,
    ):
        self.screen = Screen(scale, "mario-kit: human collector")
        self.pg = self.screen.pg
        aset = F.get_action_set(action_set)
        self.aset, self.keymap, self.fps_target = aset, keymap, fps
        self.table = F.action_table(aset)
        self.random_levels = random_levels
        self.controls = Controls(keymap)
        self.limiter = FrameLimiter(fps)
        self.script = script or {}
        self.frame_no = 0  # frames shown (scripted events are keyed by it)
        self.session = Session()
        self.action = 0
        self.unmapped_warned: set[tuple[str, ...]] = set()
        self.started = not wait_for_start

    def params(self) -> dict[str, Any]:
        return {"name": "human", "keymap": self.keymap, "fps": self.fps_target}

    # --- collection hook (collect._episodes) -------------------------------------------------
    def episode_ended(self, path: Path | None, n_steps: int, end: str) -> None:
        if path is None:
            self.session.message = "episode discarded"
            return
        self.session.episodes += 1
        self.session.steps += n_steps
        self.session.message = f"episode saved ({end}, {n_steps} steps)"
        print(f"saved {path.name}: {n_steps} steps, end={end}")

    # --- one displayed frame ---------------------------------------------------------
    def _poll(self) -> None:
        for e in self.script.pop(self.frame_no, []):
            self.pg.event.post(e)
        for e in self.pg.event.get():
            cmd = self.controls.handle(e)
            if cmd:
                self.apply(cmd)

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
        self.screen.draw(
            screen,
            [
                f"{'REC' if rec else '   '}  ep {self.episode_no}  step {self.step_no}  saved {self.session.episodes}",
                f"{self.aset.meaning(self.action)}   {self.limiter.fps:4.1f} fps",
            ],
            [banner, self.session.message],
            dot=rec,
        )

    def close(self) -> None:
        self.screen.close()


def session_summary(paths: list[Path], aset: F.ActionSet) -> dict[str, Any]:
    """What the player recorded this session: episodes, steps and actions taken."""
    from mario_kit.datasets.episode import Episode

    counts = np.zeros(len(aset), dtype=np.int64)
    for p in paths:
        with Episode(p) as ep:
            counts += np.bincount(ep.actions, minlength=len(aset))
    return {
        "episodes": len(paths),
        "steps": int(counts.sum()),
        "actions": {aset.meaning(i): int(c) for i, c in enumerate(counts)},
        "folder": str(paths[0].parent) if paths else "",
    }
