"""Check sync: one healthchecks check per scheduled job, through the v3 management API.

``jobrunner checks sync`` (``jobrunner/cli/checks.py``) is a thin shell over ``plan`` and
``apply``. For each job with a ``schedule`` the wanted check (``Wanted``) is:

- ``slug``: ``$HC_SLUG`` with ``{job}`` (the unit name) and ``{host}`` (the short host name),
  default ``{job}``: the slug a ``JOBRUNNER_PING_URL=…/<ping-key>/{job}`` URL pings;
- ``schedule``: the job's own ``OnCalendar=`` expressions unchanged, one a line (healthchecks
  evaluates systemd's syntax itself: kind ``oncalendar``), ``tz`` the host's time zone (the one
  the timer uses) unless ``$HC_TZ`` says otherwise;
- ``grace``: how late the finish ping may come: jitter + accuracy (systemd's 1 min when unset) +
  lock wait + timeout (1 h for a job without one) + 2 min for the sending, rounded up to a minute;
- ``tags``: ``jobrunner``, the host, the job's ``notify=`` tags and ``$HC_TAGS``;
- ``desc``: the job's description and the line that marks the check as this host's
  (``Managed by jobrunner checks sync on HOST (MODULE:NAME)``).

A check with the slug that lacks the marker (made by hand, or by a ``?create=1`` ping) is
left alone unless ``adopt``; one with another host's marker is always left alone; a check with
this host's marker whose job is gone is only deleted with ``prune``. Creating and updating are one call, ``POST /api/v3/checks/`` with
``unique: ["slug"]``; a check that already matches is not sent at all, so a second sync
changes nothing. New checks get ``$HC_CHANNELS`` (default ``*``: every integration of the
project); existing ones keep theirs.

The API URL and key come from an env file (default ``/etc/jobrunner/healthchecks.env``:
``HC_API_URL``, ``HC_API_KEY``), checked as every env file is (``jobrunner/envfile.py``: owned
by root or the running user, not writable by others, not world-readable since it holds a
key), never from the command line. The key is registered with the redactor and is in no
output or error.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobrunner.envfile import load_env_file
from jobrunner.errors import ConfigError, JobrunnerError
from jobrunner.notify.ping import slug_of
from jobrunner.redact import default_redactor

if TYPE_CHECKING:
    from jobrunner.declaration import Job

__all__ = ["DEFAULT_ENV_FILE", "Action", "Client", "Config", "Wanted", "apply", "grace_seconds", "load_config", "plan"]

DEFAULT_ENV_FILE = "/etc/jobrunner/healthchecks.env"
MARKER = "Managed by jobrunner checks sync on"
FIELDS = ("name", "tags", "desc", "schedule", "tz", "grace")
_MARKER_RE = re.compile(re.escape(MARKER) + r" (\S+)")
_SLUG = re.compile(r"^[a-z0-9_-]{1,100}$")


@dataclass(frozen=True)
class Config:
    api_url: str  # ends with /api/v3/
    api_key: str
    slug: str = "{job}"
    tags: tuple[str, ...] = ()
    channels: str = "*"
    tz: str | None = None
    source: str = DEFAULT_ENV_FILE


def load_config(path: str = DEFAULT_ENV_FILE) -> Config:
    """The sync's settings from ``path``; ``ConfigError`` (78) naming the file and the variable."""
    import os

    if not os.path.exists(path):
        raise ConfigError(
            f"{path}: env file not found: create it (root's, chmod 600) with HC_API_URL=https://healthchecks.io/api/v3/ "
            "and HC_API_KEY=<the project's API key: Settings, API Access>"
        )
    env = load_env_file(path)
    key = env.get("HC_API_KEY", "").strip()
    if key:
        default_redactor().add(key)
    url = env.get("HC_API_URL", "").strip()
    if not url:
        raise ConfigError(f"{path}: HC_API_URL is not set (e.g. HC_API_URL=https://healthchecks.io/api/v3/)")
    if not key:
        raise ConfigError(f"{path}: HC_API_KEY is not set (the project's API key: Settings, API Access)")
    if len(key) != 32 or not key.isascii() or not key.isprintable():
        raise ConfigError(f"{path}: HC_API_KEY is not a healthchecks API key (32 characters)")
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{path}: HC_API_URL must be an http(s) URL, e.g. https://healthchecks.io/api/v3/")
    base = url.rstrip("/")
    version = re.search(r"/api/v(\d+)$", base)
    if version and version.group(1) != "3":
        raise ConfigError(f"{path}: HC_API_URL names API v{version.group(1)}: checks sync needs /api/v3/")
    if not version:
        base += "/api/v3"
    slug = env.get("HC_SLUG", "").strip() or "{job}"
    if not _SLUG.match(slug.replace("{job}", "job").replace("{host}", "host")):
        raise ConfigError(f"{path}: HC_SLUG={slug!r}: lowercase letters, digits, - and _ (and {{job}}, {{host}})")
    tz = env.get("HC_TZ", "").strip() or None
    return Config(
        api_url=base + "/",
        api_key=key,
        slug=slug,
        tags=tuple(env.get("HC_TAGS", "").split()),
        channels=env.get("HC_CHANNELS", "*").strip(),
        tz=tz,
        source=path,
    )


