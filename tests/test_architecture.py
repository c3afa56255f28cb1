"""The arrows of docs/architecture.md, checked on the source: no import cycle, and no import a layer forbids.

Every ``import`` and ``from … import`` of ``stack/ sim/ robots/ policies/`` counts, at module level or inside a
function (a lazy import is still a dependency). ``from pkg import name`` counts as an import of ``pkg.name`` when that
is a module of ours, else of ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stack", "sim", "robots", "policies")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every module this one imports (ours by full name; third-party by top-level name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                out.add(full if full in MODULES else mod)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _in(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_there_is_no_import_cycle():
    edges = {m: {d for d in deps if d in MODULES and d != m} for m, deps in GRAPH.items()}
    # a package's __init__ importing its own submodules is how Python packages work, not a cycle of the design
    for m in edges:
        edges[m] = {d for d in edges[m] if not (MODULES[m].name == "__init__.py" and _in(d, m))}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def _violations(source: str, forbidden) -> list[str]:
    return [f"{m} imports {d}" for m, deps in GRAPH.items() if _in(m, source) for d in sorted(deps) if forbidden(d)]


def test_policies_and_robots_import_nothing_of_ours():
    for pkg in ("policies", "robots"):
        bad = _violations(pkg, lambda d, pkg=pkg: _ours(d) and not _in(d, pkg))
        assert not bad, bad


def test_sim_imports_only_robots():
    bad = _violations("sim", lambda d: _ours(d) and not (_in(d, "sim") or _in(d, "robots")))
    assert not bad, bad


def test_the_robot_side_never_imports_torch_algorithms_or_runners():
    def forbidden(d: str) -> bool:
        return d == "torch" or any(_in(d, m) for m in ("stack.algos", "stack.runners", "stack.train", "policies"))

    for pkg in ("stack.runtime", "stack.ros"):
        bad = _violations(pkg, forbidden)
        assert not bad, bad


def test_algorithms_never_import_a_runner_the_run_directory_the_cli_or_plotting():
    def forbidden(d: str) -> bool:
        return d == "matplotlib" or any(_in(d, m) for m in ("stack.runners", "stack.train", "stack.runs",
                                                              "stack.cli", "stack.seeds", "stack.bench"))

    bad = _violations("stack.algos", forbidden)
    assert not bad, bad


def test_the_checker_sees_lazy_imports():
    # stack.cli imports the trainer only inside a command: the graph must still hold that edge
    assert "stack.train" in GRAPH["stack.cli"]
