"""A throwaway, real systemd for tests: systemd-nspawn over an overlay of the host's /.

How it works (see README.md in this directory):

* ``BASE = /var/tmp/jobrunner-sandbox-XXXXXX`` (on disk) holds a ``lock`` file (flock'ed
  for as long as the owning process lives) and a ``state.json`` (pids, for crash recovery).
* A tmpfs is mounted at ``BASE/t``; it holds the overlay's ``upper``/``work`` dirs and the
  container console log.  An overlayfs with ``lowerdir=/`` is mounted at ``BASE/root`` (= R).
  overlayfs never crosses submounts, so the lower layer is only the host's root *filesystem*
  (no /proc, no /dev, ...); the lower layer is never written: every write lands in the tmpfs.
* ``systemd-nspawn -b`` boots the host's own systemd on R into a small target of ours.
  Commands reach it through ``nsenter -t <container PID 1> -a``.
* ``shutdown()`` powers off, waits, kills if needed, unmounts (lazily as a last resort) and
  removes BASE.  A later ``boot()`` reaps leftovers of crashed runs (unlocked BASE dirs).

This module is the façade: the code lives in the ``_sandbox`` package next to it, one module
per concern (its __init__ lists them).  Import from here, as a module of the tests package:
``from .sandbox import Sandbox`` in tests/systemd (fixtures.py does), or ``from tests.systemd.sandbox
import Sandbox`` - one module, so one SandboxCommandError class, and the one mypy checks.  Run it
for the CLI: ``python3 tests/systemd/sandbox.py cleanup|shell``.

Only the standard library is used, so this runs under any Python >= 3.9 (install_project needs
tomllib: >= 3.11).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

# The type checker knows this module only as tests.systemd.sandbox: the first branch.
if TYPE_CHECKING or __package__:  # imported as tests.systemd.sandbox
    from ._sandbox import (
        InstallResult,
        Sandbox,
        SandboxCommandError,
        SandboxError,
        _main,
        cannot_run_reason,
        cleanup_stale,
        leftover_mounts,
        mounts_under,
    )
else:  # imported as `sandbox` (this directory on sys.path), or run as a script
    from _sandbox import (
        InstallResult,
        Sandbox,
        SandboxCommandError,
        SandboxError,
        _main,
        cannot_run_reason,
        cleanup_stale,
        leftover_mounts,
        mounts_under,
    )

__all__ = [
    "Sandbox",
    "SandboxError",
    "SandboxCommandError",
    "InstallResult",
    "cannot_run_reason",
    "leftover_mounts",
    "mounts_under",
    "cleanup_stale",
]

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
