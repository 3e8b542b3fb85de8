"""The documentation: the site builds with warnings as errors, the README stays short, every
relative link resolves, and docs/design.md's package map matches the tree."""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
DESIGN = DOCS / "design.md"

README_MAX_LINES = 200

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where links are not links."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """Python-Markdown's toc slug (what mkdocs uses; GitHub agrees for plain headings)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```[^\n]*$", "", path.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)}


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a broken link, a missing anchor or a page left out of the nav
    fails the build, and so this test (CI builds the docs with warnings as errors here)."""
    pytest.importorskip("mkdocs", reason="mkdocs is in the test extra: pip install -e .[test]")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "design" / "index.html").is_file()


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail into docs/"
    )


def test_readme_keeps_the_setup_and_test_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "bash .ci/run" in text  # CI runs .ci/run, which runs the README's test command
    assert "/opt/jobrunner/bin/jobrunner run jobs.dir_backup" in text


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in _LINK.findall(_prose(path.read_text(encoding="utf-8"))):
        if _SCHEME.match(target):
            continue  # http(s), mailto: not checked offline
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with the anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def _package_map() -> str:
    text = DESIGN.read_text(encoding="utf-8")
    start = text.index("## The package map")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_design_package_map_matches_the_tree() -> None:
    """Every module of ``ls jobrunner/ jobrunner/*/`` is in the map, and the map names no other."""
    tree = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "jobrunner").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".typed")
    }
    mapped = set(re.findall(r"`(jobrunner/[\w/.]+)`", _package_map()))
    assert not tree - mapped, f"modules missing from docs/design.md's package map: {sorted(tree - mapped)}"
    assert not mapped - tree, f"docs/design.md's package map names modules that do not exist: {sorted(mapped - tree)}"


def test_code_cites_the_design_in_the_repository() -> None:
    """The design lives in docs/design.md; nothing cites the old out-of-tree document."""
    old = "DESIGN" + ".md"
    stale = [
        f"{p.relative_to(ROOT)}:{n}"
        for top in ("jobrunner", "jobs", "tests", "bench")
        for p in sorted((ROOT / top).rglob("*.py"))
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if old in line
    ]
    assert not stale, f"cite docs/design.md instead of {old}: {stale}"
