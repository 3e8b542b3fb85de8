"""Real files from Debian's packages, for tests of ``jobrunner import``: nobody here wrote them.

``debian`` (session fixture) fetches a package with ``apt-get download`` into a cache
(``/var/cache/jobrunner-tests/debs``, or ``$JOBRUNNER_DEB_CACHE``) and unpacks it with
``dpkg-deb -x``; ``debian.root("certbot")`` is the unpacked tree. When the download fails it
runs ``apt-get update`` once and tries again; a package apt still cannot fetch skips the
test with the reason (a failure in CI, where ``JOBRUNNER_REQUIRE_ALL=1``).

Also here: the crontab(5) examples of Debian's ``cron`` (from its man page) and Debian's own
cron-to-timer converter, ``systemd-crontab-generator`` of ``systemd-cron``, run on a file.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import re
import shutil
import subprocess
import types
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CRON_D", "NATIVE_TIMERS", "DebianPackages", "crontab5_examples", "debian", "systemd_cron_generator"]

CACHE = Path(os.environ.get("JOBRUNNER_DEB_CACHE", "/var/cache/jobrunner-tests/debs"))

# The cron.d files (and the timer units) of these packages are the inputs of the tests.
CRON_D = {
    "certbot": "etc/cron.d/certbot",
    "e2fsprogs": "etc/cron.d/e2scrub_all",
    "mdadm": "etc/cron.d/mdadm",
    "ntpsec": "etc/cron.d/ntpsec",
    "php-common": "etc/cron.d/php",
    "sysstat": "etc/cron.d/sysstat",
    "cron-apt": "etc/cron.d/cron-apt",
    "anacron": "etc/cron.d/anacron",
    "munin": "etc/cron.d/munin",
    "munin-node": "etc/cron.d/munin-node",
    "sa-exim": "etc/cron.d/greylistclean",
    "awstats": "etc/cron.d/awstats",
    "logcheck": "etc/cron.d/logcheck",
    "cacti": "etc/cron.d/cacti",
    "tiger": "etc/cron.d/tiger",
    "amavisd-new": "etc/cron.d/amavisd-new",
    "mailman3": "etc/cron.d/mailman3",
    "cron-daemon-common": "etc/crontab",
}
# Those that ship a native timer for the work of their cron.d file: the import skips the file.
NATIVE_TIMERS = {
    "anacron": ["anacron.timer"],
    "certbot": ["certbot.timer"],
    "e2fsprogs": ["e2scrub_all.timer"],
    "ntpsec": ["ntpsec-rotate-stats.timer"],
    "sysstat": ["sysstat-collect.timer", "sysstat-summary.timer"],
}


class DebianPackages:
    """Unpacked Debian packages, fetched on first use and cached across runs."""

    def __init__(self, cache: Path = CACHE) -> None:
        self.cache = cache
        self._updated = False
        self._failed: dict[str, str] = {}

    def _apt(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
        return subprocess.run(
            ["apt-get", "-q", *args],
            cwd=self.cache / "debs",
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )

    def _download(self, package: str) -> Path:
        debs = self.cache / "debs"
        before = set(debs.glob(f"{package}_*.deb"))
        proc = self._apt("download", package)
        if proc.returncode != 0 and not self._updated:
            self._updated = True
            self._apt("update")
            proc = self._apt("download", package)
        after = set(debs.glob(f"{package}_*.deb"))
        if proc.returncode != 0 or not after:
            why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
            raise RuntimeError(f"apt-get download {package} failed: {why}")
        new = sorted(after - before) or sorted(after, key=lambda p: p.stat().st_mtime)
        return new[-1]

    def root(self, package: str) -> Path:
        """The unpacked tree of ``package`` (skips the test when apt cannot fetch it)."""
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            pytest.skip("apt-get and dpkg-deb are needed to fetch Debian's packages")
        if package in self._failed:
            pytest.skip(self._failed[package])
        tree = self.cache / "x" / package
        if (tree / ".unpacked").is_file():
            return tree
        (self.cache / "debs").mkdir(parents=True, exist_ok=True)
        with open(self.cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (tree / ".unpacked").is_file():
                return tree
            try:
                deb = self._download(package)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                self._failed[package] = f"Debian package {package} unavailable: {exc}"
                pytest.skip(self._failed[package])
            shutil.rmtree(tree, ignore_errors=True)
            tree.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, capture_output=True, timeout=120)
            (tree / ".unpacked").write_text(deb.name + "\n")
        return tree

    def file(self, package: str, relative: str) -> Path:
        path = self.root(package) / relative
        assert path.is_file(), f"{package} has no {relative}"
        return path


@pytest.fixture(scope="session")
def debian() -> DebianPackages:
    """Debian's packages, unpacked on demand: ``debian.root("certbot")``."""
    return DebianPackages()


def crontab5_examples(packages: DebianPackages) -> tuple[str, str]:
    """From Debian's crontab(5) (package ``cron``): the EXAMPLE CRON FILE, and the line of
    its day-of-month/day-of-week note (``30 4 1,15 * 5``)."""
    page = gzip.decompress(packages.file("cron", "usr/share/man/man5/crontab.5.gz").read_bytes()).decode()
    block = page.split(".SH EXAMPLE CRON FILE", 1)[1].split(".nf", 1)[1].split(".fi", 1)[0]
    example = "\n".join(line.replace("\\e", "\\") for line in block.strip("\n").splitlines()) + "\n"
    note = re.search(r"^``([^`' ]+(?: [^`' ]+){4})''", page, re.M)
    assert note, "crontab(5) no longer has its day-of-month/day-of-week example"
    return example, note.group(1)


def systemd_cron_generator(packages: DebianPackages, crontab: Path, out: Path) -> dict[str, dict[str, list[str]]]:
    """Debian's ``systemd-crontab-generator`` (``systemd-cron``) on one system-format
    crontab: its own code, loaded from the package, parses the file and writes its units
    into ``out``; returns ``{timer name: {key: [values]}}`` of the ``[Timer]`` sections."""
    script = packages.file("systemd-cron", "lib/systemd/system-generators/systemd-crontab-generator")
    # Any: the generator's globals, set and called below, are not known to the type checker.
    module: Any = types.ModuleType("systemd_crontab_generator")
    module.__file__ = str(script)
    import warnings

    with warnings.catch_warnings():  # its "\\s" in a plain string literal, warned at compile time
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", SyntaxWarning)
        code = compile(script.read_text(), str(script), "exec")
    exec(code, module.__dict__)
    out.mkdir(parents=True, exist_ok=True)
    module.TARGET_DIR = str(out)
    module.TIMERS_DIR = str(out / "cron.target.wants")
    (out / "cron.target.wants").mkdir(exist_ok=True)
    module.REBOOT_FILE = str(out / "crond.reboot")
    module.log = lambda level, message: None  # it would write to /dev/kmsg when sys.argv has 4 items
    seq = module.count()
    for job in module.parse_crontab(str(crontab), withuser=True):
        if "c" in job:
            module.generate_timer_unit(job, seq=seq)
    timers: dict[str, dict[str, list[str]]] = {}
    for timer in sorted(out.glob("*.timer")):
        keys: dict[str, list[str]] = {}
        section = ""
        for line in timer.read_text().splitlines():
            if line.startswith("["):
                section = line.strip("[]")
            elif "=" in line and section in ("Timer", "Unit"):
                key, _, value = line.partition("=")
                keys.setdefault(key, []).append(value)
        timers[timer.name] = keys
    return timers
