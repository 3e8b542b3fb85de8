"""``--check``: when cron would run a line, against when the emitted timer fires.

cron's side is ``Schedule.firings`` (Debian's matcher and its DST rules); systemd's is the
real ``systemd-analyze calendar --iterations`` on the emitted ``OnCalendar=`` lines, in the
same time zone. A line that fires more than ``DIRECT_LIMIT`` times in the window (``*/5 * * *
*``: 105,120 a year, which ``systemd-analyze`` takes minutes over) is asked in two parts, each
still answered by systemd: on which days the date part elapses (one iteration a day), and at
which times of day the time part does on one ordinary day and on each day of a DST change. Every instant in one list and not the other is a mismatch. A local-time line
whose times fall into a DST change gets a warning whether or not they differ.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from jobrunner.importer.cron import Schedule
from jobrunner.systemd.calendar import calendar_iterations

__all__ = ["DIRECT_LIMIT", "Comparison", "compare", "local_zone", "systemd_firings"]

_FORMAT = "%a %Y-%m-%d %H:%M %Z"
DIRECT_LIMIT = 2000
_SHORTHANDS = {
    "minutely": "*-*-* *:*:00",
    "hourly": "*-*-* *:00:00",
    "daily": "*-*-* 00:00:00",
    "weekly": "Mon *-*-* 00:00:00",
    "monthly": "*-*-01 00:00:00",
    "yearly": "*-01-01 00:00:00",
    "annually": "*-01-01 00:00:00",
}


def local_zone() -> ZoneInfo:
    """The machine's time zone as systemd uses it: ``$TZ``, else ``/etc/localtime``."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        candidates.insert(1, target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "")
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return ZoneInfo(name)
            except (KeyError, ValueError, OSError):
                continue
    return ZoneInfo("UTC")


def _with_zone(spec: str, zone: ZoneInfo) -> str:
    """``spec`` evaluated in ``zone`` unless it names a zone itself."""
    last = spec.rsplit(" ", 1)[-1]
    if " " in spec and ":" not in last and not last[0].isdigit() and last[0] != "*":
        try:
            ZoneInfo(last)
            return spec
        except (KeyError, ValueError, OSError):
            pass
    return f"{spec} {zone.key}"


def systemd_firings(
    specs: Sequence[str], start: dt.datetime, end: dt.datetime, zone: ZoneInfo, at_most: int
) -> list[dt.datetime]:
    """The elapses of ``specs`` in ``[start, end)`` (UTC), at most ``at_most``, from
    ``systemd-analyze calendar``."""
    if not specs:
        return []
    zoned = [_with_zone(s, zone) for s in specs]
    if at_most > DIRECT_LIMIT:
        try:
            return sorted({t for s in zoned for t in _split_firings(s, start, end)})
        except ValueError:
            pass
    found = calendar_iterations(zoned, max(1, at_most), base=start - dt.timedelta(seconds=1))
    return [t for t in found if start <= t < end]


def _parts(zoned: str) -> tuple[str, str, str]:
    """``(weekdays and date, time, zone)`` of an emitted, zoned ``OnCalendar=`` line."""
    *body, zone = zoned.split()
    if len(body) == 1 and body[0] in _SHORTHANDS:
        body = _SHORTHANDS[body[0]].split()
    if len(body) == 1 or ":" not in body[-1]:
        raise ValueError(f"cannot split {zoned!r} into a date and a time")
    time_part = body[-1]
    date_part = " ".join(body[:-1]) if body[:-1] else "*-*-*"
    if "-" not in date_part:  # weekdays only
        date_part += " *-*-*"
    return date_part, time_part, zone


def _changes(day: dt.date, zone: ZoneInfo) -> bool:
    """Whether ``zone``'s offset changes during ``day`` (a DST change)."""
    first = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    last = first + dt.timedelta(hours=23, minutes=59)
    return first.utcoffset() != last.replace(tzinfo=zone).utcoffset() or (
        first.astimezone(dt.UTC) + dt.timedelta(days=1)
    ).astimezone(zone).time() != dt.time(0, 0)