def host_name() -> str:
    return os.uname().nodename.split(".")[0]


def host_timezone() -> str:
    """The time zone the host's timers use: ``/etc/timezone``, else the ``/etc/localtime`` link."""
    name = ""
    try:
        with open("/etc/timezone", encoding="utf-8") as handle:
            name = handle.read().strip()
    except OSError:
        try:
            target = os.readlink("/etc/localtime")
        except OSError:
            target = ""
        name = target.partition("zoneinfo/")[2]
    return "UTC" if name in ("", "Etc/UTC", "Etc/Universal", "UCT", "Zulu", "Etc/Zulu") else name


def grace_seconds(job: Job) -> int:
    """How late a run's finish ping may be: jitter + accuracy + lock wait + timeout + 2 min."""
    wait = (job.lock.wait_seconds or 0.0) if job.lock is not None else 0.0
    total = (job.jitter or 0.0) + (job.accuracy or 60.0) + wait + (job.timeout or 3600.0) + 120.0
    return min(31_536_000, max(60, int(math.ceil(total / 60.0)) * 60))


@dataclass(frozen=True)
class Wanted:
    """The check a job should have (the fields checks sync manages)."""

    job: str  # MODULE:NAME
    slug: str
    name: str
    tags: str
    desc: str
    schedule: str
    tz: str
    grace: int

    def fields(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in FIELDS}


def wanted(job: Job, config: Config, host: str, tz: str) -> Wanted:
    slug = config.slug.replace("{job}", slug_of(job.unit)).replace("{host}", host)
    tags = sorted({"jobrunner", host, *job.notify, *config.tags})
    desc = "\n".join(part for part in (job.description, f"{MARKER} {host} ({job.ref})") if part)
    return Wanted(
        job=job.ref,
        slug=slug,
        name=slug,
        tags=" ".join(tags),
        desc=desc,
        schedule="\n".join(job.schedule),
        tz=tz,
        grace=grace_seconds(job),
    )


@dataclass
class Action:
    """One line of the plan: ``kind`` is create, update, same, skip, leave, stale or delete."""

    kind: str
    slug: str
    job: str = ""
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    uuid: str = ""
    note: str = ""
    error: str = ""


class Client:
    """The v3 management API over urllib, with the key in the ``X-Api-Key`` header."""

    def __init__(self, config: Config, timeout: float = 20.0) -> None:
        self.config, self.timeout = config, timeout

    def call(self, method: str, path: str, data: Mapping[str, Any] | None = None) -> Any:
        import urllib.error
        import urllib.request

        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(self.config.api_url + path, data=body, method=method)
        request.add_header("X-Api-Key", self.config.api_key)
        request.add_header("User-Agent", "jobrunner checks sync")
        if body is not None:
            request.add_header("Content-Type", "application/json")
        where = f"{method} {default_redactor().redact(self.config.api_url + path)}"
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            text = " ".join(exc.read(500).decode("utf-8", "replace").split())[:200]
            try:
                text = str(json.loads(text).get("error", text))
            except (ValueError, AttributeError):
                pass
            text = default_redactor().redact(text)
            if exc.code == 401:
                raise ConfigError(
                    f"{self.config.source}: the server refused HC_API_KEY ({where}: HTTP 401 {text}); "
                    "use the project's read-write API key"
                ) from None
            raise ApiError(f"{where}: HTTP {exc.code} {text}".rstrip(), exc.code) from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise JobrunnerError(default_redactor().redact(f"{where}: {type(reason).__name__}: {reason}")) from None
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise JobrunnerError(f"{where}: the answer is not JSON (is HC_API_URL the API's URL?)") from None

    def checks(self) -> list[dict[str, Any]]:
        got = self.call("GET", "checks/")
        if not isinstance(got, dict) or not isinstance(got.get("checks"), list):
            raise JobrunnerError(f"GET {self.config.api_url}checks/: no list of checks in the answer")
        return [c for c in got["checks"] if isinstance(c, dict)]


