"""``jobrunner exec NAME [options] -- COMMAND...``: wrap a command with the lock, logs,
deadline and exit codes of a job (the CLI splits the line at the first ``--``)."""

from __future__ import annotations

import argparse
from typing import Any

from jobrunner.cli.run import add_run_options, run_declared
from jobrunner.errors import ConfigError, UsageError

__all__ = ["HELP", "TAKES_COMMAND", "configure", "main"]

HELP = "wrap a command with the lock, logs, deadline and exit codes"
TAKES_COMMAND = True  # exec NAME [options] -- COMMAND...: the CLI splits at "--" into args.command


def configure(parser: argparse.ArgumentParser) -> None:
    parser.usage = "jobrunner exec NAME [options] -- COMMAND [ARG...]"
    parser.add_argument("name", help="the job name (logs, state, lock name)")
    parser.add_argument(
        "--lock",
        nargs="?",
        const=True,
        default=None,
        metavar="NAME|PATH",
        help="take a lock (default name: NAME; an absolute path locks that file)",
    )
    parser.add_argument("--lock-wait", metavar="SPAN", help="wait up to SPAN for the lock (implies --lock)")
    parser.add_argument("--shared", action="store_true", help="take the lock shared (flock -s)")
    parser.add_argument(
        "--redis",
        nargs="?",
        const=True,
        default=None,
        metavar="URL",
        help="take the lock as a lease in Redis, so one server of a fleet runs it "
        "(default URL: $JOBRUNNER_REDIS_URL; a URL with a password belongs there, not here)",
    )
    parser.add_argument(
        "--lease",
        metavar="URL",
        help="take the lock as a lease at URL (redis://host:6379/0, etcd://host:2379), so one server of a fleet runs it",
    )
    parser.add_argument("--lock-ttl", metavar="SPAN", help="the lease's TTL (default: Lock's, 60s)")
    parser.add_argument(
        "--lease-unavailable",
        "--redis-unavailable",
        dest="redis_unavailable",
        choices=("skip", "fail", "local"),
        help="the lease's store unreachable at start: skip the run (default, exit 75), fail it, or take the file lock",
    )
    parser.add_argument("--timeout", metavar="SPAN", help="kill the command's tree after SPAN (e.g. 2h)")
    parser.add_argument("--retry", type=int, default=1, metavar="N", help="try up to N times in all")
    parser.add_argument("--retry-delay", default="10s", metavar="SPAN")
    parser.add_argument("--cwd", metavar="DIR", help="run the command in DIR")
    add_run_options(parser)


def _exec_job(args: argparse.Namespace) -> Any:
    from jobrunner.declaration import Lock, Retry, job

    command = [*(getattr(args, "command", None) or [])]
    if not command:
        raise UsageError("exec needs a command after '--' (e.g. jobrunner exec backup -- /usr/local/bin/backup.sh)")
    if not command[0]:
        raise UsageError("exec: the command after '--' is an empty string")
    if not args.name.strip():
        raise UsageError("exec: NAME is empty (it names the job's logs, state and lock)")
    # An empty value must not quietly mean "no lock", "no Redis" or "here": each is refused.
    for flag, value in (
        ("--lock", args.lock),
        ("--lock-wait", args.lock_wait),
        ("--redis", args.redis),
        ("--lease", args.lease),
        ("--lock-ttl", args.lock_ttl),
        ("--timeout", args.timeout),
        ("--cwd", args.cwd),
        ("--retry-delay", args.retry_delay),
    ):
        if isinstance(value, str) and not value.strip():
            hint = f"; {flag} alone takes the default" if flag in ("--lock", "--redis") else ""
            raise UsageError(f"{flag}: empty value: give one or leave the flag out{hint}")
    if args.retry < 1:
        raise UsageError(f"--retry {args.retry}: the number of tries in all is 1 or more")
    lock: Any = None
    if args.lease and args.redis:
        raise UsageError("--lease and --redis: give one (--redis URL is --lease URL for Redis)")
    for flag, url in (("--redis", args.redis), ("--lease", args.lease)):
        if isinstance(url, str) and _has_password(url):
            where = (
                "put it in JOBRUNNER_ETCD_PASSWORD (and the user in JOBRUNNER_ETCD_USER) in an env file"
                if url.lower().startswith("etcd:")
                else "put it in JOBRUNNER_REDIS_URL in an env file and pass --redis alone"
            )
            raise UsageError(
                f"{flag}: a URL with a password on the command line is visible to every user (ps, systemctl status); {where}"
            )
    if args.lock or args.lock_wait or args.shared or args.redis or args.lease:
        name = args.lock if isinstance(args.lock, str) else None
        given = {"ttl": args.lock_ttl, "unavailable": args.redis_unavailable}  # else Lock's defaults
        lock = Lock(
            name=name,
            wait=args.lock_wait,
            shared=args.shared,
            redis=args.redis,
            url=args.lease,
            **{k: v for k, v in given.items() if v},
        )
    cwd = args.cwd

    def wrapped(ctx: Any) -> None:
        ctx.run(command, cwd=cwd)

    wrapped.__module__ = "jobrunner.exec"
    retry = Retry(attempts=args.retry, backoff="fixed", delay=args.retry_delay) if args.retry > 1 else None
    instances = True if args.instance is not None else False  # exec --instance: one script per instance
    return job(name=args.name, lock=lock, timeout=args.timeout, retry=retry, instances=instances)(wrapped)


def _has_password(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def main(args: argparse.Namespace) -> int:
    try:
        declared = _exec_job(args)
    except (ValueError, ConfigError) as exc:  # bad --timeout/--lock-wait values are flags
        raise UsageError(str(exc)) from None
    return run_declared(declared, args, passthrough_exit=True)
