"""What happens around a run besides locking and state: the hooks (docs/design.md "Hooks").

A hook is an object with a ``name``, the event it logs when it fails (``failure_event``) and
two stages, each given the ``Run``:

- ``on_start(run)``: after the lock is taken, before the start is recorded;
- ``on_finish(run)``: after cleanup, before the finish is recorded; ``run.state`` is then the
  state as it will be written (this run folded in).

A hook changes the state only through ``run.contribute(change)``: the runner folds the changes
into its one state write of that stage. A hook's exception is logged (``failure_event``) and
never changes the run's outcome or exit code.

``load_hooks`` is the one place that decides what is configured, from the environment, and
imports a hook's module only then (``HOOKS``, a table of ``module:factory`` names), so an unconfigured timer tick imports none of them:

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

import importlib
import os
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from jobrunner.declaration import Job
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


# The hooks a run may have, in the order they run: (name, "module:factory", arguments). The
# arguments come from the job, the run's options and the environment alone (cheap, standard
# library); None means "not configured". Only a configured hook's module is imported, by name,
# so an unconfigured timer tick imports none of them and this module depends on none of the
# features it loads (the layers in pyproject.toml). Adding a hook is adding a line.
_Args = tuple[tuple[Any, ...], dict[str, Any]] | None


def _history_on(env: Mapping[str, str]) -> bool:
    return env.get("JOBRUNNER_HISTORY", "").strip().lower() not in ("off", "0", "no", "false")


def _history(job: Job, options: RunOptions, env: Mapping[str, str]) -> _Args:
    return ((env,), {}) if _history_on(env) else None


def _fleet(job: Job, options: RunOptions, env: Mapping[str, str]) -> _Args:
    # The fleet's shared history, where $JOBRUNNER_REDIS_URL is set (and history is on).
    url = env.get("JOBRUNNER_REDIS_URL", "").strip()
    return ((url, env), {}) if url and _history_on(env) else None


def _metrics(job: Job, options: RunOptions, env: Mapping[str, str]) -> _Args:
    # Units point at node_exporter's textfile directory; on a host without node_exporter it
    # does not exist, and that is not worth an error on every run.
    directory = env.get("JOBRUNNER_METRICS_DIR")
    return ((directory,), {}) if directory and os.path.isdir(directory) else None


def _notify(job: Job, options: RunOptions, env: Mapping[str, str]) -> _Args:
    if not options.notify:
        return None
    ping = None
    if any(k.startswith("JOBRUNNER_PING_URL") and v.strip() for k, v in env.items()):
        ping = _load("jobrunner.notify.ping:ping_url")(job, env)
    notifications = notify_configured(env)
    return ((), {"notifications": notifications, "ping": ping}) if notifications or ping else None


HOOKS: tuple[tuple[str, str, Callable[[Job, RunOptions, Mapping[str, str]], _Args]], ...] = (
    ("history", "jobrunner.store.history:HistoryHook", _history),
    ("fleet", "jobrunner.fleet.stream:FleetHook", _fleet),
    ("metrics", "jobrunner.observe.metrics:MetricsHook", _metrics),
    ("notify", "jobrunner.notify:notify_hooks", _notify),  # returns a list: notifications, pings
)


def _load(ref: str) -> Any:

    module, _, attr = ref.partition(":")
    value: Any = importlib.import_module(module)
    for part in attr.split("."):
        value = getattr(value, part)
    return value


def load_hooks(job: Job, options: RunOptions, env: Mapping[str, str] | None = None) -> list[Hook]:
    """The hooks configured for this run of ``job``, in the order they run (``HOOKS``)."""
    env = os.environ if env is None else env
    if options.dry_run:
        return []
    hooks: list[Hook] = []
    for _name, factory, arguments in HOOKS:
        found = arguments(job, options, env)
        if found is None:
            continue
        made = _load(factory)(*found[0], **found[1])
        hooks.extend(made if isinstance(made, list) else [made])
    return hooks


def call_hooks(run: Run, stage: Literal["on_start", "on_finish"]) -> None:
    """``stage`` (``on_start``, ``on_finish``) of every hook of the run, in order; an exception
    is logged as the hook's ``failure_event`` and the next hook runs."""
    for hook in run.hooks:
        try:
            (hook.on_start if stage == "on_start" else hook.on_finish)(run)
        except Exception as exc:  # a hook never changes the outcome
            event = getattr(hook, "failure_event", "hook.failed")
            extra = {"hook": hook.name, "stage": stage} if event == "hook.failed" else {}
            run.log.error(event, error=f"{type(exc).__name__}: {exc}", **extra)


if TYPE_CHECKING:  # mypy holds every hook of HOOKS to the protocol (typing only: imported by no run)
    from jobrunner.fleet.stream import FleetHook
    from jobrunner.notify import NotifyHook, PingHook
    from jobrunner.observe.metrics import MetricsHook
    from jobrunner.store.history import HistoryHook

    _HOOK_CLASSES: tuple[type[Hook], ...] = (HistoryHook, FleetHook, MetricsHook, NotifyHook, PingHook)
