"""Keep secrets out of every line jobrunner writes.

Two nets, applied to every string of every log event, error message, notification and state
record:

1. *Known values*: the values of environment variables whose names say they are secret
   (``DB_PASSWORD``, ``S3_SECRET_KEY``, ``API_TOKEN`` …), every credential inside a URL-valued
   variable (``JOBRUNNER_NOTIFY_URLS``, ``*_URL``, ``*_DSN``), and anything a job registers
   with ``ctx.secret(value)``.
2. *Shapes*: the password in ``scheme://user:password@host``, the values of query parameters
   named like secrets (``?token=…``, ``&password=…``) and, in a logged command line, the
   values of options named like secrets (``--password=…``, ``--token …``, mysql's ``-p…``).

How a known value is matched (docs/security.md, "Secrets never reach a log line"):

- a value of 8 characters or more is masked wherever it appears, even inside a longer word;
- a shorter value (1 to 7 characters) is masked only as a whole token, where it is not
  preceded or followed by a letter or digit: a password ``pass`` masks ``pass`` and
  ``user:pass@`` but leaves ``password`` and ``passing`` alone;
- a multi-line value (a PEM key) is registered whole and line by line, so it is masked
  when printed whole or one line at a time;
- the flag words ``0``, ``1``, ``true``, ``false``, ``yes``, ``no``, ``on``, ``off`` in a
  secret-named variable (``SMTP_AUTH=1``) are settings, not secrets, and are not registered;
  ``ctx.secret()`` registers anything.

Output read line by line (``ctx.run`` and the job's own stdout/stderr) goes through a
``LineStream``, which also masks a secret of 8 or more characters split across two lines
or cut at the line-length limit: see ``LineStream``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from structlog.typing import WrappedLogger

_EventDict = TypeVar("_EventDict", bound=MutableMapping[str, Any])

__all__ = ["MASK", "LineStream", "Redactor", "default_redactor", "mask_argv", "secret_env_name"]

MASK = "***"
_SECRET_NAME = re.compile(
    r"(PASS|PASSWD|PASSWORD|_PWD$|SECRET|TOKEN|APIKEY|API_KEY|ACCESS_KEY|PRIVATE|CREDENTIAL|AUTH|_KEY$|^KEY$|COOKIE|SESSION)",
    re.IGNORECASE,
)
# Well-known variables of a login session whose names look secret but whose values are ids,
# socket paths and words ("tty", "user"): masking them would only blank ordinary words.
_NOT_SECRET_NAME = re.compile(r"^(XDG_.*|DBUS_SESSION_BUS_ADDRESS|SSH_AUTH_SOCK|XAUTHORITY)$")
_FLAG_WORDS = frozenset(("0", "1", "true", "false", "yes", "no", "on", "off"))
_URL_NAME = re.compile(r"(URL|URLS|URI|DSN|WEBHOOK|ENDPOINT)$", re.IGNORECASE)
_URL_USERINFO = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<secret>[^@\s/]+)(?=@)")
_QUERY_SECRET = re.compile(
    r"(?P<head>[?&;](?:[a-z_]*(?:token|key|secret|password|passwd|pass|pwd|auth|signature|sig))=)(?P<secret>[^&\s#\"']+)",
    re.IGNORECASE,
)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_ANYWHERE = 8  # values this long are masked anywhere; shorter ones as whole tokens only
_EDGE = 4  # LineStream: the least part of a secret masked at a line's start or end
_LINES = re.compile(r"\r\n|\r|\n|\\n")  # real line breaks, and "\n" written out (JSON keys)
_OWN_KEYS = frozenset(("ts", "level", "job", "run_id", "host"))  # "event" is masked too: f-strings end up there
_ARGV_KEYS = frozenset(("argv",))


def secret_env_name(name: str) -> bool:
    """Whether an environment variable's name says its value is a secret."""
    return bool(_SECRET_NAME.search(name)) and not _NOT_SECRET_NAME.match(name)


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


def _pieces(value: str) -> Iterable[str]:
    """The strings to mask for one secret value: itself, stripped, and each of its lines."""
    yield value
    yield value.strip()
    if "\n" in value or "\r" in value or "\\n" in value:
        for line in _LINES.split(value):
            yield line.strip()


# --- command lines ----------------------------------------------------------------------------

