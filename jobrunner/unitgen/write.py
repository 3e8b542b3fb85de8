"""Writing rendered units into a directory: only what changed, pruning what is no longer rendered.

``write_rendered(render_all(package), "units", prune=True)`` is ``jobrunner units render``;
with ``check=True`` it writes nothing and returns what differs (``units render --check``).
Only files that begin with ``GENERATED_MARK`` are ever pruned: a file jobrunner did not write
stays.
"""

from __future__ import annotations

from pathlib import Path

from jobrunner.unitgen.ini import GENERATED_MARK

__all__ = ["write_rendered"]


def _stale(out: Path, keep: set[str]) -> list[str]:
    """Generated files in ``out`` that the current render no longer produces."""
    stale = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if not path.is_file() or rel in keep or path.suffix not in (".service", ".timer", ".conf", ""):
            continue
        try:
            with path.open() as handle:
                first = handle.readline().rstrip("\n")
        except (OSError, UnicodeDecodeError):
            continue
        if first == GENERATED_MARK:
            stale.append(rel)
    return stale


def write_rendered(files: dict[str, str], out: str | Path, *, prune: bool, check: bool = False) -> list[str]:
    """Write ``files`` into ``out``; return the relative names that changed (or would).

    ``prune`` removes generated files no longer rendered (never files without the header).
    """
    base = Path(out)
    changed = []
    for rel, text in files.items():
        target = base / rel
        try:
            current = target.read_text()
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            current = None
        if current != text:
            changed.append(rel)
            if not check:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
    if prune and base.is_dir():
        for rel in _stale(base, set(files)):
            changed.append(rel)
            if not check:
                (base / rel).unlink()
    return sorted(changed)
