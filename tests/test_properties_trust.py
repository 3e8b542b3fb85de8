"""Property tests of the trust boundaries (issue 25): every reader of data another user can
write, given any bytes, gives a one-line error or a clean skip, within a time and memory bound,
never a traceback; every writer of text a person reads (terminal, HTML page, notification)
lets nothing a job controls out as markup or control sequences.

The example counts are each test's ``max_examples`` (derandomized: the same examples on every
run, so CI and a laptop agree). The bound: each example within ``SECONDS`` and ``PEAK_BYTES``
of Python allocations (tracemalloc's peak).
"""

from __future__ import annotations

import json
import os
import re
import string
import time
import tracemalloc
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobrunner.errors import ConfigError, UsageError

T = TypeVar("T")
SECONDS = 2.0
PEAK_BYTES = 64 << 20
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
CONTROL_OR_NEWLINE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")

_BASE = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


def bounded(call: Callable[[], T]) -> T:
    """``call()``, asserting it took at most SECONDS and PEAK_BYTES."""
    tracemalloc.start()
    began = time.monotonic()
    try:
        return call()
    finally:
        took = time.monotonic() - began
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert took < SECONDS, f"took {took:.2f}s"
        assert peak < PEAK_BYTES, f"peak {peak} bytes"


def one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text and "Traceback" not in text, text


# -- JSON a job's user writes: structured junk as well as bytes ----------------------------

_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.sampled_from([1e308, -1e308, 0, -1, 2**63, 7_258_118_401, 1.7e9]),
)
_TEXT = st.one_of(st.text(max_size=30), st.sampled_from(["\x1b[2J", "<script>x</script>", "\r\n", "a" * 70_000]))
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, _TEXT)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
STATE_KEYS = [
    "job", "last_outcome", "last_error", "last_start", "last_finish", "last_success", "last_failure", "last_skipped",
    "last_duration_s", "last_exit_code", "consecutive_failures", "durations_s", "runs", "running", "silence",
    "skipped_since", "skip_holder", "notify_tags", "anomaly", "schema", "consecutive_skips", "anomalies",
    "notified_run_id", "last_attempts",
]  # fmt: skip
_SILENCE = st.fixed_dictionaries({"until": _NUMBERS, "since": _NUMBERS, "by": _TEXT, "uid": _NUMBERS, "reason": _TEXT})


def _json_text(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


STATE_BYTES = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(STATE_KEYS), st.one_of(_VALUES, _SILENCE), max_size=8).map(_json_text),
    st.sampled_from([b"[" * 100_000, b'{"last_success": NaN}', b'{"last_start": 1e400}', b"\xff\xfe"]),
)


def _is_time(value: Any) -> bool:
    return value is None or 0 <= value <= 7_258_118_400


@settings(_BASE, max_examples=400)
@given(data=STATE_BYTES)
@example(data=b'{"silence": {"until": 1e308, "by": "x", "uid": 33}}')
@example(data=b'{"last_start": -1e308, "last_success": 1e308, "running": {"since": 1e308}}')
def test_any_state_file_loads_checked_or_is_one_line_unreadable(tmp_path_factory, data):
    """state.json of any bytes: a JobState whose numbers the views can use, or ConfigError in one line;
    health and the status table of it never raise and print no control character."""
    from jobrunner.cli.health import render_text
    from jobrunner.cli.status import _table, status_rows
    from jobrunner.observe.health import JobHealth, Judging, judge_state
    from jobrunner.store.state import JobState, StateStore

    root = tmp_path_factory.mktemp("state")
    (root / "prop").mkdir()
    (root / "prop" / "state.json").write_bytes(data)
    try:
        state = bounded(StateStore("prop", str(root)).load)
    except ConfigError as exc:
        one_line(exc)
        state = None
    if state is not None:
        assert isinstance(state, JobState)
        for key in ("last_start", "last_finish", "last_success", "last_failure", "last_skipped", "skipped_since"):
            assert _is_time(state.value_of(key)), key
        h = JobHealth("prop", "prop")
        judge_state(Judging(h, SimpleNamespace(name="prop", unit="prop", schedule=(), jitter=None), state, time.time()))
        out = render_text([h])
        assert len(out.splitlines()) == 2 and not CONTROL.search(out)
    table = _table(status_rows(str(root), ["prop"]), time.time())
    assert not CONTROL.search(table.replace("\n", ""))


