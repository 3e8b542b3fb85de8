"""Child processes: each in its own process group, output streamed into the log line by line.

What a shell script gets wrong and this gets right:

- a command's whole tree (children *and* grandchildren) is one process group, so the
  deadline, ``systemctl stop`` or Ctrl-C kill all of it: SIGTERM, a grace, then SIGKILL;
- stdout and stderr are read as they come and logged as ``proc.output`` events, so
  ``journalctl`` shows progress live and every line carries the job and run id;
- a line longer than ``max_line`` bytes is cut with a marker instead of filling memory, and a
  command that exits while a background child still holds its pipes does not hang the run;
- a non-zero exit raises ``CommandFailed`` with the status and the last lines of output.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from typing import IO, Any, Mapping, Sequence

from .errors import CommandFailed

__all__ = ["Completed", "ProcessGroups", "run_command"]

MAX_LINE = 64 * 1024
_CHUNK = 64 * 1024
_DRAIN_AFTER_EXIT = 1.0


@dataclass(frozen=True)
class Completed:
    """What ``ctx.run`` returns: the exit status and, with ``capture=True``, stdout as text."""

    returncode: int
    stdout: str = ""
    duration_s: float = 0.0


def _members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    found = []
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


class ProcessGroups:
    """The process groups a run started; the runner kills what is left at the end."""

    def __init__(self) -> None:
        self.pgids: set[int] = set()

    def kill_all(self, grace: float) -> list[int]:
        killed = [pgid for pgid in sorted(self.pgids) if kill_group(pgid, grace)]
        self.pgids.clear()
        return killed


class _LineReader:
    """Splits a byte stream into lines, cutting any line longer than ``max_line``."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self.buf = bytearray()
        self.dropped = 0  # bytes thrown away from the current over-long line

    def feed(self, data: bytes) -> list[str]:
        lines = []
        self.buf += data
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                break
            line = self._finish(self.buf[:nl])
            if line is not None:
                lines.append(line)
            del self.buf[: nl + 1]
        if len(self.buf) > self.max_line:
            if not self.dropped:
                lines.append(self.buf[: self.max_line].decode("utf-8", "replace") + " …[truncated]")
            self.dropped += len(self.buf) - (0 if self.dropped else self.max_line)
            self.buf.clear()
        return lines

    def _finish(self, raw: bytes | bytearray) -> str | None:
        if self.dropped:
            self.dropped = 0
            return None  # the tail of a line already cut and logged
        return bytes(raw).rstrip(b"\r").decode("utf-8", "replace")

    def flush(self) -> list[str]:
        line = self._finish(self.buf) if self.buf else None
        out = [line] if line is not None else []
        self.buf.clear()
        self.dropped = 0
        return out


def run_command(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: Any,
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
        opened = out_target = open(stdout, "wb")  # noqa: SIM115 - closed below
    elif stdout is not None:
        out_target = stdout
    started = time.monotonic()
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
    log: Any,
    name: str,
    last: deque[str],
    captured: list[str] | None,
    max_line: int,
) -> None:
    selector = selectors.DefaultSelector()
    readers: dict[int, tuple[str, _LineReader]] = {}
    for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
        if pipe is not None:
            fd = pipe.fileno()
            selector.register(fd, selectors.EVENT_READ, stream)
            readers[fd] = (stream, _LineReader(max_line))
    info = log.info

    def emit(stream: str, lines: list[str]) -> None:
        for line in lines:
            if captured is not None and stream == "stdout":
                captured.append(line)
                continue
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
