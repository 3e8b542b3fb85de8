"""``jobrunner version`` (also ``-V``, ``--version``): print the version."""

from __future__ import annotations

import argparse

from jobrunner._version import __version__

__all__ = ["HELP", "configure", "main"]

HELP = "print the version"


def configure(parser: argparse.ArgumentParser) -> None:
    """``version`` takes no arguments."""


def main(args: argparse.Namespace) -> int:
    print(f"jobrunner {__version__}")
    return 0
