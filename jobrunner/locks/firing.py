"""Which firing of its timer a run is: so a fleet singleton runs once per firing, not once per host.

A Redis lease alone keeps runs apart, but it is released when the run ends: a host whose timer
fires a few seconds later (``AccuracySec=``, ``RandomizedDelaySec=``, clock skew, a
``Persistent=`` catch-up) would run the job again. So a run started by its timer names its
firing: the **last elapse of the job's ``OnCalendar=`` schedule at or before the moment the
timer elapsed on this host** (systemd gives every service a timer started
``$TRIGGER_UNIT=<name>.timer`` and ``$TRIGGER_TIMER_REALTIME_USEC``, systemd ≥ 251; without
that moment, now). Every host whose timer fires for the 02:15 elapse, however late within the
schedule's interval, names the same firing: ``<prefix>firing:<lock name>:<elapse, Unix s>``
(``firing_key``: ``jobrunner:firing:…`` in Redis, ``jobrunner/firing/…`` in etcd). The lease's
acquisition claims that key in the same atomic step (Redis: ``SET … PX`` in the acquiring script;
etcd: a put in the lease key's transaction, on a lease of its own); a host that finds it
claimed skips (exit 75, ``lock.busy`` naming the host that ran it: ``ran_already``).

A run that was not started by a timer (by hand, ``systemctl start``, ``exec``) names no firing:
it takes the lease as always and claims nothing.

The elapses are computed by ``systemd-analyze calendar`` (the host's time zone, as the timer
does): one or a few calls of about 10 ms, only for leased jobs with a schedule.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["FIRING_PREFIX", "Firing", "current_firing", "elapses", "firing_key", "last_elapse", "ran_already"]

FIRING_PREFIX = "jobrunner:firing:"
_WINDOWS = (65.0, 3700.0, 86400.0 + 3700.0, 8 * 86400.0, 32 * 86400.0, 367 * 86400.0, 4 * 366 * 86400.0)
_ITERATIONS = 64


@dataclass(frozen=True)
class Firing:
    """One firing: its elapse (Unix seconds), the next one, and how long its key is kept."""

    elapse: float
    next_elapse: float | None

    @property
    def name(self) -> str:
        return str(int(self.elapse))

    @property
    def ttl_ms(self) -> int:
        """Twice the gap to the next elapse (at least 10 minutes, at most 31 days): a host's
        timer late by up to the schedule's interval still finds the key."""
        gap = (self.next_elapse - self.elapse) if self.next_elapse else 86400.0
        return int(min(31 * 86400.0, max(600.0, 2 * gap)) * 1000)


def _parse_stamp(text: str) -> float | None:
    # "Sun 2026-12-06 23:15:00 UTC": the weekday and the zone's abbreviation around a local time
    words = text.split()
    if len(words) < 3:
        return None
    try:
        parsed = time.strptime(f"{words[1]} {words[2]}", "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return time.mktime(parsed)


def elapses(schedule: Sequence[str], base: float, iterations: int = _ITERATIONS) -> list[float]:
    """The schedule's elapses after ``base`` (the first ``iterations`` of each expression),
    sorted; [] when systemd-analyze is missing or refuses the schedule."""
    tool = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    env = {k: v for k, v in os.environ.items() if k in ("TZ", "PATH")}
    env.update(LC_ALL="C", SYSTEMD_PAGER="", SYSTEMD_COLORS="0")
    try:
        proc = subprocess.run(
            [
                tool,
                "--no-pager",
                "calendar",
                f"--iterations={iterations}",
                f"--base-time=@{int(base)}",
                "--",
                *schedule,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    out = []
    for line in proc.stdout.splitlines():
        label, sep, value = line.partition(": ")
        if sep and (label.strip() == "Next elapse" or label.strip().startswith("Iter. #")):
            stamp = _parse_stamp(value)
            if stamp is not None:
                out.append(stamp)
    return sorted(set(out))


def last_elapse(schedule: Sequence[str], at: float) -> Firing | None:
    """The schedule's last elapse at or before ``at``, and the one after it."""
    for window in _WINDOWS:
        base = at - window
        for _ in range(64):  # walk forward through a dense schedule, 64 elapses a call
            found = elapses(schedule, base)
            if not found:
                return None  # no elapse at all after base: an invalid or finished schedule
            before = [e for e in found if e <= at]
            after = [e for e in found if e > at]
            if before and after:
                return Firing(before[-1], after[0])
            if not before:
                break  # the window holds no elapse up to ``at``: a wider one
            base = before[-1]
    return None


def current_firing(schedule: str | Sequence[str], env: Mapping[str, str] | None = None) -> Firing | None:
    """The firing this run is, or None when it was not started by a timer (or the job has no
    schedule, or the schedule cannot be evaluated)."""
    env = os.environ if env is None else env
    specs = [schedule] if isinstance(schedule, str) else list(schedule)
    if not specs or not env.get("TRIGGER_UNIT", "").endswith(".timer"):
        return None
    try:
        at = int(env.get("TRIGGER_TIMER_REALTIME_USEC", "")) / 1e6
    except ValueError:
        at = time.time()
    if not 946684800 <= at <= time.time() + 86400:
        at = time.time()
    return last_elapse(specs, at)


def firing_key(prefix: str, lock_name: str, firing: Firing) -> str:
    """The key a run of ``firing`` claims: ``prefix`` (the store's, ending in ``firing:`` or
    ``firing/``) + the lock's name + ``:`` + the elapse in Unix seconds."""
    return f"{prefix}{lock_name}:{firing.name}"


def ran_already(key: str, who: str) -> str:
    """The ``lock.busy`` reason of a run whose firing (``key``, from ``firing_key``) was
    claimed already, by ``who`` (the claimant's ``host:pid:run``, or whatever another client of
    the store wrote there: shown on one line, unprintable characters escaped, at most 330)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(key.rsplit(":", 1)[1])))
    shown = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in " ".join(who.split())[:330])
    return f"this firing ({stamp}) of the timer ran already: {key} was claimed by {shown or 'another run'}"
