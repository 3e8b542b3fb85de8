"""Progress of a long run: ``with ctx.progress("files", total=n, unit="B") as p: p.advance(k)``.

A ``Step`` only counts (``advance`` adds to an integer: nothing else on the job's path). A
ticker thread, alive while a step is open, does the reporting:

- under systemd (``$NOTIFY_SOCKET``): ``STATUS=`` with the step, its percentage and ETA, every
  ``STATUS_EVERY`` seconds, sooner when a step starts or ends but never two datagrams within
  ``STATUS_GAP`` (``systemctl status``, ``systemctl show -p StatusText``); cleared at the end;
- the log: a ``progress`` event every ``LOG_EVERY`` seconds for the innermost step, and one at
  each step's end (``state``: ``done``/``failed``, ``duration_s``, ``rate``);
- on a terminal: one live line, redrawn in place and cleared when the step ends
  (``jobrunner.run.progress_tty``, imported only when the log goes to a terminal).

Steps nest (``files > compress``) or follow one another. Without a total, the line shows what
is done and the rate. ``follow_io(pid)`` and ``follow_file(path)`` make the ticker read a
child's byte count (``/proc/<pid>/io``) or a growing file's size, so a command's own work
is counted without a byte passing through Python.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from structlog.typing import FilteringBoundLogger

    from jobrunner.run.process import ProcessGroups
    from jobrunner.systemd.sdnotify import Notifier

__all__ = ["Reporter", "Step", "format_amount", "format_duration"]

LOG_EVERY = 30.0
STATUS_EVERY = 2.0
STATUS_GAP = 0.5  # a new or ended step shows sooner, but never two datagrams closer than this
TICK = 0.5
TTY_TICK = 0.2


def format_amount(value: float, unit: str) -> str:
    """``1.5 GiB`` for bytes (unit ``B``), ``1,234 URLs`` otherwise."""
    if unit == "B":
        for prefix in ("", "Ki", "Mi", "Gi", "Ti"):
            if abs(value) < 1024 or prefix == "Ti":
                return f"{value:.0f} B" if not prefix else f"{value:.1f} {prefix}B"
            value /= 1024
    text = f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"
    return f"{text} {unit}" if unit else text


def format_duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h03m``."""
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Step:
    """One step of a run's progress; a context manager (``with ctx.progress(...) as p``)."""

    def __init__(self, reporter: Reporter, name: str, total: float | None, unit: str) -> None:
        self.reporter = reporter
        self.name = name
        self.total = total
        self.unit = unit
        self.done: float = 0
        self.started = 0.0
        self.ended: float | None = None
        self.parent: Step | None = None
        self._follow: Callable[[], float | tuple[float, float | None] | None] | None = None

    def advance(self, n: float = 1) -> None:
        """Count ``n`` more units done."""
        self.done += n

    def update(self, done: float, total: float | None = None) -> None:
        """Set what is done (and the total, when it becomes known); stops following."""
        self._follow = None
        self.done = done
        if total is not None:
            self.total = total

    def follow(self, read: Callable[[], float | tuple[float, float | None] | None]) -> None:
        """Have the ticker set ``done`` from ``read()`` twice a second: a count, ``(done,
        total)`` (a total that grows as the work is found, e.g. rclone's stats), or ``None``
        (no news)."""
        self._follow = read

    def follow_io(self, pid: int, field: str = "rchar") -> None:
        """Count the bytes process ``pid`` reads (``rchar``) or writes (``wchar``), from
        ``/proc/<pid>/io``, since now; the process is never slowed (nothing passes through us)."""
        path = f"/proc/{pid}/io"
        base = _proc_io(path, field)
        start = base or 0

        def read() -> float | None:
            value = _proc_io(path, field)
            return None if value is None else value - start

        self.follow(read)

    def follow_commands(self, field: str = "rchar", command: str | None = None) -> None:
        """Count the bytes the commands ``ctx.run``/``ctx.sh`` start read (``rchar``) or write
        (``wchar``), from ``/proc/<pid>/io``: of each command itself or, with ``command`` (a
        program name: ``"tar"``), of every process of that name the commands started (a
        pipeline's stage in ``ctx.sh``). Processes that ended keep their last count."""
        groups = self.reporter.groups
        if groups is None:
            return
        name = command.encode()[:15] if command else None
        seen: dict[int, int] = {}
        base = {pid: value for pid, value in _group_io(set(groups.pgids), field, name).items()}

        def read() -> float | None:
            for pid, value in _group_io(set(groups.pgids), field, name).items():
                seen[pid] = value - base.get(pid, 0)
            return sum(seen.values())

        self.follow(read)

    def follow_file(self, path: str | os.PathLike[str]) -> None:
        """Count the size of a file being written (a dump, an archive)."""

        def read() -> float | None:
            try:
                return os.stat(path).st_size
            except OSError:
                return None

        self.follow(read)

    @property
    def path(self) -> str:
        names = []
        step: Step | None = self
        while step is not None:
            names.append(step.name)
            step = step.parent
        return " > ".join(reversed(names))

    def elapsed(self, now: float) -> float:
        return (self.ended if self.ended is not None else now) - self.started

    def rate(self, now: float) -> float | None:
        elapsed = self.elapsed(now)
        return self.done / elapsed if elapsed > 0.5 else None

    def percent(self) -> float | None:
        if not self.total or self.total <= 0:
            return None
        return max(0.0, min(100.0, 100.0 * self.done / self.total))

    def eta(self, now: float) -> float | None:
        rate = self.rate(now)
        if not self.total or not rate or self.done >= self.total:
            return None
        return (self.total - self.done) / rate

    def describe(self, now: float) -> str:
        """``files 42% (1.2 GiB / 2.9 GiB, 85.0 MiB/s, ETA 20s)``, or without a total
        ``urls 1,234 URLs (12.5 URLs/s)``."""
        parts = []
        if self.total:
            parts.append(f"{format_amount(self.done, self.unit)} / {format_amount(self.total, self.unit)}")
        else:
            parts.append(format_amount(self.done, self.unit))
        rate = self.rate(now)
        if rate is not None:
            parts.append(f"{format_amount(rate, self.unit)}/s")
        eta = self.eta(now)
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        pct = self.percent()
        head = self.path if pct is None else f"{self.path} {pct:.0f}%"
        return f"{head} ({', '.join(parts)})"

    def fields(self, now: float) -> dict[str, Any]:
        rate = self.rate(now)
        eta = self.eta(now)
        pct = self.percent()
        return {
            "step": self.path,
            "done": _whole(self.done),
            "total": None if self.total is None else _whole(self.total),
            "unit": self.unit or None,
            "percent": None if pct is None else round(pct, 1),
            "rate": None if rate is None else round(rate, 1),
            "eta_s": None if eta is None else round(eta, 1),
        }

    def __enter__(self) -> Step:
        self.reporter._enter(self)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.reporter._exit(self, failed=exc_type is not None)


