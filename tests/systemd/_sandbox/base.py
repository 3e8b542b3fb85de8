"""``SandboxBase``: what each mixin of Sandbox (core.py) may use of the others, declared once.

The attributes are the state ``Sandbox.__init__`` sets (annotations only: nothing is created
here).  The methods one mixin calls on another are declared for the type checker alone; at
run time they come from the mixin that defines them (Sandbox lists every mixin before this
class), and mypy checks that both declarations agree."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from .common import InstallResult


class SandboxBase:
    """The base of the mixins Lifecycle, Commands, Units, Files and Install."""

    parent: str
    machine: str | None
    private_network: bool
    cache_dir: str
    poweroff_timeout: float
    base: str | None
    root: str | None  # R: the overlay mount point (host path)
    pid1: int | None  # the container's PID 1, as seen from the host
    boot_seconds: float | None
    console_tail: str
    installed: InstallResult | None
    _pid1_start: int | None
    _nspawn: subprocess.Popen[bytes] | None
    _nspawn_start: int | None
    _lock_fd: int | None
    _console: IO[bytes] | None
    _counter: int
    _closed: bool
    _shutdown_lock: threading.Lock

    if TYPE_CHECKING:
        # boot.py (Lifecycle)
        @property
        def booted(self) -> bool: ...

        # commands.py (Commands)
        def run(
            self,
            argv: Sequence[str] | str,
            check: bool = True,
            timeout: float = 60,
            *,
            input: str | bytes | None = None,
            env: Mapping[str, str] | None = None,
            text: bool = True,
        ) -> subprocess.CompletedProcess[Any]: ...

        def wait_for(
            self,
            predicate: Callable[[], Any],
            timeout: float = 30,
            interval: float = 0.2,
            message: str | Callable[[], str] | None = None,
        ) -> Any: ...

        # files.py (Files)
        def host_path(self, path: str) -> str: ...

        def write_file(self, path: str, text: str | bytes, mode: int = 0o644) -> None: ...

        def exists(self, path: str) -> bool: ...