HISTORY_LINE = st.fixed_dictionaries(
    {"job": st.just("prop"), "host": _TEXT, "run_id": _TEXT, "start": _NUMBERS, "duration_s": _NUMBERS},
    optional={
        "outcome": _TEXT,
        "exit_code": _NUMBERS,
        "attempts": _NUMBERS,
        "error": _TEXT,
        "tail": st.lists(_TEXT, max_size=3),
    },
).map(lambda d: {"outcome": "failure", **d})


@settings(_BASE, max_examples=300)
@given(
    lines=st.lists(
        st.one_of(
            HISTORY_LINE.map(_json_text),
            st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
            _VALUES.map(_json_text),
        ),
        max_size=6,
    )
)
def test_any_history_lines_are_records_in_range_or_skipped(tmp_path_factory, lines):
    """history.jsonl of any lines: records in range, the rest counted as skipped; the status page
    and the history table of them render, with no markup or control character from a record."""
    from jobrunner.observe.statuspage import JobView, render
    from jobrunner.store.history import read_history

    root = tmp_path_factory.mktemp("history")
    (root / "prop").mkdir()
    (root / "prop" / "history.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    read = bounded(lambda: read_history(str(root), "prop"))
    assert read.error is None
    assert len(read.records) + read.skipped <= len(lines)
    for r in read.records:
        assert 0 <= r.start <= 7_258_118_400 and 0 <= r.duration_s <= 10 * 366 * 86400
    page = bounded(lambda: render([JobView("prop", records=read.records)], host="h", now=time.time()))
    _assert_only_our_markup(page)


# -- the HTML page and the notification: nothing a job controls is markup -------------------

_BASELINE_TAGS: set[str] = set()


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs.update(name for name, _ in attrs)


def _tags(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    return parser


def _assert_only_our_markup(page: str) -> None:
    found = _tags(page)
    assert found.tags <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "table", "thead", "tbody", "tr", "th",
        "td", "a", "span", "details", "summary", "pre", "code", "svg", "polyline", "circle", "rect", "line",
        "section", "div", "ul", "li", "small", "time", "abbr", "b", "em", "strong", "header", "footer", "main",
        "nav", "br", "path", "g", "text", "caption", "col", "colgroup", "dl", "dt", "dd", "button",
    }, found.tags  # fmt: skip
    assert not {a for a in found.attrs if a.startswith("on")}, found.attrs
    assert not CONTROL.search(page.replace("\n", "").replace("\t", ""))


JOB_TEXT = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.sampled_from(["<", ">", "&", '"', "'", "\x1b[2J", "\r", "\n", "<script>", "onload=", "\u202e", "x"]),
        max_size=12,
    ).map("".join),
)


@settings(_BASE, max_examples=300)
@given(name=JOB_TEXT, host=JOB_TEXT, error=JOB_TEXT, tail=st.lists(JOB_TEXT, max_size=3), outcome=JOB_TEXT)
def test_the_status_page_shows_job_text_never_as_markup(name, host, error, tail, outcome):
    from jobrunner.observe.statuspage import JobView, render
    from jobrunner.store.history import RunRecord

    now = time.time()
    record = RunRecord(
        job=name or "j", host=host or "h", run_id="r", start=now - 60, duration_s=1.0, outcome=outcome or "failure",
        exit_code=1, error=error or None, tail=tuple(tail),
    )  # fmt: skip
    view = JobView(name or "j", records=[record], state_outcome=outcome, error=error or None, warning=error or None)
    page = bounded(lambda: render([view], host=host, now=now))
    _assert_only_our_markup(page)


