"""``jobrunner version`` (also ``-V``, ``--version``): print the version."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "configure", "main"]

HELP = "print the version"


def configure(parser: argparse.ArgumentParser) -> None:
    """``version`` takes no arguments."""


def main(args: argparse.Namespace) -> int:
    from jobrunner._version import __version__

    print(f"jobrunner {__version__}")
    return 0
