"""The errors jobrunner raises, and the exit code each one means.

The hierarchy, with the process exit code of the contract (docs/design.md) beside each::

    JobrunnerError (Exception)          1   base; ``exit_code`` is a class attribute
    ├── UsageError                      64  bad command line
    ├── ConfigError                     78  bad declaration, unknown module/job, bad env file, bad URL
    ├── LockBusy                        75  another run holds the lock (EX_TEMPFAIL)
    ├── JobFailed                       1   the job raised, after its retries
    └── CommandFailed                   1   a ``ctx.run`` command exited non-zero

    Interrupt (BaseException)               delivered by the runtime, never caught by ``except Exception``
    ├── JobTimeout                      124 the job's ``timeout=`` expired (as timeout(1))
    ├── LockLost                        1   a lease (Redis, etcd) was lost mid-run: stop before another holder starts
    └── Terminated                      130 SIGINT / 143 SIGTERM / 129 SIGHUP

``Interrupt`` derives from ``BaseException`` on purpose: a job's own ``except Exception``
must not swallow its deadline or a ``systemctl stop``.

The CLI maps these to exit codes in exactly one place (``jobrunner.cli``); every message is
one line, fit to print after ``jobrunner: ``.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_SKIPPED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CommandFailed",
    "ConfigError",
    "Interrupt",
    "JobFailed",
    "JobTimeout",
    "JobrunnerError",
    "LockBusy",
    "LockLost",
    "Terminated",
    "UsageError",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 64
EXIT_SKIPPED = 75
EXIT_CONFIG = 78
EXIT_TIMEOUT = 124


class JobrunnerError(Exception):
    """Base of jobrunner's own errors; ``exit_code`` says how the process ends."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:  # pickles cleanly across processes
        return (type(self), (self.message,))


class UsageError(JobrunnerError):
    """The command line is wrong (unknown flag, missing argument)."""

    exit_code = EXIT_USAGE


class ConfigError(JobrunnerError):
    """Configuration is wrong: a declaration, a module path, an env file, a URL."""

    exit_code = EXIT_CONFIG


class LockBusy(JobrunnerError):
    """Another run holds the job's lock."""

    exit_code = EXIT_SKIPPED

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:
        return (type(self), (self.message, self.path))


class JobFailed(JobrunnerError):
    """The job raised (after its retries); ``__cause__`` holds the original error."""

    exit_code = EXIT_FAILURE


class CommandFailed(JobrunnerError):
    """A command started with ``ctx.run`` exited non-zero.

    ``returncode`` is its exit status (negative: killed by that signal), ``tail`` its last
    output lines, ``argv0`` the program's name.
    """

    exit_code = EXIT_FAILURE

    def __init__(self, argv0: str, returncode: int, tail: tuple[str, ...] = ()) -> None:
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        last = f": {tail[-1]}" if tail else ""
        super().__init__(f"command {argv0!r} {how}{last}")
        self.argv0 = argv0
        self.returncode = returncode
        self.tail = tuple(tail)

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:
        return (type(self), (self.argv0, self.returncode, self.tail))


class Interrupt(BaseException):
    """The runtime stops the job: its deadline passed or a signal arrived."""

    exit_code: int = EXIT_FAILURE
    outcome: str = "terminated"


class JobTimeout(Interrupt):
    """The job's ``timeout=`` expired; its process tree is killed."""

    exit_code = EXIT_TIMEOUT
    outcome = "timeout"

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(f"timeout of {seconds:g}s expired")
        self.seconds = seconds

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:
        return (type(self), (self.seconds,))


class LockLost(Interrupt):
    """The job's lease lock expired or was taken over; the run stops with outcome failure."""

    exit_code = EXIT_FAILURE
    outcome = "failure"

    def __init__(self, reason: str = "lock lost") -> None:
        super().__init__(reason)
        self.reason = reason

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:
        return (type(self), (self.reason,))


class Terminated(Interrupt):
    """SIGTERM, SIGINT or SIGHUP arrived; exit code 128 + the signal number."""

    outcome = "terminated"

    def __init__(self, signum: int = 15) -> None:

        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:
        return (type(self), (self.signum,))
