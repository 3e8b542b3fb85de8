"""Late jobs told: ``jobrunner health --notify`` (docs/alerting.md).

A job whose timer did not fire (disabled, masked, the machine off, a broken ``OnCalendar=``)
runs no code that could say so: no runner starts, ``alert-failure@`` has no failed unit. The
only place that sees it is a check from outside the job: ``health`` judges it **late** (no
start within the staleness limit of its schedule), and with ``--notify`` it also tells, once
per late episode:

- ``⏰ JOB is late on HOST``: the reason (``late: last start 1d 2h ago (expected every 1d …)``)
  and where to look; again after the repeat window (``$JOBRUNNER_NOTIFY_REPEAT``, 6h) while
  it stays late; never while the job is silenced;
- ``✅ JOB started again on HOST``: once, when a job told of as late has started since.

The memory of what was told is one small JSON file (``--notify-memory``, default
``<state root>/.late-notified.json``): root's, written atomically, read only when it is a
regular file of this user's, so another user cannot make the watcher forget or repeat. Its
content is the notifications' one memory (``jobrunner.notify.memory.Sent``, per job: first
and last send, held back, and ``since``, the last start the episode is late after; files of
the earlier ``{"since", "sent"}`` form are read as that), and its decisions are the one
``due`` rule. A notification that could not be delivered is not remembered, so the next
check tries again.
The shipped ``late_watch`` job runs this every 15 minutes.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from jobrunner import validate
from jobrunner.files import atomic_write, read_regular_file
from jobrunner.notify import deliver
from jobrunner.notify.memory import Sent, due, end, held, load, sent
from jobrunner.notify.throttle import repeat_window
from jobrunner.rules.schedule import format_age

__all__ = ["MEMORY_NAME", "notify_late"]

MEMORY_NAME = ".late-notified.json"
MAX_MEMORY_BYTES = 1 << 20


def _load(path: str) -> dict[str, Sent]:
    try:
        data = read_regular_file(path, limit=MAX_MEMORY_BYTES, owner=os.geteuid())
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise OSError(f"{path}: larger than {MAX_MEMORY_BYTES} bytes") from None
        raise OSError(f"{path}: not a regular file of this user's") from None

    try:
        doc = validate.loads(data)
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        return {}
    for k, v in doc.items():  # the earlier form: {"since": last start, "sent": last send}
        if isinstance(v, dict) and "sent" in v and "last" not in v:
            doc[k] = {"first": v["sent"], "last": v["sent"], "since": v.get("since")}
    memory = load(doc)  # entries out of range (validate's) are forgotten, one by one
    return {k: v for k, v in memory.items() if v.since is not None}


def _save(path: str, memory: Mapping[str, Sent]) -> None:
    from jobrunner.notify.memory import to_json

    atomic_write(path, json.dumps(to_json(memory), sort_keys=True).encode(), 0o600)


def notify_late(
    results: Sequence[Any],
    *,
    memory_path: str,
    tags: Mapping[str, tuple[str, ...]] | None = None,
    now: float | None = None,
    host: str | None = None,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """Tell of the late jobs among ``results`` (``jobrunner.observe.health.JobHealth``) and of those
    told before that started again; returns one line per notification sent or failed."""
    now = time.time() if now is None else now
    host = host or os.uname().nodename
    repeat = repeat_window(env)
    tags = tags or {}
    try:
        memory = _load(memory_path)
    except OSError as exc:  # not ours (planted?): not trusted; replaced by ours when written
        print(f"jobrunner health: {exc.strerror or exc}; starting afresh", file=sys.stderr)
        memory = {}
    changed = False
    said: list[str] = []
    for result in results:
        name = result.job
        late = "late" in result.conditions and "silenced" not in result.conditions
        told = memory.get(name)
        state = result.facts.get("state") or {}
        starts = [state.get(k) for k in ("last_start", "last_skipped")]
        since = float(round(max((t for t in starts if isinstance(t, (int, float))), default=0.0)))
        if late:
            again = told is not None and told.since == since  # the same episode: late after the same start
            if not again:
                end(memory, name)
            elif not due(memory, name, now, repeat):
                held(memory, name)
                changed = True
                continue
            title = f"⏰ {name} is {'still ' if again else ''}late on {host}"
            body = "\n".join(
                [
                    *result.reasons,
                    "",
                    "Its timer did not start it in time: was the machine off, or the timer stopped?",
                    f"Look with: systemctl list-timers {result.unit}.timer; "
                    f"systemctl status {result.unit}.timer {result.unit}.service",
                ]
            )
            kind = "warning"
        elif told is not None and "silenced" not in result.conditions:
            if since <= (told.since or 0.0):
                continue  # not late any more, but no newer start either (its limit widened)
            title = f"✅ {name} started again on {host}"
            body = f"It was late (told {format_age(now - told.last)} ago) and has started since."
            kind = "recovery"
        else:
            continue
        try:
            delivery = deliver(title, body, tags=tags.get(name, ()), kind=kind)
            ok, why = delivery.delivered, delivery.detail
        except Exception as exc:  # ConfigError: bad notification configuration
            ok, why = False, " ".join(str(exc).split())
        if not ok:
            said.append(f"could not notify {title!r}: {why}")
            continue
        said.append(f"notified: {title}")
        if kind == "recovery":
            end(memory, name)
        else:
            sent(memory, name, now, since=since)
        changed = True
    if changed:
        try:
            _save(memory_path, memory)
        except OSError as exc:
            print(f"jobrunner health: cannot write {memory_path}: {exc.strerror or exc}", file=sys.stderr)
    return said
