"""Per-job metrics in the Prometheus node_exporter textfile format.

After every non-dry run (skipped ones too) the runner's metrics hook (``MetricsHook``, loaded
by ``jobrunner.run.hooks.load_hooks``) calls :func:`write_job_metrics`, which replaces ``$JOBRUNNER_METRICS_DIR/<job>.prom`` atomically (temp file in the same directory,
then rename; mode 0644), so node_exporter's textfile collector never reads half a file. The
values come from the job's state (the whole history, this run folded in), not from this run alone.

Series (labels ``job_name`` and ``host`` on all of them: not ``job``, which Prometheus owns; a
default scrape of node_exporter would rename it ``exported_job`` and set ``job="node"``, as
kube-state-metrics found, whose label for a Job's name is ``job_name`` too); an instance's run
(``wp_backup@shop.example.prom``) has ``job_name="wp_backup"`` and ``instance_name="shop.example"``
(not ``instance``, which Prometheus owns as well: the scrape target's)::

    jobrunner_last_start_timestamp_seconds      gauge   start of the last (non-skipped) run
    jobrunner_last_finish_timestamp_seconds     gauge   its end
    jobrunner_last_success_timestamp_seconds    gauge   end of the last success; 0 = never
    jobrunner_last_failure_timestamp_seconds    gauge   end of the last failure/timeout/…; 0 = never
    jobrunner_last_duration_seconds             gauge
    jobrunner_last_exit_code                    gauge
    jobrunner_last_outcome{outcome}             gauge   1 for the last outcome, 0 for the others
    jobrunner_runs_total{outcome}               counter every outcome, zeros included
    jobrunner_consecutive_failures              gauge
    jobrunner_skipping_since_timestamp_seconds  gauge   first of the skips in a row (lock held); 0 = not skipping
    jobrunner_consecutive_skips                 gauge   skips since the last run that ran
    jobrunner_expected_interval_seconds         gauge   longest gap between elapses + jitter
                                                        (scheduled jobs only; for alert rules)
    jobrunner_stale_after_seconds               gauge   no success for this long: stale, the limit
                                                        ``jobrunner health`` warns at (scheduled jobs only)
    jobrunner_timeout_seconds                   gauge   the job's ``timeout`` (jobs that have one)
    jobrunner_running_since_timestamp_seconds   gauge   when the run in progress started (the start its
                                                        timeout counts from); 0 = none running
    jobrunner_duration_anomalies_total{kind}    counter successful runs out of the ordinary
                                                        (too_short, too_slow, slower_than_usual)
    jobrunner_silenced_until_timestamp_seconds  gauge   end of the job's silence; 0 = not silenced

The hook writes the file twice per run that runs: at the start (``running_since`` set, so a
run that hangs or is killed before it can record its end stays visible) and at the finish.
A skipped run writes it once, from the state, where the holder's run is in progress.

The alert rules that read these series ship in ``monitoring/prometheus/jobrunner.rules.yml``
(docs/prometheus.md).

Imported only when ``JOBRUNNER_METRICS_DIR`` is set: stdlib only at import time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from jobrunner.store.state import JobState, atomic_write

if TYPE_CHECKING:
    from jobrunner.run.model import RunResult

__all__ = ["INSTANCE_LABEL", "JOB_LABEL", "OUTCOMES", "MetricsHook", "render_job_metrics", "write_job_metrics"]

JOB_LABEL = "job_name"  # the job's name; "job" is the scrape job's (see the module's docstring)
INSTANCE_LABEL = "instance_name"  # an instance's name; "instance" is the scrape target's
OUTCOMES = ("success", "failure", "timeout", "terminated", "skipped")
ANOMALIES = ("too_short", "too_slow", "slower_than_usual")

_HELP = {
    "jobrunner_last_start_timestamp_seconds": ("gauge", "Start of the last run that was not skipped (Unix time)."),
    "jobrunner_last_finish_timestamp_seconds": ("gauge", "End of the last run that was not skipped (Unix time)."),
    "jobrunner_last_success_timestamp_seconds": ("gauge", "End of the last successful run (Unix time); 0 if none."),
    "jobrunner_last_failure_timestamp_seconds": ("gauge", "End of the last unsuccessful run (Unix time); 0 if none."),
    "jobrunner_last_duration_seconds": ("gauge", "Duration of the last run that was not skipped."),
    "jobrunner_last_exit_code": ("gauge", "Exit code of the last run that was not skipped."),
    "jobrunner_last_outcome": ("gauge", "1 for the outcome of the last run that was not skipped, else 0."),
    "jobrunner_runs_total": ("counter", "Finished runs by outcome."),
    "jobrunner_consecutive_failures": ("gauge", "Unsuccessful runs since the last success."),
    "jobrunner_skipping_since_timestamp_seconds": (
        "gauge",
        "Start of the current streak of runs skipped because the lock was held (Unix time); 0 if none.",
    ),
    "jobrunner_consecutive_skips": ("gauge", "Runs skipped because the lock was held since the last run that ran."),
    "jobrunner_expected_interval_seconds": (
        "gauge",
        "Longest gap between the schedule's elapses plus jitter: a success is due within it.",
    ),
    "jobrunner_stale_after_seconds": (
        "gauge",
        "Seconds without a success after which the job is stale: interval, grace and the longest recent run.",
    ),
    "jobrunner_timeout_seconds": ("gauge", "The job's timeout: a run is stopped this long after its start."),
    "jobrunner_running_since_timestamp_seconds": (
        "gauge",
        "Start of the run in progress, from which its timeout counts (Unix time); 0 if none.",
    ),
    "jobrunner_duration_anomalies_total": (
        "counter",
        "Successful runs whose duration was out of the ordinary, by kind (jobrunner.Alert).",
    ),
    "jobrunner_silenced_until_timestamp_seconds": (
        "gauge",
        "End of the job's silence (jobrunner silence; Unix time); 0 if not silenced.",
    ),
}


def escape_label(value: str) -> str:
    """A label value as the exposition format wants it: ``\\``, ``"`` and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(base: Mapping[str, str], **extra: str) -> str:
    merged = {**base, **extra}
    return "{" + ",".join(f'{k}="{escape_label(str(v))}"' for k, v in merged.items()) + "}"


