import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("MPLBACKEND", "Agg")
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # `make test`: pytest-xdist workers, a test file each at a time
    # The cores shared out among the workers, for torch here and in every `mario-kit` subprocess (they inherit
    # it; set before torch is imported): two workers that each let torch use both cores of a 2-core machine
    # spin against each other (the world-model tests ran 2-5x slower than alone).
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_threads))

import pytest  # noqa: E402

from mario_kit.cli import main  # noqa: E402
from mario_kit.collectors import CollectConfig, collect  # noqa: E402


# The longest test files first (by their CPU time, children included, on 2 cores; test_ray's Ray cluster
# counted), so that with two workers (`make test`, which hands out a file at a time in this order) no long
# file starts last and runs alone at the end; the rest keep their order.
LONGEST_FIRST = (
    "test_readme.py",
    "test_hostile.py",
    "test_world_model.py",
    "test_datasets.py",
    "test_frontier.py",
    "test_ray.py",
    "test_collect.py",
    "test_cli_dataset.py",
    "test_ppo.py",
    "test_play_dream.py",
)


# `make check`, the fast tier, runs the tests not marked slow. A test is slow when it, a fixture it uses or
# a helper of its module they call (in turn) starts a process or trains: its source holds one of these.
# Read from the source, so that a new test lands in the right tier without anyone remembering to mark it.
SLOW_WORDS = (
    "run_cli(",
    '"train"',  # run_here("train", ...): training in this process
    '"evaluate"',
    "subprocess",
    "Popen",
    "torchrun",
    "webdriver",
    "train(",
    "train_agent(",
    "workers=2",
    "import_replay(",
    "import ray",
    "ray.init",
    "--ray",
    "_server(",
    "multiprocessing",
    "optim.",
)


def _is_slow(item: pytest.Item) -> bool:
    funcs = [getattr(item, "function", None)]
    seen: set[str] = set()
    names = list(getattr(item, "fixturenames", []))
    while names:
        name = names.pop()
        if name in seen:
            continue
        seen.add(name)
        for fixdef in item._fixtureinfo.name2fixturedefs.get(name, ()):  # type: ignore[attr-defined]
            funcs.append(fixdef.func)
            names.extend(fixdef.argnames)
    module = getattr(item, "module", None)
    done: set[object] = set()
    while funcs:  # the test, its fixtures and the helpers of its own module they call, in turn
        f = funcs.pop()
        if f is None or f in done:
            continue
        done.add(f)
        try:
            src = inspect.getsource(f)
        except (OSError, TypeError):
            continue
        if any(w in src for w in SLOW_WORDS):
            return True
        for name in re.findall(r"\b(\w+)\(", src):
            helper = getattr(module, name, None)
            if inspect.isfunction(helper) and helper.__module__ == getattr(module, "__name__", None):
                funcs.append(helper)
    return False


def pytest_collection_modifyitems(items: list) -> None:
    for item in items:
        if _is_slow(item):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file kept


def run_cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run `mario-kit ARGS` in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "mario_kit", *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw
    )


def run_here(*args: str) -> subprocess.CompletedProcess:
    """`mario-kit ARGS` through the same entry point in this process: what `run_cli` shows (exit code,
    stdout, stderr; an escaped exception as exit 1 with its traceback) without starting a process that
    imports torch again (seconds each: torch, then torch._dynamo on the first optimizer). For refusals
    and for commands whose subject is not the process itself; signals, kills, torchrun and the
    README's commands keep a real process (`run_cli`). torch's thread count is put back after."""
    import traceback
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    out, err, old = StringIO(), StringIO(), sys.argv
    sys.argv = ["mario-kit", *map(str, args)]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:  # noqa: BLE001 - what a process would print before dying
        err.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = old
        if torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def make_dataset(out: Path, episodes: int = 2, max_steps: int = 60, seed: int = 7, **kw) -> list[Path]:
    cfg = CollectConfig(
        out=out, policy="sticky", policy_kwargs={"p": 0.8}, episodes=episodes, max_steps=max_steps, seed=seed, **kw
    )
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


def run_main(*args: str) -> tuple[int, str, str]:
    """`run_here` as (exit code, stdout, stderr)."""
    r = run_here(*args)
    return r.returncode, r.stdout, r.stderr
