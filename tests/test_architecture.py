"""The boundaries of ../shared/DESIGN.md, checked on the source: no import cycle among the project's
modules (counting imports inside functions too, so none can hide there to dodge one), models/ and
datasets/ never import Ray or Optuna, and only the scheduler registry names a scheduler."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "datasets", "models")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `path` imports anywhere in its body (module level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from search import cli` imports the module search.cli (a package's submodule: not an edge to
            # the package, which Python initialises first anyway); `from search.io import x` imports search.io
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [m for m in subs if m in modules] or [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name not in PACKAGES:  # a package's empty __init__ is no edge
                found.add(name)
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {m: imports_of(p, modules) for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_projects_modules():
    found = cycles(import_graph())
    assert found == [], f"import cycles: {found}"


def test_models_and_datasets_never_import_ray_or_optuna():
    for pkg in ("models", "datasets"):
        for path in (REPO / pkg).rglob("*.py"):
            text = path.read_text()
            assert not re.search(r"^\s*(import|from)\s+(ray|optuna)\b", text, re.M), path


def test_only_the_scheduler_registry_names_asha():
    """Adding a scheduler touches the registry (and the Ray scheduler it builds, where Ray has none to
    reuse): nothing else in search/ says ASHA."""
    # (and search/compat.py, where the reach-ins into Ray's ASHA are named; the report's sections say what it did)
    allowed = {*(REPO / "search" / "schedulers").glob("*.py"), REPO / "search" / "compat.py",
               REPO / "search" / "scheduler_reports.py"}
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "search").rglob("*.py")
                 if p not in allowed and "ASHA" in p.read_text()]
    assert offenders == []
