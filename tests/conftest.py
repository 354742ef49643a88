import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from mario_kit.cli import main  # noqa: E402
from mario_kit.collectors import CollectConfig, collect  # noqa: E402


def run_cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run `mario-kit ARGS` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "mario_kit", *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw
    )


def make_dataset(out: Path, episodes: int = 2, max_steps: int = 60, seed: int = 7, **kw) -> list[Path]:
    cfg = CollectConfig(out=out, policy="sticky", policy_kwargs={"p": 0.8}, episodes=episodes,
                        max_steps=max_steps, seed=seed, **kw)
    return collect(cfg, progress=False).paths


def make_store(d: Path, episodes: int, seed: int) -> Path:
    """d/eps: short sticky-random episodes, a third of them in the test split; d/s.zarr: their
    store with full-res frames. Returns the store."""
    from mario_kit.datasets.split import split_dataset
    from mario_kit.datasets.store import build_store

    make_dataset(d / "eps", episodes=episodes, max_steps=40, seed=seed)
    split_dataset(d / "eps", 34, seed=0)
    build_store(d / "eps", d / "s.zarr", full_res=True, progress=False)
    return d / "s.zarr"


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """Two short sticky-random episodes of 1-1, simple action set, frame skip 4."""
    d = tmp_path_factory.mktemp("small")
    make_dataset(d)
    return d


def run_main(capsys, *args) -> tuple[int, str, str]:
    """mario-kit ARGS through the console entry point, in this process."""
    old = sys.argv
    sys.argv = ["mario-kit", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err
