"""jobrunner: systemd timer jobs as plain Python functions.

>>> from jobrunner import job, JobContext
>>> @job(schedule="02:15", lock=True, timeout="2h")
... def nightly(ctx: JobContext) -> None:
...     ctx.run(["/usr/local/bin/backup.sh"])

What a job may use is public: these names, and the modules ``jobrunner.types`` (the
``JobContext`` and ``HeldLock`` protocols), ``jobrunner.settings`` (settings read from the
environment), ``jobrunner.files`` (durable private files), ``jobrunner.fencing`` (writes a
lease's former holder cannot make), ``jobrunner.validate`` (records from files others can
write, checked), ``jobrunner.timespan``, ``jobrunner.redact`` and
``jobrunner.errors``. The rest (``jobrunner.run``, ``jobrunner.locks`` …) is the runtime's.

Names are imported on first use, so ``python -m jobrunner`` pays only for what a run needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Alert",
    "CommandFailed",
    "ConfigError",
    "Context",
    "HeldLock",
    "Job",
    "JobContext",
    "JobFailed",
    "JobTimeout",
    "JobrunnerError",
    "Lock",
    "LockBusy",
    "Retry",
    "Slots",
    "Terminated",
    "UsageError",
    "__version__",
    "job",
]

_WHERE = {
    "Alert": "declaration",
    "job": "declaration",
    "Job": "declaration",
    "Lock": "declaration",
    "Retry": "declaration",
    "Slots": "declaration",
    "Context": "run.context",
    "HeldLock": "types",
    "JobContext": "types",
    "CommandFailed": "errors",
    "ConfigError": "errors",
    "JobFailed": "errors",
    "JobTimeout": "errors",
    "JobrunnerError": "errors",
    "LockBusy": "errors",
    "Terminated": "errors",
    "UsageError": "errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from jobrunner.declaration import Alert, Job, Lock, Retry, Slots, job
    from jobrunner.errors import (
        CommandFailed,
        ConfigError,
        JobFailed,
        JobrunnerError,
        JobTimeout,
        LockBusy,
        Terminated,
        UsageError,
    )
    from jobrunner.run.context import Context
    from jobrunner.types import HeldLock, JobContext


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from jobrunner._version import __version__

        return __version__
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'jobrunner' has no attribute {name!r}")

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
