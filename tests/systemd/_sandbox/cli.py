"""The command line: ``python3 tests/systemd/sandbox.py cleanup|shell`` (see sandbox.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from .common import CLEAN_ENV
from .core import Sandbox
from .mounts import cleanup_stale, leftover_mounts


def _main(argv: Sequence[str]) -> int:
    """``python3 tests/systemd/sandbox.py cleanup``: reap sandboxes of crashed (SIGKILLed) runs.
    ``python3 tests/systemd/sandbox.py shell``: boot one and open a shell inside (for debugging)."""
    cmd = argv[0] if argv else "cleanup"
    if cmd == "cleanup":
        for base in cleanup_stale():
            print(f"reaped {base}")
        left = leftover_mounts()
        if left:
            print(f"still mounted (owned by a live session?): {left}")
        return 0
    if cmd == "shell":
        with Sandbox() as sb:
            print(f"booted in {sb.boot_seconds:.1f}s; root={sb.root}; exit the shell to tear down")
            return subprocess.call(sb._nsenter() + ["bash", "-l"], env=CLEAN_ENV)
    print(_main.__doc__)
    return 64
