"""Keep secrets out of every line jobrunner writes.

Two nets, applied to every string of every log event, error message, notification and state
record:

1. *Known values*: the values of environment variables whose names say they are secret
   (``DB_PASSWORD``, ``S3_SECRET_KEY``, ``API_TOKEN`` …), every credential inside a URL-valued
   variable (``JOBRUNNER_NOTIFY_URLS``, ``*_URL``, ``*_DSN``), and anything a job registers
   with ``ctx.secret(value)``. Every occurrence is replaced, wherever it appears.
2. *Shapes*: the password in ``scheme://user:password@host`` and the values of query
   parameters named like secrets (``?token=…``, ``&password=…``), even when never registered.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping

__all__ = ["MASK", "Redactor", "default_redactor", "secret_env_name"]

MASK = "***"
_SECRET_NAME = re.compile(
    r"(PASS|PASSWD|PASSWORD|_PWD$|SECRET|TOKEN|APIKEY|API_KEY|ACCESS_KEY|PRIVATE|CREDENTIAL|AUTH|_KEY$|^KEY$|COOKIE|SESSION)",
    re.IGNORECASE,
)
_URL_NAME = re.compile(r"(URL|URLS|URI|DSN|WEBHOOK|ENDPOINT)$", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s/]+)(?=@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[a-z_]*(?:token|key|secret|password|passwd|pass|pwd|auth|signature|sig))=)(?P<secret>[^&\s#\"']+)",
    re.IGNORECASE,
)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_MIN_SECRET = 4
_OWN_KEYS = frozenset(("ts", "level", "event", "job", "run_id", "host"))


def secret_env_name(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret."""
    return bool(_SECRET_NAME.search(name))


def _opaque(part: str) -> bool:
    """Long opaque strings are tokens; short ones (ports, chat ids) and words ('hooks') are not."""
    return len(part) >= 12 and not re.fullmatch(r"[a-z.-]+", part)


def _url_secrets(text: str) -> Iterable[str]:
    """Credentials inside URLs: the password, and for token-in-path services (Apprise's
    ``tgram://TOKEN/CHAT``, ``slack://A/B/C``) every host/path/query part long enough to be one."""
    for url in _URL.findall(text):
        _, _, rest = url.partition("://")
        userinfo, at, hostpath = rest.rpartition("@")
        if at:
            # The password; the user name only when it looks like a key (Sentry-style DSNs):
            # plain names ("backup", "admin") also appear in event names and paths.
            user, _, password = userinfo.partition(":")
            yield password
            if _opaque(user):
                yield user
        for part in re.split(r"[/?&=#,:]", hostpath if at else rest):
            if _opaque(part):
                yield part


class Redactor:
    """Replace secrets in strings and nested structures with ``***``.

    >>> r = Redactor(["hunter22"])
    >>> r.redact("login with hunter22 at mysql://wp:pw1234@db/x")
    'login with *** at mysql://wp:***@db/x'
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *values: str) -> None:
        """Register secret values (short ones, under 4 characters, are ignored as too common)."""
        fresh = {v for v in values if isinstance(v, str) and len(v.strip()) >= _MIN_SECRET} - self._secrets
        if not fresh:
            return
        self._secrets |= fresh
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def add_env(self, env: Mapping[str, str]) -> None:
        """Register the secret-looking values of an environment."""
        found: list[str] = []
        for name, value in env.items():
            if not value:
                continue
            # Lists of URLs may be comma separated (JOBRUNNER_NOTIFY_URLS): split them first.
            urls = value.replace(",", " ")
            if secret_env_name(name):
                found.append(value)
                found.extend(_url_secrets(urls))
            elif _URL_NAME.search(name) or name.startswith("JOBRUNNER_NOTIFY"):
                found.extend(_url_secrets(urls))
        self.add(*found)

    def redact(self, text: str) -> str:
        """Return ``text`` with every known secret and credential shape masked."""
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        if "://" in text:
            text = _URL_USERINFO.sub(r"\g<head>" + MASK, text)
        if "=" in text:
            text = _QUERY_SECRET.sub(r"\g<head>" + MASK, text)
        return text

    def redact_value(self, value: Any) -> Any:
        """Redact strings inside dicts, lists and tuples (returns new containers)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_value(v) for v in value]
        if isinstance(value, tuple):  # namedtuples too: rendered as plain lists anyway
            return tuple(self.redact_value(v) for v in value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        # Anything else (an exception, a Path, a set) is rendered with str(): redact that.
        return self.redact(str(value))

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        """A structlog processor (the schema's own keys are written by jobrunner, not redacted)."""
        for key, value in event_dict.items():
            if key in _OWN_KEYS:
                continue
            if isinstance(value, str):
                event_dict[key] = self.redact(value)
            elif value is not None and not isinstance(value, (bool, int, float)):
                event_dict[key] = self.redact_value(value)
        return event_dict


_DEFAULT: Redactor | None = None


def default_redactor() -> Redactor:
    """The process-wide redactor, primed from ``os.environ`` on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Redactor()
        _DEFAULT.add_env(os.environ)
    return _DEFAULT


def reset_default_redactor() -> None:
    """Forget the process-wide redactor (tests)."""
    global _DEFAULT
    _DEFAULT = None
