"""What a cron command does around itself, turned into the job's settings.

Recognised at the start of a command: ``flock`` (→ ``lock=``), ``timeout`` (→ ``timeout=``),
``nice`` and ``ionice`` (→ the unit's ``Nice=``, ``IOSchedulingClass=``,
``IOSchedulingPriority=``), in any order and nesting; at its end, ``>> FILE 2>&1`` (→
``log_file=``). Only around a *simple* command: in ``flock /x a && b`` the lock holds for
``a`` alone, and moving it to the job would change what it covers, so a command with ``;``,
``&&``, ``|``, a subshell or any other redirection keeps its wrappers as they are.

What is left is the original text from the first word the wrappers did not take, byte for
byte (``flock … -c 'CMD'`` leaves ``CMD`` as flock would give it to the shell).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from jobrunner.timespan import format_timespan
from jobrunner.unitgen.ownership import may_write

__all__ = ["Unwrapped", "Word", "lex", "unwrap"]

_BLANK = " \t"
_OPERATORS = ";&|()<>\n"
_GLOB = "*?["
_REDIRECT = re.compile(r"^(?P<head>.*?)[ \t]+>>[ \t]*(?P<file>[^ \t;&|<>()'\"`\\]+)[ \t]+2>&1[ \t]*$", re.S)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)([smhd]?)$")
_IO_CLASSES = {
    "0": None,
    "none": None,
    "1": "realtime",
    "realtime": "realtime",
    "2": "best-effort",
    "best-effort": "best-effort",
    "3": "idle",
    "idle": "idle",
}


@dataclass(frozen=True)
class Word:
    """A shell word: where it is in the text, and its value when it has no expansion."""

    start: int
    end: int
    value: str | None


def lex(text: str) -> tuple[list[Word], bool]:
    """The words of a POSIX shell command and whether it has an operator (``;``, ``&``,
    ``|``, ``(``, ``)``, ``<``, ``>``, a newline or a comment) anywhere. Raises
    ``ValueError`` for an unterminated quote or substitution."""
    words: list[Word] = []
    operator = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _BLANK:
            i += 1
            continue
        if c in _OPERATORS or c == "#":
            operator = True
            i += 1
            continue
        start, value, plain = i, [], True
        if c == "~":
            plain = False
        while i < n and text[i] not in _BLANK and text[i] not in _OPERATORS:
            c = text[i]
            if c == "'":
                end = text.find("'", i + 1)
                if end < 0:
                    raise ValueError("unterminated single quote")
                value.append(text[i + 1 : end])
                i = end + 1
            elif c == '"':
                i += 1
                while i < n and text[i] != '"':
                    if text[i] == "\\" and i + 1 < n and text[i + 1] in '$`"\\\n':
                        value.append(text[i + 1])
                        i += 2
                        continue
                    if text[i] in "$`":
                        plain = False
                    value.append(text[i])
                    i += 1
                if i >= n:
                    raise ValueError("unterminated double quote")
                i += 1
            elif c == "\\":
                if i + 1 < n:
                    value.append(text[i + 1])
                i += 2
            elif c == "$" and text.startswith("$(", i):
                i = _skip_parens(text, i + 1)
                plain = False
            elif c == "`":
                end = text.find("`", i + 1)
                if end < 0:
                    raise ValueError("unterminated backquote")
                i = end + 1
                plain = False
            else:
                if c == "$" or c in _GLOB:
                    plain = False
                value.append(c)
                i += 1
        words.append(Word(start, i, "".join(value) if plain else None))
    return words, operator


def _skip_parens(text: str, i: int) -> int:
    depth = 0
    quote = ""
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = ""
            elif c == "\\" and quote == '"':
                i += 1
        elif c in "'\"":
            quote = c
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise ValueError("unterminated $(")


@dataclass
class Unwrapped:
    """A command without the wrappers it had, and the settings they become."""

    command: str
    lock: dict[str, Any] | None = None
    timeout: str | None = None
    kill_grace: str | None = None
    log_file: str | None = None
    service: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    taken: list[str] = field(default_factory=list)


def _duration(text: str | None) -> float | None:
    match = _DURATION.match(text or "")
    if not match:
        return None
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _span(seconds: float) -> str:
    return format_timespan(seconds) if seconds == int(seconds) else f"{seconds:g}s"


def _values(words: list[Word]) -> list[str | None]:
    return [w.value for w in words]


def _flock(words: list[Word], text: str, out: Unwrapped) -> int | str | None:
    """Options of ``flock``; the index of the command's first word, the ``-c`` command, or None."""
    vals = _values(words)
    i, shared, nonblock, wait = 1, False, False, None
    while i < len(vals) and vals[i] and vals[i].startswith("-") and vals[i] != "-":  # type: ignore[union-attr]
        opt = vals[i] or ""
        if opt in ("-w", "--wait", "--timeout"):
            i += 1
            wait = vals[i] if i < len(vals) else None
        elif opt.startswith(("--wait=", "--timeout=")):
            wait = opt.split("=", 1)[1]
        elif re.match(r"^-w\d", opt):
            wait = opt[2:]
        elif opt in ("-E", "--conflict-exit-code"):
            i += 1
            out.notes.append("flock -E: a busy lock now ends the run with 75 (skipped), not that code")
        elif opt in ("-o", "--close", "-F", "--no-fork", "--verbose"):
            pass
        elif opt in ("--shared",):
            shared = True
        elif opt in ("--exclusive",):
            pass
        elif opt in ("--nb", "--nonblock"):
            nonblock = True
        elif re.match(r"^-[sxen]+$", opt):
            shared = shared or "s" in opt
            nonblock = nonblock or "n" in opt
        else:
            return None
        i += 1
    if i >= len(vals) or not vals[i] or not vals[i].startswith("/"):  # type: ignore[union-attr]
        return None  # a file descriptor, a relative path or an expansion: left as it is
    path = vals[i]
    seconds = None
    if wait is not None:
        seconds = _duration(wait if wait and wait[-1].isdigit() else None)
        if seconds is None:
            return None
    i += 1
    lock: dict[str, Any] = {"name": path}
    if shared:
        lock["shared"] = True
    if nonblock:
        how = "flock -n: a run that finds the lock held is skipped (exit 75)"
    elif seconds == 0:  # flock -w 0: one try, as -n (0.0 is false: tested apart from "no -w")
        how = f"flock -w {wait}: one try, as flock -n: a run that finds the lock held is skipped (exit 75)"
    elif seconds:
        lock["wait"] = _span(seconds)
        how = f"flock -w {wait}: waits up to {lock['wait']} for the lock, then skips the run (exit 75)"
    else:
        lock["wait"] = None  # filled in by unwrap(): the timeout, else 1h
        how = "flock without -n waited as long as it took"
    out.lock = lock
    out.taken.append("flock")
    out.notes.append(f"{how}; lock= takes the same file, so it still excludes other flock users of {path}")
    if i < len(vals) and vals[i] in ("-c", "--command"):
        if i + 2 != len(vals) or vals[i + 1] is None:
            return None
        return vals[i + 1]
    return i if i < len(vals) else None


