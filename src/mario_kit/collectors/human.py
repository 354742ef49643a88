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

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from mario_kit import UserError
from mario_kit.collectors.collect import CollectResult, episode_rng
from mario_kit.collectors.env import ROM_MODE, MarioEnv, env_id, parse_levels
from mario_kit.collectors.loop import DiscardEpisode, StopCollection, record_episode
from mario_kit.datasets import format as F
from mario_kit.datasets.format import action_table, nearest_action  # noqa: F401  (re-exported)
from mario_kit.datasets.dataset import check_output_dir
from mario_kit.datasets.episode import EpisodeMeta, EpisodeWriter

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

BUTTONS = ("right", "left", "down", "up", "A", "B")
DEFAULT_KEYMAP: dict[str, list[str]] = {
    "right": ["right"], "left": ["left"], "up": ["up"], "down": ["down"], "A": ["x"], "B": ["z"],
}
SESSION_KEYS = {"p": "pause", "backspace": "discard", "escape": "quit", "n": "next", "return": "start"}
# Joystick: buttons 0/1 are A/B on most pads (and 2/3 as alternatives), 7 (or 9) start; hat/axes move.
JOY_BUTTONS = {0: "A", 1: "B", 2: "B", 3: "A"}
JOY_START = (7, 9)


def load_keymap(path: Path | None) -> dict[str, list[str]]:
    keymap = {k: list(v) for k, v in DEFAULT_KEYMAP.items()}
    if path is None:
        return keymap
    try:
        user = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read key map {path}: {e}") from None
    if not isinstance(user, dict):
        raise UserError(f"key map {path} must be a JSON object like {{\"A\": [\"x\", \"space\"]}}")
    import pygame

    for button, keys in user.items():
        if button not in BUTTONS:
            raise UserError(f"key map {path}: unknown button {button!r}; buttons are {', '.join(BUTTONS)}")
        keys = [keys] if isinstance(keys, str) else keys
        for k in keys:
            try:
                with warnings.catch_warnings():  # key_code needs no display, but warns without pygame.init()
                    warnings.simplefilter("ignore")
                    pygame.key.key_code(k)
            except (ValueError, TypeError):
                raise UserError(f"key map {path}: unknown key name {k!r} (pygame key names, e.g. 'x', 'space', 'left')") from None
        keymap[button] = list(keys)
    return keymap


class Controls:
    """Held buttons from keyboard and joystick events. For opposite directions held together,
    the one pressed last wins."""

    def __init__(self, keymap: dict[str, list[str]]):
        import pygame

        self.pg = pygame
        self.key_button = {pygame.key.key_code(k): b for b, keys in keymap.items() for k in keys}
        self.key_command = {pygame.key.key_code(k): c for k, c in SESSION_KEYS.items()}
        self._held: dict[str, int] = {}  # button -> press order
        self._order = 0
        self._joy: dict[int, Any] = {}

    def _press(self, b: str) -> None:
        if b not in self._held:
            self._order += 1
            self._held[b] = self._order

    def _release(self, b: str) -> None:
        self._held.pop(b, None)

    def handle(self, e) -> str | None:
        """Update held buttons; return a session command for command keys."""
        pg = self.pg
        if e.type == pg.QUIT:
            return "quit"
        if e.type == pg.KEYDOWN:
            if e.key in self.key_button:
                self._press(self.key_button[e.key])
            elif e.key in self.key_command:
                return self.key_command[e.key]
        elif e.type == pg.KEYUP and e.key in self.key_button:
            self._release(self.key_button[e.key])
        elif e.type == pg.JOYDEVICEADDED:
            j = pg.joystick.Joystick(e.device_index)
            self._joy[j.get_instance_id()] = j
        elif e.type == pg.JOYBUTTONDOWN:
            if e.button in JOY_START:
                return "start"
            if e.button in JOY_BUTTONS:
                self._press(JOY_BUTTONS[e.button])
        elif e.type == pg.JOYBUTTONUP and e.button in JOY_BUTTONS:
            self._release(JOY_BUTTONS[e.button])
        elif e.type == pg.JOYHATMOTION:
            x, y = e.value
            self._axis("left", "right", x)
            self._axis("down", "up", y)
        elif e.type == pg.JOYAXISMOTION and e.axis in (0, 1):
            v = 0 if abs(e.value) < 0.5 else (1 if e.value > 0 else -1)
            self._axis(*(("left", "right") if e.axis == 0 else ("up", "down")), v)
        return None

    def _axis(self, neg: str, pos: str, v: int) -> None:
        self._release(neg) if v >= 0 else self._press(neg)
        self._release(pos) if v <= 0 else self._press(pos)

    def buttons(self) -> tuple[str, ...]:
        held = dict(self._held)
        for a, b in (("left", "right"), ("up", "down")):
            if a in held and b in held:
                held.pop(a if held[a] < held[b] else b)
        return tuple(sorted(held, key=held.get))