def _number(value: Any) -> str:
    number = float(value)
    if number != number:
        return "NaN"
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


def _num(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def render_job_metrics(
    job_name: str,
    state: JobState | Mapping[str, Any],
    *,
    host: str,
    result: RunResult | None = None,
    expected_interval_s: float | None = None,
    timeout_s: float | None = None,
    running_since: float | None = None,
    instance: str | None = None,
) -> str:
    """The text of ``<job>.prom``. ``result`` (a ``RunResult``) fills in what the state lacks;
    ``running_since`` overrides the state's run in progress (``state.running``). An instance's
    series carry the declared name in ``job_name`` (``job_name`` the argument may be
    ``wp_backup@shop.example``: the label is ``wp_backup``) and the instance in ``instance_name``."""
    if not isinstance(state, JobState):
        state = JobState.from_dict(dict(state))
    base = {JOB_LABEL: job_name.split("@", 1)[0] if instance else job_name, "host": host}
    if instance:
        base[INSTANCE_LABEL] = instance
    ran = result if result is not None and result.outcome != "skipped" else None
    last_outcome = state.last_outcome or (ran.outcome if ran else None)
    duration = state.last_duration_s if state.last_duration_s is not None else ran.duration_s if ran else None
    exit_code = state.last_exit_code if state.last_exit_code is not None else ran.exit_code if ran else None
    runs = state.runs or ({result.outcome: 1} if result is not None else {})

    samples: dict[str, list[tuple[str, float]]] = {name: [] for name in _HELP}
    plain = _labels(base)
    for name, value in (
        ("jobrunner_last_start_timestamp_seconds", state.last_start),
        ("jobrunner_last_finish_timestamp_seconds", state.last_finish),
    ):
        if value is not None:
            samples[name].append((plain, _num(value)))
    samples["jobrunner_last_success_timestamp_seconds"].append((plain, _num(state.last_success)))
    samples["jobrunner_last_failure_timestamp_seconds"].append((plain, _num(state.last_failure)))
    if duration is not None:
        samples["jobrunner_last_duration_seconds"].append((plain, _num(duration)))
    if exit_code is not None:
        samples["jobrunner_last_exit_code"].append((plain, _num(exit_code)))
    if last_outcome:
        for outcome in _outcomes(OUTCOMES[:-1], [last_outcome]):
            samples["jobrunner_last_outcome"].append((_labels(base, outcome=outcome), float(outcome == last_outcome)))
    for outcome in _outcomes(OUTCOMES, runs):
        samples["jobrunner_runs_total"].append((_labels(base, outcome=outcome), _num(runs.get(outcome))))
    samples["jobrunner_consecutive_failures"].append((plain, _num(state.consecutive_failures)))
    samples["jobrunner_skipping_since_timestamp_seconds"].append((plain, _num(state.skips.skipped_since)))
    samples["jobrunner_consecutive_skips"].append((plain, _num(state.skips.consecutive_skips)))
    if expected_interval_s:
        from jobrunner.rules.schedule import stale_after

        samples["jobrunner_expected_interval_seconds"].append((plain, float(expected_interval_s)))
        limit = stale_after(float(expected_interval_s), None, state.durations_s)
        samples["jobrunner_stale_after_seconds"].append((plain, limit))
    if timeout_s:
        samples["jobrunner_timeout_seconds"].append((plain, float(timeout_s)))
    if running_since is None:
        running_since = _num((state.running or {}).get("since"))
    samples["jobrunner_running_since_timestamp_seconds"].append((plain, running_since))
    for kind in _outcomes(ANOMALIES, state.alerting.anomalies):
        samples["jobrunner_duration_anomalies_total"].append(
            (_labels(base, kind=kind), _num(state.alerting.anomalies.get(kind)))
        )
    silence = state.silencing.silence or {}
    until = _num(silence.get("until"))
    samples["jobrunner_silenced_until_timestamp_seconds"].append((plain, until if until > time.time() else 0.0))

    lines: list[str] = []
    for name, found in samples.items():
        if not found:
            continue
        kind, help_text = _HELP[name]
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{labels} {_number(value)}" for labels, value in found)
    return "\n".join(lines) + "\n"


def _outcomes(known: Iterable[str], seen: Iterable[str]) -> list[str]:
    """The known outcomes, then any other the state recorded (a newer runner's), in order."""
    ordered = list(known)
    ordered.extend(sorted(str(o) for o in seen if o not in ordered))
    return ordered


class MetricsJob(Protocol):
    """What the metrics read of a job: its name, and its schedule and jitter for the expected
    interval. The hook passes the declared ``Job``; the metrics tests a job-like with these."""

    @property
    def name(self) -> str: ...

    @property
    def schedule(self) -> Sequence[str]: ...

    @property
    def jitter(self) -> float | None: ...


def _expected_interval(job: MetricsJob) -> float | None:
    schedule = getattr(job, "schedule", ())
    if not schedule:
        return None
    from jobrunner.rules.schedule import expected_interval

    try:
        return expected_interval(schedule, getattr(job, "jitter", None))
    except Exception:  # systemd-analyze missing or odd: the other series still matter
        return None


_UNSET: Any = object()


def write_job_metrics(
    job: MetricsJob,
    state: JobState | Mapping[str, Any],
    result: RunResult | None,
    directory: str,
    *,
    running_since: float | None = None,
    expected_interval_s: float | None = _UNSET,
) -> str:
    """Write ``<directory>/<job>.prom`` atomically (mode 0644); return its path."""
    if expected_interval_s is _UNSET:
        expected_interval_s = _expected_interval(job)
    text = render_job_metrics(
        job.name,
        state,
        host=os.uname().nodename,
        result=result,
        expected_interval_s=expected_interval_s,
        timeout_s=getattr(job, "timeout", None),
        running_since=running_since,
        instance=getattr(job, "instance", None),
    )
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{job.name}.prom")
    atomic_write(path, text.encode(), mode=0o644)
    return path


class MetricsHook:
    """Writes ``<job>.prom`` at the start of a run (the run in progress, from when its timeout
    counts) and rewrites it at the end of every run, from the state as it will be written."""

    name = "metrics"
    failure_event = "metrics.write_failed"

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._interval: Any = _UNSET  # systemd-analyze once per run, not once per write

    def _expected(self, job: MetricsJob) -> float | None:
        if self._interval is _UNSET:
            self._interval = _expected_interval(job)
        result: float | None = self._interval
        return result

    def on_start(self, run: Any) -> None:
        since = run.started_wall + run.paused_s  # the deadline is this plus the timeout
        write_job_metrics(
            run.job, run.state, None, self.directory, running_since=since, expected_interval_s=self._expected(run.job)
        )

    def on_finish(self, run: Any) -> None:
        write_job_metrics(run.job, run.state, run.result, self.directory, expected_interval_s=self._expected(run.job))
