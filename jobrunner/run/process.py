"""Child processes: each in its own process group, output streamed into the log line by line.

What a shell script gets wrong and this gets right:

- a command's whole tree (children *and* grandchildren) is one process group, so the
  deadline, ``systemctl stop`` or Ctrl-C kill all of it: SIGTERM, a grace, then SIGKILL;
- stdout and stderr are read as they come and logged as ``proc.output`` events, so
  ``journalctl`` shows progress live and every line carries the job and run id;
- a line longer than ``max_line`` bytes is cut with a marker instead of filling memory, and a
  command that exits while a background child still holds its pipes does not hang the run;
- a non-zero exit raises ``CommandFailed`` with the status and the last lines of output;
- every logged line passes a ``redact.LineStream`` per stream, so a secret is masked even when
  a line break or the line-length cut splits it.

Outside systemd (no ``$INVOCATION_ID``) a command can leave its process group, e.g. a daemon
that double-forks into a new session. From the first ``ctx.run`` on, the runner is then a
*child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``): such orphans are re-parented to it
instead of to PID 1, and ``ProcessGroups.kill_all`` (deadline, ``systemctl stop``/Ctrl-C, end
of the run, the watchdog) kills every process still descending from the runner that the run
started, not only the groups. Under systemd the unit's cgroup does this and nothing changes.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from jobrunner.errors import CommandFailed
from jobrunner.redact import default_redactor
from jobrunner.types import Completed

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = ["Completed", "ProcessGroups", "run_command"]

MAX_LINE = 64 * 1024
_CHUNK = 64 * 1024
_DRAIN_AFTER_EXIT = 1.0
_PR_SET_CHILD_SUBREAPER = 36
_CUT = " …[truncated]"


def _members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            found.append(int(entry))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(_members(pgid))


def kill_group(pgid: int, grace: float) -> bool:
    """SIGTERM the group, wait up to ``grace`` s, then SIGKILL. True if something was killed."""
    if not group_alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
        os.killpg(pgid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return True
        time.sleep(0.02)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    end = time.monotonic() + 5.0
    while group_alive(pgid) and time.monotonic() < end:
        time.sleep(0.02)
    return True


def _proc_table() -> dict[int, tuple[int, int, bytes, int]]:
    """Every process: pid -> (ppid, pgid, state, start time in clock ticks), from /proc."""
    table: dict[int, tuple[int, int, bytes, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is not None:
            table[int(entry)] = stat
    return table


def _stat(pid: int) -> tuple[int, int, bytes, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
        fields = raw[raw.rfind(b")") + 2 :].split()
        return int(fields[1]), int(fields[2]), fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _has_children() -> bool:
    """Whether this process has any child at all (one system call, reaps nothing)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    except OSError:
        return True
    return True


def _become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux >= 3.4); False if impossible."""
    try:
        import ctypes  # ~2 ms: paid by runs that start a command, not by every timer tick

        libc = ctypes.CDLL(None, use_errno=True)
        status: int = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # restype c_int: an int
        return status == 0
    except (OSError, AttributeError):
        return False


def _signal(pid: int, start: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` if it is still the process that started at ``start``.

    Through a pidfd where there is one: checked after opening it, so a recycled pid is never hit.
    """
    pidfd = -1
    try:
        if hasattr(os, "pidfd_open"):
            pidfd = os.pidfd_open(pid)
        again = _stat(pid)
        if again is None or again[3] != start:
            return
        if pidfd >= 0:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
    except OSError:  # gone already
        pass
    finally:
        if pidfd >= 0:
            os.close(pidfd)


