"""Wheels, built on the host: a builder venv on Debian's python3, the dependency wheel cache
(keyed by the requirements and the python version; the only step that needs PyPI) and the
project's wheel, built offline from a scratch copy of the checkout."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .common import HOST_PYTHON, SandboxError
from .host import _run_host


def _pip_env(keep_user_config: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not keep_user_config:
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def _python_tag() -> str:
    return _run_host(
        [HOST_PYTHON, "-c", "import sys, platform; print(sys.version.split()[0], platform.machine())"]
    ).stdout.strip()


@contextlib.contextmanager
def _flocked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _builder_pip(cache_dir: str) -> str:
    """pip of a host venv on Debian's python3 (Debian's own pip may be absent or externally managed)."""
    tag = hashlib.sha256(_python_tag().encode()).hexdigest()[:12]
    venv = Path(cache_dir, f"builder-{tag}")
    with _flocked(Path(cache_dir, ".builder.lock")):
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            _run_host([HOST_PYTHON, "-m", "venv", str(venv)], timeout=300)
            (venv / ".complete").write_text("ok\n")
    return str(venv / "bin" / "pip")


def _requirements(checkout: Path, extras: Sequence[str] = ()) -> list[str]:
    """Runtime dependencies (+ those of EXTRAS) and build requirements, from pyproject.toml."""
    import tomllib  # Python >= 3.11 (the dev venv and Debian 12's python3 both are)

    data = tomllib.loads((checkout / "pyproject.toml").read_text())
    project = data.get("project", {})
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SandboxError(f"pyproject.toml has no extra {extra!r}")
        reqs += optional[extra]
    build = data.get("build-system", {}).get("requires", ["setuptools>=61"])
    return reqs + list(build) + ["wheel"]


def _dependency_wheelhouse(checkout: Path, cache_dir: str, extras: Sequence[str] = ()) -> Path:
    """Wheels of the project's third-party and build dependencies, cached under
    CACHE/wheels/<hash of those requirements (from pyproject.toml) + python version>.
    Built once (needs PyPI), offline afterwards; an unrelated pyproject edit (markers, ...)
    does not invalidate it."""
    reqs = _requirements(checkout, extras)
    key = hashlib.sha256(json.dumps([sorted(reqs), _python_tag()]).encode()).hexdigest()[:16]
    wh = Path(cache_dir, "wheels", key)
    with _flocked(Path(cache_dir, "wheels", f".{key}.lock")):
        if (wh / ".complete").exists():
            return wh
        pip = _builder_pip(cache_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=wh.parent))
        try:
            _run_host([pip, "wheel", "--wheel-dir", str(tmp), *reqs], env=_pip_env(keep_user_config=True), timeout=900)
            (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n")
            (tmp / ".complete").write_text("ok\n")
            os.chmod(tmp, 0o755)
            shutil.rmtree(wh, ignore_errors=True)
            os.replace(tmp, wh)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return wh


_COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    "__pycache__",
    "*.pyc",
    "build",
    "dist",
    "*.egg-info",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    ".pytest_cache",
    ".hypothesis",
    ".mypy_cache",
    ".ruff_cache",
    "node_modules",
    "backups",
)


def _build_project_wheel(checkout: Path, deps: Path, cache_dir: str) -> Path:
    """Build the project's wheel from a scratch copy (setuptools writes build/ and *.egg-info
    into the source tree; the checkout is being edited concurrently), offline."""
    work = Path(tempfile.mkdtemp(prefix="jobrunner-wheel-"))
    src, out = work / "src", work / "out"
    try:
        shutil.copytree(checkout, src, ignore=_COPY_IGNORE, symlinks=True)
        out.mkdir()
        _run_host(
            [
                _builder_pip(cache_dir),
                "wheel",
                "--no-deps",
                "--no-index",
                "--find-links",
                str(deps),
                "--wheel-dir",
                str(out),
                str(src),
            ],
            env=_pip_env(keep_user_config=False),
            timeout=600,
        )
        wheels = list(out.glob("*.whl"))
        if len(wheels) != 1:
            raise SandboxError(f"expected one wheel, got {wheels}")
        keep = Path(tempfile.mkdtemp(prefix="jobrunner-wheel-out-"))
        dest = keep / wheels[0].name
        shutil.move(str(wheels[0]), dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)