@settings(_BASE, max_examples=300)
@given(name=JOB_TEXT, error=JOB_TEXT, tail=st.lists(JOB_TEXT, max_size=3))
def test_a_notification_carries_no_control_sequence_from_the_job(name, error, tail):
    from types import SimpleNamespace

    from jobrunner.notify.message import failure_message

    job = SimpleNamespace(name="j", ref="m:j", unit="j")
    result = SimpleNamespace(outcome="failure", exit_code=1, duration_s=1.0, attempts=1)
    title, body = bounded(
        lambda: failure_message(
            job=job, host=name, run_id="r", result=result, error=error, tail=tail,
            state={"consecutive_failures": 2, "last_success": 1.7e9}, suppressed=0,
        )
    )  # fmt: skip
    assert not CONTROL_OR_NEWLINE.search(title)
    assert not CONTROL.search(body)


@settings(_BASE, max_examples=500)
@given(text=st.one_of(st.text(max_size=80), JOB_TEXT))
def test_printable_leaves_no_control_character_and_is_one_line(text):
    from jobrunner.validate import printable

    shown = printable(text)
    assert not CONTROL_OR_NEWLINE.search(shown)
    assert printable(shown) == shown  # escaping twice changes nothing more: stable output
    if not CONTROL_OR_NEWLINE.search(text):
        assert shown == text  # ordinary text is shown as it is


# -- files an admin imports or another user hands over --------------------------------------


@settings(_BASE, max_examples=300)
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=200).map(str.encode)))
def test_any_env_file_is_a_dict_or_one_line(tmp_path_factory, data):
    from jobrunner.envfile import load_env_file

    path = tmp_path_factory.mktemp("env") / "x.env"
    path.write_bytes(data)
    path.chmod(0o600)
    try:
        env = bounded(lambda: load_env_file(str(path)))
    except ConfigError as exc:
        one_line(exc)
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())


CRON_ATOMS = ["*", "0", "59", "*/5", "1-3", "@reboot", "@daily", "MAILTO=x", "CRON_TZ=UTC", "%", "\\", " ", "\t", "\r", "\n", "#", ">> /var/log/x 2>&1", "root", "true", "\x00", "é", "\x1b"]  # fmt: skip


@settings(_BASE, max_examples=300)
@given(
    data=st.one_of(
        st.binary(max_size=300), st.lists(st.sampled_from(CRON_ATOMS), max_size=30).map(lambda x: "".join(x).encode())
    )
)
def test_any_crontab_is_converted_or_refused_in_one_line(tmp_path_factory, data):
    from jobrunner.importer.batch import import_crontabs, read_input

    path = tmp_path_factory.mktemp("cron") / "crontab"
    path.write_bytes(data)
    try:
        text = bounded(lambda: read_input(str(path)))
    except ConfigError as exc:
        one_line(exc)
        return
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f]", text.replace("\n", ""))
    result = bounded(lambda: import_crontabs([str(path)], texts={str(path): text}))
    for problem in result.problems:
        assert "\n" not in str(problem)


UNIT_ATOMS = ["[Unit]", "[Service]", "[Timer]", "ExecStart=", "/bin/true", "OnCalendar=", "daily", "User=", "www-data", "=", "\\", "\n", "\r", "#", ";", " ", "\x00", "é"]  # fmt: skip


@settings(_BASE, max_examples=300)
@given(
    data=st.one_of(
        st.binary(max_size=300), st.lists(st.sampled_from(UNIT_ATOMS), max_size=30).map(lambda x: "".join(x).encode())
    )
)
def test_any_unit_file_is_read_or_refused_in_one_line(tmp_path_factory, data):
    from jobrunner.importer.units import UnitPair, read_unit, spec_from_pair

    path = tmp_path_factory.mktemp("units") / "x.service"
    path.write_bytes(data)
    try:
        unit = bounded(lambda: read_unit(path))
    except ConfigError as exc:
        one_line(exc)
        return
    bounded(lambda: spec_from_pair(UnitPair(unit, None), "x"))


