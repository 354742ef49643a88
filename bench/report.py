"""Report speed (steps/s, with and without frame figures) and a headless-Chromium render of the page.

    .venv/bin/python bench/report.py DATASET [--screenshot docs/report-screenshot.png]

The screenshot step is skipped, with the reason printed, when Debian's chromium is absent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from mario_kit.datasets.dataset import Dataset
from mario_kit.reports.report import make_report


def screenshot(page: Path, png: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return "skipped: no chromium on this machine (apt-get install chromium)"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                "--window-size=1200,2400",
                f"--screenshot={png.resolve()}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return str(png)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--screenshot", type=Path, default=None)
    args = ap.parse_args()
    steps = int(Dataset(args.dataset).index["length"].sum())
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        make_report([args.dataset], Path(tmp) / "cols", frames=False, progress=False)
        cols = time.perf_counter() - t
        t = time.perf_counter()
        r = make_report([args.dataset], Path(tmp) / "all", frames=True, progress=False)
        full = time.perf_counter() - t
        shot = screenshot(r["html"], args.screenshot) if args.screenshot else "not asked"
    print(
        json.dumps(
            {
                "steps": steps,
                "steps_per_s_columns_only": round(steps / cols),
                "steps_per_s_with_frames": round(steps / full),
                "screenshot": shot,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
