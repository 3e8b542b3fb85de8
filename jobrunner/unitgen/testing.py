"""Helpers for tests of rendered units (``tests/test_unitgen_*.py`` and the drift test)."""

from __future__ import annotations

import itertools
import os
import textwrap
from pathlib import Path

from jobrunner.unitgen.ini import GENERATED_MARK, parse_unit

__all__ = ["committed_units", "directives", "job_package"]

_counter = itertools.count()


def job_package(root: str | os.PathLike[str], modules: dict[str, str], prefix: str = "ugjobs") -> str:
    """Write a throwaway package of job modules under ``root``; return its unique name.

    ``modules`` maps module names to source (dedented). Put ``root`` on ``sys.path`` (or in
    ``JOBRUNNER_PATH`` for a subprocess) to import it.
    """
    name = f"{prefix}_{os.getpid()}_{next(_counter)}"
    package = Path(root) / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for module, source in modules.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))
    return name


def directives(text: str, section: str) -> dict[str, list[str]]:
    """``{key: [values]}`` of one section of unit-file text."""
    out: dict[str, list[str]] = {}
    for key, value in parse_unit(text).get(section, []):
        out.setdefault(key, []).append(value)
    return out


def committed_units(directory: str | os.PathLike[str]) -> dict[str, str]:
    """The generated files in a committed ``units/`` directory, as ``render_all`` names them."""
    base = Path(directory)
    found = {}
    for path in sorted(base.rglob("*")):
        if path.is_file():
            text = path.read_text()
            if text.startswith(GENERATED_MARK):
                found[path.relative_to(base).as_posix()] = text
    return found
