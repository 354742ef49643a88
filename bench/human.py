"""Human collector cost per displayed frame (emulate + draw + record) at scale 3, headless.

    SDL_VIDEODRIVER=dummy .venv/bin/python bench/human.py [--frames 1200]

Runs the real app with the limiter off, holding right+B (run) and jumping now and then.
Prints JSON: ms per displayed frame, its share of the 16.7 ms NES frame budget, and the draw part.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402
import pygame  # noqa: E402

from mario_kit.collectors import collect_human, human  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=1200)
    ap.add_argument("--scale", type=int, default=3)
    args = ap.parse_args()
    K = lambda kind, key: pygame.event.Event(kind, key=key)  # noqa: E731
    script = {0: [K(pygame.KEYDOWN, pygame.K_RIGHT), K(pygame.KEYDOWN, pygame.K_z)]}
    for f in range(40, args.frames, 60):
        script[f] = [K(pygame.KEYDOWN, pygame.K_x)]
        script[f + 25] = [K(pygame.KEYUP, pygame.K_x)]
    script[args.frames] = [K(pygame.KEYDOWN, pygame.K_ESCAPE)]
    draw: list[float] = []
    orig = human.HumanApp._draw

    def timed(self, screen, banner=""):
        t = time.perf_counter()
        orig(self, screen, banner)
        draw.append(time.perf_counter() - t)

    human.HumanApp._draw = timed
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        res = collect_human(Path(tmp), script=script, fps=0, wait_for_start=False, scale=args.scale)
        wall = time.perf_counter() - t
    per = 1000 * wall / args.frames
    print(
        json.dumps(
            {
                "frames": args.frames,
                "scale": args.scale,
                "steps_recorded": res.steps,
                "ms_per_displayed_frame": round(per, 3),
                "share_of_16.7ms_budget": round(per / (1000 / 60), 3),
                "draw_ms_per_frame": round(1000 * float(np.mean(draw)), 3),
                "note": "wall time includes env creation and file finishing; the dummy driver's flip costs ~0",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