@settings(_BASE, max_examples=500)
@given(text=st.one_of(st.text(max_size=40), st.lists(st.sampled_from(["1", "0", "9" * 30, "e", ".", " ", "h", "min", "s", "d", "y", "-", "us", "inf", "nan"]), max_size=10).map("".join)))  # fmt: skip
def test_any_time_span_is_a_finite_number_or_one_line(text):
    from jobrunner.timespan import parse_timespan

    try:
        seconds = bounded(lambda: parse_timespan(text))
    except (ValueError, ConfigError) as exc:
        one_line(exc)
        return
    assert seconds == seconds and seconds not in (float("inf"), float("-inf")), seconds


@settings(_BASE, max_examples=500)
@given(name=st.one_of(st.text(max_size=80), st.lists(st.sampled_from(["a", "..", "/", "%i", "\n", ".", "-", "_", "é", "\x00"]), max_size=10).map("".join)))  # fmt: skip
def test_any_instance_name_is_safe_or_one_line(name):
    from jobrunner.instances import check_instance_name

    try:
        checked = bounded(lambda: check_instance_name(name))
    except UsageError as exc:
        one_line(exc)
        return
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", checked) and ".." not in checked


URL_ATOMS = ["json://", "mailto://", "ntfy://", "https://", "tgram://", "user:pass@", "host", ":99999", "/path", "?x=1", "ops=", ",", " ", "\n", "%", "\x00", "é", "\\"]  # fmt: skip


@settings(_BASE, max_examples=200)
@given(urls=st.one_of(st.text(max_size=60), st.lists(st.sampled_from(URL_ATOMS), max_size=8).map("".join)))
def test_any_notification_urls_load_or_are_refused_in_one_line(urls):
    from jobrunner.notify.config import load

    load({"JOBRUNNER_NOTIFY_URLS": "json://localhost"})  # Apprise's plugins load once, outside the bound
    try:
        bounded(lambda: load({"JOBRUNNER_NOTIFY_URLS": urls}))
    except ConfigError as exc:
        one_line(exc)


@pytest.mark.parametrize(
    "data", [b'{"a": {"since": NaN, "sent": 1}}', b"[" * 50_000, b'{"x": {"since": 1e308, "sent": 1}}']
)
def test_the_late_watchers_memory_forgets_what_is_out_of_range(tmp_path: Path, data: bytes):
    from jobrunner.notify.memory import Sent
    from jobrunner.observe.late import _load

    path = tmp_path / "memory.json"
    path.write_bytes(data)
    assert _load(str(path)) == {}
    os.chmod(path, 0o600)
    path.write_bytes(b'{"a": {"since": 1.7e9, "sent": 1.7e9}, "b": {"since": -1, "sent": 0}}')  # the earlier form
    assert _load(str(path)) == {"a": Sent(first=1.7e9, last=1.7e9, since=1.7e9)}
    path.write_bytes(
        b'{"a": {"first": 1.6e9, "last": 1.7e9, "held": 2, "since": 1.5e9}, "b": {"first": 2, "last": 1, "since": 0},'
        b' "c": {"first": 1, "last": 2, "since": 1e308}, "d": {"first": 1, "last": 2, "held": -1, "since": 0}}'
    )
    assert _load(str(path)) == {"a": Sent(first=1.6e9, last=1.7e9, held=2, since=1.5e9)}


def test_strings_are_bounded_and_whole_numbers_too():
    from jobrunner.validate import loads

    for bad in (b"NaN", b"-Infinity", b"1e400", b"9" * 25):
        with pytest.raises(ValueError):
            loads(bad)
    assert loads(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    assert string.printable  # (the module's own alphabet is used above)
