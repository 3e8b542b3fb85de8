"""Logging: a structlog pipeline of small processors, and a sink that knows about journald.

Every event is one JSON object on one line of stdout, keys ``ts``, ``level``, ``event``,
``job``, ``run_id``, ``host`` first. On a terminal the console renderer is used instead.

Under systemd (``$JOURNAL_STREAM`` names our stdout) each line is prefixed with the syslog
priority (``<3>{...}``), which journald strips and stores as ``PRIORITY=`` (SyslogLevelPrefix=
is on by default): ``journalctl -p err`` then shows exactly the error events, and ``-o json``
keeps the JSON object intact in ``MESSAGE``.

The sink writes with ``os.write`` and swallows ``OSError``: a closed stdout (journald gone)
must never turn a good run into a failed one. An optional log file receives the same JSON
lines with ``O_APPEND`` (safe with logrotate's default create mode).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable

import structlog

from .redact import Redactor

__all__ = ["LineSink", "configure_logging", "exception_dict", "format_tail_line"]

PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
_FIRST = ("ts", "level", "event", "job", "run_id", "host")
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_MAX_FRAMES = 20


def exception_dict(exc: BaseException, depth: int = 0) -> dict[str, Any]:
    """An exception as data: type, message, innermost frames, and its cause."""
    frames = traceback.extract_tb(exc.__traceback__)[-_MAX_FRAMES:]
    data: dict[str, Any] = {
        "type": type(exc).__qualname__,
        "message": str(exc),
        "frames": [{"file": f.filename, "line": f.lineno, "func": f.name} for f in frames],
    }
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None and depth < 3:
        data["cause"] = exception_dict(cause, depth + 1)
    return data


def _add_exception(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    exc_info = event_dict.pop("exc_info", None)
    if exc_info:
        if exc_info is True:
            exc_info = sys.exc_info()[1]
        elif isinstance(exc_info, tuple):
            exc_info = exc_info[1]
        if isinstance(exc_info, BaseException):
            event_dict["exception"] = exception_dict(exc_info)
    return event_dict


class _Head:
    """Puts ``ts``, ``level``, ``event`` and the run's static fields first."""

    def __init__(self, static: dict[str, Any]) -> None:
        self.static = static

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        head = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": "warning" if method == "warn" else ("error" if method == "exception" else method),
            "event": event_dict.pop("event", ""),
        }
        head.update(self.static)
        for key, value in event_dict.items():
            if value is not None:  # optional fields are left out rather than written as null
                head[key] = value
        return head


def format_tail_line(event: dict[str, Any]) -> str:
    """A compact human line for notification bodies: ``08:15:02 error job.failed key=value``."""
    if event.get("event") == "proc.output":
        return str(event.get("line", ""))
    extras = " ".join(
        f"{k}={v}" for k, v in event.items() if k not in _FIRST and k not in ("exception",) and v is not None
    )
    ts = str(event.get("ts", ""))[11:19]
    return f"{ts} {event.get('level', '')} {event.get('event', '')} {extras}".rstrip()


class LineSink:
    """Where rendered lines go: stdout (journald-aware), an optional file, and a tail buffer."""

    def __init__(self, fd: int | None = 1, file_path: str | None = None, tail: int = 40) -> None:
        self.fd = fd
        self.journal = fd is not None and _is_journal_stream(fd)
        self.file_fd: int | None = None
        self.file_error: str | None = None
        if file_path:
            try:
                self.file_fd = os.open(file_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            except OSError as exc:
                self.file_error = f"{file_path}: {exc.strerror}"
        self.tail: deque[dict[str, Any]] = deque(maxlen=tail)
        self.stdout_lost = False

    def _write(self, fd: int, data: bytes) -> bool:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            return True
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            return False
        except OSError:
            return False

    def emit(self, line: str, priority: int, json_line: str | None) -> None:
        if self.fd is not None and not self.stdout_lost:
            data = (f"<{priority}>{line}\n" if self.journal else f"{line}\n").encode("utf-8", "replace")
            if not self._write(self.fd, data):
                self.stdout_lost = True
        if self.file_fd is not None:
            self._write(self.file_fd, f"{json_line or line}\n".encode("utf-8", "replace"))

    def close(self) -> None:
        if self.file_fd is not None:
            try:
                os.close(self.file_fd)
            except OSError:
                pass
            self.file_fd = None


def _is_journal_stream(fd: int) -> bool:
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(fd)
        dev, ino = stream.split(":", 1)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError):
        return False


class _SinkLogger:
    """The object structlog wraps; every level method writes one line."""

    def __init__(self, sink: LineSink) -> None:
        self.sink = sink

    def msg(self, line: str, priority: int = 6, json_line: str | None = None) -> None:
        self.sink.emit(line, priority, json_line)

    debug = info = warning = warn = error = critical = exception = fatal = msg


def _dumps(event_dict: dict[str, Any]) -> str:
    return json.dumps(event_dict, ensure_ascii=False, separators=(",", ":"), default=str)


class _Render:
    """Last processor: render JSON (and console text on a TTY), remember the event for the tail."""

    def __init__(self, sink: LineSink, console: Callable[..., str] | None) -> None:
        self.sink = sink
        self.console = console

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> tuple[tuple[str], dict[str, Any]]:
        self.sink.tail.append(event_dict)
        priority = PRIORITY.get(event_dict.get("level", "info"), 6)
        json_line = _dumps(event_dict)
        if self.console is None:
            return (json_line,), {"priority": priority}
        return (self.console(logger, method, dict(event_dict)),), {"priority": priority, "json_line": json_line}


class _StdlibBridge(logging.Handler):
    """Sends warnings of libraries that use stdlib logging (apprise, urllib3) through our pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            log = structlog.get_logger()
            getattr(log, level if level in _LEVELS else "warning")("lib.log", logger=record.name, message=record.getMessage())
        except Exception:  # pragma: no cover - logging must never raise
            pass


def configure_logging(
    *,
    static: dict[str, Any],
    redactor: Redactor,
    fmt: str | None = None,
    level: str | None = None,
    file_path: str | None = None,
    fd: int | None = 1,
) -> LineSink:
    """Configure structlog for this process; return the sink (its ``tail`` feeds notifications).

    ``fmt``: ``json`` or ``console``; default ``$JOBRUNNER_LOG_FORMAT``, else console on a TTY.
    ``level``: minimum level; default ``$JOBRUNNER_LOG_LEVEL`` or ``info``.
    """
    fmt = fmt or os.environ.get("JOBRUNNER_LOG_FORMAT") or ""
    if not fmt:
        fmt = "console" if fd is not None and _isatty(fd) else "json"
    level = (level or os.environ.get("JOBRUNNER_LOG_LEVEL") or "info").lower()
    if level not in _LEVELS:
        from .errors import ConfigError

        raise ConfigError(f"log level {level!r}: use debug, info, warning or error (JOBRUNNER_LOG_LEVEL)")
    if fmt not in ("json", "console"):
        from .errors import ConfigError

        raise ConfigError(f"log format {fmt!r}: use json or console (--log-format, JOBRUNNER_LOG_FORMAT)")
    sink = LineSink(fd=fd, file_path=file_path)
    console = None
    if fmt == "console":
        console = structlog.dev.ConsoleRenderer(colors=_isatty(fd) if fd is not None else False)
    structlog.configure(
        processors=[_add_exception, _Head(static), redactor, _Render(sink, console)],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *args: _SinkLogger(sink),
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StdlibBridge):
            root.removeHandler(handler)
    bridge = _StdlibBridge(level=logging.WARNING)
    root.addHandler(bridge)
    return sink


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False
