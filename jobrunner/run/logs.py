"""Logging: a structlog pipeline of small processors, and a sink that knows about journald.

Every event is one JSON object on one line of stdout, keys ``ts``, ``level``, ``event``,
``job``, ``run_id``, ``host`` first. On a terminal the console renderer is used instead.

Under systemd (``$JOURNAL_STREAM`` names our stdout) each line is prefixed with the syslog
priority (``<3>{...}``), which journald strips and stores as ``PRIORITY=`` (SyslogLevelPrefix=
is on by default): ``journalctl -p err`` then shows exactly the error events, and ``-o json``
keeps the JSON object intact in ``MESSAGE``.

The sink writes with ``os.write`` and swallows ``OSError``: a closed stdout (journald gone)
must never turn a good run into a failed one. An optional log file receives the same JSON
lines with ``O_APPEND`` (safe with logrotate's default create mode). One line is written at a
time (a lock), so lines from different threads never interleave.

During a run, ``capture_output`` puts pipes in place of the job's own fd 1 and 2 (``print``,
``sys.stderr``, and children started with plain ``subprocess`` that inherit them): each line
they write becomes a ``job.output`` event (``stream``: ``stdout``/``stderr``, ``line``), masked
like every other event, so a password a job prints never reaches the journal as it is. The
log itself is written to a duplicate of the original stdout. What the job wrote before a log
event is written before that event (the pipes are drained first).
"""

from __future__ import annotations

import fcntl
import inspect
import json
import logging
import os
import select
import stat
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import structlog

from jobrunner.errors import ConfigError
from jobrunner.redact import Redactor
from jobrunner.run.process import MAX_LINE, _LineReader
from jobrunner.store.history import format_tail_line

if TYPE_CHECKING:
    from typing import Protocol

    from structlog.typing import EventDict, WrappedLogger

    class _LineBuffered(Protocol):
        """A text stream whose line buffering can be switched (``io.TextIOWrapper``)."""

        @property
        def line_buffering(self) -> int: ...  # typeshed's TextIO says int; TextIOWrapper's is a bool

        def reconfigure(self, *, line_buffering: int) -> object: ...


__all__ = ["LineSink", "OutputCapture", "capture_output", "configure_logging", "exception_dict", "format_tail_line"]

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


