"""A throwaway, real systemd for tests: systemd-nspawn over an overlay of the host's /.

How it works (see README.md in this directory):

* ``BASE = /var/tmp/jobrunner-sandbox-XXXXXX`` (on disk) holds a ``lock`` file (flock'ed
  for as long as the owning process lives) and a ``state.json`` (pids, for crash recovery).
* A tmpfs is mounted at ``BASE/t``; it holds the overlay's ``upper``/``work`` dirs and the
  container console log.  An overlayfs with ``lowerdir=/`` is mounted at ``BASE/root`` (= R).
  overlayfs never crosses submounts, so the lower layer is only the host's root *filesystem*
  (no /proc, no /dev, ...); the lower layer is never written: every write lands in the tmpfs.
* ``systemd-nspawn -b`` boots the host's own systemd on R into a small target of ours.
  Commands reach it through ``nsenter -t <container PID 1> -a``.
* ``shutdown()`` powers off, waits, kills if needed, unmounts (lazily as a last resort) and
  removes BASE.  A later ``boot()`` reaps leftovers of crashed runs (unlocked BASE dirs).

Only the standard library is used, so this module runs under any Python >= 3.9.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import posixpath
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

__all__ = [
    "Sandbox",
    "SandboxError",
    "SandboxCommandError",
    "InstallResult",
    "cannot_run_reason",
    "leftover_mounts",
    "mounts_under",
    "cleanup_stale",
]

DEFAULT_PARENT = os.environ.get("JOBRUNNER_SANDBOX_PARENT", "/var/tmp")
PREFIX = "jobrunner-sandbox-"
TARGET = "jobrunner-sandbox.target"
DEFAULT_CACHE = os.environ.get("JOBRUNNER_TEST_CACHE", "/var/cache/jobrunner-tests")
HOST_PYTHON = "/usr/bin/python3"  # Debian's interpreter: the one the sandbox venv is built on

# The environment every command inside the sandbox gets (and nothing else).
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "SYSTEMD_LESS": "",
}

# Timers of the host's packages that basic.target would start; masked inside so that nothing
# but the tests' own units ever runs.
NOISY_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "logrotate.timer",
    "man-db.timer",
    "systemd-tmpfiles-clean.timer",
    "exim4-base.timer",
    "phpsessionclean.timer",
    "certbot.timer",
    "anacron.timer",
)


class SandboxError(RuntimeError):
    pass


class SandboxCommandError(subprocess.CalledProcessError):
    """CalledProcessError whose str() shows what the command printed."""

    def __str__(self) -> str:  # pragma: no cover - formatting only
        def tail(s: Any) -> str:
            if s is None:
                return ""
            if isinstance(s, bytes):
                s = s.decode("utf-8", "replace")
            return s[-3000:]

        return (
            f"command {shlex.join(map(str, self.cmd))} exited {self.returncode}\n"
            f"--- stdout ---\n{tail(self.stdout)}\n--- stderr ---\n{tail(self.stderr)}"
        )


@dataclass
class InstallResult:
    venv: str
    python: str
    wheel: str
    version: str
    wheelhouse: str  # inside the sandbox
    freeze: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------- host helpers


def _run_host(argv: Sequence[str], *, check: bool = True, timeout: float = 60,
              env: Mapping[str, str] | None = None, cwd: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
    )
    return _finish(proc, argv, check=check, timeout=timeout)


def _finish(proc: subprocess.Popen, argv: Sequence[str], *, check: bool, timeout: float,
            input: str | bytes | None = None) -> subprocess.CompletedProcess:
    """Wait for PROC (its whole process group is killed on timeout); raise on failure if CHECK."""
    try:
        out, err = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid)
        out, err = proc.communicate()
        raise SandboxCommandError(-9, list(argv), out, (err or "") + f"\n[timed out after {timeout}s]")
    cp = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise SandboxCommandError(proc.returncode, list(argv), out, err)
    return cp


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _pid_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), to guard against pid reuse."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(data.rsplit(")", 1)[1].split()[19])


def _alive(pid: int | None, start_time: int | None = None) -> bool:
    if not pid:
        return False
    st = _pid_start_time(pid)
    if st is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    if state in ("Z", "X"):
        return False
    return start_time is None or st == start_time


def _wait_dead(pid: int, start_time: int | None, timeout: float, popen: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None:
            if popen.poll() is not None:
                return True
        elif not _alive(pid, start_time):
            return True
        time.sleep(0.1)
    if popen is not None:
        return popen.poll() is not None
    return not _alive(pid, start_time)


def _kill(pid: int | None, start_time: int | None, sig: int = signal.SIGKILL) -> None:
    if pid and _alive(pid, start_time):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _unescape_mountinfo(s: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 4 <= len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
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


def _makedirs(path: str, mode: int = 0o755) -> None:
    """os.makedirs, but new directories get MODE whatever the caller's umask (CI may run 077)."""
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        os.mkdir(d)
        os.chmod(d, mode)


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
    reaped = []
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


