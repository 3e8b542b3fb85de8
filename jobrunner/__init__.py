"""jobrunner: systemd timer jobs as plain Python functions.

>>> from jobrunner import job, Lock, Retry
>>> @job(schedule="02:15", lock=True, timeout="2h")
... def nightly(ctx):
...     ctx.run(["/usr/local/bin/backup.sh"])

Names are imported on first use, so ``python -m jobrunner`` pays only for what a run needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "CommandFailed",
    "ConfigError",
    "Context",
    "Job",
    "JobFailed",
    "JobTimeout",
    "JobrunnerError",
    "Lock",
    "LockBusy",
    "Retry",
    "Terminated",
    "UsageError",
    "__version__",
    "job",
]

_WHERE = {
    "job": "declaration",
    "Job": "declaration",
    "Lock": "declaration",
    "Retry": "declaration",
    "Context": "context",
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
    from .context import Context
    from .declaration import Job, Lock, Retry, job
    from .errors import (
        CommandFailed,
        ConfigError,
        JobFailed,
        JobrunnerError,
        JobTimeout,
        LockBusy,
        Terminated,
        UsageError,
    )


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from ._version import __version__

        return __version__
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'jobrunner' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
