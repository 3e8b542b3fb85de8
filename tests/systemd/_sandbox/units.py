"""systemd helpers: systemctl, ``show``, the journal as JSON, the runner's events of one run,
oneshot units started and awaited, unit files written and pinned."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterable, Sequence

from .base import SandboxBase
from .common import TARGET, SandboxCommandError
from .host import _makedirs


class Units(SandboxBase):
    """Mixed into Sandbox (core.py); runs everything through ``self.run``."""

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

    def journal_json(
        self,
        unit: str | None = None,
        invocation: str | None = None,
        extra_args: Iterable[str] = (),
        *,
        sync: bool = True,
    ) -> list[dict]:
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
            if rec.get("_SYSTEMD_INVOCATION_ID") == invocation and isinstance(message, str) and message.startswith("{"):
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

    def wait_unit_inactive(
        self, unit: str, timeout: float = 30, states: Sequence[str] = ("inactive", "failed")
    ) -> dict[str, str]:
        """Wait until UNIT has no queued job and its ActiveState is in STATES; return its state.

        Meant for Type=oneshot services started with ``systemctl start --no-block`` or by a
        timer.  A unit that was never started is returned at once (it is inactive), and so
        is one systemd already garbage-collected: pin() units whose result you want to read.
        """
        props = (
            "ActiveState",
            "SubState",
            "Result",
            "InvocationID",
            "ExecMainStatus",
            "ExecMainCode",
            "ExecMainPID",
            "ExecMainStartTimestampMonotonic",
            "ExecMainExitTimestampMonotonic",
            "NRestarts",
        )

        def done() -> dict[str, str] | None:
            st = self.show(unit, *props)
            jobs = self.systemctl("list-jobs", "--no-legend", "--plain", check=False).stdout.split()
            if st.get("ActiveState") in states and unit not in jobs:
                return st
            return None

        return self.wait_for(
            done, timeout, message=lambda: f"{unit} did not finish within {timeout}s: {self.show(unit, *props)}"
        )

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
            target = f"/etc/systemd/system/{prefix}@{rest[rest.rindex('.') :]}"
            if not self.exists(target):
                target = f"/usr/lib/systemd/system/{prefix}@{rest[rest.rindex('.') :]}"
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
