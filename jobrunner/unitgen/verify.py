"""``units verify``: the real ``systemd-analyze verify`` and ``security --offline=true``.

``verify`` on the host would report ``Command /opt/jobrunner/bin/python is not executable``
wherever jobrunner is not installed at that path (a development machine, CI). Instead of
filtering messages, the units are checked inside a throwaway root (``--root=``): it holds a
copy of the distribution's unit directory (so ``timers.target``, ``network-online.target``
resolve), the units under ``/etc/systemd/system``, and a stub executable for every
``Exec*=`` program that is either the jobrunner interpreter or present on the host. So a
program missing on the host (a typo in an override) is still reported, the interpreter is
not, and everything else systemd checks is checked for real.

Scores come from ``security --offline=true`` on the files. The threshold of a unit is the
one for its hardening level and network (``hardening.THRESHOLDS``; recorded in the
``# jobrunner:`` header line by ``render``), or ``--threshold`` for all of them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jobrunner.errors import ConfigError
from jobrunner.unitgen.hardening import THRESHOLDS
from jobrunner.unitgen.ini import parse_unit

__all__ = ["Score", "security_score", "unit_files", "verify_dir", "verify_problems"]

_SYSTEM_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")
_OVERALL = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)")
_META = re.compile(r"^# jobrunner: (.*)$", re.M)
_EXEC_KEYS = ("ExecStart", "ExecStartPre", "ExecStartPost", "ExecStop", "ExecStopPost", "ExecCondition")
DEFAULT_THRESHOLD = 2.0


@dataclass(frozen=True)
class Score:
    """One unit's ``systemd-analyze security`` exposure and the threshold it is held to."""

    unit: str
    exposure: float
    threshold: float

    @property
    def ok(self) -> bool:
        return self.exposure <= self.threshold + 1e-9


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if not tool:
        raise ConfigError("systemd-analyze not found (install systemd)")
    return tool


def _env() -> dict[str, str]:
    return dict(os.environ, LC_ALL="C", SYSTEMD_PAGER="", SYSTEMD_COLORS="0", SYSTEMD_LOG_COLOR="0")


def unit_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The ``*.service`` and ``*.timer`` files directly in ``directory``, sorted."""
    base = Path(directory)
    if not base.is_dir():
        raise ConfigError(f"{base}: no such directory (run 'jobrunner units render' first)")
    return sorted(p for p in base.iterdir() if p.suffix in (".service", ".timer") and p.is_file())


def _executables(text: str) -> list[str]:
    found = []
    for section in parse_unit(text).values():
        for key, value in section:
            if key in _EXEC_KEYS and value:
                program = value.split()[0].lstrip("@-:+!|")
                if program.startswith("/"):
                    found.append(program)
    return found


def _stub(root: Path, program: str) -> None:
    target = root / program.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("#!/bin/sh\nexit 0\n")
    target.chmod(0o755)


def _build_root(root: Path, files: list[Path]) -> list[str]:
    for system in _SYSTEM_UNIT_DIRS:
        if os.path.isdir(system) and not os.path.islink(system):
            dest = root / system.lstrip("/")
            if not dest.exists():
                shutil.copytree(system, dest, symlinks=True)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    names = []
    for path in files:
        text = path.read_text()
        shutil.copyfile(path, etc / path.name)
        ours = _jobrunner_programs(text)
        for program in _executables(text):
            if program in ours or os.access(program, os.X_OK):
                _stub(root, program)
        names.append(path.name.replace("@.", "@verify.") if "@." in path.name else path.name)
    return names


def _jobrunner_programs(text: str) -> set[str]:
    programs = set()
    for section in parse_unit(text).values():
        for key, value in section:
            words = value.split()
            if key in _EXEC_KEYS and len(words) >= 3 and words[1:3] == ["-m", "jobrunner"]:
                programs.add(words[0].lstrip("@-:+!|"))
    return programs


def verify_problems(files: list[Path]) -> list[str]:
    """Run ``systemd-analyze verify`` on ``files``; one line per problem (empty: all good)."""
    if not files:
        return []
    with tempfile.TemporaryDirectory(prefix="jobrunner-verify-") as tmp:
        root = Path(tmp)
        names = _build_root(root, files)
        proc = subprocess.run(
            [_analyze(), "verify", f"--root={root}", "--man=no", "--no-pager", *names],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=120,
            check=False,
        )
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    lines = [line.replace(str(root), "") for line in lines]
    if proc.returncode != 0 and not lines:
        lines = [f"systemd-analyze verify exited with status {proc.returncode}"]
    return lines


def threshold_for(text: str, default: float | None = None) -> float:
    """The exposure threshold of a rendered unit, from its ``# jobrunner:`` header line."""
    if default is not None:
        return default
    match = _META.search(text)
    if not match:
        return DEFAULT_THRESHOLD
    meta = dict(part.split("=", 1) for part in match.group(1).split() if "=" in part)
    if "threshold" in meta:
        return float(meta["threshold"])
    key = (meta.get("hardening", ""), meta.get("network") == "yes")
    return THRESHOLDS.get(key, DEFAULT_THRESHOLD)


def security_score(path: Path, threshold: float | None = None) -> Score:
    """``systemd-analyze security --offline=true`` of one service file, parsed."""
    proc = subprocess.run(
        [_analyze(), "security", "--offline=true", "--no-pager", str(path.resolve())],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    match = _OVERALL.search(proc.stdout + proc.stderr)
    if not match:
        last = (proc.stderr.strip().splitlines() or ["no score printed"])[-1]
        raise ConfigError(f"{path.name}: systemd-analyze security failed: {last}")
    return Score(path.name, float(match.group(2)), threshold_for(path.read_text(), threshold))


def verify_dir(directory: str | os.PathLike[str], threshold: float | None = None) -> tuple[list[Score], list[str]]:
    """Verify every unit in ``directory`` and score every service: ``(scores, problems)``."""
    files = unit_files(directory)
    if not files:
        raise ConfigError(f"{directory}: no .service or .timer files")
    problems = [f"verify: {line}" for line in verify_problems(files)]
    scores = [security_score(p, threshold) for p in files if p.suffix == ".service"]
    problems += [
        f"security: {s.unit}: exposure {s.exposure:.1f} is over the threshold {s.threshold:.1f}"
        for s in scores
        if not s.ok
    ]
    return scores, problems
