"""The status page: one self-contained HTML file of every job's recent runs (issue #16).

``collect(root)`` gathers, per job, its history (``jobrunner.store.history``), its state (a run in
progress, a job that never ran) and, where systemd runs, its timer's next elapse and, for a
run in progress, where it is (the service's status line, which ``ctx.progress`` keeps current;
one ``systemctl show`` for all units); ``render(views)`` writes the page; ``write_page(path, html)``
replaces the file atomically (temp file and rename in the same directory, 0644), so a web
server never serves half a page.

The page needs nothing but itself: no external asset, no JavaScript (the per-job details are
``<details>`` elements), CSS inline, sparklines inline SVG. Every outcome is text as well as a
colour. On a narrow screen the table's rows become cards (a CSS media query), long strings
wrap, so a 390 px phone never scrolls sideways. Everything shown is HTML-escaped: a history
file belongs to the job's user, who may write anything into it; error lines and output were
redacted when recorded and pass the redactor again here.
"""

from __future__ import annotations

import html
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobrunner.store.history import STATS_WINDOW, RunRecord, failure_streak, percentile, read_history, recorded_jobs

__all__ = ["JobView", "collect", "render", "render_fleet", "write_page"]

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


def _state_jobs(root: str) -> list[str]:
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return []
    return [e for e in entries if not e.startswith(".") and os.path.lexists(os.path.join(root, e, "state.json"))]


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
    from jobrunner.store.state import StateStore

    if names is None:
        names = sorted(set(recorded_jobs(root)) | set(_state_jobs(root)))
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
            from jobrunner.rules.alerting import silence_active

            silence = silence_active(state)
            view.silenced_until = float(silence["until"]) if silence is not None else None
            anomaly = state.anomaly or {}
            view.warning = anomaly.get("text") if isinstance(anomaly.get("text"), str) else None
        views.append(view)
    _next_runs(views, units or {}, systemd)
    return views