_OPT_SECRET_WORDS = frozenset(
    (
        "pass",
        "passwd",
        "password",
        "passphrase",
        "pwd",
        "secret",
        "token",
        "apikey",
        "key",
        "auth",
        "credential",
        "credentials",
        "cookie",
    )
)
# The last word of an option that names *where* a secret is, not the secret (--password-file).
_OPT_NOT_VALUE = frozenset(("file", "stdin", "fd", "path", "env", "cmd", "command", "dir", "type", "method", "mode"))
# Programs whose short option carries a password: mysql's -pSECRET, redis-cli's -a SECRET.
_MYSQL = re.compile(r"^(mysql[a-z]*|mariadb(-[a-z]+)?)$")
_SHORT_SECRET = {"redis-cli": "-a", "sshpass": "-p"}
_ENV_ASSIGN = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", re.DOTALL)


def _secret_option(name: str) -> bool:
    """Whether a long/short option name (without dashes) says its value is a secret."""
    words = [w for w in re.split(r"[-_.]", name.lower()) if w]
    if not words or words[0] == "no" or words[-1] in _OPT_NOT_VALUE:
        return False
    return any(w in _OPT_SECRET_WORDS or "password" in w or "secret" in w or "token" in w for w in words)


def mask_argv(argv: Sequence[str]) -> list[str]:
    """A command line with the values of secret-named options masked.

    ``--password=X`` and ``--token X`` (any option whose name has a word like password,
    pass, secret, token, key, auth, credential; not ``--password-file``, ``--no-password``),
    ``DB_PASSWORD=X`` assignments (``env``, ``make``), mysql's ``-pX``, ``redis-cli -a X``
    and ``sshpass -p X``.
    """
    return _mask_argv(argv)[0]


def _mask_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """``mask_argv`` and the values it masked."""
    out = [str(a) for a in argv]
    found: list[str] = []
    prog = os.path.basename(out[0]) if out else ""
    short = "-p" if _MYSQL.match(prog) else _SHORT_SECRET.get(prog)
    i = 1 if out else 0
    while i < len(out):
        arg = out[i]
        if arg == "--":
            i += 1
            continue
        if arg.startswith("-") and len(arg) > 1:
            name, eq, _ = arg.lstrip("-").partition("=")
            if short and arg.startswith(short) and not arg.startswith("--"):
                if len(arg) > len(short):
                    found.append(arg[len(short) :])
                    out[i] = short + MASK
                elif not _MYSQL.match(prog) and i + 1 < len(out):
                    found.append(out[i + 1])
                    out[i + 1] = MASK  # redis-cli -a X, sshpass -p X (mysql's bare -p prompts)
                    i += 1
            elif _secret_option(name):
                if eq:
                    found.append(arg[arg.index("=") + 1 :])
                    out[i] = arg[: arg.index("=") + 1] + MASK
                elif i + 1 < len(out) and out[i + 1] != "--":
                    found.append(out[i + 1])
                    out[i + 1] = MASK
                    i += 1
        else:
            assign = _ENV_ASSIGN.match(arg)
            if assign and secret_env_name(assign["name"]) and assign["value"]:
                found.append(assign["value"])
                out[i] = f"{assign['name']}={MASK}"
        i += 1
    return out, found


# --- the redactor -----------------------------------------------------------------------------


