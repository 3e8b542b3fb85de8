"""``jobrunner notify test [--tag T]`` and ``jobrunner notify check``.

``test`` sends a test message through the configured URLs (those matching ``--tag``, plus
the ``always`` ones): exit 0 when every matched service accepted it, 1 when not, 78 when the
configuration is wrong or empty. ``check`` only loads and validates the configuration and
lists the URLs with their credentials masked: exit 0 or 78.
"""

from __future__ import annotations

import argparse
import os
import sys

from jobrunner.errors import EXIT_FAILURE, EXIT_OK, ConfigError
from jobrunner.notify import deliver
from jobrunner.notify.config import config_path, env_urls, load
from jobrunner.notify.message import test_message

__all__ = ["HELP", "configure", "main"]

HELP = "notification tools: notify test [--tag T]"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("test", "check"), help="test: send a test message; check: validate only")
    parser.add_argument("--tag", action="append", default=[], help="only URLs with this Apprise tag (repeatable)")


def main(args: argparse.Namespace) -> int:
    if not env_urls() and config_path() is None:
        raise ConfigError(
            "no notification URL configured: set JOBRUNNER_NOTIFY_URLS or JOBRUNNER_NOTIFY_CONFIG, "
            "or write /etc/jobrunner/apprise.yml"
        )
    notifier = load()
    services = list(notifier.find(args.tag)) if args.tag else list(notifier)
    for service in services:
        tags = ",".join(sorted(str(t) for t in service.tags)) or "-"
        shown = service.url(privacy=True)  # type: ignore[no-untyped-call]  # apprise's URLBase.url is unannotated
        print(f"{tags:<12} {shown}")
    if args.action == "check":
        return EXIT_OK
    if not services:
        raise ConfigError(f"no notification URL has the tag(s) {', '.join(args.tag)}")

    title, body = test_message(os.uname().nodename)
    delivery = deliver(title, body, tags=tuple(args.tag), kind="test")
    if delivery.delivered:
        print(f"delivered to {delivery.matched} service(s) in {delivery.seconds:.2f}s")
        return EXIT_OK
    print(f"jobrunner: not delivered: {delivery.detail}", file=sys.stderr)
    return EXIT_FAILURE
