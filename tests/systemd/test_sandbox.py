"""Tests of the sandbox harness and of the systemd facts jobrunner relies on (systemd 252)."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest

from .sandbox import Sandbox, SandboxCommandError, cleanup_stale, mounts_under

pytestmark = pytest.mark.systemd


def systemd_version(sb: Sandbox) -> int:
    return int(sb.run(["systemctl", "--version"]).stdout.split()[1])


def oneshot(exec_start: str, extra: str = "") -> str:
    return f"[Unit]\nDescription=jobrunner sandbox test\n\n[Service]\nType=oneshot\nExecStart={exec_start}\n{extra}"


# ------------------------------------------------------------------------ the harness itself


def test_booted_and_isolated(sandbox: Sandbox):
    assert sandbox.run(["systemctl", "is-system-running"], check=False).stdout.strip() in ("running", "degraded")
    # PID 1 inside is systemd, in its own pid namespace.
    assert sandbox.run(["cat", "/proc/1/comm"]).stdout.strip() == "systemd"
    assert os.readlink(f"/proc/{sandbox.pid1}/ns/pid") != os.readlink("/proc/self/ns/pid")
    # A clean environment: nothing of the caller's leaks in.
    env = dict(line.split("=", 1) for line in sandbox.run(["env"]).stdout.splitlines() if "=" in line)
    for var in (
        "AWS_CA_BUNDLE",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "PIP_FIND_LINKS",
        "PYTHONDONTWRITEBYTECODE",
        "VIRTUAL_ENV",
        "PYTEST_CURRENT_TEST",
    ):
        assert var not in env
    assert env["PATH"].startswith("/usr/local/sbin:")
    # check=True raises with the output in the message; check=False returns the code.
    with pytest.raises(SandboxCommandError, match="nope"):
        sandbox.run("echo nope >&2; exit 3")
    assert sandbox.run("exit 3", check=False).returncode == 3
    # timeouts kill what runs inside, too
    t0 = time.monotonic()
    with pytest.raises(SandboxCommandError, match="timed out"):
        sandbox.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - t0 < 10
    assert "sleep 30" not in sandbox.run(["ps", "-eo", "args"]).stdout


def test_files_and_isolation_from_host(sandbox: Sandbox):
    token = uuid.uuid4().hex
    # write_file on the overlay: visible inside, present in R, absent on the host
    sandbox.write_file(f"/etc/jobrunner-marker-{token}", "inside\n", mode=0o600)
    assert sandbox.root is not None  # booted: R is mounted
    assert sandbox.run(["cat", f"/etc/jobrunner-marker-{token}"]).stdout == "inside\n"
    assert sandbox.run(["stat", "-c", "%a", f"/etc/jobrunner-marker-{token}"]).stdout.strip() == "600"
    assert Path(sandbox.root, f"etc/jobrunner-marker-{token}").exists()
    assert not Path(f"/etc/jobrunner-marker-{token}").exists()
    # writes made inside never reach the host
    sandbox.run(
        f"echo x > /root/m-{token}; echo x > /usr/local/m-{token}; echo x > /var/tmp/m-{token}; echo x > /tmp/m-{token}"
    )
    for p in (f"/root/m-{token}", f"/usr/local/m-{token}", f"/var/tmp/m-{token}", f"/tmp/m-{token}"):
        assert not Path(p).exists(), p
        assert sandbox.read_file(p) == "x\n"
    # /tmp and /run inside are the container's own tmpfs: write_file goes through nsenter there
    sandbox.write_file(f"/tmp/t-{token}", "tmp\n")
    assert sandbox.run(["cat", f"/tmp/t-{token}"]).stdout == "tmp\n"
    assert not Path(sandbox.root, f"tmp/t-{token}").exists()
    # symlinks resolve inside R: /var/run -> /run is the container's /run, not the host's
    assert sandbox.resolve("/var/run/x") == "/run/x"
    sandbox.write_file(f"/var/run/r-{token}", "run\n")
    assert sandbox.read_file(f"/run/r-{token}") == "run\n"
    assert not Path(f"/run/r-{token}").exists()


# ------------------------------------------------------------------------ (a) oneshot units


def test_oneshot_unit_result_success(sandbox: Sandbox):
    name = sandbox.unit_name("jr-a") + ".service"
    sandbox.write_unit(name, oneshot("/bin/sh -c 'echo hello from oneshot'"))
    sandbox.systemctl("start", name)  # blocks until a oneshot finished
    st = sandbox.show(name, "Type", "Result", "ActiveState", "ExecMainStatus", "ExecMainCode", "InvocationID")
    assert st["Type"] == "oneshot"
    assert st["Result"] == "success"
    assert st["ActiveState"] == "inactive"
    assert st["ExecMainStatus"] == "0"
    assert re.fullmatch(r"[0-9a-f]{32}", st["InvocationID"])

    # Gotcha: without a reference (write_unit pins by default; a timer also references its
    # service) systemd unloads a unit once it is inactive and not failed, and `show` then reports
    # defaults: Result=success with an empty InvocationID, i.e. "never ran" looks like success.
    gc = sandbox.unit_name("jr-a-gc") + ".service"
    sandbox.write_unit(gc, oneshot("/bin/true"), pin=False)
    sandbox.systemctl("start", gc)
    st_gc = sandbox.show(gc, "Result", "InvocationID", "ExecMainExitTimestamp")
    print(f"unpinned oneshot after a successful run: {st_gc}")
    assert st_gc["Result"] == "success"

    # A failing one, started without blocking: wait_unit_inactive sees it through.
    bad = sandbox.unit_name("jr-a-bad") + ".service"
    sandbox.write_unit(bad, oneshot("/bin/sh -c 'sleep 1; exit 3'"))
    sandbox.systemctl("start", "--no-block", bad)
    st = sandbox.wait_unit_inactive(bad, timeout=20)
    assert (st["ActiveState"], st["Result"], st["ExecMainStatus"]) == ("failed", "exit-code", "3")
    sandbox.systemctl("reset-failed", bad)


# ------------------------------------------------------------------------ (b) the kill-switch trap


def test_runtime_max_sec_ignored_for_oneshot_timeout_start_sec_kills(sandbox: Sandbox):
    """systemd 252: RuntimeMaxSec= has no effect on Type=oneshot; TimeoutStartSec= is what kills it."""
    rt = sandbox.unit_name("jr-b-runtimemax") + ".service"
    to = sandbox.unit_name("jr-b-timeoutstart") + ".service"
    sandbox.write_unit(rt, oneshot("/bin/sleep 30", "RuntimeMaxSec=2\n"), reload=False)
    sandbox.write_unit(to, oneshot("/bin/sleep 30", "TimeoutStartSec=2\n"))
    t0 = time.monotonic()
    sandbox.systemctl("start", "--no-block", rt, to)
    try:
        st_to = sandbox.wait_unit_inactive(to, timeout=15)
        assert st_to["ActiveState"] == "failed"
        assert st_to["Result"] == "timeout"
        assert 1.5 < time.monotonic() - t0 < 10
        time.sleep(max(0.0, 4.0 - (time.monotonic() - t0)))
        st_rt = sandbox.show(rt, "ActiveState", "SubState", "Result", "RuntimeMaxUSec")
        assert st_rt["RuntimeMaxUSec"] == "2s"  # accepted and loaded ...
        assert (st_rt["ActiveState"], st_rt["SubState"]) == ("activating", "start")  # ... but ignored
        # Debian 12's 252.x logs "<unit>: RuntimeMaxSec= has no effect in combination with
        # Type=oneshot. Ignoring." when loading the unit (older builds ignore it silently).
        warned = [r["MESSAGE"] for r in sandbox.journal_json(unit=rt) if "RuntimeMaxSec" in r.get("MESSAGE", "")]
        print(f"systemd {systemd_version(sandbox)}: RuntimeMaxSec warning in journal: {warned or 'none'}")
        for msg in warned:
            assert "Type=oneshot" in msg and "Ignoring" in msg, msg
        timeout_msgs = [r["MESSAGE"] for r in sandbox.journal_json(unit=to)]
        assert any("timed out" in m.lower() or "timeout" in m.lower() for m in timeout_msgs), timeout_msgs
    finally:
        sandbox.systemctl("stop", rt, check=False)
        sandbox.systemctl("reset-failed", to, check=False)


# ------------------------------------------------------------------------ (c) timers


def test_timer_fires_its_service(sandbox: Sandbox):
    stem = sandbox.unit_name("jr-c")
    token = uuid.uuid4().hex
    sandbox.write_unit(f"{stem}.service", oneshot(f"/bin/echo timer-fired {token}"), reload=False)
    # AccuracySec: the default (1min) lets systemd coalesce the elapse up to a minute late.
    sandbox.write_unit(f"{stem}.timer", "[Timer]\nOnActiveSec=1s\nAccuracySec=100ms\n")
    sandbox.systemctl("start", f"{stem}.timer")
    t_start = int(sandbox.show(f"{stem}.timer", "ActiveEnterTimestampMonotonic")["ActiveEnterTimestampMonotonic"])

    def fired():
        st = sandbox.show(f"{stem}.service", "Result", "ActiveState", "InvocationID", "ExecMainStartTimestampMonotonic")
        return st if st["InvocationID"] and st["ActiveState"] == "inactive" else None

    st = sandbox.wait_for(fired, timeout=20, message="timer did not fire its service")
    assert st["Result"] == "success"
    delay = (int(st["ExecMainStartTimestampMonotonic"]) - t_start) / 1e6
    assert 0.9 <= delay < 5, delay
    # (matched by unit, not invocation: see the note in the journald test)
    recs = sandbox.wait_for(
        lambda: [r for r in sandbox.journal_json(unit=f"{stem}.service") if r.get("MESSAGE") == f"timer-fired {token}"],
        timeout=10,
    )
    assert recs[0]["_SYSTEMD_UNIT"] == f"{stem}.service"
    assert sandbox.show(f"{stem}.timer", "LastTriggerUSec")["LastTriggerUSec"] not in ("", "n/a")


# ------------------------------------------------------------------------ (d) journald


def test_journald_priority_prefix_and_invocation_id(sandbox: Sandbox):
    stem = sandbox.unit_name("jr-d")
    token = uuid.uuid4().hex
    script = f"/usr/local/lib/jobrunner-tests/{stem}.sh"
    sandbox.write_file(
        script,
        (
            "#!/bin/sh\n"
            f'echo "<3>boom {token}"\n'
            f'echo "plain {token}"\n'
            f'echo "<7>debug {token}"\n'
            'echo "inv=$INVOCATION_ID"\n'
            'echo "stream=$JOURNAL_STREAM"\n'
            # journald resolves _SYSTEMD_INVOCATION_ID when it reads a stream's *first* line, from
            # /run/systemd/units/invocation:UNIT; if the service is already gone by then (a process
            # that prints once and exits, on a busy machine) the field is missing from all its lines.
            # Staying alive a moment makes the match below deterministic.
            "sleep 1\n"
        ),
        mode=0o755,
    )
    unit = f"{stem}.service"
    sandbox.write_unit(unit, oneshot(script))
    sandbox.systemctl("start", unit)
    inv = sandbox.show(unit, "InvocationID")["InvocationID"]
    assert re.fullmatch(r"[0-9a-f]{32}", inv)

    def records():
        recs = sandbox.journal_json(invocation=inv)
        msgs = {r.get("MESSAGE", "") for r in recs}
        return recs if {f"boom {token}", f"plain {token}", f"debug {token}", f"inv={inv}"} <= msgs else None

    recs = sandbox.wait_for(records, timeout=15, message="service output did not reach the journal")
    by_msg = {r["MESSAGE"]: r for r in recs if r.get("_SYSTEMD_UNIT") == unit}
    assert by_msg[f"boom {token}"]["PRIORITY"] == "3"  # "<3>" parsed (SyslogLevelPrefix=yes) and stripped
    assert by_msg[f"plain {token}"]["PRIORITY"] == "6"  # default SyslogLevel=info
    assert by_msg[f"debug {token}"]["PRIORITY"] == "7"
    line = by_msg[f"inv={inv}"]
    assert line["_SYSTEMD_INVOCATION_ID"] == inv  # env INVOCATION_ID == InvocationID == journal field
    assert line["_TRANSPORT"] == "stdout"
    stream = [m for m in by_msg if m.startswith("stream=")]
    assert stream and re.fullmatch(r"stream=\d+:\d+", stream[0]), stream  # JOURNAL_STREAM=dev:inode
    # PID 1's own messages about this run carry INVOCATION_ID= (what journal_json(invocation=) matches)
    assert any(r.get("_PID") == "1" and r.get("INVOCATION_ID") == inv for r in recs)
    # journalctl -p err picks the <3> line only
    err = sandbox.journal_json(unit=unit, extra_args=["-p", "err"])
    assert [r["MESSAGE"] for r in err if r.get("_SYSTEMD_UNIT") == unit] == [f"boom {token}"]
    # the unit filter sees the same lines
    assert f"plain {token}" in {r.get("MESSAGE") for r in sandbox.journal_json(unit=unit)}


# ------------------------------------------------------------------------ hardening facts


def test_hardened_unit_as_www_data(sandbox: Sandbox):
    stem = sandbox.unit_name("jr-h")
    token = uuid.uuid4().hex
    sandbox.run(f"echo {token} > /tmp/host-visible-{token}")  # the system's /tmp, not the unit's
    script = f"/usr/local/lib/jobrunner-tests/{stem}.sh"
    sandbox.write_file(
        script,
        (
            "#!/bin/sh\n"
            "id -un\n"
            f"test -e /tmp/host-visible-{token} && echo tmp=shared || echo tmp=private\n"
            "touch /etc/x 2>/dev/null && echo etc=rw || echo etc=ro\n"
            "touch /opt/x 2>/dev/null && echo opt=rw || echo opt=ro\n"
            "ls /root >/dev/null 2>&1 && echo home=visible || echo home=hidden\n"
            'touch "$STATE_DIRECTORY/ok" && echo state=rw\n'
        ),
        mode=0o755,
    )
    unit = f"{stem}.service"
    sandbox.write_unit(
        unit,
        oneshot(
            script,
            (
                "User=www-data\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\nNoNewPrivileges=yes\n"
                f"StateDirectory={stem}\n"
            ),
        ),
    )
    sandbox.systemctl("start", unit)
    st = sandbox.show(unit, "Result", "InvocationID")
    assert st["Result"] == "success"
    msgs = [
        r["MESSAGE"]
        for r in sandbox.wait_for(
            lambda: (lambda rs: rs if any(r.get("MESSAGE", "").startswith("state=") for r in rs) else None)(
                sandbox.journal_json(unit=unit)
            ),
            timeout=10,
        )
        if r.get("_SYSTEMD_UNIT") == unit
    ]
    assert msgs[:6] == ["www-data", "tmp=private", "etc=ro", "opt=ro", "home=hidden", "state=rw"], msgs
    exposure = sandbox.run(["systemd-analyze", "security", "--no-pager", unit], check=False)
    assert re.search(r"Overall exposure level for .*: \d+\.\d", exposure.stdout), exposure.stdout[-500:]


def test_on_failure_template(sandbox: Sandbox):
    stem = sandbox.unit_name("jr-f")
    handler = f"{stem}-alert@.service"
    sandbox.write_unit(handler, oneshot("/bin/echo alert-for %i"), reload=False)
    sandbox.write_unit(
        f"{stem}.service",
        (f"[Unit]\nOnFailure={stem}-alert@%n.service\n\n[Service]\nType=oneshot\nExecStart=/bin/false\n"),
    )
    inst = f"{stem}-alert@{stem}.service.service"
    sandbox.pin(inst)  # else the instance is unloaded as soon as it succeeded
    sandbox.systemctl("start", f"{stem}.service", check=False)
    st = sandbox.wait_for(
        lambda: (lambda s: s if s["InvocationID"] and s["ActiveState"] == "inactive" else None)(
            sandbox.show(inst, "InvocationID", "ActiveState", "Result")
        ),
        timeout=15,
    )
    assert st["Result"] == "success"
    sandbox.systemctl("reset-failed", f"{stem}.service", check=False)


# ------------------------------------------------------------------------ (e) teardown


def test_teardown_leaves_host_untouched(require_sandbox):
    """A second, short-lived sandbox: an exception inside ``with`` still tears everything down."""
    token = uuid.uuid4().hex
    sb = Sandbox()
    with pytest.raises(RuntimeError, match="simulated test failure"):
        with sb:
            sb.write_file(f"/etc/jobrunner-marker-{token}", "x\n")
            sb.run(f"echo x > /var/lib/jobrunner-marker-{token}")
            base, root, pid1, nspawn = sb.base, sb.root, sb.pid1, sb._nspawn
            assert Path(root, f"etc/jobrunner-marker-{token}").exists()
            raise RuntimeError("simulated test failure")
    assert not Path(f"/etc/jobrunner-marker-{token}").exists()
    assert not Path(f"/var/lib/jobrunner-marker-{token}").exists()
    assert not os.path.exists(base)
    assert not mounts_under(base)
    assert nspawn.poll() is not None
    assert not os.path.exists(f"/proc/{pid1}") or Path(f"/proc/{pid1}/comm").read_text().strip() != "systemd"
    sb.shutdown()  # idempotent


def test_crashed_run_is_reaped(require_sandbox):
    """What a killed pytest leaves behind (lock released, container running, mounts) is cleaned up."""
    sb = Sandbox()
    sb.boot()
    base, pid1 = sb.base, sb.pid1
    try:
        os.close(sb._lock_fd)  # as if our process had died: lock released, fds closed
        sb._lock_fd = None
        sb._console.close()
        t0 = time.monotonic()
        assert base in cleanup_stale(sb.parent)
        assert time.monotonic() - t0 < 8  # no lazy-unmount fallback needed
        assert not os.path.exists(base)
        assert not mounts_under(base)
        sb._nspawn.wait(timeout=10)
        assert not os.path.exists(f"/proc/{pid1}/root/etc")
    finally:
        sb.shutdown()  # nothing left to do, must not raise


# ------------------------------------------------------------------------ installing the project


@pytest.mark.slow
def test_install_project(installed_sandbox: Sandbox):
    sb = installed_sandbox
    inst = sb.installed
    assert inst is not None
    py = inst.python
    cfg = sb.read_file(f"{inst.venv}/pyvenv.cfg")
    assert re.search(r"^home = /usr/bin$", cfg, re.M), cfg  # Debian's python3
    mine = [line for line in inst.freeze if re.match(r"(-e\s+)?jobrunner\b", line, re.I)]
    assert len(mine) == 1 and not mine[0].startswith("-e"), inst.freeze  # a wheel, not editable
    info = sb.run(
        [
            py,
            "-c",
            (
                "import importlib.metadata as m, json, pathlib, jobrunner._version as v\n"
                "d = m.distribution('jobrunner')\n"
                "files = [str(d.locate_file(f)) for f in d.files]\n"
                "print(json.dumps({'version': d.version, 'v': v.__version__, 'file': v.__file__,\n"
                "  'direct_url': d.read_text('direct_url.json'), 'files': files}))\n"
            ),
        ]
    )

    data = json.loads(info.stdout)
    assert data["version"] == data["v"] == inst.version
    assert data["file"].startswith(f"{inst.venv}/lib/python3")
    assert not (data["direct_url"] and '"editable": true' in data["direct_url"])
    py_files = [f for f in data["files"] if f.endswith(".py") and "/jobrunner/" in f]
    pyc_files = {f for f in data["files"] if f.endswith(".pyc")}
    assert py_files
    missing = [
        f
        for f in py_files
        if not any(p.startswith(os.path.join(os.path.dirname(f), "__pycache__", Path(f).stem + ".")) for p in pyc_files)
    ]
    assert not missing, f"not byte-compiled at install: {missing}"
    assert sb.exists(f"{inst.venv}/bin/jobrunner")
    # It runs from a hardened unit: read-only /opt, private /tmp, no /root, unprivileged user.
    stem = sb.unit_name("jr-install")
    sb.write_unit(
        f"{stem}.service",
        oneshot(
            f"{py} -c 'import jobrunner, jobrunner._version as v; print(\"imported\", v.__version__)'",
            "User=www-data\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\nNoNewPrivileges=yes\n",
        ),
    )
    sb.systemctl("start", f"{stem}.service", check=False)
    st = sb.show(f"{stem}.service", "Result", "InvocationID")
    msgs = [r.get("MESSAGE") for r in sb.journal_json(unit=f"{stem}.service")]
    assert st["Result"] == "success", msgs
    assert f"imported {inst.version}" in msgs
