"""The implementation of sandbox.py (its façade, one directory up), split by concern:

common    constants, SandboxError, SandboxCommandError, InstallResult
base      SandboxBase: the state and the cross-mixin methods every mixin may use, declared once
host      host processes: run with a timeout that kills the process group, pids vs. pid reuse
mounts    the overlay of / and its teardown; reaping crashed runs (cleanup_stale)
boot      prerequisites, booting nspawn, waiting until running, shutdown (mixin Lifecycle)
commands  run() through nsenter, wait_for() (mixin Commands)
units     systemctl, show, the journal, oneshots, unit files and pinning (mixin Units)
files     files as the container sees them (mixin Files)
install   install_project() (mixin Install)
wheels    the host-side wheel cache and the project wheel
core      class Sandbox, made of the mixins above
cli       the `cleanup` and `shell` commands

Import from ``sandbox`` (or ``tests.systemd.sandbox``), not from here.
"""

from .boot import cannot_run_reason
from .cli import _main
from .common import (
    CLEAN_ENV,
    DEFAULT_CACHE,
    DEFAULT_PARENT,
    HOST_PYTHON,
    NOISY_UNITS,
    PREFIX,
    TARGET,
    InstallResult,
    SandboxCommandError,
    SandboxError,
)
from .core import Sandbox
from .mounts import cleanup_stale, leftover_mounts, mounts_under

__all__ = [
    "Sandbox",
    "SandboxError",
    "SandboxCommandError",
    "InstallResult",
    "cannot_run_reason",
    "leftover_mounts",
    "mounts_under",
    "cleanup_stale",
    "CLEAN_ENV",
    "DEFAULT_CACHE",
    "DEFAULT_PARENT",
    "HOST_PYTHON",
    "NOISY_UNITS",
    "PREFIX",
    "TARGET",
    "_main",
]
