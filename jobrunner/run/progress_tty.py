"""The live progress line on a terminal (imported only when the log's stdout is a TTY).

One line, redrawn in place (``\\r``, erase to end of line) and erased when the step ends.
Log lines written meanwhile erase it first and redraw it after them, under the sink's lock,
so the two never share a line.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["LiveLine", "terminal_width"]

_ERASE = b"\r\x1b[K"


def terminal_width(fd: int | None) -> int:
    """The terminal's columns, 80 when it reports 0 or none (a serial or rescue console,
    ``script`` without a size, some ``docker exec -t``): ``shutil.get_terminal_size``'s fallback."""
    try:
        columns = os.get_terminal_size(fd).columns if fd is not None else 0
    except (OSError, TypeError, ValueError):
        columns = 0
    return columns if columns > 0 else 80


class LiveLine:
    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.text = ""
        self.shown = False
        self._emit = sink._emit
        sink._emit = self._log_line  # on the instance: only this run's sink, only while it lives

    def _write(self, data: bytes) -> None:
        fd = self.sink.fd
        if fd is None or self.sink.stdout_lost:
            return
        try:
            os.write(fd, data)
        except OSError:
            pass

    def _log_line(self, line: str, priority: int, json_line: str | None) -> None:
        if self.shown:
            self._write(_ERASE)
            self.shown = False
        self._emit(line, priority, json_line)
        if self.text:
            self._show()

    def _show(self) -> None:
        width = terminal_width(self.sink.fd) - 1
        text = self.text if len(self.text) <= width else self.text[: max(width - 1, 0)] + "…"
        self._write(_ERASE + text.encode("utf-8", "replace"))
        self.shown = True

    def draw(self, text: str) -> None:
        if not self.sink.lock.acquire(timeout=0.5):
            return
        try:
            self.text = text
            self._show()
        finally:
            self.sink.lock.release()

    def clear(self) -> None:
        with self.sink.lock:
            self.text = ""
            if self.shown:
                self._write(_ERASE)
                self.shown = False