def _add_exception(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
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

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> dict[str, Any]:
        head = {
            "ts": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": "warning" if method == "warn" else ("error" if method == "exception" else method),
            "event": event_dict.pop("event", ""),
        }
        head.update(self.static)
        for key, value in event_dict.items():
            if value is not None:  # optional fields are left out rather than written as null
                head[key] = value
        return head


def _open_log_file(path: str) -> tuple[int | None, str | None]:
    """The job's ``log_file``, for appending: never through a symlink (a job user who can write
    the directory cannot point root's log at another file), only a regular file (a FIFO cannot
    hang the run), of root or the running user, and 0640 or tighter whatever the umask."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        fd = os.open(path, flags, 0o640)
    except OSError as exc:
        return None, f"{path}: {exc.strerror}"
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file"
    elif info.st_uid not in (0, os.geteuid()):
        problem = f"belongs to uid {info.st_uid}, not to this user or root"
    elif info.st_uid == os.geteuid() and info.st_mode & 0o137:
        os.fchmod(fd, stat.S_IMODE(info.st_mode) & 0o640)
    if problem:
        os.close(fd)
        return None, f"{path}: {problem}"
    os.set_blocking(fd, True)
    return fd, None


class LineSink:
    """Where rendered lines go: stdout (journald-aware), an optional file, and a tail buffer."""

    def __init__(self, fd: int | None = 1, file_path: str | None = None, tail: int = 40) -> None:
        self.fd = fd
        self.journal = fd is not None and _is_journal_stream(fd)
        self.file_fd: int | None = None
        self.file_error: str | None = None
        if file_path:
            self.file_fd, self.file_error = _open_log_file(file_path)
        self.tail: deque[dict[str, Any]] = deque(maxlen=tail)
        self.stdout_lost = False
        self.lock = threading.RLock()
        self.capture: OutputCapture | None = None

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
        # Bounded: a thread stuck in a write (a full pipe) must not silence the watchdog's line.
        locked = self.lock.acquire(timeout=5.0)
        try:
            capture = self.capture
            if capture is not None:
                try:
                    capture.drain()  # what the job printed before this event comes first
                except Exception:  # pragma: no cover - the event itself must still be written
                    pass
            self._emit(line, priority, json_line)
        finally:
            if locked:
                self.lock.release()

    def _emit(self, line: str, priority: int, json_line: str | None) -> None:
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


class OutputCapture:
    """The job's fd 1 and 2 as masked ``job.output`` events, for the length of a run.

    ``start()`` saves the original descriptors (the log goes on to the saved stdout), puts
    the write ends of two pipes in their place and starts a thread reading the pipes;
    ``drain()`` (under the sink's lock) turns what is readable into events; ``close()``
    flushes ``sys.stdout``/``sys.stderr``, puts the originals back and drains what is left,
    waiting at most ``wait`` seconds for processes that still hold the pipes.
    """

    def __init__(self, sink: LineSink, redactor: Redactor) -> None:
        self.sink = sink
        self.redactor = redactor
        self.streams: list[dict[str, Any]] = []
        self.thread: threading.Thread | None = None
        self.stop = threading.Event()
        self.draining = False
        self.closed = False
        self._sink_fd: int | None = None
        self._buffering: list[tuple[_LineBuffered, int]] = []

    def start(self) -> OutputCapture:

        _flush_std()
        for fd, name in ((1, "stdout"), (2, "stderr")):
            try:
                os.fstat(fd)
            except OSError:  # closed: nothing the job writes there can reach a log
                continue
            saved = read = write = -1
            try:
                saved = _high_fd(fd)
                read, write = os.pipe()
                read, write = _high_fd(read, close=True), _high_fd(write, close=True)
                os.set_blocking(read, False)
                os.dup2(write, fd)  # inheritable: the job's children write here too
            except OSError:
                for extra in (saved, read):
                    if extra >= 0:
                        os.close(extra)
                continue
            finally:
                if write >= 0:
                    os.close(write)
            self.streams.append(
                {
                    "fd": fd,
                    "name": name,
                    "saved": saved,
                    "read": read,
                    "reader": _LineReader(MAX_LINE),
                    "mask": self.redactor.stream(),
                }
            )
            if fd == 1 and self.sink.fd == 1:
                self._sink_fd, self.sink.fd = 1, saved
        for handle in (sys.stdout, sys.stderr):  # print() reaches the pipe line by line, in order
            if handle is not None and hasattr(handle, "reconfigure") and hasattr(handle, "line_buffering"):
                try:
                    self._buffering.append((handle, handle.line_buffering))
                    handle.reconfigure(line_buffering=True)
                except (ValueError, OSError, AttributeError):
                    pass
        if self.streams:
            self.sink.capture = self
            self.thread = threading.Thread(target=self._pump, name="jobrunner-output", daemon=True)
            self.thread.start()
        return self

    def _pump(self) -> None:

        while not self.stop.is_set():
            fds = [s["read"] for s in self.streams if s["read"] >= 0]
            if not fds:
                return
            try:
                ready, _, _ = select.select(fds, [], [], 0.2)
            except (OSError, ValueError):
                return
            if ready:
                with self.sink.lock:
                    try:
                        self.drain()
                    except Exception:  # pragma: no cover - keep reading, or the job blocks on a full pipe
                        pass

    def drain(self, final: bool = False) -> bool:
        """Turn what the pipes hold into events (with the sink's lock held). True once all are at EOF."""
        if self.draining:
            return False
        self.draining = True
        try:
            for stream in self.streams:
                read = stream["read"]
                while read >= 0:
                    try:
                        data = os.read(read, 65536)
                    except BlockingIOError:
                        break
                    except OSError:
                        data = b""
                    if data:
                        self._emit(stream, stream["reader"].feed(data))
                        continue
                    self._emit(stream, stream["reader"].flush())
                    os.close(read)
                    stream["read"] = read = -1
                if final and read >= 0:
                    self._emit(stream, stream["reader"].flush())
            return all(s["read"] < 0 for s in self.streams)
        finally:
            self.draining = False

    def _emit(self, stream: dict[str, Any], lines: list[tuple[str, bool]]) -> None:
        if not lines:
            return
        log = structlog.get_logger()
        for text, cut in lines:
            line = stream["mask"](text) + (" …[truncated]" if cut else "")
            log.info("job.output", stream=stream["name"], line=line)

    def close(self, wait: float = 1.0) -> None:
        """Restore fd 1 and 2 and log the rest of the output (idempotent)."""
        if self.closed:
            return
        self.closed = True

        _flush_std()
        for handle, buffering in self._buffering:
            try:
                handle.reconfigure(line_buffering=buffering)
            except (ValueError, OSError, AttributeError):
                pass
        with self.sink.lock:
            for stream in self.streams:
                try:
                    os.dup2(stream["saved"], stream["fd"])  # our copies of the write ends are gone
                except OSError:
                    pass
            if self._sink_fd is not None:
                self.sink.fd = self._sink_fd
        # The pipes end when the last process holding them does (the runner killed the job's
        # processes first); one that escaped gets ``wait`` seconds, then its lines are dropped.
        end = time.monotonic() + wait
        while True:
            with self.sink.lock:
                done = self.drain()
            if done or time.monotonic() >= end:
                break
            time.sleep(0.01)
        self.stop.set()
        if self.thread is not None:
            self.thread.join(1.0)
        with self.sink.lock:
            self.drain(final=True)
            self.sink.capture = None
            for stream in self.streams:
                for key in ("read", "saved"):
                    if stream[key] >= 0:
                        try:
                            os.close(stream[key])
                        except OSError:
                            pass
                        stream[key] = -1


class _NoCapture:
    def close(self, wait: float = 1.0) -> None:
        pass


def capture_output(sink: LineSink, redactor: Redactor) -> OutputCapture | _NoCapture:
    """Start capturing the job's fd 1 and 2 (see ``OutputCapture``); ``.close()`` at the end of the run."""
    try:
        return OutputCapture(sink, redactor).start()
    except OSError:  # no descriptors left: the run goes on uncaptured rather than failing
        return _NoCapture()


def _high_fd(fd: int, close: bool = False) -> int:
    """A close-on-exec duplicate of ``fd`` numbered 3 or more (never 0-2, even when those are closed)."""

    if close and fd > 2:
        os.set_inheritable(fd, False)
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    if close:
        os.close(fd)
    return new


def _flush_std() -> None:
    for handle in (sys.stdout, sys.stderr):
        try:
            if handle is not None:
                handle.flush()
        except (OSError, ValueError):
            pass


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

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> tuple[tuple[str], dict[str, Any]]:
        event = cast("dict[str, Any]", event_dict)  # built as a dict by _Head, earlier in the chain
        self.sink.tail.append(event)
        priority = PRIORITY.get(event.get("level", "info"), 6)
        json_line = _dumps(event)
        if self.console is None:
            return (json_line,), {"priority": priority}
        return (self.console(logger, method, _for_console(event)),), {"priority": priority, "json_line": json_line}


def _for_console(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the console renderer takes it: the structured ``exception`` (a dict, which
    structlog's ``ConsoleRenderer`` would concatenate to a string and raise on) becomes one
    readable ``error`` field, ``Type: message (file:line)``; the frames stay in the JSON."""
    shown = dict(event)
    # Short enough for 80 columns: the time of day in front (UTC, as the JSON's ts), and the
    # host, job and run id said once, on job.started (the JSON lines keep every field).
    ts = shown.pop("ts", None)
    if isinstance(ts, str) and len(ts) >= 19:
        shown["timestamp"] = ts[11:19]
    shown.pop("host", None)
    shown.pop("module", None)
    if shown.get("event") != "job.started":
        shown.pop("job", None)
        shown.pop("run_id", None)
    if shown.get("attempts") == 1:
        shown.pop("attempts")
    if shown.get("exit_code") == 0 and shown.get("outcome") == "success":
        shown.pop("exit_code")
    exc = shown.pop("exception", None)
    if isinstance(exc, dict):
        frames = exc.get("frames") or []
        where = (
            f" ({frames[-1].get('file')}:{frames[-1].get('line')})" if frames and isinstance(frames[-1], dict) else ""
        )
        text = f"{exc.get('type', '')}: {exc.get('message', '')}{where}"
        shown["error"] = text if shown.get("error") is None else shown["error"]
    elif exc is not None:
        shown["error"] = str(exc)
    return shown


class _Guarded:
    """The processor chain, run so that describing an event can never raise into the caller.

    A logging call sits on every path of a run, the failure path included: an error while
    rendering (a renderer's bug, a value that cannot be shown) must not change what the run
    records or returns. Such an event becomes a ``log.render_failed`` event carrying the
    event's name and the error: where the log is JSON, that line plus a plain line on stderr
    (for a reader of the terminal or the unit's stderr); on a console, once, as a console line
    (and as JSON in a ``log_file``). ``sink`` is the run's sink (``progress`` finds it here).
    """

    def __init__(self, processors: list[Callable[..., Any]], sink: LineSink, *, console: bool = False) -> None:
        self.processors = processors
        self.sink = sink
        self.console = console

    def __call__(self, logger: WrappedLogger, method: str, event_dict: EventDict) -> Any:
        name = str(event_dict.get("event", ""))
        try:
            result: Any = event_dict
            for processor in self.processors:
                result = processor(logger, method, result)
            return result
        except Exception as exc:  # the one place where an error while describing an event stops
            return _render_failed(self.sink, name, exc, console=self.console)


def _render_failed(
    sink: LineSink, name: str, exc: BaseException, *, console: bool = False
) -> tuple[tuple[str], dict[str, Any]]:
    try:
        error = f"{type(exc).__name__}: {exc}"[:500]
    except Exception:  # an exception whose own text cannot be made
        error = type(exc).__name__
    event = {
        "ts": datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "level": "error",
        "event": "log.render_failed",
        "failed_event": name[:100],
        "error": error,
    }
    line = _dumps(event)
    if console:  # one line where the others are, in their form; no renderer is trusted here
        shown = f"{event['ts'][11:19]} [error] log.render_failed failed_event={name[:100]!r} error={error!r}"
        return (shown.replace("\n", " "),), {"priority": PRIORITY["error"], "json_line": line}
    text = f"jobrunner: could not write log event {name[:100]!r}: {error}"
    try:
        fd = 2
        capture = sink.capture
        if capture is not None:  # the job's fd 2 is a pipe into the log: the original stderr
            fd = next((s["saved"] for s in capture.streams if s["fd"] == 2 and s["saved"] >= 0), 2)
        os.write(fd, (text.replace("\n", " ") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass
    return (line,), {"priority": PRIORITY["error"], "json_line": line}


class _StdlibBridge(logging.Handler):
    """Sends warnings of libraries that use stdlib logging (apprise, urllib3) through our pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower()
            log = structlog.get_logger()
            getattr(log, level if level in _LEVELS else "warning")(
                "lib.log", logger=record.name, message=record.getMessage()
            )
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
        raise ConfigError(f"log level {level!r}: use debug, info, warning or error (JOBRUNNER_LOG_LEVEL)")
    if fmt not in ("json", "console"):
        raise ConfigError(f"log format {fmt!r}: use json or console (--log-format, JOBRUNNER_LOG_FORMAT)")
    sink = LineSink(fd=fd, file_path=file_path)
    console = None
    if fmt == "console":
        params = inspect.signature(structlog.dev.ConsoleRenderer).parameters
        narrow: dict[str, Any] = {"pad_level": False} if "pad_level" in params else {}
        narrow |= {"pad_event_to": 0} if "pad_event_to" in params else {"pad_event": 0} if "pad_event" in params else {}
        console = structlog.dev.ConsoleRenderer(colors=_isatty(fd) if fd is not None else False, **narrow)
    structlog.configure(
        processors=[
            _Guarded(
                [_add_exception, _Head(static), redactor, _Render(sink, console)], sink, console=console is not None
            )
        ],
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
