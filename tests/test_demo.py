"""`make demo`'s job (`mario-kit demo`) at small sizes: every artefact it lists exists, the report
sees the split, and the closing line gives a command that runs from where the user is."""

from pathlib import Path

from mario_kit.demo import DemoConfig, run


def test_the_demo_lists_every_artefact_and_a_command_that_runs(tmp_path):
    lines: list[str] = []
    a = run(
        DemoConfig(out=tmp_path / "demo", episodes=3, max_steps=40, workers=1, train_steps=4, dream_steps=4),
        echo=lines.append,
    )
    written = {p for p in (tmp_path / "demo").rglob("*") if p.is_file() and p.parent == tmp_path / "demo"}
    listed = {Path(v) for v in a.values()}
    assert {p for p in written if p.suffix in (".gif", ".png", ".csv", ".h5")} <= listed, written - listed
    assert all(Path(v).exists() for v in a.values())
    stats = (tmp_path / "demo" / "report" / "stats.json").read_text()
    assert '"split"' in stats and '"test"' in stats  # the report is written after the split
    hint = next(ln for ln in lines if isinstance(ln, str) and ln.startswith("play inside the model"))
    prog = hint.split(": ", 1)[1].split(" play ")[0]
    assert prog == "mario-kit" or Path(prog).exists() or "-m mario_kit" in prog, hint
