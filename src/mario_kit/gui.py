"""Shared pieces of the pygame windows (human collector, play): key and joystick state from
events, a steady frame limiter, the key-map file, and the scaled screen with its overlay."""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mario_kit import UserError

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

BUTTONS = ("right", "left", "down", "up", "A", "B")
DEFAULT_KEYMAP: dict[str, list[str]] = {
    "right": ["right"],
    "left": ["left"],
    "up": ["up"],
    "down": ["down"],
    "A": ["x"],
    "B": ["z"],
}
SESSION_KEYS = {"p": "pause", "backspace": "discard", "escape": "quit", "n": "next", "return": "start", "r": "restart"}
# Joystick: buttons 0/1 are A/B on most pads (and 2/3 as alternatives), 7 (or 9) start; hat/axes move.
JOY_BUTTONS = {0: "A", 1: "B", 2: "B", 3: "A"}
JOY_START = (7, 9)


def key_code(name: str) -> int:
    """pygame's code of a key name (ValueError for an unknown one). It needs no display, but warns
    without pygame.init(), which a key map or a key script is read before."""
    import pygame

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pygame.key.key_code(name)


def load_keymap(path: Path | None) -> dict[str, list[str]]:
    keymap = {k: list(v) for k, v in DEFAULT_KEYMAP.items()}
    if path is None:
        return keymap
    from mario_kit.trust import read_json

    user = read_json(path, max_bytes=1 << 20, what="key map")
    if not isinstance(user, dict):
        raise UserError(f'key map {path} must be a JSON object like {{"A": ["x", "space"]}}')
    for button, keys in user.items():
        if button not in BUTTONS:
            raise UserError(f"key map {path}: unknown button {button!r}; buttons are {', '.join(BUTTONS)}")
        keys = [keys] if isinstance(keys, str) else keys
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise UserError(f"key map {path}: {button} takes a key name or a list of key names")
        for k in keys:
            try:
                key_code(k)
            except (ValueError, TypeError):
                raise UserError(
                    f"key map {path}: unknown key name {k!r} (pygame key names, e.g. 'x', 'space', 'left')"
                ) from None
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
        return tuple(sorted(held, key=lambda b: held[b]))


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


class Screen:
    """A window of 256x240 frames scaled by `scale`, with overlay lines top-left and banners centred."""

    def __init__(self, scale: int, caption: str):
        import pygame

        self.pg = pygame
        pygame.display.init()
        pygame.font.init()
        pygame.joystick.init()
        self.size = (256 * scale, 240 * scale)
        self.window = pygame.display.set_mode(self.size)
        pygame.display.set_caption(caption)
        self.font = pygame.font.Font(None, max(18, 8 * scale))
        self._scaled: Any = None  # the scaled frame's surface, made at the first draw
        self.draw_ms: list[float] = []

    def draw(
        self, frame: np.ndarray, lines: list[str], banners: tuple[str, ...] | list[str] = (), dot: bool = False
    ) -> None:
        pg = self.pg
        t = time.perf_counter()
        surf = pg.image.frombuffer(np.ascontiguousarray(frame), (frame.shape[1], frame.shape[0]), "RGB")
        if self._scaled is None:
            self._scaled = pg.Surface(self.size, 0, surf)  # same pixel format as the frame
        scaled = self._scaled
        pg.transform.scale(surf, self.size, scaled)
        self.window.blit(scaled, (0, 0))
        if dot:
            pg.draw.circle(self.window, (220, 20, 20), (12, 14), 7)
        for i, text in enumerate(lines):
            self.window.blit(
                self.font.render(text, True, (255, 255, 255), (0, 0, 0)), (24, 4 + i * self.font.get_linesize())
            )
        for i, text in enumerate(b for b in banners if b):
            img = self.font.render(text, True, (255, 255, 0), (0, 0, 0))
            self.window.blit(img, img.get_rect(center=(self.size[0] // 2, self.size[1] // 2 + i * 30)))
        pg.display.flip()
        self.draw_ms.append((time.perf_counter() - t) * 1000)
        if len(self.draw_ms) > 600:
            del self.draw_ms[:300]

    def close(self) -> None:
        self.pg.display.quit()


SCRIPT_ENV = "MARIO_KIT_KEYS"


def script_from_env() -> dict[int, list] | None:
    """Key events injected by a test (or a demo recording) through the environment variable
    MARIO_KIT_KEYS: comma-separated `KEY@FRAME` (key down) and `KEY^@FRAME` (key up), pygame key
    names, frames counted from the window's first frame. E.g. `return@2,right@3,x@20,x^@30,escape@90`.
    None when the variable is unset."""
    spec = os.environ.get(SCRIPT_ENV)
    if not spec:
        return None
    import pygame

    script: dict[int, list] = {}
    for item in spec.split(","):
        key, _, frame = item.strip().rpartition("@")
        up = key.endswith("^")
        try:
            code = key_code(key.rstrip("^"))
            n = int(frame)
        except ValueError:
            raise UserError(f"{SCRIPT_ENV}: expected KEY@FRAME or KEY^@FRAME items, got {item!r}") from None
        script.setdefault(n, []).append(pygame.event.Event(pygame.KEYUP if up else pygame.KEYDOWN, key=code))
    return script


def require_display(script: dict[int, list] | None, what: str) -> None:
    """An interactive window needs a screen: under SDL's dummy or offscreen driver, or on Linux with
    neither X11 nor Wayland, nobody could press a key, so say so instead of waiting forever.
    Scripted keys (tests, MARIO_KIT_KEYS) need no screen."""
    if script:
        return
    driver = os.environ.get("SDL_VIDEODRIVER", "")
    headless = driver in ("dummy", "offscreen") or (
        sys.platform.startswith("linux")
        and not driver
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
    )
    if headless:
        raise UserError(
            f"{what} needs a display (SDL_VIDEODRIVER={driver or 'unset'}, DISPLAY unset): run it on a desktop, "
            f"or over ssh -X"
        )
