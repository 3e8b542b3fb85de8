"""The status page: one self-contained HTML file of every job's recent runs (issue #16).

``collect(root)`` gathers, per job, its history (``jobrunner.store.history``), its state (a run in
progress, a job that never ran) and, where systemd runs, its timer's next elapse and, for a
run in progress, where it is (the service's status line, which ``ctx.progress`` keeps current;
one ``systemctl show`` for all units); ``render(views)`` writes the page; ``write_page(path, html)``
replaces the file atomically (temp file and rename in the same directory, 0644), so a web
server never serves half a page.

The page needs nothing but itself: no external asset, no JavaScript (the per-job details are
``<details>`` elements), CSS inline, sparklines inline SVG. Every outcome is text as well as a
colour. The single-host page opens with the overall verdict (failing, late, silenced counts),
then the jobs, worst first (failing, late, silenced, warned, skipped, running, OK, never ran),
each row with its state, its last error or note in one line, its last and next run (relative,
with the absolute UTC time beside: the page is a snapshot, its time said on top), and its
durations as a sparkline with its scale. A skipped last run is "skipped", never a success.
On a phone (a CSS media query) each job is one compact row of two lines: state, name and
when; then the error or the next run. Long strings wrap or are cut with an ellipsis, so a
390 px phone never scrolls sideways. Everything shown is HTML-escaped: a history
file belongs to the job's user, who may write anything into it; error lines and output were
redacted when recorded and pass the redactor again here.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobrunner.files import atomic_write
from jobrunner.fleet.stream import _as_view
from jobrunner.redact import default_redactor
from jobrunner.rules.alerting import silence_active
from jobrunner.rules.schedule import expected_interval, format_age, stale_after
from jobrunner.rules.verdict import NAMES, OK
from jobrunner.store.history import (
    STATS_WINDOW,
    RunRecord,
    failure_streak,
    outcome_matches,
    percentile,
    read_history,
    recorded_jobs,
)
from jobrunner.store.state import StateStore
from jobrunner.systemd.calendar import next_elapse_datetime
from jobrunner.systemd.systemctl import SystemctlError, show_units, systemd_running, timestamp
from jobrunner.validate import printable

if TYPE_CHECKING:
    from jobrunner.observe.health import JudgedJob

__all__ = ["JobView", "collect", "judge_schedules", "render", "render_fleet", "write_page"]

SPARK_RUNS = 30  # runs in a sparkline
RECENT_RUNS = 10  # runs listed per job
TAIL_LINES = 12  # lines of the last failure's output shown
PAGE_MODE = 0o644  # the web server's user reads it


@dataclass
class JobView:
    """What the page shows of one job."""

    name: str
    records: list[RunRecord] = field(default_factory=list)  # oldest first
    next_run: float | None = None
    running_since: float | None = None
    state_outcome: str | None = None  # from state.json, when the history has nothing
    state_when: float | None = None
    error: str | None = None  # the history or state could not be read
    skipped_lines: int = 0
    step: str | None = None  # a running unit's status line (its progress), from systemd
    silenced_until: float | None = None  # jobrunner silence, in force
    warning: str | None = None  # the last run's duration out of the ordinary
    late: str | None = None  # "no start for 1d 2h (expected every 1d)": judge_schedules
    next_from_schedule: bool = False  # next_run computed from the declaration, not the timer

    @property
    def last(self) -> RunRecord | None:
        ran = [r for r in self.records if r.outcome != "skipped"]
        return ran[-1] if ran else (self.records[-1] if self.records else None)

    @property
    def last_failure(self) -> RunRecord | None:
        return next((r for r in reversed(self.records) if r.failed), None)

    @property
    def p95(self) -> float | None:
        return percentile([r.duration_s for r in self.records if r.outcome != "skipped"][-STATS_WINDOW:], 0.95)

    @property
    def streak(self) -> int:
        return failure_streak(self.records)


def collect(
    root: str,
    names: Sequence[str] | None = None,
    *,
    units: Mapping[str, str] | None = None,
    systemd: bool | None = None,
) -> list[JobView]:
    """The views of ``names`` (default: every job with a history or a state under ``root``).
    ``units`` maps a job to its unit name (default: the name with ``_`` as ``-``); the next
    runs come from systemd when it runs (``systemd`` forces the answer)."""
    if names is None:
        names = recorded_jobs(root)
    views = []
    for name in names:
        read = read_history(root, name, last=STATS_WINDOW)
        view = JobView(name, read.records, error=read.error, skipped_lines=read.skipped)
        try:
            state = StateStore(name, root).load()
        except Exception as exc:  # ConfigError (unreadable), a bad name: shown, never a crash
            view.error = view.error or " ".join(str(exc).split())
        else:
            running = state.running or {}
            since = running.get("since")
            if isinstance(since, (int, float)) and not isinstance(since, bool):
                view.running_since = float(since)
            view.state_outcome = state.last_outcome
            view.state_when = state.last_start

            silence = silence_active(state)
            view.silenced_until = float(silence["until"]) if silence is not None else None
            anomaly = state.alerting.anomaly or {}
            view.warning = anomaly.get("text") if isinstance(anomaly.get("text"), str) else None
        views.append(view)
    _next_runs(views, units or {}, systemd)
    return views


def _next_runs(views: list[JobView], units: Mapping[str, str], systemd: bool | None) -> None:
    if not views or not (systemd_running() if systemd is None else systemd):
        return
    unit = {v.name: units.get(v.name) or v.name.replace("_", "-") for v in views}
    names = [f"{unit[v.name]}.{kind}" for v in views for kind in ("timer", "service")]
    try:
        shown = show_units(names, ["LoadState", "ActiveState", "NextElapseUSecRealtime", "StatusText"])
    except SystemctlError:
        return
    for view in views:
        props = shown.get(f"{unit[view.name]}.timer", {})
        if props.get("LoadState") == "loaded" and props.get("ActiveState") == "active":
            view.next_run = timestamp(props.get("NextElapseUSecRealtime"))
        service = shown.get(f"{unit[view.name]}.service", {})
        # A run in progress says where it is (ctx.progress's STATUS=, as `systemctl status` shows it).
        if service.get("ActiveState") in ("activating", "active", "reloading") and service.get("StatusText"):
            view.step = service["StatusText"]


def judge_schedules(views: Sequence[JobView], jobs: Mapping[str, JudgedJob], now: float | None = None) -> None:
    """With the declared jobs (name -> ``Job``): each scheduled view's next run from its
    schedule where systemd gave none (as ``jobrunner list``), and ``late`` when its last start
    (or skip) is older than ``stale_after`` (the rule ``health`` uses). ``systemd-analyze``
    missing or refusing: nothing is added, never an error."""
    now = time.time() if now is None else now
    memo: dict[Any, Any] = {}
    for view in views:
        job = jobs.get(view.name) or jobs.get(view.name.split("@", 1)[0])
        if job is None or not job.schedule:
            continue
        key = (tuple(job.schedule), job.jitter)
        if key not in memo:
            try:
                upcoming = next_elapse_datetime(job.schedule, base=now)
                memo[key] = (upcoming.timestamp() if upcoming else None, expected_interval(job.schedule, job.jitter))
            except Exception:  # CalendarError: no systemd-analyze here
                memo[key] = (None, None)
        upcoming, interval = memo[key]
        if view.next_run is None and upcoming is not None:
            view.next_run, view.next_from_schedule = upcoming, True
        started = max([r.start for r in view.records] + [view.state_when or 0.0])
        if interval is None or not started or view.running_since is not None:
            continue
        limit = stale_after(interval, None, [r.duration_s for r in view.records if r.outcome != "skipped"])
        if now - started > limit:
            view.late = f"late: no start for {format_age(now - started)} (expected every {format_age(interval)})"


# -- rendering -------------------------------------------------------------------------------

_CSS = """
:root{color-scheme:light dark;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--mut:#6e7781;--line:#d0d7de}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:12px;overflow-wrap:anywhere}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.4em 0 .4em}
.meta{color:var(--mut);margin:0 0 1em}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.35em .5em;border-bottom:1px solid var(--line);vertical-align:middle}
th{font-size:.85em;color:var(--mut);font-weight:600}
.o{font-weight:600;white-space:nowrap}
.o-success{color:var(--ok)}.o-skipped,.o-never,.o-running{color:var(--warn)}
.o-failure,.o-timeout,.o-terminated,.o-other{color:var(--bad)}
.spark{display:block}.spark .ok{fill:var(--ok)}.spark .bad{fill:var(--bad)}.spark .skip{fill:var(--mut)}
.streak{color:var(--bad);font-weight:600}.step{color:var(--mut);font-size:.9em}
details{border-bottom:1px solid var(--line);padding:.4em 0}
summary{cursor:pointer;font-weight:600}
ul.runs{list-style:none;padding:0;margin:.4em 0}
ul.runs li{padding:.2em 0;border-bottom:1px dotted var(--line)}
code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code{overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:rgba(127,127,127,.12);padding:.6em;margin:.4em 0}
.err{color:var(--bad)}.warn{color:var(--warn)}.silenced{color:var(--mut)}
.wide{overflow-x:auto}
.verdict{font-size:1.25em;font-weight:700;margin:0 0 .2em;padding:.5em .7em;border-radius:6px;
border-left:6px solid var(--ok);background:rgba(26,127,55,.10)}
.verdict.v-bad{border-color:var(--bad);background:rgba(207,34,46,.10)}
.verdict.v-warn{border-color:var(--warn);background:rgba(154,103,0,.10)}
.o-late,.o-silenced,.o-warn{color:var(--warn)}
table.board td{vertical-align:top}table.board td.name a{font-weight:600}
.why{font-size:.85em;width:0;min-width:100%;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.why:empty{display:none}.why.ok,.abs,.scale,.src{color:var(--mut)}.abs,.scale,.src{font-size:.8em}
.why.phone{display:none}
table.board th{white-space:nowrap}
table.board td.last,table.board td.next,table.board td.durs,table.board td.p95,table.board td.streak{white-space:nowrap}
td.durs svg.spark{display:inline-block;vertical-align:middle}table.board .abs{display:block}
table.board td.name{width:100%}table.board td.name a{color:inherit;text-decoration-color:var(--line)}
.legend{color:var(--mut);font-size:.85em}
@media (max-width:640px){
table.jobs thead{display:none}
table.jobs tr{display:block;border-bottom:2px solid var(--line);padding:.4em 0}
table.jobs td{display:flex;justify-content:space-between;gap:1em;border:0;padding:.15em 0}
table.jobs td::before{content:attr(data-label);color:var(--mut);font-size:.85em}
table.jobs.board tr{display:grid;grid-template-columns:auto minmax(0,1fr) auto;column-gap:.5em;
align-items:baseline;padding:.3em 0;border-bottom:1px solid var(--line)}
table.jobs.board td{display:block;padding:0}
table.jobs.board td::before{content:none}
table.jobs.board td.name{display:contents}
table.jobs.board td.name a{grid-column:2;grid-row:1;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
table.jobs.board td.state{grid-column:1;grid-row:1}
table.jobs.board td.last{grid-column:3;grid-row:1;text-align:right;white-space:nowrap}
table.jobs.board .why{grid-column:1/-1;grid-row:2;width:auto;min-width:0}
table.jobs.board .why.desk{display:none}table.jobs.board .why.phone{display:block}
table.jobs.board td.next,table.jobs.board td.durs,table.jobs.board td.p95,table.jobs.board td.streak,
table.jobs.board .abs{display:none}
}
"""

_KNOWN = ("success", "failure", "timeout", "terminated", "skipped")
_MARK = {
    "success": "\u2713",
    "skipped": "\u2013",
    "never": "\u2013",
    "running": "\u25b6",
    "late": "\u26a0",
    "warn": "\u26a0",
    "silenced": "\u2298",
}
# The single-host page's order: worst first (a failing job is never below an OK one).
_RANK = {"bad": 0, "late": 1, "silenced": 2, "warn": 3, "skipped": 4, "running": 5, "ok": 6, "never": 7}


def _e(text: object) -> str:
    """Text for the page: markup escaped, control characters shown (``printable``, newlines kept)."""
    return html.escape(printable(text, keep_newlines=True), quote=True)


def _outcome(outcome: str, label: str | None = None) -> str:
    cls = outcome if outcome in (*_KNOWN, "late", "warn", "silenced") else "other"
    mark = _MARK.get(outcome, "\u2717")
    return f'<span class="o o-{cls}">{mark} {_e(label or outcome)}</span>'


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return "-"
    delta = now - when
    future = delta < 0
    delta = abs(delta)
    if delta < 90:
        text = f"{int(delta)}s"
    elif delta < 5400:
        text = f"{int(delta // 60)}min"
    elif delta < 2 * 86400:
        text = f"{delta / 3600:.0f}h"
    else:
        text = f"{delta / 86400:.0f}d"
    return f"in {text}" if future else f"{text} ago"


def _stamp(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _time(when: float | None, now: float) -> str:
    if when is None:
        return "-"
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return f'<time datetime="{iso}" title="{_stamp(when)}">{_ago(when, now)}</time>'


def sparkline(records: Sequence[RunRecord], width: int = 120, height: int = 28) -> str:
    """The durations of the last runs as bars (inline SVG): failures red, skips grey."""
    runs = list(records)[-SPARK_RUNS:]
    if not runs:
        return '<span class="o o-never">no runs</span>'
    top = max(r.duration_s for r in runs) or 1.0
    step = width / SPARK_RUNS
    bar = max(1.0, step - 1)
    paths: dict[str, list[str]] = {"ok": [], "bad": [], "skip": []}
    for i, r in enumerate(runs):
        h = max(2.0, r.duration_s / top * (height - 2))
        kind = "skip" if r.outcome == "skipped" else "bad" if r.failed else "ok"
        paths[kind].append(f"M{i * step:.1f} {height}v-{h:.1f}h{bar:.1f}v{h:.1f}z")
    label = f"durations of the last {len(runs)} runs, longest {_seconds(top)}"
    body = "".join(f'<path class="{k}" d="{"".join(d)}"/>' for k, d in paths.items() if d)
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(label)}"><title>{_e(label)}</title>{body}</svg>'
        f' <span class="scale" title="the tallest bar">\u2264{_e(_seconds(top))}</span>'
    )


def _anchor(name: str) -> str:
    return "job-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _when(when: float | None, now: float, mark: str = "") -> str:
    """Relative ("3h ago", "in 20min") with the absolute UTC time beside (a page is a snapshot)."""
    if when is None:
        return "-"
    same_day = time.gmtime(when)[:3] == time.gmtime(now)[:3]
    absolute = time.strftime("%H:%M" if same_day else "%b %d %H:%M", time.gmtime(when))
    return f'{_time(when, now)} <span class="abs">{_e(absolute)}{mark}</span>'


def _judge(view: JobView) -> tuple[str, str, str, str]:
    """(rank key, state cell HTML, its one-line note, the note's class) of a view."""
    redact = default_redactor().redact
    last = view.last
    newest = view.records[-1] if view.records else None
    outcome = last.outcome if last is not None else view.state_outcome
    failed = view.streak > 0 or (outcome is not None and outcome not in ("success", "skipped"))
    notes: list[str] = []
    key = "ok"
    if view.error:
        key, state = "bad", _outcome("failure", "unreadable")
        notes.append(f"unreadable: {view.error}")
    elif view.running_since is not None or view.step:
        key, state = "running", _outcome("running", "running")
        if view.step:
            notes.append(view.step)
    elif failed:
        key, state = "bad", _outcome(outcome or "failure")
        failure = view.last_failure
        line = (failure.error or "") if failure is not None else ""
        notes.append(redact(line.splitlines()[0] if line else f"exit {failure.exit_code if failure else '?'}"))
    elif newest is not None and newest.outcome == "skipped":
        key, state = "skipped", _outcome("skipped")
        ran = f"last ran {_MARK.get(last.outcome, '')} {last.outcome}" if last and last.outcome != "skipped" else ""
        notes.append("; ".join(x for x in ("lock busy or a condition unmet", ran) if x))
    elif outcome is not None:
        state = _outcome(outcome)
    else:
        key, state = "never", _outcome("never", "never ran")
    if view.late:
        notes.insert(0, view.late)
        if key not in ("bad",):
            key, state = "late", _outcome("late", "late")
    if view.warning:
        notes.append(view.warning)
        if key in ("ok", "skipped"):
            key = "warn"
            state = _outcome("warn", outcome or "warning") if outcome == "success" else state
    if view.silenced_until is not None:
        notes.append(f"silenced until {_stamp(view.silenced_until)}")
        if key in ("bad", "late", "warn", "ok"):
            key = "silenced"
            state = _outcome("silenced", "silenced") if not failed else state
    cls = "err" if key == "bad" else "warn" if key in ("late", "warn", "silenced") else "ok"
    return key, state, "; ".join(" ".join(n.split()) for n in notes if n), cls


def _row(view: JobView, now: float) -> str:
    key, state, note, cls = _judge(view)
    newest = view.records[-1] if view.records else None
    if view.running_since is not None:
        when = _when(view.running_since, now)
    elif newest is not None:
        when = _when(newest.start, now)
    elif view.state_when is not None:
        when = _when(view.state_when, now)
    else:
        when = "-"
    star = '<span class="src" title="from the declared schedule (no active timer was asked)">*</span>'
    nxt = _when(view.next_run, now, star if view.next_from_schedule else "")
    phone = note if note else (f"next {_ago(view.next_run, now)}" if view.next_run is not None else "")
    streak = view.streak
    streak_html = f'<span class="streak">{streak} failed</span>' if streak else "0"
    name = (
        f'<a href="#{_anchor(view.name)}">{_e(view.name)}</a>'
        f'<div class="why desk {cls}" title="{_e(note)}">{_e(note)}</div>'
        f'<div class="why phone {cls if note else "ok"}">{_e(phone)}</div>'
    )
    cells = (
        ("state", "State", state),
        ("name", "Job", name),
        ("last", "Last run", when),
        ("next", "Next run", nxt),
        ("durs", "Recent durations", sparkline(view.records)),
        ("p95", "p95", _seconds(view.p95)),
        ("streak", "Streak", streak_html),
    )
    tds = "".join(f'<td class="{c}" data-label="{k}">{v}</td>' for c, k, v in cells)
    return f'<tr class="job k-{key}" id="row-{_anchor(view.name)}">{tds}</tr>'


def _order(views: Sequence[JobView]) -> list[JobView]:
    return sorted(views, key=lambda v: (_RANK[_judge(v)[0]], v.name))


def _verdict(views: Sequence[JobView], host: str) -> str:
    keys = [_judge(v)[0] for v in views]
    failing, late, silenced = keys.count("bad"), keys.count("late"), keys.count("silenced")
    warned = keys.count("warn")
    parts = [
        f"{n} {word}"
        for n, word in ((failing, "failing"), (late, "late"), (warned, "warned"), (silenced, "silenced"))
        if n
    ]
    total = f"{len(views)} job{'s' if len(views) != 1 else ''}"
    if not views:
        return f'<p class="verdict v-warn">\u2013 no job has run yet on {_e(host)}</p>'
    said = _e(" \u00b7 ".join(parts))
    if failing:
        return f'<p class="verdict v-bad">\u2717 {said} of {total} on {_e(host)}</p>'
    if parts:
        return f'<p class="verdict v-warn">\u26a0 {said} of {total} on {_e(host)}</p>'
    return f'<p class="verdict v-ok">\u2713 all {total} OK on {_e(host)}</p>'


def _from_unit(run_id: str) -> bool:
    """A unit's run: its id is systemd's invocation ID, a v4 UUID (a run by hand's never is)."""
    return len(run_id) == 32 and run_id[12] == "4" and run_id[16] in "89ab"


def _details(view: JobView, now: float) -> str:
    redact = default_redactor().redact
    items = []
    for r in reversed(view.records[-RECENT_RUNS:]):
        error = f'<br><span class="err">{_e(redact(r.error))}</span>' if r.error else ""
        items.append(
            f"<li>{_time(r.start, now)} {_outcome(r.outcome)} {_seconds(r.duration_s)} exit {r.exit_code}"
            f"{f' ({r.attempts} attempts)' if r.attempts > 1 else ''}"
            + (
                f"<br><code>journalctl _SYSTEMD_INVOCATION_ID={_e(r.run_id)}</code>"
                if _from_unit(r.run_id)
                else " (by hand)"
            )
            + f"{error}</li>"
        )
    opened = " open" if view.streak else ""  # a failing job shows its runs and output unfolded
    parts = [f'<details id="{_anchor(view.name)}"{opened}><summary>{_e(view.name)}</summary>']
    parts.append(f'<ul class="runs">{"".join(items)}</ul>' if items else "<p>No run recorded.</p>")
    failure = view.last_failure
    if failure is not None:
        tail = [redact(line) for line in failure.tail[-TAIL_LINES:]] or [redact(failure.error or "(no output)")]
        parts.append(
            f"<p>Last failure, {_e(_stamp(failure.start))} ({_e(failure.outcome)}, exit {failure.exit_code}):</p>"
            f"<pre>{_e(chr(10).join(tail))}</pre>"
        )
    if view.skipped_lines:
        parts.append(f'<p class="err">{view.skipped_lines} malformed history line(s) skipped.</p>')
    parts.append("</details>")
    return "".join(parts)


def render(views: Sequence[JobView], *, host: str | None = None, now: float | None = None) -> str:
    """The page, as a string: the verdict, the jobs worst first, then each job's recent runs."""
    now = time.time() if now is None else now
    host = host or os.uname().nodename
    ordered = _order(views)
    rows = "".join(_row(v, now) for v in ordered)
    details = "".join(_details(v, now) for v in ordered)
    headers = "".join(
        f"<th>{h}</th>" for h in ("State", "Job", "Last run", "Next run", "Recent durations", "p95", "Streak")
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>jobrunner status: {_e(host)}</title><style>{_CSS}</style></head><body>"
        f"{_verdict(views, host)}"
        f'<p class="meta">jobrunner status of {_e(host)} as of {_e(_stamp(now))}: times are relative to it, '
        "the UTC time beside.</p>"
        f'<table class="jobs board"><thead><tr>{headers}</tr></thead><tbody>{rows}</tbody></table>'
        '<p class="legend">Recent durations: the last runs, oldest first, scaled to the longest '
        "(\u2264 beside); red failed, grey skipped. Next run*: from the declared schedule.</p>"
        f"<h2>Recent runs</h2>{details}"
        "</body></html>\n"
    )


def write_page(path: str, page: str) -> None:
    """Replace ``path`` atomically with ``page`` (0644: the web server's user reads it), through
    parents opened without following another user's symlink (``files.atomic_write``); an
    ``OSError`` says why it could not (the command turns it into one line, exit 78)."""
    atomic_write(path, page.encode(), PAGE_MODE)


# Up to this many hosts, each is a column of the fleet's page; past it, the hosts that need a
# look (failing, stopped reporting) are, up to this many, and the rest are counted per job.
FLEET_COLUMNS = 40


def render_fleet(records: Any, verdicts: Sequence[Any] = (), *, now: float | None = None, title: str = "fleet") -> str:
    """The fleet's page: jobs × hosts from the fleet's views (``jobrunner.fleet.stream``; a
    ``FleetView`` or the stream's records), each cell the host's last outcome, when, and its
    failure streak; then the hosts, those that stopped reporting marked (``verdicts``:
    ``jobrunner.fleet.stream.check_fleet``'s). Past ``FLEET_COLUMNS`` hosts, failing and silent
    hosts come first and the others are summarised per job, so the page stays small at 1,000."""
    now = time.time() if now is None else now
    view = _as_view(records)
    # (host, job) -> the cell: its last run's outcome and start (a skip's time when it only
    # skipped), its failure streak; read from the cells, no dict per cell (50,000 at 1,000 hosts)
    cells = view.cells
    by_job: dict[str, dict[str, Any]] = {}
    for (host, job), c in cells.items():
        by_job.setdefault(job, {})[host] = c
    jobs = sorted(by_job)
    heartbeat = dict(view.hosts)
    for (host, _), c in cells.items():
        if host not in heartbeat:
            heartbeat[host] = c.seen or (c.last.start if c.last is not None else 0.0)
    all_hosts = sorted(heartbeat)
    silent = {v.facts.get("host") for v in verdicts if v.job.startswith("host ") and v.status != OK}
    outcomes = {c.last.outcome for c in cells.values() if c.last is not None}
    failed = {o for o in outcomes if outcome_matches(o, "failed")}
    failing_hosts = {h for (h, _), c in cells.items() if c.last is not None and c.last.outcome in failed}
    if len(all_hosts) <= FLEET_COLUMNS:
        hosts, rest = all_hosts, []
    else:
        attention = sorted(silent & set(all_hosts)) + sorted(failing_hosts - silent)
        hosts = attention[:FLEET_COLUMNS]
        columns = set(hosts)
        rest = [h for h in all_hosts if h not in columns]
    judged = {v.job: v for v in verdicts if not v.job.startswith("host ")}
    rows = []
    for job in jobs:
        verdict = judged.get(job)
        state = NAMES[verdict.status] if verdict is not None else "-"
        reason = "; ".join(verdict.reasons) if verdict is not None and verdict.reasons else ""
        label = f'<span class="o o-{"success" if state == "OK" else "failure"}">{_e(state)}</span>'
        head = (
            f'<td data-label="Job">{_e(job)}<br>{label}{f" <span class=err>{_e(reason)}</span>" if reason else ""}</td>'
        )
        parts = [head]
        ran = by_job[job]
        for host in hosts:
            cell = ran.get(host)
            if cell is None:
                parts.append(f'<td data-label="{_e(host)}"><span class="o o-never">\u2013 not run</span></td>')
                continue
            last = cell.last
            outcome, start = ("skipped", cell.seen) if last is None else (last.outcome, last.start)
            extra = f' <span class="streak">{cell.streak} failed</span>' if cell.streak else ""
            parts.append(f'<td data-label="{_e(host)}">{_outcome(outcome)} {_time(start, now)}{extra}</td>')
        if rest:
            counts: dict[str, int] = {}
            shown_here = sum(1 for h in hosts if h in ran)
            for cell in ran.values():
                outcome = "skipped" if cell.last is None else cell.last.outcome
                counts[outcome] = counts.get(outcome, 0) + 1
            for host in hosts:  # the columns are not "other hosts"
                cell = ran.get(host)
                if cell is not None:
                    outcome = "skipped" if cell.last is None else cell.last.outcome
                    counts[outcome] -= 1
            counts = {o: n for o, n in counts.items() if n}
            never = len(rest) - (len(ran) - shown_here)
            if never:
                counts["not run"] = counts.get("not run", 0) + never
            text = ", ".join(f"{n} {_e(o)}" for o, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))
            parts.append(f'<td data-label="other hosts">{text}</td>')
        rows.append("<tr>" + "".join(parts) + "</tr>")
    headers = "<th>Job</th>" + "".join(f"<th>{_e(h)}</th>" for h in hosts)
    if rest:
        headers += f"<th>{len(rest)} other hosts</th>"
    host_items = []
    for host in hosts:
        mark = ' <span class="err">stopped reporting</span>' if host in silent else ""
        host_items.append(f"<li>{_e(host)}: last record {_time(heartbeat[host], now)}{mark}</li>")
    if rest:
        beats = [heartbeat[h] for h in rest]
        host_items.append(
            f"<li>{len(rest)} other hosts reporting, last records from {_time(min(beats), now)}"
            f" to {_time(max(beats), now)}</li>"
        )
    failing = sum(1 for v in judged.values() if v.status != OK)
    summary = (
        f"{len(jobs)} jobs on {len(all_hosts)} hosts, {failing} not OK, {len(silent)} host(s) stopped reporting"
        if jobs
        else "no run published to the fleet's stream yet"
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>jobrunner status: {_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>jobrunner status: {_e(title)}</h1>"
        f'<p class="meta">{_e(summary)}. Generated {_e(_stamp(now))}.</p>'
        f'<div class="wide"><table class="jobs fleet"><thead><tr>{headers}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        f'<h2>Hosts</h2><ul class="runs">{"".join(host_items)}</ul>'
        "</body></html>\n"
    )