def _timeout(words: list[Word], out: Unwrapped) -> int | None:
    vals = _values(words)
    i, kill = 1, None
    signal = None
    while i < len(vals) and vals[i] and vals[i].startswith("-"):  # type: ignore[union-attr]
        opt = vals[i] or ""
        if opt in ("-k", "--kill-after"):
            i += 1
            kill = vals[i] if i < len(vals) else None
        elif opt.startswith("--kill-after=") or re.match(r"^-k\d", opt):
            kill = opt.split("=", 1)[1] if "=" in opt else opt[2:]
        elif opt in ("-s", "--signal"):
            i += 1
            signal = vals[i] if i < len(vals) else None
        elif opt.startswith("--signal=") or re.match(r"^-s\w", opt):
            signal = opt.split("=", 1)[1] if "=" in opt else opt[2:]
        elif opt in ("--preserve-status", "--foreground", "-v", "--verbose"):
            pass
        else:
            return None
        i += 1
    seconds = _duration(vals[i] if i < len(vals) else None)
    if seconds is None or i + 1 >= len(vals):
        return None
    grace = _duration(kill) if kill is not None else None
    if kill is not None and grace is None:
        return None
    out.taken.append("timeout")
    if seconds:
        out.timeout = _span(seconds)
        text = f"timeout {vals[i]}: the job's deadline is {out.timeout} (the command's whole tree is killed, exit 124)"
        if signal and signal.upper().removeprefix("SIG") not in ("TERM", "15"):
            text += f"; it sends SIGTERM, not SIG{signal.upper().removeprefix('SIG')}"
        out.notes.append(text)
    else:
        out.notes.append("timeout 0 set no limit: the job has none either")
    if grace:
        out.kill_grace = _span(grace)
        out.notes.append(f"timeout -k {kill}: SIGKILL follows SIGTERM after kill_grace={out.kill_grace}")
    return i + 1


def _nice(words: list[Word], out: Unwrapped) -> int | None:
    vals = _values(words)
    i, step = 1, 10
    if i < len(vals) and vals[i]:
        opt = vals[i] or ""
        if opt in ("-n", "--adjustment"):
            step_text = vals[i + 1] if i + 1 < len(vals) else None
            i += 2
        elif opt.startswith("--adjustment="):
            step_text, i = opt.split("=", 1)[1], i + 1
        elif re.match(r"^-n[+-]?\d+$", opt):
            step_text, i = opt[2:], i + 1
        elif re.match(r"^-[+-]?\d+$", opt):
            step_text, i = opt[1:], i + 1
        elif opt.startswith("-"):
            return None
        else:
            step_text = "10"
        if step_text is None or not re.match(r"^[+-]?\d+$", step_text):
            return None
        step = int(step_text)
    if i >= len(vals):
        return None
    value = max(-20, min(19, step))
    out.service["Nice"] = value
    out.taken.append("nice")
    out.notes.append(f"nice: the unit runs at Nice={value}")
    return i


