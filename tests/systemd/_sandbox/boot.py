"""Booting and shutting down: the prerequisites (``cannot_run_reason``), the BASE directory with
its lock and state file, systemd-nspawn, waiting until the system runs, and the teardown."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import SandboxBase
from .common import CLEAN_ENV, NOISY_UNITS, PREFIX, TARGET, SandboxError
from .host import _alive, _kill, _pid_start_time, _wait_dead
from .mounts import _remove_base, _umount_tree, cleanup_stale, mount_overlay

if TYPE_CHECKING:
    from typing import Self  # Python >= 3.11; only the type checker imports it


def cannot_run_reason() -> str | None:
    """Why this machine cannot run the sandbox at all (None if it can)."""
    if not sys.platform.startswith("linux"):
        return "the systemd sandbox needs Linux"
    if os.geteuid() != 0:
        return "the systemd sandbox needs root (mount, overlayfs, systemd-nspawn)"
    if not shutil.which("systemd-nspawn"):
        return "systemd-nspawn not found: apt-get install systemd-container"
    if not shutil.which("nsenter"):
        return "nsenter not found: apt-get install util-linux"
    if not os.path.exists("/usr/lib/systemd/systemd") and not os.path.exists("/lib/systemd/systemd"):
        return "systemd is not installed: apt-get install systemd"
    try:
        fs = Path("/proc/filesystems").read_text()
    except OSError:
        fs = ""
    if "overlay" not in fs:
        subprocess.run(["modprobe", "overlay"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlayfs (modprobe overlay failed)"
    return None


class Lifecycle(SandboxBase):
    """Mixed into Sandbox (core.py), whose __init__ sets the attributes used here."""

    def __enter__(self) -> Self:
        self.boot()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    @property
    def booted(self) -> bool:
        return self.pid1 is not None and _alive(self.pid1, self._pid1_start)

    def boot(self, timeout: float = 60) -> Self:
        if self.base is not None:
            raise SandboxError("boot() called twice")
        reason = cannot_run_reason()
        if reason:
            raise SandboxError(reason)
        t0 = time.monotonic()
        os.makedirs(self.parent, exist_ok=True)
        cleanup_stale(self.parent)
        atexit.register(self.shutdown)
        try:
            self._setup_mounts()
            self._prepare_root()
            self._start_nspawn()
            self._wait_ready(t0 + timeout)
        except BaseException:
            tail = self.console_log()[-4000:]
            with contextlib.suppress(Exception):
                self.shutdown()
            if tail:
                sys.stderr.write(f"--- sandbox console (tail) ---\n{tail}\n")
            raise
        self.boot_seconds = time.monotonic() - t0
        return self

    def _setup_mounts(self) -> None:
        self.base = tempfile.mkdtemp(prefix=PREFIX, dir=self.parent)
        self._lock_fd = os.open(os.path.join(self.base, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._write_state()
        self.root = os.path.join(self.base, "root")
        mount_overlay(self.base, self.root)

    def _prepare_root(self) -> None:
        unit_dir = "/etc/systemd/system"
        self.write_file(
            f"{unit_dir}/{TARGET}",
            (
                "[Unit]\n"
                "Description=jobrunner test sandbox\n"
                "Requires=basic.target\n"
                "After=basic.target\n"
                "AllowIsolate=yes\n"
            ),
        )
        for unit in NOISY_UNITS:
            host = self.host_path(f"{unit_dir}/{unit}")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(host)
            os.symlink("/dev/null", host)
        # A marker telling code inside that it runs in the test sandbox.
        self.write_file("/etc/jobrunner-sandbox", "1\n")

    def _start_nspawn(self) -> None:
        assert self.base and self.root
        # nspawn refuses machine names that end (or start) with "-"; mkdtemp suffixes may.
        self.machine = self.machine or os.path.basename(self.base).replace("_", "-")[:64].strip("-")
        argv = [
            "systemd-nspawn",
            "-q",
            "-D",
            self.root,
            "-M",
            self.machine,
            "--register=no",
            "--link-journal=no",
            "--keep-unit",
            "--console=read-only",
        ]
        if self.private_network:
            argv.append("--private-network")
        argv += ["-b", f"systemd.unit={TARGET}"]
        console = os.path.join(self.base, "t", "console.log")
        self._console = open(console, "wb")
        env = {"PATH": CLEAN_ENV["PATH"], "LANG": "C.UTF-8", "SYSTEMD_COLORS": "0"}
        self._nspawn = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        self._nspawn_start = _pid_start_time(self._nspawn.pid)
        self._write_state()

    def _find_pid1(self) -> int | None:
        assert self._nspawn
        my_pidns = os.readlink("/proc/self/ns/pid")
        children: list[int] = []
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{self._nspawn.pid}/task"):
                with contextlib.suppress(OSError):
                    children += [
                        int(x) for x in Path(f"/proc/{self._nspawn.pid}/task/{task}/children").read_text().split()
                    ]
        for pid in children:
            try:
                if os.readlink(f"/proc/{pid}/ns/pid") == my_pidns:
                    continue
                if Path(f"/proc/{pid}/comm").read_text().strip() != "systemd":
                    continue
            except OSError:
                continue
            return pid
        return None

    def _wait_ready(self, deadline: float) -> None:
        assert self._nspawn
        while True:
            if self._nspawn.poll() is not None:
                raise SandboxError(
                    f"systemd-nspawn exited with {self._nspawn.returncode} during boot:\n" + self.console_log()[-3000:]
                )
            if self.pid1 is None:
                self.pid1 = self._find_pid1()
                if self.pid1:
                    self._pid1_start = _pid_start_time(self.pid1)
                    self._write_state()
            elif os.path.exists(f"/proc/{self.pid1}/root/run/systemd/private"):
                cp = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
                state = cp.stdout.strip()
                if state in ("running", "degraded"):
                    if state == "degraded":
                        failed = self.run(["systemctl", "--failed", "--no-legend", "--plain"], check=False)
                        sys.stderr.write(f"sandbox booted degraded; failed units:\n{failed.stdout}")
                    return
            if time.monotonic() > deadline:
                raise SandboxError("sandbox did not finish booting in time:\n" + self.console_log()[-3000:])
            time.sleep(0.1)

    def _write_state(self) -> None:
        if not self.base:
            return
        state = {
            "owner": os.getpid(),
            "nspawn": self._nspawn.pid if self._nspawn else None,
            "nspawn_start": self._nspawn_start,
            "pid1": self.pid1,
            "pid1_start": self._pid1_start,
        }
        tmp = os.path.join(self.base, "state.json.tmp")
        Path(tmp).write_text(json.dumps(state))
        os.replace(tmp, os.path.join(self.base, "state.json"))

    def console_log(self) -> str:
        if self.base:
            with contextlib.suppress(OSError):
                return Path(self.base, "t", "console.log").read_text(errors="replace")
        return self.console_tail

    def shutdown(self) -> None:
        """Power off, wait, kill if needed, unmount, remove BASE.  Idempotent; never leaves mounts."""
        with self._shutdown_lock:
            if self._closed:
                return
            self._closed = True
            errors: list[BaseException] = []
            try:
                self._stop_container()
            except BaseException as e:  # keep going: unmounting matters more
                errors.append(e)
            with contextlib.suppress(Exception):
                self.console_tail = self.console_log()[-20000:]
            if self._console:
                with contextlib.suppress(Exception):
                    self._console.close()
            if self.base:
                try:
                    _umount_tree(self.base)
                    _remove_base(self.base)
                except BaseException as e:
                    errors.append(e)
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None
            with contextlib.suppress(Exception):
                atexit.unregister(self.shutdown)
            self.pid1 = None
            if errors:
                raise errors[0]

    def _stop_container(self) -> None:
        nspawn = self._nspawn
        if nspawn is None or nspawn.poll() is not None:
            if self.pid1:
                _kill(self.pid1, self._pid1_start)
            return
        if self.booted:
            with contextlib.suppress(Exception):
                self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
            if _wait_dead(nspawn.pid, None, self.poweroff_timeout, nspawn):
                return
        # nspawn forwards SIGTERM as an orderly shutdown request; then the hammer.
        with contextlib.suppress(ProcessLookupError):
            nspawn.send_signal(signal.SIGTERM)
        if _wait_dead(nspawn.pid, None, 5, nspawn):
            return
        if self.pid1:
            _kill(self.pid1, self._pid1_start)  # PID 1 of a pid namespace: takes all of it along
        if _wait_dead(nspawn.pid, None, 5, nspawn):
            return
        with contextlib.suppress(ProcessLookupError):
            nspawn.kill()
        nspawn.wait(timeout=10)
