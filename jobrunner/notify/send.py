"""Sending, bounded: an Apprise call that ends within its time budget whatever the endpoint does.

Three fences, because one is not enough against a black-holed endpoint (TCP accepted, no
answer) or a resolver that hangs: per-service socket timeouts (Apprise's ``cto``/``rto``)
cut to the budget, Apprise's own whole-call ``timeout=``, and the call running in a daemon
thread joined with the budget, so the process moves on (and can exit) even if both others fail.
Each service is retried once (Apprise's ``retry``) when the budget leaves room for it.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from jobrunner.errors import ConfigError
from jobrunner.timespan import parse_timespan

__all__ = ["Delivery", "budget_seconds", "send"]

DEFAULT_BUDGET = 10.0


@dataclass
class Delivery:
    """How a send went: ``delivered`` only when every matched service accepted the message."""

    delivered: bool
    detail: str = ""
    seconds: float = 0.0
    matched: int = 0


def budget_seconds(env: Any = None) -> float:
    """``$JOBRUNNER_NOTIFY_TIMEOUT`` (a time span, default 10 s): the whole sending budget."""
    env = os.environ if env is None else env
    raw = env.get("JOBRUNNER_NOTIFY_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_BUDGET
    try:
        value = parse_timespan(raw)
    except ValueError as exc:
        raise ConfigError(f"JOBRUNNER_NOTIFY_TIMEOUT={raw!r}: {exc}") from None
    if not value or value <= 0:
        raise ConfigError(f"JOBRUNNER_NOTIFY_TIMEOUT={raw!r}: must be more than 0")
    return value


def _fit(services: list[Any], budget: float) -> None:
    """Socket timeouts that let a service be tried twice within the budget."""
    per_try = max(0.5, budget / 2.5)
    for service in services:
        service.socket_connect_timeout = min(float(getattr(service, "socket_connect_timeout", 4.0)), per_try / 2)
        service.socket_read_timeout = min(float(getattr(service, "socket_read_timeout", 4.0)), per_try / 2)
        if budget >= 4 and not getattr(service, "retry", 0):
            service.retry = 1  # one more try per service, within the same budget


def send(notifier: Any, *, title: str, body: str, tags: tuple[str, ...], notify_type: str, budget: float) -> Delivery:
    """Send through every service matched by ``tags`` (all services when none) within ``budget`` s."""
    import apprise

    started = time.monotonic()
    tag: Any = list(tags) if tags else apprise.common.MATCH_ALL_TAG  # a list is "any of these tags"
    matched = list(notifier.find(tag)) if tags else list(notifier)
    if not matched:
        return Delivery(False, f"no notification URL matches the tags {', '.join(tags)}", 0.0, 0)
    _fit(matched, budget)
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["result"] = notifier.notify(
                body=body,
                title=title,
                notify_type=notify_type,
                tag=tag,
                body_format=apprise.NotifyFormat.TEXT,
                timeout=budget,
            )
        except Exception as exc:  # reported, never raised into the run
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=call, name="jobrunner-notify", daemon=True)
    thread.start()
    thread.join(budget + 0.5)
    seconds = time.monotonic() - started
    if thread.is_alive():
        return Delivery(False, f"not delivered within {budget:g}s", seconds, len(matched))
    if "error" in outcome:
        return Delivery(False, outcome["error"], seconds, len(matched))
    result = outcome.get("result")
    if result:
        return Delivery(True, "", seconds, len(matched))
    return Delivery(False, _why(result, len(matched)), seconds, len(matched))


def _why(result: Any, matched: int) -> str:
    failed = 0
    try:
        failed = sum(1 for service in result if not service)
    except TypeError:
        pass
    status = getattr(getattr(result, "status", None), "name", None) or "failed"
    status = str(status).lower()
    return f"{failed or matched} of {matched} service(s) did not accept the message ({status})"