class ApiError(JobrunnerError):
    """The server refused one call (its status and message)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _current(check: Mapping[str, Any]) -> dict[str, Any]:
    """The managed fields of a check as the API shows it (a simple check has no schedule)."""
    return {
        "name": check.get("name", ""),
        "tags": check.get("tags", ""),
        "desc": check.get("desc", ""),
        "schedule": check.get("schedule"),
        "tz": check.get("tz"),
        "grace": check.get("grace"),
    }


def owner(check: Mapping[str, Any]) -> str | None:
    """The host whose checks sync manages this check (its marker), or ``None``."""
    found = _MARKER_RE.search(str(check.get("desc") or ""))
    return found.group(1) if found else None


def plan(
    jobs: Iterable[Job],
    existing: list[dict[str, Any]],
    config: Config,
    *,
    adopt: bool = False,
    prune: bool = False,
    host: str | None = None,
    tz: str | None = None,
) -> list[Action]:
    """What a sync would do, job by job (and for this host's checks whose job is gone)."""
    host = host or host_name()
    tz = tz or config.tz or host_timezone()
    by_slug: dict[str, dict[str, Any]] = {}
    for check in existing:
        by_slug.setdefault(str(check.get("slug") or ""), check)
    actions: list[Action] = []
    mine: set[str] = set()
    for job in jobs:
        if not job.schedule:
            actions.append(Action("skip", job.unit, job.ref, note="no schedule (runs by hand): no check"))
            continue
        want = wanted(job, config, host, tz)
        mine.add(want.slug)
        if not _SLUG.match(want.slug):
            actions.append(Action("skip", want.slug, job.ref, error=f"slug {want.slug!r} is not a healthchecks slug"))
            continue
        if len(want.schedule) > 100:
            actions.append(
                Action(
                    "skip",
                    want.slug,
                    job.ref,
                    error="its schedules are longer than the 100 characters healthchecks takes",
                )
            )
            continue
        found = by_slug.get(want.slug)
        spec = {**want.fields(), "slug": want.slug, "unique": ["slug"]}
        if found is None:
            if config.channels:
                spec["channels"] = config.channels
            changes = {k: (None, v) for k, v in want.fields().items()}
            actions.append(Action("create", want.slug, job.ref, changes, spec))
            continue
        check = found
        uuid = str(check.get("uuid") or "")
        who = owner(check)
        if who is not None and who != host:  # another host's: never taken over (HC_SLUG={host}-{job})
            note = f"managed by jobrunner checks sync on {who} (give each host its slugs: HC_SLUG={{host}}-{{job}})"
            actions.append(Action("leave", want.slug, job.ref, uuid=uuid, note=note))
            continue
        if who is None and not adopt:
            note = "not made by jobrunner checks sync (--adopt takes it over)"
            actions.append(Action("leave", want.slug, job.ref, uuid=uuid, note=note))
            continue
        current = _current(check)
        changes = {k: (current[k], v) for k, v in want.fields().items() if current[k] != v}
        actions.append(Action("update" if changes else "same", want.slug, job.ref, changes, spec, uuid))
    for slug, check in sorted(by_slug.items()):
        if slug in mine or owner(check) != host:
            continue
        uuid = str(check.get("uuid") or "")
        if prune:
            actions.append(Action("delete", slug, uuid=uuid, note="its job is gone"))
        else:
            actions.append(Action("stale", slug, uuid=uuid, note="this host's check, no such job (--prune deletes it)"))
    return actions


def apply(actions: list[Action], client: Client) -> None:
    """Carry out the plan's creates, updates and deletes; a refused call is kept as the
    action's ``error`` and the others go on."""
    for action in actions:
        try:
            if action.kind in ("create", "update"):
                got = client.call("POST", "checks/", action.spec)
                action.uuid = str(got.get("uuid") or action.uuid) if isinstance(got, dict) else action.uuid
            elif action.kind == "delete":
                client.call("DELETE", f"checks/{action.uuid}")
        except ApiError as exc:
            action.error = str(exc)