def _whole(value: float) -> float:
    """``3.0`` as ``3`` in the log (counts from a tool's JSON arrive as floats)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _group_io(pgids: set[int], field: str, name: bytes | None) -> dict[int, int]:
    """pid -> ``field`` of /proc/<pid>/io: the group leaders, or the processes called ``name``
    among their descendants (found through /proc/<pid>/task/<tid>/children: no scan of /proc)."""
    pids = list(pgids)
    if name is not None:
        found: list[int] = []
        stack = list(pgids)
        while stack:
            pid = stack.pop()
            try:
                with open(f"/proc/{pid}/comm", "rb") as f:
                    if f.read().rstrip(b"\n") == name:
                        found.append(pid)
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        stack.extend(int(child) for child in f.read().split())
            except (OSError, ValueError):
                continue
        pids = found
    values = {}
    for pid in pids:
        value = _proc_io(f"/proc/{pid}/io", field)
        if value is not None:
            values[pid] = value
    return values


def _proc_io(path: str, field: str) -> int | None:
    try:
        with open(path, "rb") as f:
            for line in f.read().splitlines():
                key, _, value = line.partition(b":")
                if key.decode() == field:
                    return int(value)
    except (OSError, ValueError):
        return None
    return None


class Reporter:
    """A run's progress: the open steps, and the thread that reports them."""

    def __init__(
        self,
        log: FilteringBoundLogger,
        *,
        notifier: Notifier | None = None,
        groups: ProcessGroups | None = None,
        terminal: Any = None,
        clock: Callable[[], float] = time.monotonic,
        log_every: float = LOG_EVERY,
        status_every: float = STATUS_EVERY,
        thread: bool = True,
    ) -> None:
        self.log = log
        self.notifier = notifier
        self.groups = groups
        self.terminal = terminal
        self.clock = clock
        self.log_every = log_every
        self.status_every = status_every
        self.stack: list[Step] = []
        self.lock = threading.RLock()
        self._use_thread = thread
        self._thread: threading.Thread | None = None
        self._clear_pending = False
        self._next_log = 0.0
        self._next_status = 0.0
        self._last_sent = -STATUS_GAP
        self._last_status = ""

    def step(self, name: str, total: float | None = None, unit: str = "") -> Step:
        return Step(self, name, total, unit)

    def _enter(self, step: Step) -> None:
        with self.lock:
            step.started = self.clock()
            step.parent = self.stack[-1] if self.stack else None
            self.stack.append(step)
            self._next_log = step.started + self.log_every
            self._soon()  # the new step shows at the next tick
            if self._use_thread and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="jobrunner-progress", daemon=True)
                self._thread.start()
        self.tick()

    def _exit(self, step: Step, failed: bool) -> None:
        with self.lock:
            self._poll(step)
            now = self.clock()
            step.ended = now
            if step in self.stack:
                self.stack.remove(step)
            fields = step.fields(now)
            fields.pop("eta_s")
            rate = step.rate(now)
            fields["rate"] = None if rate is None else round(rate, 1)
            if self.terminal is not None:
                self.terminal.clear()
            self.log.info(
                "progress", state="failed" if failed else "done", duration_s=round(now - step.started, 3), **fields
            )
            self._next_log = now + self.log_every
            if not self.stack:
                # Clear the status: now, or at a tick once STATUS_GAP has passed (the ticker
                # ends itself when nothing is open and nothing is left to send).
                self._clear_pending = self.notifier is not None and bool(self._last_status)
            else:
                self._soon()
        self.tick()

    def flush(self) -> None:
        """Send a pending clear of the status now (at the process's exit: once, whatever the gap)."""
        with self.lock:
            if self._clear_pending and not self.stack and self.notifier is not None:
                self.notifier.send("STATUS=")
                self._last_status, self._clear_pending = "", False

    def _soon(self) -> None:
        """Send the status at the next tick, if STATUS_GAP has passed since the last datagram."""
        self._next_status = min(self._next_status, self._last_sent + STATUS_GAP)

    def _poll(self, step: Step) -> None:
        follow = step._follow
        if follow is not None:
            try:
                value = follow()
            except Exception:  # a closed descriptor, a vanished file: no news, never an error
                return
            if step._follow is not follow or value is None:
                return
            if isinstance(value, tuple):
                value, total = value
                if total is not None:
                    step.total = total
            if value >= 0:
                step.done = value

    def _run(self) -> None:
        period = TTY_TICK if self.terminal is not None else TICK
        while True:
            time.sleep(period)
            with self.lock:
                if not self.stack and not self._clear_pending:
                    self._thread = None
                    return
            try:
                self.tick()
            except Exception:  # pragma: no cover - progress must never break a run
                pass

    def tick(self) -> None:
        """Report the open steps: what the ticker thread calls (tests call it with a fake clock)."""
        if not self.lock.acquire(timeout=1.0):
            return  # pragma: no cover
        try:
            if not self.stack:
                now = self.clock()
                if self._clear_pending and self.notifier is not None and now >= self._last_sent + STATUS_GAP:
                    self.notifier.send("STATUS=")
                    self._last_status, self._last_sent, self._clear_pending = "", now, False
                return
            self._clear_pending = False  # a step is open again: its status replaces the last
            for step in self.stack:
                self._poll(step)
            now = self.clock()
            top = self.stack[-1]
            if self.terminal is not None:
                self.terminal.draw(top.describe(now))
            if self.notifier is not None and now >= self._next_status:
                self._next_status = now + self.status_every
                text = top.describe(now)
                if text != self._last_status:
                    self._last_status, self._last_sent = text, now
                    self.notifier.send(f"STATUS={text}")
            if now >= self._next_log:
                self._next_log = now + self.log_every
                self.log.info("progress", state="running", elapsed_s=round(now - top.started, 1), **top.fields(now))
        finally:
            self.lock.release()


def reporter_for(log: FilteringBoundLogger, groups: ProcessGroups | None = None) -> Reporter:
    """The reporter of a run: sd_notify under systemd, a live line when the log goes to a terminal."""
    from jobrunner.systemd.sdnotify import Notifier

    notifier = Notifier()
    reporter = Reporter(log, notifier=notifier if notifier.enabled else None, groups=groups, terminal=_terminal())
    if notifier.enabled:
        import atexit

        atexit.register(reporter.flush)
    return reporter


def _terminal() -> Any:
    sink = _log_sink()
    fd = getattr(sink, "fd", None)
    if sink is None or not isinstance(fd, int):
        return None
    try:
        if not os.isatty(fd):
            return None
    except OSError:
        return None
    from jobrunner.run.progress_tty import LiveLine

    return LiveLine(sink)


def _log_sink() -> Any:
    """The run's log sink (``jobrunner.run.logs.LineSink``), from structlog's configuration."""
    import structlog

    from jobrunner.run.logs import LineSink

    for processor in structlog.get_config().get("processors", []):
        sink = getattr(processor, "sink", None)
        if isinstance(sink, LineSink):
            return sink
    return None