def _next_runs(views: list[JobView], units: Mapping[str, str], systemd: bool | None) -> None:
    from jobrunner.systemd.systemctl import SystemctlError, show_units, systemd_running, timestamp

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
@media (max-width:640px){
table.jobs thead{display:none}
table.jobs tr{display:block;border-bottom:2px solid var(--line);padding:.4em 0}
table.jobs td{display:flex;justify-content:space-between;gap:1em;border:0;padding:.15em 0}
table.jobs td::before{content:attr(data-label);color:var(--mut);font-size:.85em}
}
"""

_KNOWN = ("success", "failure", "timeout", "terminated", "skipped")
_MARK = {"success": "\u2713", "skipped": "\u2013", "never": "\u2013", "running": "\u25b6"}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _outcome(outcome: str, label: str | None = None) -> str:
    cls = outcome if outcome in _KNOWN else "other"
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
    )


def _anchor(name: str) -> str:
    return "job-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _row(view: JobView, now: float) -> str:
    last = view.last
    if view.running_since is not None or view.step:
        status = _outcome("running", "running")
        if view.step:
            status += f' <span class="step">{_e(view.step)}</span>'
        when = _time(view.running_since, now)
    elif last is not None:
        status = _outcome(last.outcome)
        when = _time(last.start, now)
    elif view.state_outcome:
        status = _outcome(view.state_outcome)
        when = _time(view.state_when, now)
    else:
        status = _outcome("never", "never ran")
        when = "-"
    if view.error:
        status += f' <span class="err">unreadable: {_e(view.error)}</span>'
    if view.warning:
        status += f' <span class="warn">{_e(view.warning)}</span>'
    if view.silenced_until is not None:
        status += f' <span class="silenced">silenced until {_e(_stamp(view.silenced_until))}</span>'
    streak = view.streak
    streak_html = f'<span class="streak">{streak} failed</span>' if streak else "0"
    cells = (
        ("Job", f'<a href="#{_anchor(view.name)}">{_e(view.name)}</a>'),
        ("Last outcome", status),
        ("When", when),
        ("Next run", _time(view.next_run, now)),
        ("Recent durations", sparkline(view.records)),
        ("p95", _seconds(view.p95)),
        ("Failure streak", streak_html),
    )
    return "<tr>" + "".join(f'<td data-label="{k}">{v}</td>' for k, v in cells) + "</tr>"


def _details(view: JobView, now: float) -> str:
    from jobrunner.redact import default_redactor

    redact = default_redactor().redact
    items = []
    for r in reversed(view.records[-RECENT_RUNS:]):
        error = f'<br><span class="err">{_e(redact(r.error))}</span>' if r.error else ""
        items.append(
            f"<li>{_time(r.start, now)} {_outcome(r.outcome)} {_seconds(r.duration_s)} exit {r.exit_code}"
            f"{f' ({r.attempts} attempts)' if r.attempts > 1 else ''}"
            f"<br><code>journalctl _SYSTEMD_INVOCATION_ID={_e(r.run_id)}</code>{error}</li>"
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
    """The page, as a string."""
    now = time.time() if now is None else now
    host = host or os.uname().nodename
    failing = sum(1 for v in views if v.streak)
    rows = "".join(_row(v, now) for v in views)
    details = "".join(_details(v, now) for v in views)
    headers = "".join(
        f"<th>{h}</th>"
        for h in ("Job", "Last outcome", "When", "Next run", "Recent durations", "p95", "Failure streak")
    )
    summary = f"{len(views)} jobs, {failing} failing" if views else "no job has run yet"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>jobrunner status: {_e(host)}</title><style>{_CSS}</style></head><body>"
        f"<h1>jobrunner status: {_e(host)}</h1>"
        f'<p class="meta">{_e(summary)}. Generated {_e(_stamp(now))}.</p>'
        f'<table class="jobs"><thead><tr>{headers}</tr></thead><tbody>{rows}</tbody></table>'
        f"<h2>Recent runs</h2>{details}"
        "</body></html>\n"
    )


def write_page(path: str, page: str) -> None:
    """Replace ``path`` atomically with ``page`` (0644: the web server's user reads it)."""
    from jobrunner.files import atomic_write

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
    from jobrunner.fleet.stream import _as_view, matrix
    from jobrunner.observe.health import NAMES, OK
    from jobrunner.store.history import outcome_matches

    now = time.time() if now is None else now
    view = _as_view(records)
    cells = matrix(view)  # (host, job) -> last outcome, its start, failure streak
    jobs = sorted({j for _, j in cells})
    heartbeat = dict(view.hosts)
    for (host, _), row in cells.items():
        if host not in heartbeat:
            heartbeat[host] = row["last_seen"] or row["last_start"] or 0.0
    all_hosts = sorted(heartbeat)
    silent = {v.facts.get("host") for v in verdicts if v.job.startswith("host ") and v.status != OK}
    failing_hosts = {h for (h, _), c in cells.items() if outcome_matches(c["last_outcome"], "failed")}
    if len(all_hosts) <= FLEET_COLUMNS:
        hosts, rest = all_hosts, []
    else:
        attention = sorted(silent & set(all_hosts)) + sorted(failing_hosts - silent)
        hosts = attention[:FLEET_COLUMNS]
        shown = set(hosts)
        rest = [h for h in all_hosts if h not in shown]
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
        for host in hosts:
            cell = cells.get((host, job))
            if cell is None:
                parts.append(f'<td data-label="{_e(host)}"><span class="o o-never">\u2013 not run</span></td>')
                continue
            streak = cell["failure_streak"]
            extra = f' <span class="streak">{streak} failed</span>' if streak else ""
            parts.append(
                f'<td data-label="{_e(host)}">{_outcome(cell["last_outcome"])} {_time(cell["last_start"], now)}{extra}</td>'
            )
        if rest:
            counts: dict[str, int] = {}
            for host in rest:
                other = cells.get((host, job))
                outcome = "not run" if other is None else other["last_outcome"]
                counts[outcome] = counts.get(outcome, 0) + 1
            text = ", ".join(f"{n} {_e(o)}" for o, n in sorted(counts.items(), key=lambda x: -x[1]))
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
