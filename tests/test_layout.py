"""The package layout's rules (docs/architecture.md): dependencies point one way, no import cycle
(lazy and ``TYPE_CHECKING`` imports included), no module over 400 lines.

A small AST walk rather than import-linter: it sees every ``import`` statement wherever it stands,
which is what "lazy imports included" asks for, and needs no configuration file of its own.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ingestapp"

#: Each part's rank: a module may import its own part and parts of a lower rank only. Parts of the
#: same rank are independent of each other.
RANKS = {
    "core": 0,
    "store": 1, "stages": 1,
    "events": 2, "work": 2,
    "catalog": 3, "accounts": 3,
    "jobs": 4,
    "web": 5, "cli": 5,
    "factory": 6, "worker": 7, "__init__": 8,
}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``name`` imports (``from x import y`` counts ``x.y`` when it is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def part(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_dependencies_point_down() -> None:
    wrong = sorted(
        f"{a} imports {b}" for a, targets in graph().items() for b in targets
        if part(a) != part(b) and RANKS[part(b)] >= RANKS[part(a)] and b != "ingestapp"
    )
    assert wrong == []


def test_no_import_cycle() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if nxt == "ingestapp":
                continue
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_every_part_is_known_and_documented() -> None:
    for sub in PACKAGE.iterdir():
        if sub.is_dir() and (sub / "__init__.py").exists():
            assert sub.name in RANKS, f"{sub.name}: add it to RANKS and docs/architecture.md"
            doc = ast.get_docstring(ast.parse((sub / "__init__.py").read_text()))
            assert doc and "imports" in doc.lower(), f"{sub.name}/__init__.py: say what it owns and what it may import"


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


#: What a web worker does without (docs/architecture.md): the stage libraries, which only stage
#: processes import, and numpy and scipy, which load at the first similar-pictures request.
NOT_IN_A_WEB_WORKER = ("av", "exiv2", "rawpy", "onnxruntime", "PIL", "numpy", "scipy")


def test_a_web_worker_boots_without_the_stage_libraries_numpy_or_scipy(tmp_path: Path) -> None:
    code = f"import sys, wsgi; print(sorted(set({NOT_IN_A_WEB_WORKER!r}) & set(sys.modules)))"
    env = {**os.environ, "INGEST_INSTANCE_PATH": str(tmp_path / "instance")}
    booted = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, env=env, capture_output=True, text=True)
    assert booted.returncode == 0, booted.stderr
    assert booted.stdout.strip() == "[]"
