"""The ``Sandbox`` class: its state, and the mixins that make up its API."""

from __future__ import annotations

import threading

from .boot import Lifecycle
from .commands import Commands
from .common import DEFAULT_CACHE, DEFAULT_PARENT
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
        # The types of these attributes are declared in base.py (SandboxBase).
        self.base = None
        self.root = None  # R: the overlay mount point (host path)
        self.pid1 = None  # the container's PID 1, as seen from the host
        self.boot_seconds = None
        self.console_tail = ""
        self.installed = None
        self._pid1_start = None
        self._nspawn = None
        self._nspawn_start = None
        self._lock_fd = None
        self._console = None
        self._counter = 0
        self._closed = False
        self._shutdown_lock = threading.Lock()
