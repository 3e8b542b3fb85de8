"""Constants, exceptions and result types shared by the sandbox modules."""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PARENT = os.environ.get("JOBRUNNER_SANDBOX_PARENT", "/var/tmp")
PREFIX = "jobrunner-sandbox-"
TARGET = "jobrunner-sandbox.target"
DEFAULT_CACHE = os.environ.get("JOBRUNNER_TEST_CACHE", "/var/cache/jobrunner-tests")
HOST_PYTHON = "/usr/bin/python3"  # Debian's interpreter: the one the sandbox venv is built on

# The environment every command inside the sandbox gets (and nothing else).
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_LESS": "",
}

# Timers of the host's packages that basic.target would start; masked inside so that nothing
# but the tests' own units ever runs.
NOISY_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "logrotate.timer",
    "man-db.timer",
    "systemd-tmpfiles-clean.timer",
    "exim4-base.timer",
    "phpsessionclean.timer",
    "certbot.timer",
    "anacron.timer",
)


class SandboxError(RuntimeError):
    pass


class SandboxCommandError(subprocess.CalledProcessError):
    """CalledProcessError whose str() shows what the command printed."""

    def __str__(self) -> str:  # pragma: no cover - formatting only
        def tail(s: Any) -> str:
            if s is None:
                return ""
            if isinstance(s, bytes):
                s = s.decode("utf-8", "replace")
            return s[-3000:]

        return (
            f"command {shlex.join(map(str, self.cmd))} exited {self.returncode}\n"
            f"--- stdout ---\n{tail(self.stdout)}\n--- stderr ---\n{tail(self.stderr)}"
        )


@dataclass
class InstallResult:
    venv: str
    python: str
    wheel: str
    version: str
    wheelhouse: str  # inside the sandbox
    freeze: list[str] = field(default_factory=list)
    seconds: float = 0.0
