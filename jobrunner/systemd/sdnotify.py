"""sd_notify without a library: one datagram to ``$NOTIFY_SOCKET`` (``STATUS=...``).

systemd reads ``STATUS=`` into the unit's ``StatusText`` (``systemctl status``, ``systemctl
show -p StatusText``) when the unit allows it (``NotifyAccess=main``, set by ``jobrunner units
render``). Outside systemd (no ``$NOTIFY_SOCKET``) ``send`` does nothing. A failed send is
dropped: a status line must never fail a run.
"""

from __future__ import annotations

import os
import socket

__all__ = ["Notifier"]


class Notifier:
    """A datagram socket to ``$NOTIFY_SOCKET``, opened on the first send."""

    def __init__(self, address: str | None = None) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "") if address is None else address
        if address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        self.address = address if address.startswith(("/", "\0")) else ""
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, message: str) -> bool:
        """Send ``message`` (``"STATUS=..."``, newline-separated assignments); True if sent."""
        if not self.address:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode("utf-8", "replace"), self.address)
            return True
        except OSError:
            return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