def _split_firings(spec: str, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """``spec``'s elapses in ``[start, end)``, asked of systemd by parts (see the module)."""
    date_part, time_part, name = _parts(spec)
    zone = ZoneInfo(name)
    first = start.astimezone(zone).date() - dt.timedelta(days=1)
    last = end.astimezone(zone).date() + dt.timedelta(days=1)
    days_count = (last - first).days + 1
    noon = calendar_iterations(
        f"{date_part} 12:00:00 {name}", days_count, base=dt.datetime.combine(first, dt.time(0), zone)
    )
    days = sorted({t.astimezone(zone).date() for t in noon if t.astimezone(zone).date() <= last})
    ordinary = next(
        (first + dt.timedelta(days=k) for k in range(400) if not _changes(first + dt.timedelta(days=k), zone)), first
    )

    def on(day: dt.date) -> list[dt.datetime]:
        base = dt.datetime.combine(day, dt.time(0), zone).astimezone(dt.UTC) - dt.timedelta(seconds=1)
        found = calendar_iterations(f"{day:%Y-%m-%d} {time_part} {name}", 24 * 60 * 2 + 1, base=base)
        return [t for t in found if t.astimezone(zone).date() == day]

    times = [t.astimezone(zone).time() for t in on(ordinary)]
    out: list[dt.datetime] = []
    for day in days:
        if _changes(day, zone):
            out.extend(on(day))
        else:
            out.extend(dt.datetime.combine(day, clock, zone).astimezone(dt.UTC) for clock in times)
    return [t for t in out if start <= t < end]


@dataclass
class Comparison:
    """cron's and systemd's firings of one line over a window, and what differs."""

    label: str
    specs: list[str]
    zone: str
    cron: list[dt.datetime]
    systemd: list[dt.datetime]
    dst: list[str] = field(default_factory=list)

    @property
    def only_cron(self) -> list[dt.datetime]:
        theirs = set(self.systemd)
        return [t for t in self.cron if t not in theirs]

    @property
    def only_systemd(self) -> list[dt.datetime]:
        ours = set(self.cron)
        return [t for t in self.systemd if t not in ours]

    @property
    def ok(self) -> bool:
        return not self.only_cron and not self.only_systemd

    def lines(self, zone: ZoneInfo, show: int = 5) -> list[str]:
        """The side-by-side text: the first ``show`` firings, then every mismatch (``!!``)."""

        def fmt(t: dt.datetime | None) -> str:
            return t.astimezone(zone).strftime(_FORMAT) if t else "-"

        out = [f"{self.label}", f"  OnCalendar={' | '.join(self.specs) or '(none)'}  [{self.zone}]"]
        out.append(f"  {'cron':<26}  {'systemd':<26}")
        merged = sorted(set(self.cron) | set(self.systemd))
        cron, sysd = set(self.cron), set(self.systemd)
        shown = 0
        for t in merged:
            bad = (t in cron) != (t in sysd)
            if shown < show or bad:
                mark = "  !! mismatch" if bad else ""
                out.append(f"  {fmt(t if t in cron else None):<26}  {fmt(t if t in sysd else None):<26}{mark}")
                shown += 1
        verdict = (
            "all match"
            if self.ok
            else (f"{len(self.only_cron)} only under cron, {len(self.only_systemd)} only under systemd: MISMATCH")
        )
        out.append(f"  {len(self.cron)} firings under cron, {len(self.systemd)} under systemd: {verdict}")
        out.extend(f"  warning: {w}" for w in self.dst)
        return out


def compare(
    label: str, schedule: Schedule, specs: Sequence[str], *, start: dt.datetime, end: dt.datetime, zone: ZoneInfo
) -> Comparison:
    """cron's firings of ``schedule`` and systemd's of ``specs`` in ``[start, end)``."""
    cron = schedule.firings(start, end, zone)
    systemd = systemd_firings(specs, start, end, zone, len(cron) + 1)
    where = ZoneInfo(schedule.tz) if schedule.tz else zone
    result = Comparison(label, list(specs), where.key, cron, systemd)
    seen: set[tuple[dt.date, str]] = set()
    for local, kind in schedule.dst_changes(start, end, zone):
        key = (local.date(), kind)
        if key in seen:
            continue
        seen.add(key)
        if kind == "gap":
            how = "does not exist (DST starts): cron runs a fixed-time line right after the jump"
            how += " (a line with * in the minute or hour skips it)" if schedule.wild else ""
        else:
            how = "happens twice (DST ends): cron runs a fixed-time line once"
            how += " (this line has * in the minute or hour: twice)" if schedule.wild else ""
        result.dst.append(
            f"{local:%Y-%m-%d %H:%M} {how} in {where.key}; a local-time schedule inside a DST change window"
        )
    return result