class Redactor:
    """Replace secrets in strings and nested structures with ``***``.

    >>> r = Redactor(["hunter22"])
    >>> r.redact("login with hunter22 at mysql://wp:pw1234@db/x")
    'login with *** at mysql://wp:***@db/x'
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._edges: tuple[dict[str, list[tuple[str, int]]], dict[str, list[tuple[str, int]]]] | None = None
        self.add(*secrets)

    def add(self, *values: str) -> None:
        """Register secret values: 8 characters or more are masked anywhere, shorter ones as whole
        tokens; a multi-line value also line by line."""
        fresh: set[str] = set()
        for value in values:
            if isinstance(value, str):
                fresh.update(p for p in _pieces(value) if p.strip() and p.strip("*"))
        fresh -= self._secrets
        if not fresh:
            return
        self._secrets |= fresh
        ordered = sorted(self._secrets, key=len, reverse=True)
        long_ = [re.escape(s) for s in ordered if len(s) >= _ANYWHERE]
        short = [re.escape(s) for s in ordered if len(s) < _ANYWHERE]
        parts = long_ + ([r"(?<![^\W_])(?:" + "|".join(short) + r")(?![^\W_])"] if short else [])
        self._pattern = re.compile("|".join(parts))
        self._edges = None

    def add_env(self, env: Mapping[str, str]) -> None:
        """Register the secret-looking values of an environment."""
        found: list[str] = []
        for name, value in env.items():
            if not value:
                continue
            # Lists of URLs may be comma separated (JOBRUNNER_NOTIFY_URLS): split them first.
            urls = value.replace(",", " ")
            if secret_env_name(name):
                if value.strip().lower() not in _FLAG_WORDS:
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

    def registered(self) -> int:
        """How many strings are registered (whole values, stripped values and their lines)."""
        return len(self._secrets)

    def stream(self) -> LineStream:
        """A redactor for one output stream read line by line (see ``LineStream``)."""
        return LineStream(self)

    def _edge_index(self) -> tuple[dict[str, list[tuple[str, int]]], dict[str, list[tuple[str, int]]]]:
        """For long secrets: their proper prefixes by last 4 characters, proper suffixes by first 4."""
        if self._edges is None:
            ends: dict[str, list[tuple[str, int]]] = {}
            starts: dict[str, list[tuple[str, int]]] = {}
            for s in self._secrets:
                if len(s) < _ANYWHERE:
                    continue
                for k in range(_EDGE, len(s)):  # the prefix s[:k] may end a line
                    ends.setdefault(s[k - _EDGE : k], []).append((s, k))
                for j in range(1, len(s) - _EDGE + 1):  # the suffix s[j:] may start one
                    starts.setdefault(s[j : j + _EDGE], []).append((s, j))
            self._edges = (ends, starts)
        return self._edges

    def __call__(self, logger: WrappedLogger, method: str, event_dict: _EventDict) -> _EventDict:
        """A structlog processor (the schema's own keys are written by jobrunner, not redacted)."""
        for key, value in event_dict.items():
            if key in _OWN_KEYS:
                continue
            if isinstance(value, str):
                event_dict[key] = self.redact(value)
            elif value is not None and not isinstance(value, (bool, int, float)):
                if key in _ARGV_KEYS and isinstance(value, (list, tuple)) and all(isinstance(a, str) for a in value):
                    # A secret on a command line is masked there, and from now on in the
                    # command's output too (``echo --password=X`` prints X).
                    value, found = _mask_argv(value)
                    self.add(*found)
                event_dict[key] = self.redact_value(value)
        return event_dict


class LineStream:
    """Redacts one stream's lines in order, including secrets split across a line break.

    Besides ``Redactor.redact`` on each line, for every registered secret of 8 characters or
    more:

    - a line that *ends* with the first 4 or more of its characters (but not all) has that
      end masked, and the rest of the secret is remembered: if the next line starts with the
      rest (of any length), or lies wholly inside it, that part is masked too;
    - a line that *starts* with the last 4 or more of its characters has that start masked.

    So a secret broken across two lines (a wrapped line, a pipe's line-length cut) leaks at
    most 3 of its characters (when only 1 to 3 of them end a line, they cannot be told from
    ordinary text until the next line arrives, and a log line is never held back). Secrets
    under 8 characters are matched as whole tokens only, never split.
    """

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self.carry: list[str] = []  # the rests of secrets whose beginning ended the last line

    def __call__(self, line: str) -> str:
        text = self.redactor.redact(line)
        n = len(text)
        head, carry = 0, []
        for rest in self.carry:
            if text.startswith(rest):
                head = max(head, len(rest))
            elif text and rest.startswith(text):
                head = n
                carry.append(rest[n:])
        tail = 0
        if n >= _EDGE and self.redactor._secrets:
            ends, starts = self.redactor._edge_index()
            for secret, j in starts.get(text[:_EDGE], ()):
                if text.startswith(secret[j:]):
                    head = max(head, len(secret) - j)
            for secret, k in ends.get(text[-_EDGE:], ()):
                if text.endswith(secret[:k]):
                    tail = max(tail, k)
                    carry.append(secret[k:])
        self.carry = carry
        if not head and not tail:
            return text
        if head + tail >= n:
            return MASK
        return (MASK if head else "") + text[head : n - tail] + (MASK if tail else "")

    def reset(self) -> None:
        """Forget the last line (the stream was cut and resumes elsewhere)."""
        self.carry = []


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
