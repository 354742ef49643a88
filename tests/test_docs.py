"""The figures have one home: docs/BENCHMARKS.md is what bench/results/ renders, every area has its
result file and its section in the log, and the README points there instead of repeating figures."""

import contextlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _load_generator() -> Any:
    """bench/tables.py, the generator (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_tables", ROOT / "bench" / "tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _load_generator()


# a measured figure: a number with a unit of speed, size or quality
FIGURE = re.compile(r"\b\d[\d,.]*\s?(dB|frames/s|samples/s|steps/s|KB/s|MB/s|KB a frame|B a step)\b")


def test_benchmarks_page_is_what_the_results_render():
    res = subprocess.run([sys.executable, ROOT / "bench" / "tables.py", "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_every_area_has_one_result_file_and_a_section_in_the_log():
    files = {p.stem for p in tables.RESULTS.glob("*.json")}
    assert files == set(tables.AREAS), files ^ set(tables.AREAS)
    log = (ROOT / "docs" / "BENCHMARKS_LOG.md").read_text()
    headings = {h.strip() for h in re.findall(r"^#+ (.+)$", log, re.M)}
    for area in tables.AREAS:
        r = json.loads((tables.RESULTS / f"{area}.json").read_text())
        assert {"area", "headline", "command", "measured", "log"} <= r.keys(), area
        assert any(h.startswith(r["log"]) for h in headings), (area, r["log"])
        if "table" in r:
            width = len(r["table"]["columns"])
            assert all(len(row) == width for row in r["table"]["rows"]), area


def test_a_stale_page_is_found(tmp_path, monkeypatch):
    """The check compares the whole page: one changed figure in a result file makes it stale."""
    results = tmp_path / "results"
    results.mkdir()
    for p in tables.RESULTS.glob("*.json"):
        (results / p.name).write_text(p.read_text())
    monkeypatch.setattr(tables, "RESULTS", results)
    assert tables.render() == (ROOT / "docs" / "BENCHMARKS.md").read_text()
    r = json.loads((results / "collect.json").read_text())
    r["headline"] = r["headline"].replace("0.", "0.0", 1) + " (changed)"
    (results / "collect.json").write_text(json.dumps(r))
    assert tables.render() != (ROOT / "docs" / "BENCHMARKS.md").read_text()


def test_the_readme_links_to_figures_instead_of_repeating_them():
    text = (ROOT / "README.md").read_text()
    assert not FIGURE.findall(text.replace("60 frames/s", "")), FIGURE.findall(text)  # NES speed is not measured
    assert "docs/BENCHMARKS.md" in text


def test_the_readmes_python_blocks_run(tmp_path):
    """Every ```python block of the README, in order, in one namespace, in a folder where `make demo`
    has run (a store and a briefly trained run at demo/, as the demo writes them)."""
    from conftest import make_store, run_here

    make_store(tmp_path / "demo", episodes=6, seed=3)
    (tmp_path / "demo" / "s.zarr").rename(tmp_path / "demo" / "store.zarr")
    train = run_here(
        "train",
        "--store",
        tmp_path / "demo" / "store.zarr",
        "--out",
        tmp_path / "demo" / "run",
        *"--config tiny --set max_steps=2 -q".split(),
    )
    assert train.returncode == 0, train.stderr
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    namespace: dict[str, Any] = {}
    with contextlib.chdir(tmp_path):
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["ev"].rollouts[8].rollouts >= 1 and namespace["obs"].shape == (240, 256, 3)
    assert len(namespace["steps"]) == namespace["ep"].length
