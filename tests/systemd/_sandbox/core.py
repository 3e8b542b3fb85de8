"""The ``Sandbox`` class: its state, and the mixins that make up its API."""

from __future__ import annotations

import subprocess
import threading
from typing import Any

from .boot import Lifecycle
from .commands import Commands
from .common import DEFAULT_CACHE, DEFAULT_PARENT, InstallResult
from .files import Files
from .install import Install
from .units import Units


class Sandbox(Lifecycle, Commands, Units, Files, Install):
    """One booted throwaway systemd.  Use as a context manager or call boot()/shutdown()."""

    def __init__(
        self,
        parent: str = DEFAULT_PARENT,
        *,
        machine: str | None = None,
        private_network: bool = False,
        cache_dir: str = DEFAULT_CACHE,
        poweroff_timeout: float = 30,
    ) -> None:
        self.parent = parent
        self.machine = machine
        self.private_network = private_network
        self.cache_dir = cache_dir
        self.poweroff_timeout = poweroff_timeout
        self.base: str | None = None
        self.root: str | None = None  # R: the overlay mount point (host path)
        self.pid1: int | None = None  # the container's PID 1, as seen from the host
        self.boot_seconds: float | None = None
        self.console_tail: str = ""
        self.installed: InstallResult | None = None
        self._pid1_start: int | None = None
        self._nspawn: subprocess.Popen | None = None
        self._nspawn_start: int | None = None
        self._lock_fd: int | None = None
        self._console: Any = None
        self._counter = 0
        self._closed = False
        self._shutdown_lock = threading.Lock()
