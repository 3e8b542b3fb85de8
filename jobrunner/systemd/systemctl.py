"""Reading units' properties from ``systemctl show``: stdlib only, no D-Bus binding.

``show_units(["a.timer", "a.service"], ["LoadState", ...])`` asks once for many units and
returns ``{unit: {property: value}}`` (a property systemd repeats, such as a timer's
``TimersCalendar=`` for each ``OnCalendar=``, has its values joined by newlines). Most
timestamps come as ``@<epoch>`` (``--timestamp=unix``, systemd >= 251), but systemd 252 prints a timer's
``NextElapseUSecRealtime`` in its calendar form whatever the option says, so ``TZ=UTC`` is set
and :func:`timestamp` reads both (and the empty/``n/a`` of "never"). A unit systemd does not
know is still answered, with ``LoadState=not-found``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

__all__ = ["SystemctlError", "show_units", "systemd_running", "timestamp"]

_TIMEOUT = 15.0


class SystemctlError(RuntimeError):
    """``systemctl`` is missing, timed out, or answered something unusable."""


def systemd_running() -> bool:
    """True when this machine was booted with systemd (``sd_booted()``'s test)."""
    return os.path.isdir("/run/systemd/system")


def show_units(units: Sequence[str], properties: Sequence[str]) -> dict[str, dict[str, str]]:
    """``systemctl show -p P… UNIT…`` as ``{unit: {property: value}}`` (one process for all units)."""
    if not units:
        return {}
    tool = shutil.which("systemctl") or "/bin/systemctl"
    props = ["Id", *[p for p in properties if p != "Id"]]
    argv = [tool, "show", "--no-pager", "--timestamp=unix", *(f"--property={p}" for p in props), "--", *units]
    env = dict(os.environ, TZ="UTC", LC_ALL="C", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SystemctlError(f"systemctl show could not run: {exc}") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise SystemctlError(f"systemctl show failed: {why}")
    blocks = _blocks(proc.stdout)
    if len(blocks) != len(units):
        raise SystemctlError(f"systemctl show answered {len(blocks)} units for {len(units)} asked")
    # Blocks come in the order asked; a unit that is an alias reports its real Id, so key by
    # the name we asked for.
    return {unit: block for unit, block in zip(units, blocks, strict=True)}


def _blocks(text: str) -> list[dict[str, str]]:
    blocks: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if not line.strip():
            current = None
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if current is None:
            current = {}
            blocks.append(current)
        # a property listed once per item (TimersCalendar=, one per OnCalendar=): keep them all
        current[key] = f"{current[key]}\n{value}" if key in current else value
    return blocks


def timestamp(value: str | None) -> float | None:
    """Epoch seconds of ``@1700000000`` or ``Wed 2026-11-25 10:00:00 UTC``; None for never/unknown."""
    text = (value or "").strip()
    if not text or text in ("n/a", "0"):
        return None
    if text.startswith("@"):
        try:
            seconds = float(text[1:])
        except ValueError:
            return None
        return seconds if seconds > 0 else None
    import datetime as dt

    try:
        when = dt.datetime.strptime(text, "%a %Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return None
    return when.replace(tzinfo=dt.UTC).timestamp()
