"""Reports: stats.json against independent computations, a well-formed self-contained page, comparison."""

import json
import re
from html.parser import HTMLParser

import numpy as np

from conftest import make_dataset, run_cli
from mario_kit.datasets.dataset import Dataset
from mario_kit.datasets.episode import Episode


class _Check(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.srcs = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_report_figures_equal_independent_values(tmp_path, small_dataset):
    other = tmp_path / "other"
    make_dataset(other, episodes=2, max_steps=30, seed=9, action_set="simple")
    res = run_cli("report", small_dataset, other, "--out", tmp_path / "rep")
    assert res.returncode == 0, res.stderr
    stats = json.loads((tmp_path / "rep" / "stats.json").read_text())
    for d in (small_dataset, other):
        s = stats[d.name]
        eps = [Episode(p) for p in Dataset(d).paths]
        acts = np.concatenate([e.actions for e in eps])
        assert list(s["action_histogram"].values()) == np.bincount(acts, minlength=7).tolist()
        assert sorted(s["episode_lengths"]) == sorted(e.length for e in eps) and s["steps"] == len(acts)
        t = np.zeros((7, 7), int)
        for e in eps:
            for a, b in zip(e.actions[:-1], e.actions[1:]):
                t[a, b] += 1
        assert s["transitions"] == t.tolist()
        x = np.concatenate([e.info["x_pos"] for e in eps])
        cov = {str(int(b) * 64): int(n) for b, n in zip(*np.unique(x // 64, return_counts=True))}
        assert s["coverage_x"]["1-1"] == cov
        ends = [e.attrs["end"] for e in eps]
        stage = s["stages"]["1-1"]
        assert (stage["episodes"], stage["frames"]) == (len(eps), sum(e.length + 1 for e in eps))
        assert stage["max_x"] == int(x.max())
        assert (stage["deaths"], stage["flags"]) == (ends.count("terminated"), ends.count("flag"))
        left = np.concatenate([e.info["left_x_pos"] for e in eps])
        assert stage["left_edge_share"] == round(float((left < 24).mean()), 4)
        assert stage["ending_steps"] == sum(e.ending_steps for e in eps)
        half = np.sort(x)[(len(x) - 1) // 2]  # the bin of the median frame, its upper edge
        assert stage["x_half_of_frames"] >= half and stage["x_half_of_frames"] - 64 <= half
        p = np.bincount(acts, minlength=7) / len(acts)
        assert s["action_entropy_bits"] == round(float(-(p[p > 0] * np.log2(p[p > 0])).sum()), 4)
        frames = np.concatenate([e.frames[()] for e in eps])
        dup = sum(np.array_equal(a, b) for e in eps for a, b in zip(e.frames[:-1], e.frames[1:]))
        assert s["duplicate_frame_rate"] == round(dup / (len(frames) - len(eps)), 4)
    page = (tmp_path / "rep" / "report.html").read_text()
    chk = _Check()
    chk.feed(page)
    assert not chk.errors and not chk.stack, (chk.errors, chk.stack)
    assert all(s.startswith("data:image/png;base64,") for s in chk.srcs) and len(chk.srcs) >= 5
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", page)  # opens offline
    assert small_dataset.name in page and "other" in page
    assert "1-1: farthest x" in page and "1-1: deaths" in page and "left edge" in page  # the per-stage coverage table
    for png in ("actions", "transitions", "lengths", "coverage"):
        assert (tmp_path / "rep" / f"{png}.png").stat().st_size > 1000
    # one number format: thousands separators, fixed decimals
    total_bytes = sum(p.stat().st_size for p in small_dataset.glob("*.h5"))
    assert f"<td>{total_bytes:,}</td>" in page
    bpf = re.search(r"bytes / frame</th>\s*<td>([^<]*)</td>", page).group(1)
    assert re.fullmatch(r"[\d,]+\.\d\d", bpf), bpf


def test_report_bad_input_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    for args in (
        ["report", tmp_path / "empty", "--out", tmp_path / "r"],
        ["report", tmp_path / "missing", "--out", tmp_path / "r"],
    ):
        res = run_cli(*args)
        assert res.returncode == 2 and res.stderr.startswith("error:") and "Traceback" not in res.stderr
