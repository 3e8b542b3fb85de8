"""jobrunner.timespan: systemd time spans (systemd.time(7)) parsed and written back."""

from __future__ import annotations

import math
import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrunner.timespan import format_timespan, parse_timespan


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("5min", 300.0),
        ("2h 30min", 9000.0),
        ("2h30min", 9000.0),
        ("1d", 86400.0),
        ("1w", 604800.0),
        ("42", 42.0),
        ("0", 0.0),
        ("250ms", 0.25),
        ("10us", 10e-6),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("5 m", 300.0),
        ("  7s  ", 7.0),
        ("2hours", 7200.0),
        ("3sec", 3.0),
        ("1msec", 0.001),
        ("1µs", 1e-6),
        ("1μs", 1e-6),
        ("1M", 2629800.0),
        ("1y", 31557600.0),
        ("5min30", 330.0),
    ],
)
def test_parses_systemd_syntax(text, seconds):
    """Each systemd time-span spelling gives its number of seconds."""
    assert parse_timespan(text) == pytest.approx(seconds, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(("number", "seconds"), [(90, 90.0), (0, 0.0), (1.5, 1.5)])
def test_numbers_are_seconds(number, seconds):
    """An int or float is taken as seconds and returned as a float."""
    result = parse_timespan(number)
    assert result == seconds and isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("-5s", "negative"),
        (" -1", "negative"),
        (-1, "zero or more"),
        (-0.5, "zero or more"),
        ("", "empty"),
        ("   ", "empty"),
        ("5parsecs", "unknown time unit 'parsecs'"),
        ("3x", "unknown time unit 'x'"),
        ("1e3", "unknown time unit 'e'"),
        ("5S", "unknown time unit 'S'"),
        ("soon", "not a time span"),
        ("1.", "not a time span"),
        ("1h-2", "not a time span"),
        ("NaN", "not a time span"),
        (float("nan"), "not a time span"),
        (float("inf"), "not a time span"),
        (True, "not a time span"),
        (False, "not a time span"),
        (None, "not a time span"),
        (["5s"], "not a time span"),
    ],
)
def test_rejects_with_a_message_naming_the_problem(value, names):
    """A negative, empty, unknown-unit, garbage, bool or NaN span raises ValueError saying what is wrong."""
    with pytest.raises(ValueError) as caught:
        parse_timespan(value)
    assert names in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "1.5.5",  # systemd: Invalid argument; a typo for 1.5 must not silently become 2 s
        "1.5.5h",
        "\u0663s",  # ARABIC-INDIC DIGIT THREE: systemd reads ASCII digits only
        "\uff15m",  # FULLWIDTH DIGIT FIVE, as typed by a CJK input method
    ],
)
def test_rejects_what_systemd_rejects(text):
    """Spans that systemd-analyze refuses (a second decimal point, non-ASCII digits) raise ValueError."""
    with pytest.raises(ValueError):
        parse_timespan(text)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=30))
def test_arbitrary_text_raises_only_value_error(text):
    """Any text either parses to a finite non-negative number or raises ValueError, nothing else."""
    try:
        seconds = parse_timespan(text)
    except ValueError:
        return
    assert math.isfinite(seconds) and seconds >= 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0"),
        (0.0004, "0"),
        (9000, "2h 30min"),
        (90, "1min 30s"),
        (0.25, "250ms"),
        (90061.001, "1d 1h 1min 1s 1ms"),
        (604800, "7d"),
    ],
)
def test_format_writes_systemd_units(seconds, text):
    """format_timespan writes days, hours, minutes, seconds and milliseconds as systemd prints them."""
    assert format_timespan(seconds) == text


def test_format_rejects_negative():
    """A negative number of seconds cannot be written as a span."""
    with pytest.raises(ValueError, match="negative"):
        format_timespan(-1)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.integers(min_value=0, max_value=10**10))
def test_format_then_parse_round_trips(millis):
    """For whole milliseconds, parsing the formatted span gives the same time within 1 ms."""
    seconds = millis / 1000
    assert abs(parse_timespan(format_timespan(seconds)) - seconds) <= 0.001


def _systemd_microseconds(text: str) -> int | None:
    proc = subprocess.run(
        ["systemd-analyze", "timespan", text], capture_output=True, text=True, timeout=10, check=False
    )
    if proc.returncode != 0:
        return None
    for line in proc.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "μs":
            return int(value)
    raise AssertionError(f"no μs line in systemd-analyze output: {proc.stdout!r}")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize(
    "text", ["90s", "5m", "2h 30min", "2h30min", "1d", "1w", "42", "250ms", "10us", "1.5h", "1 2", "5min30", "1M", "1y"]
)
def test_agrees_with_systemd_analyze(text):
    """parse_timespan gives the microseconds `systemd-analyze timespan` reports."""
    expected = _systemd_microseconds(text)
    assert expected is not None
    assert round(parse_timespan(text) * 1_000_000) == expected


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("millis", [0, 1, 999, 1000, 61_001, 9_000_000, 90_061_001, 10**10])
def test_formatted_spans_are_read_by_systemd(millis):
    """What format_timespan writes into units, systemd reads back as the same number of microseconds."""
    assert _systemd_microseconds(format_timespan(millis / 1000)) == millis * 1000
