"""A browser player as a policy: the human collector's recording, with the window replaced by a
WebSocket. Runs in its own thread through the one collection loop (`collect.record_session`).

Per emulator frame (`on_frame`, paced at 60 frames/s by a deadline): apply the commands the page
sent (start, pause, discard, next, quit), send the frame, return the action for the held buttons
(`format.nearest_action`, as in pygame). The loop records the joypad byte of every frame and the
majority action of each step, exactly as for `collect --human`, so the episodes are interchangeable.

Frame encoding (`encode_frame`): the RGB frame XOR the last frame sent to this player, deflated
(zlib, level 1); the page inflates (DecompressionStream) and XORs it back. A frame is skipped,
never queued, while two are still on their way: the XOR base is always the last frame queued.
"""

from __future__ import annotations

import json
import struct
import threading
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mario_kit.collectors.human import Player
from mario_kit.collectors.loop import StopCollection
from mario_kit.datasets import format as F

COMMANDS = ("start", "pause", "discard", "next", "quit")
BUTTONS = ("right", "left", "down", "up", "A", "B")


def encode_frame(frame: np.ndarray, base: np.ndarray | None, header: dict[str, Any]) -> bytes:
    """[u32 header length][header JSON][zlib(frame XOR base)] (base None: a key frame)."""
    body = frame if base is None else np.bitwise_xor(frame, base)
    head = json.dumps({**header, "key": base is None}, separators=(",", ":")).encode()
    return struct.pack("<I", len(head)) + head + zlib.compress(body.tobytes(), 1)


def decode_frame(msg: bytes, base: np.ndarray | None) -> tuple[dict[str, Any], np.ndarray]:
    """The page's decoding, in Python (tests, the bench's load generator)."""
    n = struct.unpack("<I", msg[:4])[0]
    header = json.loads(msg[4 : 4 + n])
    body = np.frombuffer(zlib.decompress(msg[4 + n :]), np.uint8).reshape(F.FRAME_SHAPE)
    if header["key"]:
        return header, body
    assert base is not None, "a delta frame needs the frame before it"
    return header, np.bitwise_xor(body, base)


class Pacer:
    """A steady frame rate by deadlines (no drift, no busy wait: many players share the cores)."""

    def __init__(self, fps: float) -> None:
        self.period, self.next = 1.0 / fps, time.perf_counter()
        self.stamps: deque[float] = deque(maxlen=61)

    def wait(self) -> None:
        self.next += self.period
        now = time.perf_counter()
        if self.next < now - 0.1:  # far behind (a pause, a slow frame): start again from now
            self.next = now
        if self.next > now:
            time.sleep(self.next - now)
        self.stamps.append(time.perf_counter())

    @property
    def fps(self) -> float:
        s = self.stamps
        return (len(s) - 1) / (s[-1] - s[0]) if len(s) > 1 and s[-1] > s[0] else 0.0


class BrowserPlayer(Player):
    """One player's policy. `send(kind, payload)` is called from the emulator thread: ('frame',
    bytes) or ('event', dict); `pending()` says how many frames are still queued for the page."""

    def __init__(
        self,
        action_set: str,
        send: Callable[[str, Any], None],
        pending: Callable[[], int],
        fps: float = 60.0,
        keep_on_disconnect: bool = False,
        random_levels: bool = False,
    ) -> None:
        self.aset = F.get_action_set(action_set)
        self.table = F.action_table(self.aset)
        self.send, self.pending = send, pending
        self.pacer = Pacer(fps)
        self.fps_target, self.keep_on_disconnect, self.random_levels = fps, keep_on_disconnect, random_levels
        self.lock = threading.Lock()
        self.held: tuple[str, ...] = ()
        self.key_clock: float | None = None  # the page's time stamp of the last key change, echoed back
        self.commands: deque[str] = deque()
        self.closed = False  # the connection is gone
        self.violation = 0  # the close code when it broke the protocol (1008, or 1009: too big); 0 when not
        self.saved = 0
        self.action, self.message = 0, ""
        self.base: np.ndarray | None = None
        self.frame_no = 0

    # --- from the connection (event-loop thread) -------------------------------------------
    def keys(self, held: list[str], clock: float | None) -> None:
        with self.lock:
            self.held = tuple(b for b in BUTTONS if b in held)
            self.key_clock = clock

    def queue_command(self, cmd: str) -> None:
        with self.lock:
            self.commands.append(cmd)

    def disconnect(self) -> None:
        self.closed = True

    # --- policy protocol (the rest is collectors.human.Player's) ----------------------------------
    def params(self) -> dict[str, Any]:
        return {"name": "human", "client": "browser", "fps": self.fps_target}

    def episode_ended(self, path: Path | None, n_steps: int, end: str) -> None:
        """Called once the episode is on disk (atomic): only then does the page hear 'saved'."""
        if path is None:
            self.message = "episode discarded"
            self.send("event", {"t": "discarded"})
            return
        self.saved += 1
        self.message = f"episode saved ({end}, {n_steps} steps)"
        self.send("event", {"t": "saved", "file": path.name, "steps": n_steps, "end": end})

    # --- one emulator frame ----------------------------------------------------------------
    def _apply_commands(self) -> None:
        if self.closed:
            raise StopCollection(keep=self.keep_on_disconnect)
        with self.lock:
            cmds, self.commands = list(self.commands), deque()
        for cmd in cmds:
            self.apply(cmd)

    def _frame(self, screen: np.ndarray) -> int:
        self._apply_commands()
        while self.paused or not self.started:  # nothing advances, nothing is recorded
            self._show(screen, "PAUSED (P)" if self.started else "press Enter to start")
            self.pacer.wait()
            self._apply_commands()
        with self.lock:
            held, clock = self.held, self.key_clock
        self.action = int(self.table[F.buttons_to_byte(held)])
        self._show(screen, "", clock)
        self.pacer.wait()
        return self.action

    def _show(self, screen: np.ndarray, banner: str, clock: float | None = None) -> None:
        self.frame_no += 1
        if self.pending() >= 2:  # the page is behind: skip this frame (display only; the recording has it)
            return
        rec = self.started and not self.paused
        header = {
            "f": self.frame_no,
            "ep": self.episode_no,
            "step": self.step_no,
            "rec": rec,
            "saved": self.saved,
            "act": self.aset.meaning(self.action),
            "fps": round(self.pacer.fps, 1),
            "banner": banner,
            "msg": self.message,
            "c": clock,
        }
        key = self.base is None or self.frame_no % 300 == 0
        self.send("frame", encode_frame(screen, None if key else self.base, header))
        self.base = screen.copy()