class ProcessGroups:
    """The process groups a run started; the runner kills what is left at the end.

    Outside systemd it also sweeps the run's other descendants (see the module's doc); the
    children this process already had when the run began (a test runner's servers, an
    embedding program's workers) and their trees are left alone.
    """

    def __init__(self) -> None:
        self.pgids: set[int] = set()
        self.sweep = not os.environ.get("INVOCATION_ID")
        self.subreaper = False
        self._me = os.getpid()
        self._before: set[tuple[int, int]] = set()
        if self.sweep and _has_children():
            self._before = {(pid, st[3]) for pid, st in _proc_table().items() if st[0] == self._me}

    def starting(self) -> None:
        """Called before a command starts: from now on, orphans come back to this process."""
        if self.sweep and not self.subreaper:
            self.subreaper = _become_subreaper()

    def strays(self) -> dict[int, int]:
        """Live processes descending from this one that the run started: pid -> start time."""
        if not self.sweep or os.getpid() != self._me or not _has_children():
            return {}
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        found: dict[int, int] = {}
        todo = [pid for pid in children.get(self._me, ()) if (pid, table[pid][3]) not in self._before]
        while todo:
            pid = todo.pop()
            if pid in found or pid == self._me:
                continue
            ppid, _, state, start = table[pid]
            if state != b"Z":
                found[pid] = start
            todo.extend(children.get(pid, ()))
        return found

    def reap(self) -> None:
        """Collect the exit status of the run's dead children (orphans re-parented here)."""
        if not self.sweep or not _has_children():
            return
        for pid, (ppid, _, state, start) in _proc_table().items():
            if ppid == self._me and state == b"Z" and (pid, start) not in self._before:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def kill_all(self, grace: float) -> list[int]:
        """Kill the groups (SIGTERM, ``grace``, SIGKILL) and, outside systemd, every stray
        descendant with them. Returns the pgids of the groups and the pids of the strays."""
        if not self.sweep:
            killed = [pgid for pgid in sorted(self.pgids) if kill_group(pgid, grace)]
            self.pgids.clear()
            return killed
        groups = [pgid for pgid in sorted(self.pgids) if group_alive(pgid)]
        self.pgids.clear()
        strays = self.strays()
        if not groups and not strays:
            self.reap()
            return []
        for pgid in groups:
            for sig in (signal.SIGTERM, signal.SIGCONT):  # a stopped process cannot act on SIGTERM
                try:
                    os.killpg(pgid, sig)
                except OSError:
                    pass
        for pid, start in strays.items():
            _signal(pid, start, signal.SIGTERM)
            _signal(pid, start, signal.SIGCONT)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not any(group_alive(g) for g in groups) and not any(
                (st := _stat(pid)) is not None and st[3] == start and st[2] != b"Z" for pid, start in strays.items()
            ):
                break
            time.sleep(0.02)
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        # Whatever is left, and whatever forked meanwhile: SIGKILL, a few rounds at most.
        everyone = dict(strays)
        for _ in range(3):
            left = self.strays()
            if not left:
                break
            everyone.update(left)
            for pid, start in left.items():
                _signal(pid, start, signal.SIGKILL)
            time.sleep(0.02)
        end = time.monotonic() + 5.0
        while any(group_alive(g) for g in groups) and time.monotonic() < end:
            time.sleep(0.02)
        self.reap()
        return groups + sorted(pid for pid in everyone if pid not in groups)


