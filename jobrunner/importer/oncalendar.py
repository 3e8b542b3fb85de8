"""A cron schedule as ``OnCalendar=`` expressions a person would write.

One expression per line of the day rule: cron runs a line whose day-of-month and
day-of-week fields are both restricted when *either* matches, which one ``OnCalendar=``
cannot say (``Fri *-*-01,15`` means Fridays that are the 1st or 15th), so that case gives two
expressions, one per day field; a timer with several ``OnCalendar=`` lines fires on any.

>>> from jobrunner.importer.cron import parse_schedule
>>> to_oncalendar(parse_schedule("30 4 1,15 * 5".split()))
['*-*-01,15 04:30:00', 'Fri *-*-* 04:30:00']
>>> to_oncalendar(parse_schedule("5-55/10 * * * 1-5".split()))
['Mon..Fri *-*-* *:05/10:00']
"""

from __future__ import annotations

from collections.abc import Iterable

from jobrunner.importer.cron import Schedule

__all__ = ["SHORTHANDS", "to_oncalendar"]

# systemd's own words for cron's @ words that mean the same (systemd's "weekly" is Monday).
SHORTHANDS = {
    "@hourly": "hourly",
    "@daily": "daily",
    "@midnight": "daily",
    "@monthly": "monthly",
    "@yearly": "yearly",
    "@annually": "yearly",
}
_WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
_MONDAY_FIRST = (1, 2, 3, 4, 5, 6, 0)


def _runs(items: list[int]) -> Iterable[list[int]]:
    """Consecutive runs in ``items`` (already ordered as they should print)."""
    run: list[int] = []
    for item in items:
        if run and item != run[-1] + 1:
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def _numbers(values: Iterable[int], low: int, high: int, width: int = 2) -> str:
    """``*``, ``a/step`` (a progression to the end of the range), or ``a..b`` runs and numbers."""
    items = sorted(values)
    if items == list(range(low, high + 1)):
        return "*"
    fmt = f"{{:0{width}d}}"
    if len(items) >= 3:
        step = items[1] - items[0]
        if step > 1 and items == list(range(items[0], high + 1, step)):
            return f"{fmt.format(items[0])}/{step}"
    parts = []
    for run in _runs(items):
        if len(run) >= 3:
            parts.append(f"{fmt.format(run[0])}..{fmt.format(run[-1])}")
        else:
            parts.extend(fmt.format(v) for v in run)
    return ",".join(parts)


def _weekdays(values: frozenset[int]) -> str:
    ordered = [d for d in _MONDAY_FIRST if d in values]
    positions = [_MONDAY_FIRST.index(d) for d in ordered]
    parts = []
    for run in _runs(positions):
        names = [_WEEKDAYS[_MONDAY_FIRST[p]] for p in run]
        parts.append(f"{names[0]}..{names[-1]}" if len(names) >= 3 else ",".join(names))
    return ",".join(parts)


def _expression(schedule: Schedule, *, weekdays: frozenset[int] | None, days: frozenset[int] | None) -> str:
    months = _numbers(schedule.month.values, 1, 12)
    dom = "*" if days is None else _numbers(days, 1, 31)
    clock = f"{_numbers(schedule.hour.values, 0, 23)}:{_numbers(schedule.minute.values, 0, 59)}:00"
    prefix = "" if weekdays is None or len(weekdays) == 7 else _weekdays(weekdays) + " "
    text = f"{prefix}*-{months}-{dom} {clock}"
    return f"{text} {schedule.tz}" if schedule.tz else text


def to_oncalendar(schedule: Schedule) -> list[str]:
    """The ``OnCalendar=`` expressions that fire when cron runs ``schedule`` (empty for
    ``@reboot``). Times are the machine's local time unless the line has ``CRON_TZ``."""
    if schedule.reboot:
        return []
    if schedule.special in SHORTHANDS and not schedule.tz:
        return [SHORTHANDS[schedule.special]]
    all_days = frozenset(range(1, 32))
    all_weekdays = frozenset(range(7))
    if not schedule.days_or:
        days = None if schedule.dom.values == all_days else schedule.dom.values
        weekdays = None if schedule.dow.values == all_weekdays else schedule.dow.values
        return [_expression(schedule, weekdays=weekdays, days=days)]
    if schedule.dom.values == all_days or schedule.dow.values == all_weekdays:
        return [_expression(schedule, weekdays=None, days=None)]  # either matches: every day
    return [
        _expression(schedule, weekdays=None, days=schedule.dom.values),
        _expression(schedule, weekdays=schedule.dow.values, days=None),
    ]