# --------------------------------------------------------------------------- the sandbox


class Sandbox:
    """One booted throwaway systemd.  Use as a context manager or call boot()/shutdown()."""

    def __init__(self, parent: str = DEFAULT_PARENT, *, machine: str | None = None,
                 private_network: bool = False, cache_dir: str = DEFAULT_CACHE,
                 poweroff_timeout: float = 30) -> None:
        self.parent = parent
        self.machine = machine
        self.private_network = private_network
        self.cache_dir = cache_dir
        self.poweroff_timeout = poweroff_timeout
        self.base: str | None = None
        self.root: str | None = None  # R: the overlay mount point (host path)
        self.pid1: int | None = None  # the container's PID 1, as seen from the host
        self.boot_seconds: float | None = None
        self.console_tail: str = ""
        self.installed: InstallResult | None = None
        self._pid1_start: int | None = None
        self._nspawn: subprocess.Popen | None = None
        self._nspawn_start: int | None = None
        self._lock_fd: int | None = None
        self._console: Any = None
        self._counter = 0
        self._closed = False
        self._shutdown_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> "Sandbox":
        self.boot()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    @property
    def booted(self) -> bool:
        return self.pid1 is not None and _alive(self.pid1, self._pid1_start)

    def boot(self, timeout: float = 60) -> "Sandbox":
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
        t = os.path.join(self.base, "t")
        os.mkdir(t)
        _run_host(["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "jobrunner-sandbox", t])
        upper, work = os.path.join(t, "upper"), os.path.join(t, "work")
        for d in (upper, work):
            os.mkdir(d)
            os.chmod(d, 0o755)  # upper's root becomes the container's / : must be 0755 whatever the umask
        self.root = os.path.join(self.base, "root")
        os.mkdir(self.root)
        _run_host(["mount", "-t", "overlay", "jobrunner-sandbox",
                   "-o", f"lowerdir=/,upperdir={upper},workdir={work}", self.root])
        # Sanity: the overlay must show the host's root filesystem.
        if not os.path.exists(os.path.join(self.root, "usr/lib/os-release")) and \
                not os.path.exists(os.path.join(self.root, "etc/os-release")):
            raise SandboxError(f"overlay at {self.root} does not look like /")

    def _prepare_root(self) -> None:
        unit_dir = "/etc/systemd/system"
        self.write_file(f"{unit_dir}/{TARGET}", (
            "[Unit]\n"
            "Description=jobrunner test sandbox\n"
            "Requires=basic.target\n"
            "After=basic.target\n"
            "AllowIsolate=yes\n"
        ))
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
            "systemd-nspawn", "-q", "-D", self.root, "-M", self.machine,
            "--register=no", "--link-journal=no", "--keep-unit", "--console=read-only",
        ]
        if self.private_network:
            argv.append("--private-network")
        argv += ["-b", f"systemd.unit={TARGET}"]
        console = os.path.join(self.base, "t", "console.log")
        self._console = open(console, "wb")
        env = {"PATH": CLEAN_ENV["PATH"], "LANG": "C.UTF-8", "SYSTEMD_COLORS": "0"}
        self._nspawn = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self._console, stderr=subprocess.STDOUT,
            env=env, start_new_session=True, close_fds=True,
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
                    children += [int(x) for x in Path(f"/proc/{self._nspawn.pid}/task/{task}/children").read_text().split()]
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
                raise SandboxError(f"systemd-nspawn exited with {self._nspawn.returncode} during boot:\n"
                                   + self.console_log()[-3000:])
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

    # ------------------------------------------------------------------ commands inside

    def _nsenter(self) -> list[str]:
        if not self.booted:
            raise SandboxError("sandbox is not running")
        return ["nsenter", "-t", str(self.pid1), "-a"]

    def run(self, argv: Sequence[str] | str, check: bool = True, timeout: float = 60, *,
            input: str | bytes | None = None, env: Mapping[str, str] | None = None,
            text: bool = True) -> subprocess.CompletedProcess:
        """Run ARGV inside the sandbox (all its namespaces, root /) with a clean environment.

        A str is run with ``sh -c``.  On timeout the whole process group is killed (the
        processes inside share nsenter's process group) and SandboxCommandError is raised.
        """
        if isinstance(argv, str):
            argv = ["sh", "-c", argv]
        full_env = dict(CLEAN_ENV)
        if env:
            full_env.update(env)
        cmd = self._nsenter() + [str(a) for a in argv]
        if input is not None and text and isinstance(input, bytes):
            input = input.decode()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text, env=full_env,
            start_new_session=True, umask=0o022, cwd="/",
        )
        return _finish(proc, argv, check=check, timeout=timeout, input=input)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run(["systemctl", "--no-pager", *args], check=check, timeout=timeout)

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p P1 -p P2 UNIT`` as a dict (all properties when none given)."""
        args = ["show", unit]
        for p in props:
            args += ["-p", p]
        out = self.systemctl(*args).stdout
        result: dict[str, str] = {}
        for line in out.splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                result[k] = v
        return result

    def journal_json(self, unit: str | None = None, invocation: str | None = None,
                     extra_args: Iterable[str] = (), *, sync: bool = True) -> list[dict]:
        """``journalctl -o json`` records, oldest first.

        ``invocation`` matches the service's own output (_SYSTEMD_INVOCATION_ID=) and PID 1's
        messages about that run (INVOCATION_ID=); with both ``unit`` and ``invocation`` the
        result is further filtered to records of that unit.  Binary MESSAGE fields (arrays of
        bytes) are decoded to str.
        """
        if sync:
            self.run(["journalctl", "--sync"], check=False, timeout=30)
        args = ["journalctl", "-o", "json", "--all", "--no-pager"]
        if invocation:
            args += [f"_SYSTEMD_INVOCATION_ID={invocation}", "+", f"INVOCATION_ID={invocation}"]
        elif unit:
            args += ["-u", unit]
        args += list(extra_args)
        cp = self.run(args, check=False, timeout=60)
        if cp.returncode != 0 and not cp.stdout:
            raise SandboxCommandError(cp.returncode, args, cp.stdout, cp.stderr)
        records = []
        for line in cp.stdout.splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            for k, v in list(rec.items()):
                if isinstance(v, list) and all(isinstance(x, int) for x in v):
                    rec[k] = bytes(v).decode("utf-8", "replace")
            records.append(rec)
        if invocation and unit:
            records = [r for r in records if unit in (r.get("_SYSTEMD_UNIT"), r.get("UNIT"))]
        return records

    def job_events(self, invocation: str, unit: str | None = None) -> list[dict]:
        """The jobrunner JSON lines one run of a unit wrote to journald, oldest first, each with
        journald's PRIORITY= kept as ``_PRIORITY``."""
        events = []
        for rec in self.journal_json(unit=unit, invocation=invocation):
            message = rec.get("MESSAGE", "")
            if rec.get("_SYSTEMD_INVOCATION_ID") == invocation and isinstance(message, str) \
                    and message.startswith("{"):
                event = json.loads(message)
                event["_PRIORITY"] = rec.get("PRIORITY")
                events.append(event)
        return events

    def start_oneshot(self, unit: str, timeout: float = 120) -> dict[str, str]:
        """``systemctl start UNIT`` (which waits for a oneshot to finish, pass or fail), then
        its final state as wait_unit_inactive() gives it: Result, ExecMainStatus, InvocationID…
        Pin the unit first (see pin()), or a successful run leaves no state to read."""
        self.systemctl("start", unit, check=False, timeout=timeout)
        return self.wait_unit_inactive(unit, timeout=timeout)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.2,
                 message: str | Callable[[], str] | None = None) -> Any:
        """Poll PREDICATE until it returns something truthy; return that.  TimeoutError otherwise
        (MESSAGE, or what it returns when callable, is the error text)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = predicate()
            if last:
                return last
            if time.monotonic() > deadline:
                if callable(message):
                    message = message()
                raise TimeoutError(message or f"condition not met within {timeout}s (last value: {last!r})")
            time.sleep(interval)

    def wait_unit_inactive(self, unit: str, timeout: float = 30,
                           states: Sequence[str] = ("inactive", "failed")) -> dict[str, str]:
        """Wait until UNIT has no queued job and its ActiveState is in STATES; return its state.

        Meant for Type=oneshot services started with ``systemctl start --no-block`` or by a
        timer.  A unit that was never started is returned at once (it is inactive), and so
        is one systemd already garbage-collected: pin() units whose result you want to read.
        """
        props = ("ActiveState", "SubState", "Result", "InvocationID", "ExecMainStatus",
                 "ExecMainCode", "ExecMainPID", "ExecMainStartTimestampMonotonic",
                 "ExecMainExitTimestampMonotonic", "NRestarts")

        def done() -> dict[str, str] | None:
            st = self.show(unit, *props)
            jobs = self.systemctl("list-jobs", "--no-legend", "--plain", check=False).stdout.split()
            if st.get("ActiveState") in states and unit not in jobs:
                return st
            return None

        return self.wait_for(done, timeout, message=lambda: f"{unit} did not finish within {timeout}s: "
                                                           f"{self.show(unit, *props)}")

    def unit_name(self, prefix: str = "jr-test") -> str:
        """A fresh unit-name stem, unique in this sandbox (tests share one booted system)."""
        self._counter += 1
        return f"{prefix}-{os.getpid()}-{self._counter}"

    def write_unit(self, name: str, text: str, reload: bool = True, pin: bool = True) -> None:
        """Write /etc/systemd/system/NAME; pin it (see pin()) unless it is a template; daemon-reload."""
        self.write_file(f"/etc/systemd/system/{name}", text)
        if pin and "@." not in name:
            self.pin(name, reload=False)
        if reload:
            self.daemon_reload()

    def pin(self, unit: str, reload: bool = True) -> None:
        """Keep UNIT loaded after it finished, so that ``show`` reports its last run.

        systemd garbage-collects an unreferenced unit as soon as it is inactive *and not
        failed*: a successful oneshot started by hand then shows Result=success,
        InvocationID= and ExecMainExitTimestamp= empty - the defaults of a freshly loaded
        unit, indistinguishable from "never ran".  (A service triggered by a loaded timer is
        referenced by it and kept.)  Pinning makes our target Want= the unit, which is a
        reference; daemon-reload does not start newly wanted units.
        """
        if "@" in unit:
            prefix, rest = unit.split("@", 1)
            target = f"/etc/systemd/system/{prefix}@{rest[rest.rindex('.'):]}"
            if not self.exists(target):
                target = f"/usr/lib/systemd/system/{prefix}@{rest[rest.rindex('.'):]}"
        else:
            target = f"/etc/systemd/system/{unit}"
            if not self.exists(target):
                target = f"/usr/lib/systemd/system/{unit}"
        link = self.host_path(f"/etc/systemd/system/{TARGET}.wants/{unit}")
        _makedirs(os.path.dirname(link))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(target, link)
        if reload:
            self.daemon_reload()

    # ------------------------------------------------------------------ files

    def _inside_mounts(self) -> list[str]:
        if not self.booted:
            return ["/"]
        return _mount_points(f"/proc/{self.pid1}/mountinfo")

    def resolve(self, path: str) -> str:
        """PATH with symlinks resolved as the container sees them (absolute links stay in R)."""
        assert self.root
        if not path.startswith("/"):
            raise ValueError(f"absolute path required: {path!r}")
        todo = [p for p in path.split("/") if p]
        cur = "/"
        hops = 0
        while todo:
            comp = todo.pop(0)
            if comp == ".":
                continue
            if comp == "..":
                cur = posixpath.dirname(cur) or "/"
                continue
            cand = posixpath.join(cur, comp)
            host = self.root + cand
            if os.path.islink(host):
                hops += 1
                if hops > 40:
                    raise SandboxError(f"too many symlinks resolving {path}")
                target = os.readlink(host)
                if target.startswith("/"):
                    cur = "/"
                todo = [p for p in target.split("/") if p] + todo
                continue
            cur = cand
        return cur

    def _on_overlay(self, resolved: str) -> bool:
        """True when RESOLVED (container path) lives on the overlay root, not on a mount of nspawn's."""
        best = "/"
        for mp in self._inside_mounts():
            if (resolved == mp or resolved.startswith(mp.rstrip("/") + "/")) and len(mp) > len(best):
                best = mp
        return best == "/"

    def host_path(self, path: str) -> str:
        """The host path of container path PATH (must be on the overlay root)."""
        resolved = self.resolve(path)
        if not self._on_overlay(resolved):
            raise SandboxError(f"{path} is on a mount private to the container; use run()")
        return self.root + resolved  # type: ignore[operator]

    def write_file(self, path: str, text: str | bytes, mode: int = 0o644) -> None:
        """Create/replace PATH inside the sandbox (parents created).  Paths on the overlay are
        written into R directly; paths on the container's own mounts (/tmp, /run, /dev/shm …)
        are written through nsenter."""
        data = text.encode() if isinstance(text, str) else text
        resolved = self.resolve(path)
        if self._on_overlay(resolved):
            host = self.root + resolved  # type: ignore[operator]
            _makedirs(os.path.dirname(host))
            tmp = f"{host}.jrtmp{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
            try:
                os.write(fd, data)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.replace(tmp, host)
        else:
            self.run(["sh", "-c", 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1" && chmod "$2" "$1"',
                      "sh", resolved, format(mode, "o")], input=data, text=False)

    def read_file(self, path: str) -> str:
        resolved = self.resolve(path)
        if self._on_overlay(resolved):
            return Path(self.root + resolved).read_text()  # type: ignore[operator]
        return self.run(["cat", "--", resolved]).stdout

    def exists(self, path: str) -> bool:
        resolved = self.resolve(path)
        if self._on_overlay(resolved):
            return os.path.lexists(self.root + resolved)  # type: ignore[operator]
        return self.run(["test", "-e", resolved], check=False).returncode == 0

    # ------------------------------------------------------------------ installing the project

    def install_project(self, checkout_dir: str | os.PathLike, venv: str = "/opt/jobrunner",
                        extras: Sequence[str] = (), link_bin: str | None = "/usr/local/bin/jobrunner",
                        with_pip: bool = True, timeout: float = 600) -> InstallResult:
        """Install the checkout as a user would: a venv on Debian's python3, the project as a
        normal (non-editable) wheel, byte-compiled at install time (read-only /opt later).

        Host side: wheels of the dependencies (cached, see _dependency_wheelhouse) and of the
        project (built fresh from a scratch copy of CHECKOUT_DIR) are copied into the overlay
        at /var/cache/jobrunner-wheelhouse; inside, pip installs from there with --no-index.
        Nothing inside refers to CHECKOUT_DIR afterwards.  Re-running replaces the venv."""
        t0 = time.monotonic()
        checkout = Path(checkout_dir).resolve()
        if not (checkout / "pyproject.toml").is_file():
            raise SandboxError(f"{checkout} has no pyproject.toml")
        deps = _dependency_wheelhouse(checkout, self.cache_dir, extras)
        project_wheel = _build_project_wheel(checkout, deps, self.cache_dir)
        try:
            wh_inside = "/var/cache/jobrunner-wheelhouse"
            host_wh = self.host_path(wh_inside)
            if os.path.exists(host_wh):
                shutil.rmtree(host_wh)
            _makedirs(host_wh)
            for whl in [*deps.glob("*.whl"), project_wheel]:
                shutil.copyfile(whl, os.path.join(host_wh, whl.name))
                os.chmod(os.path.join(host_wh, whl.name), 0o644)
        finally:
            shutil.rmtree(project_wheel.parent, ignore_errors=True)
        pip_env = {"PIP_CONFIG_FILE": "/dev/null", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                   "PIP_NO_CACHE_DIR": "1", "PIP_NO_INPUT": "1"}
        req = f"{wh_inside}/{project_wheel.name}"
        if extras:
            req = f"jobrunner[{','.join(extras)}] @ file://{req}"
        install = ["install", "--no-index", "--find-links", wh_inside, "--only-binary", ":all:"]
        # `python3 -m venv` runs ensurepip, which on Debian installs pip from
        # /usr/share/python-wheels.  Doing that in the same pip run as the project is the same
        # result (a venv with pip) in ~2.5 s less: run pip straight from its wheel.
        pip_whl = self.run("ls /usr/share/python-wheels/pip-*.whl 2>/dev/null | tail -n1", check=False).stdout.strip()
        if with_pip and pip_whl:
            self.run([HOST_PYTHON, "-m", "venv", "--clear", "--without-pip", venv], timeout=timeout)
            self.run([f"{venv}/bin/python", f"{pip_whl}/pip", *install, pip_whl, req], env=pip_env, timeout=timeout)
        else:
            self.run([HOST_PYTHON, "-m", "venv", "--clear", *([] if with_pip else ["--without-pip"]), venv],
                     timeout=timeout)
            pip = [f"{venv}/bin/python", "-m", "pip"] if with_pip else [f"{venv}/bin/python", f"{pip_whl}/pip"]
            self.run([*pip, *install, req], env=pip_env, timeout=timeout)
        if link_bin:
            self.run(["ln", "-sfn", f"{venv}/bin/jobrunner", link_bin])
        freeze = self.run(
            [f"{venv}/bin/python", *(["-m", "pip"] if with_pip else [f"{pip_whl}/pip"]), "freeze", "--all"],
            env=pip_env).stdout.splitlines()
        version = project_wheel.name.split("-")[1]
        self.installed = InstallResult(venv=venv, python=f"{venv}/bin/python", wheel=project_wheel.name,
                                       version=version, wheelhouse=wh_inside, freeze=freeze,
                                       seconds=time.monotonic() - t0)
        return self.installed


