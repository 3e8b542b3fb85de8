"""Where notifications go: Apprise URLs from the environment and/or an Apprise config file.

Sources (both may be used; their URLs add up):

- ``$JOBRUNNER_NOTIFY_URLS``: Apprise URLs separated by spaces or commas; ``TAG=URL`` tags one.
- ``$JOBRUNNER_NOTIFY_CONFIG``, else ``/etc/jobrunner/apprise.yml`` when it exists: an Apprise
  config file (YAML or TEXT), where tags are declared per URL: a regular file of at most
  1 MiB (``/dev/zero`` or a FIFO is a ``ConfigError``, not an endless read).

``sources_present`` is the cheap question (no apprise import); ``load`` builds the Apprise
object and raises ``ConfigError`` (exit 78) naming the variable or the file and line of the
first URL Apprise cannot parse. Every credential of every loaded URL is registered with the
process redactor, so no body, title or log line can leak it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from jobrunner.errors import ConfigError
from jobrunner.redact import default_redactor
from jobrunner.run.hooks import DEFAULT_APPRISE_CONFIG, notify_configured

if TYPE_CHECKING:
    import apprise

__all__ = ["DEFAULT_CONFIG", "config_path", "env_urls", "load", "sources_present"]

DEFAULT_CONFIG = DEFAULT_APPRISE_CONFIG
MAX_CONFIG = 1024 * 1024  # an Apprise config is a few lines; a bigger "file" is a mistake
_TAGGED = re.compile(r"^(?P<tag>[A-Za-z0-9_-]+)=(?P<url>[A-Za-z][A-Za-z0-9+.-]*://.*)$")


def config_path(env: Mapping[str, str] | None = None) -> str | None:
    """The Apprise config file to read, or ``None``."""
    env = os.environ if env is None else env
    path = env.get("JOBRUNNER_NOTIFY_CONFIG", "").strip()
    if path:
        return path
    return DEFAULT_CONFIG if os.path.exists(DEFAULT_CONFIG) else None


def env_urls(env: Mapping[str, str] | None = None) -> list[tuple[tuple[str, ...], str]]:
    """``$JOBRUNNER_NOTIFY_URLS`` as ``(tags, url)`` pairs."""
    env = os.environ if env is None else env
    out: list[tuple[tuple[str, ...], str]] = []
    for item in re.split(r"[\s,]+", env.get("JOBRUNNER_NOTIFY_URLS", "")):
        if not item:
            continue
        tagged = _TAGGED.match(item)
        out.append(((tagged["tag"],), tagged["url"]) if tagged else ((), item))
    return out


def sources_present(env: Mapping[str, str] | None = None) -> bool:
    """Whether any notification URL source is configured (cheap: no apprise import). The
    decision is the hooks' (``jobrunner.run.hooks.notify_configured``), made in one place."""
    return notify_configured(env)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _apprise_errors() -> Iterator[list[str]]:
    """Collect what apprise logs at warning and above (it reports bad URLs only that way)."""
    logger = logging.getLogger("apprise")
    capture = _Capture()
    logger.addHandler(capture)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield capture.messages
    finally:
        logger.removeHandler(capture)
        logger.propagate = propagate


def _line_of(text: str, message: str) -> int | None:
    """The line of the config file the apprise message is about (its own, or the URL it quotes)."""
    found = re.search(r"on line (\d+)", message)
    if found:
        return int(found.group(1))
    quoted = re.search(r"URL (\S+)", message)
    if quoted:
        for number, line in enumerate(text.splitlines(), start=1):
            if quoted.group(1).rstrip(".") in line:
                return number
    return None


def _asset() -> Any:
    import apprise

    return apprise.AppriseAsset(app_id="jobrunner", app_desc="jobrunner job notifications", secure_logging=True)


def _register_secrets(url: str) -> None:
    # add_env() on a *_URL name applies the redactor's URL rules: password, user, long path parts.
    default_redactor().add_env({"NOTIFY_URL": url})


def load(env: Mapping[str, str] | None = None) -> apprise.Apprise:
    """An ``apprise.Apprise`` with every configured URL; ``ConfigError`` for a bad one."""
    import apprise

    env = os.environ if env is None else env
    asset = _asset()
    notifier = apprise.Apprise(asset=asset)
    redactor = default_redactor()
    for index, (tags, url) in enumerate(env_urls(env), start=1):
        _register_secrets(url)
        with _apprise_errors() as problems:
            service = apprise.Apprise.instantiate(url, asset=asset, tag=set(tags) or None)
        if service is None:
            why = redactor.redact(problems[-1]) if problems else "not an Apprise URL"
            raise ConfigError(f"JOBRUNNER_NOTIFY_URLS: URL {index} ({redactor.redact(url)}): {why}")
        notifier.add(service)
    path = config_path(env)
    if path:
        notifier.add(_load_file(path, asset))
    return notifier


def _load_file(path: str, asset: Any) -> list[Any]:
    import apprise

    from jobrunner.envfile import read_regular_file

    try:
        # A regular file of at most 1 MiB, opened without blocking: /dev/zero or a FIFO is
        # refused at once instead of read without end.
        data, _ = read_regular_file(path, limit=MAX_CONFIG, what="notification config")
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"notification config {path}: cannot read it: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"notification config {path}: cannot read it: {exc.strerror or exc}") from None
    for url in re.findall(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+", text):
        _register_secrets(url.rstrip(":"))
    config = apprise.AppriseConfig(asset=asset)
    with _apprise_errors() as problems:
        config.add_config(text, format=_format(path, text))
        services = list(config.services())
    redactor = default_redactor()
    bad = [m for m in problems if re.search(r"unparseable|invalid|could not|failed|not supported|unsupported", m, re.I)]
    if bad:
        line = _line_of(text, bad[0])
        where = f"{path}:{line}" if line else path
        raise ConfigError(f"notification config {where}: {redactor.redact(bad[0])}")
    if not services:
        detail = f": {redactor.redact(problems[0])}" if problems else ""
        raise ConfigError(f"notification config {path}: no notification URL in it{detail}")
    return services


def _format(path: str, text: str) -> str | None:
    if path.endswith((".yml", ".yaml")):
        return "yaml"
    if path.endswith((".txt", ".conf", ".cfg")):
        return "text"
    return None  # let apprise detect it
