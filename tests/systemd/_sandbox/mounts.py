"""The overlay of the host's / and its teardown: mount, unmount (deepest first, lazily as a
last resort), remove BASE, and reap the sandboxes of crashed runs (``cleanup_stale``)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .common import DEFAULT_PARENT, PREFIX, SandboxError
from .host import _kill, _run_host, _wait_dead


def _unescape_mountinfo(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1 : i + 4].isdigit():
            out.append(chr(int(s[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _mount_points(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    points = []
    with open(mountinfo) as f:
        for line in f:
            points.append(_unescape_mountinfo(line.split()[4]))
    return points


def leftover_mounts(parent: str = DEFAULT_PARENT) -> list[str]:
    """Mount points (host view) under PARENT/jobrunner-sandbox-*."""
    pfx = os.path.join(parent, PREFIX)
    return [p for p in _mount_points() if p.startswith(pfx)]


def mounts_under(base: str) -> list[str]:
    """Mount points (host view) at or below BASE."""
    base = base.rstrip("/")
    return [p for p in _mount_points() if p == base or p.startswith(base + "/")]


def mount_overlay(base: str, root: str) -> None:
    """A tmpfs at BASE/t (the overlay's upper and work dirs, the console log), and at ROOT an
    overlayfs whose lower layer is the host's root filesystem (never written to)."""
    t = os.path.join(base, "t")
    os.mkdir(t)
    _run_host(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "jobrunner-sandbox", t])
    upper, work = os.path.join(t, "upper"), os.path.join(t, "work")
    for d in (upper, work):
        os.mkdir(d)
        os.chmod(d, 0o755)  # upper's root becomes the container's / : must be 0755 whatever the umask
    os.mkdir(root)
    _run_host(
        ["mount", "-t", "overlay", "jobrunner-sandbox", "-o", f"lowerdir=/,upperdir={upper},workdir={work}", root]
    )
    # Sanity: the overlay must show the host's root filesystem.
    if not os.path.exists(os.path.join(root, "usr/lib/os-release")) and not os.path.exists(
        os.path.join(root, "etc/os-release")
    ):
        raise SandboxError(f"overlay at {root} does not look like /")


def _umount_tree(base: str, timeout: float = 10) -> None:
    """Unmount everything at or below BASE, deepest first; lazy unmount as a last resort."""
    deadline = time.monotonic() + timeout
    while True:
        points = sorted(mounts_under(base), key=lambda p: p.count("/"), reverse=True)
        if not points:
            return
        for p in points:
            subprocess.run(["umount", p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        if not mounts_under(base):
            return
        if time.monotonic() > deadline:
            for p in sorted(mounts_under(base), key=lambda p: p.count("/"), reverse=True):
                subprocess.run(["umount", "-l", p], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
            if mounts_under(base):
                raise SandboxError(f"could not unmount {mounts_under(base)}")
            return
        time.sleep(0.2)


def _remove_base(base: str) -> None:
    """rm -rf BASE, but only once nothing below it is mounted any more."""
    if mounts_under(base):
        raise SandboxError(f"refusing to remove {base}: still mounted: {mounts_under(base)}")
    shutil.rmtree(base, ignore_errors=True)


def cleanup_stale(parent: str = DEFAULT_PARENT, grace: float = 120) -> list[str]:
    """Reap sandboxes whose owner died: their ``lock`` file is no longer flock'ed.

    Safe against concurrent sessions (other pytest runs on the same machine): a live owner
    holds the flock for the sandbox's whole life, and a directory younger than GRACE seconds
    without a state file is being created right now and is left alone.
    """
    reaped: list[str] = []
    try:
        names = os.listdir(parent)
    except FileNotFoundError:
        return reaped
    for name in sorted(names):
        if not name.startswith(PREFIX):
            continue
        base = os.path.join(parent, name)
        if not os.path.isdir(base) or os.path.islink(base):
            continue
        try:
            young = time.time() - os.stat(base).st_mtime < grace
        except FileNotFoundError:
            continue
        fd = None
        try:
            try:
                fd = os.open(os.path.join(base, "lock"), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            except FileNotFoundError:
                if young:
                    continue  # being created
            except OSError:
                continue
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live session owns it
            try:
                state = json.loads(Path(base, "state.json").read_text())
            except FileNotFoundError:
                if young:
                    continue
                state = {}
            except (OSError, ValueError):
                state = {}
            # Kill the container (PID 1 of its pid namespace takes everything with it) and nspawn.
            _kill(state.get("pid1"), state.get("pid1_start"))
            _kill(state.get("nspawn"), state.get("nspawn_start"), signal.SIGTERM)
            _wait_dead(state.get("nspawn") or 0, state.get("nspawn_start"), 5)
            _kill(state.get("nspawn"), state.get("nspawn_start"))
            _umount_tree(base)
            _remove_base(base)
            reaped.append(base)
        finally:
            if fd is not None:
                os.close(fd)
    return reaped
