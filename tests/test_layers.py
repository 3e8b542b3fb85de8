"""The package's layers hold (docs/design.md "The package map"), and no module imports itself in a circle.

The layers are import-linter's contract in pyproject.toml, run here through the real
``lint-imports``; the cycle check uses the same import graph (grimp), typing-only imports left out.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

from .conftest import REPO, clean_env


def test_the_layers_contract_is_kept() -> None:
    """``lint-imports`` passes: cli above the features, above the run, above stores/rules/locks, above the utilities."""
    tool = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    done = subprocess.run(
        [tool], cwd=REPO, capture_output=True, text=True, timeout=120, env=clean_env(PYTHONPATH=str(REPO))
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_cycle() -> None:
    """No two modules of jobrunner import each other, directly or around a circle (run-time imports)."""
    sys.path.insert(0, str(REPO))
    try:
        graph = grimp.build_graph("jobrunner", exclude_type_checking_imports=True, cache_dir=None)
    finally:
        sys.path.remove(str(REPO))
    assert graph.find_modules_directly_imported_by("jobrunner.run.lifecycle")  # the graph was read
    assert _cycles(graph) == []