class FrameLimiter:
    """Holds a steady frame rate: sleeps to a deadline (no drift), spins the last 1.5 ms."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps if fps > 0 else 0.0
        self.next = time.perf_counter()
        self.stamps: list[float] = []

    def wait(self) -> None:
        if self.period:
            self.next += self.period
            now = time.perf_counter()
            if self.next < now - 0.1:  # far behind (a pause, a slow frame): start again from now
                self.next = now
            while (left := self.next - time.perf_counter()) > 0:
                if left > 0.0015:
                    time.sleep(left - 0.0015)
        self.stamps.append(time.perf_counter())
        if len(self.stamps) > 61:
            del self.stamps[0]

    def reset(self) -> None:
        self.next = time.perf_counter()
        self.stamps.clear()

    @property
    def fps(self) -> float:
        s = self.stamps
        return (len(s) - 1) / (s[-1] - s[0]) if len(s) > 1 and s[-1] > s[0] else 0.0


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
        import pygame

        self.pg = pygame
        pygame.display.init()
        pygame.font.init()
        pygame.joystick.init()
        self.size = (256 * scale, 240 * scale)
        self.window = pygame.display.set_mode(self.size)
        pygame.display.set_caption("mario-kit: human collector")
        self.font = pygame.font.Font(None, max(18, 8 * scale))
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
        self.draw_ms: list[float] = []
        self._scaled = None

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
        pg = self.pg
        t = time.perf_counter()
        surf = pg.image.frombuffer(np.ascontiguousarray(screen), (256, 240), "RGB")
        if self._scaled is None:
            self._scaled = pg.Surface(self.size, 0, surf)  # same pixel format as the frame
        pg.transform.scale(surf, self.size, self._scaled)
        self.window.blit(self._scaled, (0, 0))
        lines = [
            f"{'REC' if self.started and not self.paused else '   '}  ep {self.episode_no}  step {self.step_no}"
            f"  saved {self.session.episodes}",
            f"{self.aset.meaning(self.action)}   {self.limiter.fps:4.1f} fps",
        ]
        if self.started and not self.paused:
            pg.draw.circle(self.window, (220, 20, 20), (12, 14), 7)
        for i, text in enumerate(lines):
            self.window.blit(self.font.render(text, True, (255, 255, 255), (0, 0, 0)), (24, 4 + i * self.font.get_linesize()))
        for i, text in enumerate(filter(None, (banner, self.session.message))):
            img = self.font.render(text, True, (255, 255, 0), (0, 0, 0))
            self.window.blit(img, img.get_rect(center=(self.size[0] // 2, self.size[1] // 2 + i * 30)))
        pg.display.flip()
        self.draw_ms.append((time.perf_counter() - t) * 1000)
        if len(self.draw_ms) > 600:
            del self.draw_ms[:300]

    def close(self) -> None:
        self.pg.display.quit()


def collect_human(
    out: Path, level: str = "1-1", action_set: str = "simple", frame_skip: int = 4,
    max_steps: int | None = None, episodes: int | None = None, seed: int | None = None, player: str = "",
    scale: int = 3, keymap: Path | None = None, fps: float = 60.0, script: dict[int, list] | None = None,
    wait_for_start: bool = True, progress: bool = True, steps: int | None = None, workers: int = 1,
    **_: Any,
) -> CollectResult:
    """Run the human collector until Esc, the window closes, or `episodes` are recorded."""
    if steps is not None or workers != 1:
        raise UserError("--human records one player: --steps and --workers do not apply")
    if episodes is not None and episodes < 1:
        raise UserError("--episodes must be >= 1")
    if not 1 <= scale <= 8:
        raise UserError(f"--scale must be in 1..8, got {scale}")
    if not 1 <= frame_skip <= 255:
        raise UserError(f"--frame-skip must be in 1..255, got {frame_skip}")
    levels = parse_levels(level)
    aset = F.get_action_set(action_set)
    keys = load_keymap(keymap)
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
