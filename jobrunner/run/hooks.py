"""What happens around a run besides locking and state: the hooks (docs/design.md "Hooks").

A hook is an object with a ``name``, the event it logs when it fails (``failure_event``) and
two stages, each given the ``Run``:

- ``on_start(run)``: after the lock is taken, before the start is recorded;
- ``on_finish(run)``: after cleanup, before the finish is recorded; ``run.state`` is then the
  record as it will be written (this run folded in).

A hook changes the state only through ``run.contribute(change)``: the runner folds the changes
into its one state write of that stage. A hook's exception is logged (``failure_event``) and
never changes the run's outcome or exit code.

``load_hooks`` is the one place that decides what is configured, from the environment, and
imports a hook's module only then, so an unconfigured timer tick imports none of them:

- history: always, unless ``$JOBRUNNER_HISTORY=off`` (``jobrunner.store.history``: one line
  appended to the job's ``history.jsonl``, standard library only); with it, where
  ``$JOBRUNNER_REDIS_URL`` is set, the fleet's stream (``jobrunner.fleet.stream``);
- metrics: ``$JOBRUNNER_METRICS_DIR`` is an existing directory (``jobrunner.observe.metrics``);
- notifications: ``$JOBRUNNER_NOTIFY_URLS``, ``$JOBRUNNER_NOTIFY_CONFIG`` or the default
  Apprise config file ``/etc/jobrunner/apprise.yml`` (``jobrunner.notify``);
- pings: ``$JOBRUNNER_PING_URL_<JOB>`` or ``$JOBRUNNER_PING_URL`` (``jobrunner.notify``).

None for a ``--dry-run``; no notification or ping for ``--no-notify``. Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from jobrunner.run.model import Run, RunOptions

__all__ = ["DEFAULT_APPRISE_CONFIG", "Hook", "call_hooks", "load_hooks", "notify_configured"]

DEFAULT_APPRISE_CONFIG = "/etc/jobrunner/apprise.yml"


class Hook(Protocol):
    name: str
    failure_event: str  # logged at error, with ``error``, when a stage raises

    def on_start(self, run: Run) -> None: ...

    def on_finish(self, run: Run) -> None: ...


def notify_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether any notification URL source is configured (cheap: no apprise, no jobrunner.notify)."""
    env = os.environ if env is None else env
    return (
        any(re.split(r"[\s,]+", env.get("JOBRUNNER_NOTIFY_URLS", "")))
        or bool(env.get("JOBRUNNER_NOTIFY_CONFIG", "").strip())
        or os.path.exists(DEFAULT_APPRISE_CONFIG)
    )


def load_hooks(job: Any, options: RunOptions, env: Mapping[str, str] | None = None) -> list[Hook]:
    """The hooks configured for this run of ``job``, in the order they run."""
    env = os.environ if env is None else env
    if options.dry_run:
        return []
    hooks: list[Hook] = []
    if env.get("JOBRUNNER_HISTORY", "").strip().lower() not in ("off", "0", "no", "false"):
        from jobrunner.store.history import HistoryHook

        hooks.append(HistoryHook(env))
        redis_url = env.get("JOBRUNNER_REDIS_URL", "").strip()
        if redis_url:  # the fleet's shared history (imports redis, so only when configured)
            from jobrunner.fleet.stream import FleetHook

            hooks.append(FleetHook(redis_url, env))
    metrics_dir = env.get("JOBRUNNER_METRICS_DIR")
    # Units point at node_exporter's textfile directory; on a host without node_exporter it
    # does not exist, and that is not worth an error on every run.
    if metrics_dir and os.path.isdir(metrics_dir):
        from jobrunner.observe.metrics import MetricsHook

        hooks.append(MetricsHook(metrics_dir))
    if not options.notify:
        return hooks
    ping = None
    if any(k.startswith("JOBRUNNER_PING_URL") and v.strip() for k, v in env.items()):
        from jobrunner.notify.ping import ping_url

        ping = ping_url(job, env)
    notifications = notify_configured(env)
    if notifications or ping:
        from jobrunner.notify import notify_hooks

        hooks.extend(notify_hooks(notifications=notifications, ping=ping))
    return hooks


def call_hooks(run: Run, stage: str) -> None:
    """``stage`` (``on_start``, ``on_finish``) of every hook of the run, in order; an exception
    is logged as the hook's ``failure_event`` and the next hook runs."""
    for hook in run.hooks:
        try:
            getattr(hook, stage)(run)
        except Exception as exc:  # a hook never changes the outcome
            event = getattr(hook, "failure_event", "hook.failed")
            extra = {"hook": hook.name, "stage": stage} if event == "hook.failed" else {}
            run.log.error(event, error=f"{type(exc).__name__}: {exc}", **extra)
