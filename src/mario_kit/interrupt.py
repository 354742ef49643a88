"""Ctrl-C as a flag, for collection and training alike.

The long loops check `requested` between steps, so that an interrupt never lands inside a file
operation: collection discards the episode in progress, training saves a checkpoint to resume from.
A second Ctrl-C raises KeyboardInterrupt at once; one that comes within `REPEAT_GRACE` seconds of the
first is the same keypress delivered twice (the terminal signals the whole process group, and a
launcher such as torchrun, or a collector's main process, passes it on to its children as well).
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

REPEAT_GRACE = 1.0  # seconds


class CtrlC:
    """Context manager: installs the SIGINT handler (main thread only; elsewhere it leaves signals
    alone and only the flag is there), restores the previous one on exit."""

    def __init__(self, install: bool = True, notice: str | None = None) -> None:
        self.requested = False
        self._install = install
        self._notice = notice  # said on stderr at the first Ctrl-C, where stopping takes a while
        self._old: Any = None
        self._first = 0.0

    def _handler(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.requested, self._first = True, time.monotonic()
            if self._notice:
                print(self._notice, file=sys.stderr, flush=True)
        elif time.monotonic() - self._first > REPEAT_GRACE:
            raise KeyboardInterrupt

    def __enter__(self) -> "CtrlC":
        if self._install:
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # not the main thread
                self._old = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
            self._old = None