def _ionice(words: list[Word], out: Unwrapped) -> int | None:
    vals = _values(words)
    i, klass, level = 1, None, None
    given = False
    while i < len(vals) and vals[i] and vals[i].startswith("-"):  # type: ignore[union-attr]
        opt = vals[i] or ""
        if opt in ("-c", "--class"):
            i += 1
            klass, given = (vals[i] if i < len(vals) else None), True
        elif re.match(r"^-c\d$", opt) or opt.startswith("--class="):
            klass, given = (opt[2:] if opt.startswith("-c") else opt.split("=", 1)[1]), True
        elif opt in ("-n", "--classdata"):
            i += 1
            level, given = (vals[i] if i < len(vals) else None), True
        elif re.match(r"^-n\d$", opt) or opt.startswith("--classdata="):
            level, given = (opt[2:] if opt.startswith("-n") else opt.split("=", 1)[1]), True
        elif opt in ("-t", "--ignore"):
            pass
        else:
            return None
        i += 1
    if not given or i >= len(vals) or (klass is not None and klass.lower() not in _IO_CLASSES):
        return None
    if level is not None and not (level.isdigit() and 0 <= int(level) <= 7):
        return None
    name = _IO_CLASSES[klass.lower()] if klass is not None else "best-effort"
    if name:
        out.service["IOSchedulingClass"] = name
    if level is not None and name in ("realtime", "best-effort"):
        out.service["IOSchedulingPriority"] = int(level)
    out.taken.append("ionice")
    settings = ", ".join(f"{k}={v}" for k, v in out.service.items() if k.startswith("IO")) or "the default I/O class"
    out.notes.append(f"ionice: the unit runs with {settings}")
    return i


_WRAPPERS = {"flock": _flock, "timeout": _timeout, "nice": _nice, "ionice": _ionice}


def unwrap(command: str, *, home: str | None = None, user: str = "root") -> Unwrapped:
    """Take the recognised wrappers off ``command`` (a shell command, ``%`` already split).

    ``>> FILE 2>&1`` becomes ``log_file`` only where ``user`` (the line's) can already write
    FILE (``ownership.may_write``): the rendered units make the log file and give it to the
    job's user, so a redirection to a file that is not theirs (``>> /etc/shadow`` in
    www-data's crontab) stays in the command, where it runs with that user's rights as it did
    under cron, and a note says so.
    """
    result = Unwrapped(command)
    head = command
    log_file = None
    match = _REDIRECT.match(command)
    if match:
        target = match.group("file")
        if home:
            target = re.sub(r"^(\$HOME|\$\{HOME\})(?=/)", lambda _: home, target)
        if target.startswith("/") and not any(c in target for c in "$*?[~"):
            if may_write(target, user):
                head, log_file = match.group("head"), target
            else:
                result.notes.append(
                    f">> {target} 2>&1 stays in the command: {user} cannot write {target} today, and jobrunner "
                    f"never makes a file for a job's user or gives one to it ({target} is not taken as log_file)"
                )
    try:
        words, operator = lex(head)
    except ValueError:
        return result
    if operator or not words:
        return result
    text = head
    while words and words[0].value is not None:
        program = (
            words[0].value.rsplit("/", 1)[-1] if words[0].value.startswith(("/usr/bin/", "/bin/")) else words[0].value
        )
        parse = _WRAPPERS.get(program)
        if parse is None or program in result.taken:
            break
        trial = Unwrapped(
            text,
            lock=result.lock,
            timeout=result.timeout,
            kill_grace=result.kill_grace,
            service=dict(result.service),
            notes=list(result.notes),
            taken=list(result.taken),
        )
        found = parse(words, text, trial) if program == "flock" else parse(words, trial)  # type: ignore[operator]
        if found is None:
            break
        result = trial
        if isinstance(found, str):  # flock -c CMD
            text = found
            try:
                words, operator = lex(text)
            except ValueError:
                words, operator = [], True
            if operator:
                break
            continue
        text = text[words[found].start :]
        words, _ = lex(text)
    result.command = text
    if log_file:
        result.log_file = log_file
        result.notes.append(
            f">> {match.group('file')} 2>&1: log_file={log_file!r} receives the run's JSON lines, the command's "  # type: ignore[union-attr]
            "output among them (proc.output), which the journal has too"
        )
    if result.lock is not None and "wait" in result.lock and result.lock["wait"] is None:
        result.lock["wait"] = result.timeout or "1h"
        result.notes[result.notes.index(next(n for n in result.notes if n.startswith("flock without -n")))] = (
            f"flock without -n waited as long as it took: lock= waits up to {result.lock['wait']}, then skips the "
            f"run (exit 75); it takes the same file, so it still excludes other flock users of {result.lock['name']}"
        )
    return result
