"""OnCalendar= helpers for ``list``/``health``, evaluated by the real systemd-analyze."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from jobrunner.errors import ConfigError
from jobrunner.systemd.calendar import (
    CalendarError,
    calendar_iterations,
    invalid_schedules,
    next_elapse,
    next_elapse_datetime,
    normalize,
)

BASE = 1700000000  # Tue 2023-11-14 22:13:20 UTC
UTC = dt.UTC


def test_next_elapse_parses_systemd():
    assert next_elapse("02:15", base=BASE) == "Wed 2023-11-15 02:15:00 UTC"
    assert next_elapse_datetime("02:15", base=BASE) == dt.datetime(2023, 11, 15, 2, 15, tzinfo=UTC)


def test_never_elapsing_is_none():
    assert next_elapse("2020-01-01", base=BASE) is None
    assert calendar_iterations("2020-01-01", 3, base=BASE) == []


def test_iterations_merge_several_expressions():
    got = calendar_iterations(["*:0/15", "Mon 03:00"], 3, base=BASE)
    assert got == [dt.datetime(2023, 11, 14, 22, m, tzinfo=UTC) for m in (15, 30, 45)]
    weekly = calendar_iterations("Mon 03:00", 2, base=dt.datetime.fromtimestamp(BASE, UTC))
    assert weekly == [dt.datetime(2023, 11, 20, 3, 0, tzinfo=UTC), dt.datetime(2023, 11, 27, 3, 0, tzinfo=UTC)]


def test_time_zones_come_back_in_utc():
    assert calendar_iterations("02:15 Europe/Berlin", 1, base=BASE) == [dt.datetime(2023, 11, 15, 1, 15, tzinfo=UTC)]
    assert normalize("02:15") == "*-*-* 02:15:00"


@pytest.mark.parametrize("bad", ["bogus", "Mon..Fri 25:00", "", "02:15\n03:00"])
def test_invalid_expressions(bad):
    with pytest.raises(CalendarError) as info:
        next_elapse(bad)
    assert isinstance(info.value, ConfigError) and info.value.exit_code == 78
    assert "\n" not in str(info.value)


def test_invalid_schedules_names_only_the_bad_ones():
    bad = invalid_schedules(["02:15", "bogus", "*:0/15", "Mon..Fri 25:00"])
    assert sorted(bad) == ["Mon..Fri 25:00", "bogus"]
    assert invalid_schedules(["02:15", "hourly"]) == {}


def test_calendar_imports_nothing_of_the_renderer():
    code = "import sys, jobrunner.systemd.calendar; print(sorted(m for m in sys.modules if m.startswith('jobrunner')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "jobrunner.unitgen.render" not in out and "jobrunner.declaration" not in out