class _LineReader:
    """Splits a byte stream into lines, cutting any line longer than ``max_line``."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.buf = bytearray()
        self.dropped = 0  # bytes thrown away from the current over-long line

    def feed(self, data: bytes) -> list[tuple[str, bool]]:
        """The complete lines in ``data`` (with what came before), as ``(text, cut)``: ``cut``
        when the line was longer than ``max_line`` and only its beginning is given."""
        lines = []
        self.buf += data
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                break
            if nl > self.max_line and not self.dropped:  # long, but its end came in the same read
                lines.append((self.buf[: self.max_line].decode("utf-8", "replace"), True))
            else:
                line = self._finish(self.buf[:nl])
                if line is not None:
                    lines.append((line, False))
            self.dropped = 0
            del self.buf[: nl + 1]
        if len(self.buf) > self.max_line:
            if not self.dropped:
                lines.append((self.buf[: self.max_line].decode("utf-8", "replace"), True))
            self.dropped += len(self.buf) - (0 if self.dropped else self.max_line)
            self.buf.clear()
        return lines

    def _finish(self, raw: bytes | bytearray) -> str | None:
        if self.dropped:
            self.dropped = 0
            return None  # the tail of a line already cut and logged
        return bytes(raw).rstrip(b"\r").decode("utf-8", "replace")

    def flush(self) -> list[tuple[str, bool]]:
        line = self._finish(self.buf) if self.buf else None
        out = [(line, False)] if line is not None else []
        self.buf.clear()
        self.dropped = 0
        return out


def run_command(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: FilteringBoundLogger,
    groups: ProcessGroups,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    check: bool = True,
    capture: bool = False,
    stdout: IO[Any] | int | str | os.PathLike[str] | None = None,
    stdin: IO[Any] | int | None = None,
    kill_grace: float = 10.0,
    max_line: int = MAX_LINE,
    tail: int = 20,
) -> Completed:
    """Run ``argv`` in a new process group, logging its output; see ``Context.run``."""
    if isinstance(argv, (str, bytes)):
        raise TypeError("ctx.run takes a list of arguments; for a shell line use ctx.sh(...)")
    args = [os.fspath(a) for a in argv]
    if not args:
        raise TypeError("ctx.run needs a command")
    name = os.path.basename(args[0])
    out_target: Any = subprocess.PIPE
    opened: IO[Any] | None = None
    if isinstance(stdout, (str, os.PathLike)):
        opened = out_target = open(stdout, "wb")
    elif stdout is not None:
        out_target = stdout
    started = time.monotonic()
    groups.starting()
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL if stdin is None else stdin,
            stdout=out_target,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError:
        if opened:
            opened.close()
        raise CommandFailed(name, 127, (f"{args[0]}: command not found",)) from None
    except PermissionError:
        if opened:
            opened.close()
        raise CommandFailed(name, 126, (f"{args[0]}: permission denied",)) from None
    groups.pgids.add(proc.pid)
    log.info("proc.started", cmd=name, argv=args, pid=proc.pid)
    last: deque[str] = deque(maxlen=tail)
    captured: list[str] = []
    try:
        _pump(proc, log, name, last, captured if capture else None, max_line)
        returncode = proc.wait()
    except BaseException:
        kill_group(proc.pid, kill_grace)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILLed above
            pass
        groups.pgids.discard(proc.pid)
        raise
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
        if opened:
            opened.close()
    duration = time.monotonic() - started
    if kill_group(proc.pid, min(kill_grace, 2.0)):
        log.warning("proc.leftovers_killed", cmd=name, pgid=proc.pid)
    groups.pgids.discard(proc.pid)
    log.info("proc.exited", cmd=name, returncode=returncode, duration_s=round(duration, 3))
    if check and returncode != 0:
        raise CommandFailed(name, returncode, tuple(last))
    return Completed(returncode, "\n".join(captured) + ("\n" if captured else ""), duration)


def _pump(
    proc: subprocess.Popen[bytes],
    log: FilteringBoundLogger,
    name: str,
    last: deque[str],
    captured: list[str] | None,
    max_line: int,
) -> None:

    selector = selectors.DefaultSelector()
    readers: dict[int, tuple[str, _LineReader]] = {}
    redactor = default_redactor()
    masks = {"stdout": redactor.stream(), "stderr": redactor.stream()}
    for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        if pipe is not None:
            fd = pipe.fileno()
            selector.register(fd, selectors.EVENT_READ, stream)
            readers[fd] = (stream, _LineReader(max_line))
    info = log.info

    def emit(stream: str, lines: list[tuple[str, bool]]) -> None:
        for text, cut in lines:
            if captured is not None and stream == "stdout":
                captured.append(text + _CUT if cut else text)  # the job's own data, unmasked
                continue
            # Masked here, line after line, so a secret split by a line break or the cut is
            # caught; the tail (CommandFailed's message) keeps the masked text.
            line = masks[stream](text) + (_CUT if cut else "")
            last.append(line)
            info("proc.output", cmd=name, stream=stream, line=line)

    exited_at: float | None = None
    try:
        while readers:
            timeout = 0.2
            if exited_at is not None:
                timeout = max(0.0, exited_at + _DRAIN_AFTER_EXIT - time.monotonic())
                if timeout == 0.0:
                    break  # a background child still holds the pipes; don't wait for it
            for key, _ in selector.select(timeout):
                fd = key.fd
                stream, reader = readers[fd]
                data = os.read(fd, _CHUNK)
                if data:
                    emit(stream, reader.feed(data))
                else:
                    emit(stream, reader.flush())
                    selector.unregister(fd)
                    del readers[fd]
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
        for stream, reader in readers.values():
            emit(stream, reader.flush())
    finally:
        selector.close()
