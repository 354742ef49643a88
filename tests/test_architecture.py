"""The package's import graph, read from the source (every import, module level or in a function):
layers only import downward, packages of one layer do not import each other, and no circle."""

import ast
from pathlib import Path

import mario_kit

ROOT = Path(mario_kit.__file__).parent

# lowest first; a module belongs to the first prefix it matches
LAYERS = [
    (
        "mario_kit",
        "mario_kit.atomic",
        "mario_kit.trust",
        "mario_kit.hardware",
        "mario_kit.progress",
        "mario_kit.interrupt",
        "mario_kit.envs",
    ),
    ("mario_kit.emulator", "mario_kit.gui"),
    ("mario_kit.datasets",),
    ("mario_kit.balancing", "mario_kit.agents"),
    ("mario_kit.collectors", "mario_kit.reports", "mario_kit.world_model.config"),
    # the world model in three rooms, each over the one below: the model, its training and
    # judging, the programs that run it (the package itself, with its lazy DreamEnv, sits on top)
    ("mario_kit.world_model.model",),
    ("mario_kit.world_model.training",),
    ("mario_kit.world_model.programs",),
    ("mario_kit.world_model",),
    ("mario_kit.demo", "mario_kit.serve"),  # the main job, over the library; the browser server
    ("mario_kit.cli",),  # parsing and printing over all of it
    ("mario_kit.__main__",),
]


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str:
        while name not in mods:
            name = name.rsplit(".", 1)[0]
        return name

    graph = {}
    for m, p in mods.items():
        deps = set()
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Import):
                deps |= {resolve(a.name) for a in n.names if a.name.startswith("mario_kit")}
            elif isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("mario_kit"):
                deps |= {
                    f"{n.module}.{a.name}" if f"{n.module}.{a.name}" in mods else resolve(n.module) for a in n.names
                }
        graph[m] = deps - {m}
    return graph


def place(m: str) -> tuple[int, str]:
    """(layer, the prefix that put it there: its package within the layer)."""
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for pre in prefixes:
            if (m == pre or m.startswith(pre + ".")) and (best is None or len(pre) > len(best[1])):
                best = (rank, pre)
    assert best is not None, f"{m} is in no layer: add it to LAYERS"
    return best


def test_no_module_imports_from_a_higher_layer_or_a_sibling_package():
    bad = []
    for m, deps in import_graph().items():
        rank, pkg = place(m)
        for d in deps:
            d_rank, d_pkg = place(d)
            if d_rank > rank or (d_rank == rank and d_pkg != pkg and d_pkg != "mario_kit"):
                bad.append(f"{m} -> {d}")
    assert not bad, bad


def test_no_import_circle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                circles.append(path[path.index(d) :] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, circles


def test_inference_does_not_enter_the_training_module():
    graph = import_graph()

    def reach(m: str, seen: set[str]) -> set[str]:
        for d in graph[m] - seen:
            seen.add(d)
            reach(d, seen)
        return seen

    for m in ("programs.play", "programs.compare", "programs.dream_env", "training.evaluate"):
        assert "mario_kit.world_model.training.trainer" not in reach(f"mario_kit.world_model.{m}", set()), m


def test_no_function_is_longer_than_70_lines():
    """Small functions (DEVELOPERS.md): every function of the package, decorators aside, at most 70
    lines as the formatter lays it out."""
    long = []
    for m, p in modules().items():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 70:
                long.append(f"{m}.{n.name}: {n.end_lineno - n.lineno + 1} lines")
    assert not long, long