# --------------------------------------------------------------------------- wheels (host side)


def _pip_env(keep_user_config: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not keep_user_config:
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def _python_tag() -> str:
    return _run_host([HOST_PYTHON, "-c", "import sys, platform; print(sys.version.split()[0], platform.machine())"]).stdout.strip()


@contextlib.contextmanager
def _flocked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _builder_pip(cache_dir: str) -> str:
    """pip of a host venv on Debian's python3 (Debian's own pip may be absent or externally managed)."""
    tag = hashlib.sha256(_python_tag().encode()).hexdigest()[:12]
    venv = Path(cache_dir, f"builder-{tag}")
    with _flocked(Path(cache_dir, ".builder.lock")):
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            _run_host([HOST_PYTHON, "-m", "venv", str(venv)], timeout=300)
            (venv / ".complete").write_text("ok\n")
    return str(venv / "bin" / "pip")


def _requirements(checkout: Path, extras: Sequence[str] = ()) -> list[str]:
    """Runtime dependencies (+ those of EXTRAS) and build requirements, from pyproject.toml."""
    import tomllib  # Python >= 3.11 (the dev venv and Debian 12's python3 both are)

    data = tomllib.loads((checkout / "pyproject.toml").read_text())
    project = data.get("project", {})
    reqs = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SandboxError(f"pyproject.toml has no extra {extra!r}")
        reqs += optional[extra]
    build = data.get("build-system", {}).get("requires", ["setuptools>=61"])
    return reqs + list(build) + ["wheel"]


def _dependency_wheelhouse(checkout: Path, cache_dir: str, extras: Sequence[str] = ()) -> Path:
    """Wheels of the project's third-party and build dependencies, cached under
    CACHE/wheels/<hash of those requirements (from pyproject.toml) + python version>.
    Built once (needs PyPI), offline afterwards; an unrelated pyproject edit (markers, ...)
    does not invalidate it."""
    reqs = _requirements(checkout, extras)
    key = hashlib.sha256(json.dumps([sorted(reqs), _python_tag()]).encode()).hexdigest()[:16]
    wh = Path(cache_dir, "wheels", key)
    with _flocked(Path(cache_dir, "wheels", f".{key}.lock")):
        if (wh / ".complete").exists():
            return wh
        pip = _builder_pip(cache_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=wh.parent))
        try:
            _run_host([pip, "wheel", "--wheel-dir", str(tmp), *reqs],
                      env=_pip_env(keep_user_config=True), timeout=900)
            (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n")
            (tmp / ".complete").write_text("ok\n")
            os.chmod(tmp, 0o755)
            shutil.rmtree(wh, ignore_errors=True)
            os.replace(tmp, wh)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return wh


_COPY_IGNORE = shutil.ignore_patterns(
    ".git", "__pycache__", "*.pyc", "build", "dist", "*.egg-info", ".venv", "venv", ".tox", ".nox",
    ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache", "node_modules", "backups",
)


def _build_project_wheel(checkout: Path, deps: Path, cache_dir: str) -> Path:
    """Build the project's wheel from a scratch copy (setuptools writes build/ and *.egg-info
    into the source tree; the checkout is being edited concurrently), offline."""
    work = Path(tempfile.mkdtemp(prefix="jobrunner-wheel-"))
    src, out = work / "src", work / "out"
    try:
        shutil.copytree(checkout, src, ignore=_COPY_IGNORE, symlinks=True)
        out.mkdir()
        _run_host([_builder_pip(cache_dir), "wheel", "--no-deps", "--no-index", "--find-links", str(deps),
                   "--wheel-dir", str(out), str(src)], env=_pip_env(keep_user_config=False), timeout=600)
        wheels = list(out.glob("*.whl"))
        if len(wheels) != 1:
            raise SandboxError(f"expected one wheel, got {wheels}")
        keep = Path(tempfile.mkdtemp(prefix="jobrunner-wheel-out-"))
        dest = keep / wheels[0].name
        shutil.move(str(wheels[0]), dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _main(argv: Sequence[str]) -> int:
    """``python3 tests/systemd/sandbox.py cleanup``: reap sandboxes of crashed (SIGKILLed) runs.
    ``python3 tests/systemd/sandbox.py shell``: boot one and open a shell inside (for debugging)."""
    cmd = argv[0] if argv else "cleanup"
    if cmd == "cleanup":
        for base in cleanup_stale():
            print(f"reaped {base}")
        left = leftover_mounts()
        if left:
            print(f"still mounted (owned by a live session?): {left}")
        return 0
    if cmd == "shell":
        with Sandbox() as sb:
            print(f"booted in {sb.boot_seconds:.1f}s; root={sb.root}; exit the shell to tear down")
            return subprocess.call(sb._nsenter() + ["bash", "-l"], env=CLEAN_ENV)
    print(_main.__doc__)
    return 64


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
