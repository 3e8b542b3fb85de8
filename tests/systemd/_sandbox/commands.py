"""Running commands inside: ``nsenter -t <PID 1> -a`` with a clean environment, umask 022,
a process group of its own that a timeout kills whole; and ``wait_for`` polling."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .base import SandboxBase
from .common import CLEAN_ENV, SandboxError
from .host import _finish


class Commands(SandboxBase):
    """Mixed into Sandbox (core.py)."""

    def _nsenter(self) -> list[str]:
        if not self.booted:
            raise SandboxError("sandbox is not running")
        return ["nsenter", "-t", str(self.pid1), "-a"]

    def run(
        self,
        argv: Sequence[str] | str,
        check: bool = True,
        timeout: float = 60,
        *,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run ARGV inside the sandbox (all its namespaces, root /) with a clean environment.

        A str is run with ``sh -c``.  On timeout the whole process group is killed (the
        processes inside share nsenter's process group) and SandboxCommandError is raised.
        """
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        full_env = dict(CLEAN_ENV)
        if env:
            full_env.update(env)
        cmd = self._nsenter() + [str(a) for a in argv]
        if input is not None and text and isinstance(input, bytes):
            input = input.decode()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=text,
            env=full_env,
            start_new_session=True,
            umask=0o022,
            cwd="/",
        )
        return _finish(proc, argv, check=check, timeout=timeout, input=input)

    def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 30,
        interval: float = 0.2,
        message: str | Callable[[], str] | None = None,
    ) -> Any:
        """Poll PREDICATE until it returns something truthy; return that.  TimeoutError otherwise
        (MESSAGE, or what it returns when callable, is the error text)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = predicate()
            if last:
                return last
            if time.monotonic() > deadline:
                if callable(message):
                    message = message()
                raise TimeoutError(message or f"condition not met within {timeout}s (last value: {last!r})")
            time.sleep(interval)
