"""The project's real units, rendered from declarations and installed with its own command,
running the real runner under a real systemd (see README.md here for the sandbox).

Job modules for these tests live inside the sandbox in /etc/jobrunner/jobs/e2ejobs, found
through JOBRUNNER_PATH in /etc/jobrunner/jobrunner.env, which every unit loads.
"""

from __future__ import annotations

import time

import pytest

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

PY = "/opt/jobrunner/bin/python"
JOBS_DIR = "/etc/jobrunner/jobs/e2ejobs"

MODULES = {
    "__init__.py": "",
    # A hardened www-data job: writes inside its write path, records what a write outside does.
    "ok.py": """
        import errno, os
        from jobrunner import job

        @job(schedule="Mon *-*-* 04:00:00", user="www-data", write_paths=["/var/lib/e2e"])
        def e2e_ok(ctx):
            with open("/var/lib/e2e/ok-" + ctx.run_id, "w") as out:
                out.write(str(os.geteuid()))
            try:
                open("/etc/e2e-forbidden", "w")
                outside = "written"
            except OSError as exc:
                outside = errno.errorcode[exc.errno]
            ctx.log.info("e2e.sandbox", outside=outside, uid=os.geteuid())
            ctx.log.error("e2e.an_error_line", detail="priority check")
    """,
    "persist.py": """
        from jobrunner import job

        @job(schedule="*-*-* 00:00:00", persistent=True, write_paths=["/var/lib/e2e-root"])
        def e2e_persist(ctx):
            with open("/var/lib/e2e-root/persist.count", "a") as out:
                out.write(ctx.run_id + "\\n")
    """,
    "sleeper.py": """
        import time
        from jobrunner import job

        @job(lock=True, write_paths=["/var/lib/e2e-root"], kill_grace="3s")
        def e2e_sleeper(ctx):
            ctx.cleanup(lambda: open("/var/lib/e2e-root/sleeper.cleaned", "a").write(ctx.run_id + "\\n"))
            ctx.sh("echo $$ > /var/lib/e2e-root/sleeper.pid; sleep 300 & wait")
    """,
    "slow.py": """
        import time
        from jobrunner import job

        @job(timeout="2s", write_paths=["/var/lib/e2e-root"], kill_grace="2s")
        def e2e_slow(ctx):
            ctx.cleanup(lambda: open("/var/lib/e2e-root/slow.cleaned", "w").write("yes"))
            ctx.run(["sleep", "300"])
    """,
    # The unit's own limit as the second line of defence: the runner's deadline is an hour
    # away, systemd's TimeoutStartSec= (lowered by a systemd= override) must kill the run.
    "backstop.py": """
        import time
        from jobrunner import job

        @job(timeout="1h", systemd={"Service": {"TimeoutStartSec": "4s"}})
        def e2e_backstop(ctx):
            time.sleep(300)
    """,
}


@pytest.fixture(scope="module")
def units(installed_sandbox):
    """Render and install the e2e jobs' units inside the sandbox with the project's commands."""
    sb = installed_sandbox
    for name, text in MODULES.items():
        import textwrap

        sb.write_file(f"{JOBS_DIR}/{name}", textwrap.dedent(text))
    sb.write_file("/etc/jobrunner/jobrunner.env", "JOBRUNNER_PATH=/etc/jobrunner/jobs\n")
    env = {"JOBRUNNER_PATH": "/etc/jobrunner/jobs"}
    sb.run([PY, "-m", "jobrunner", "units", "render", "--out", "/root/e2e-units", "--package", "e2ejobs"], env=env)
    install = sb.run([PY, "-m", "jobrunner", "units", "install", "--dir", "/root/e2e-units"], env=env, timeout=120)
    assert "e2e-ok.service" in install.stdout + install.stderr
    for unit in ("e2e-ok", "e2e-persist", "e2e-sleeper", "e2e-slow", "e2e-backstop"):
        sb.pin(f"{unit}.service", reload=False)  # keep results readable after the run
    sb.daemon_reload()
    return sb


def test_timer_fires_the_hardened_job(units):
    """A timer (made to fire now by a drop-in) runs the job as www-data inside its sandbox:
    Result=success, the write path is writable, /etc is read-only (EROFS), journald holds the
    JSON lines with run_id = INVOCATION_ID and PRIORITY 3 for errors."""
    sb = units
    sb.write_file("/etc/systemd/system/e2e-ok.timer.d/now.conf", "[Timer]\nOnActiveSec=1s\n")
    sb.daemon_reload()
    sb.systemctl("restart", "e2e-ok.timer")
    state = sb.wait_for(
        lambda: (
            (st := sb.show("e2e-ok.service", "Result", "InvocationID", "ActiveState", "ExecMainStatus")).get(
                "InvocationID"
            )
            and st.get("ActiveState") == "inactive"
            and st
        ),
        timeout=60,
    )
    assert state["Result"] == "success" and state["ExecMainStatus"] == "0"
    invocation = state["InvocationID"]
    lines = sb.job_events(invocation)
    names = [e["event"] for e in lines]
    assert names[0] == "job.started" and names[-1] == "job.finished"
    assert {e["run_id"] for e in lines} == {invocation}
    sandbox_facts = next(e for e in lines if e["event"] == "e2e.sandbox")
    assert sandbox_facts["outside"] == "EROFS"
    assert sandbox_facts["uid"] != 0
    assert sb.exists(f"/var/lib/e2e/ok-{invocation}")
    assert next(e for e in lines if e["event"] == "e2e.an_error_line")["_PRIORITY"] == "3"
    assert next(e for e in lines if e["event"] == "job.started")["_PRIORITY"] == "6"
    errors = sb.run(["journalctl", f"_SYSTEMD_INVOCATION_ID={invocation}", "-p", "err", "-o", "cat"]).stdout
    assert "e2e.an_error_line" in errors and "job.started" not in errors


def test_lock_busy_run_is_a_success_for_systemd(units):
    """A run that finds the lock held exits 75, and systemd counts it as success (SuccessExitStatus=75)."""
    sb = units
    # A holder started by hand (as a transient unit), with the lock dir the unit uses.
    holder = sb.run(
        [
            "systemd-run",
            "--unit=e2e-holder",
            "--collect",
            "--setenv=JOBRUNNER_PATH=/etc/jobrunner/jobs",
            "--setenv=JOBRUNNER_LOCK_DIR=/run/lock/jobrunner",
            PY,
            "-m",
            "jobrunner",
            "run",
            "e2ejobs.sleeper",
        ],
        check=False,
    )
    assert holder.returncode == 0, holder.stderr
    try:
        sb.wait_for(lambda: sb.exists("/var/lib/e2e-root/sleeper.pid"), timeout=30)
        state = sb.start_oneshot("e2e-sleeper.service", timeout=60)
        assert state["ExecMainStatus"] == "75"
        assert state["Result"] == "success"
        assert [e["event"] for e in sb.job_events(state["InvocationID"])][-2:] == ["lock.busy", "job.finished"]
    finally:
        sb.systemctl("stop", "e2e-holder.service", check=False)
        sb.run("rm -f /var/lib/e2e-root/sleeper.pid", check=False)


def test_systemctl_stop_mid_run_cleans_up(units):
    """systemctl stop mid-run: the runner's cleanup ran, no process is left in the unit's
    cgroup, the exit status is 143 and it is not treated as a failure (no alert)."""
    sb = units
    sb.systemctl("start", "--no-block", "e2e-sleeper.service")
    sb.wait_for(lambda: sb.exists("/var/lib/e2e-root/sleeper.pid"), timeout=30)
    invocation = sb.show("e2e-sleeper.service", "InvocationID")["InvocationID"]
    cgroup = sb.show("e2e-sleeper.service", "ControlGroup")["ControlGroup"]
    sb.systemctl("stop", "e2e-sleeper.service", timeout=90)
    state = sb.show("e2e-sleeper.service", "Result", "ExecMainStatus", "ActiveState")
    assert state["ExecMainStatus"] == "143"
    assert state["Result"] == "success" and state["ActiveState"] == "inactive"
    assert invocation in sb.read_file("/var/lib/e2e-root/sleeper.cleaned")
    procs = sb.run(f"cat /sys/fs/cgroup{cgroup}/cgroup.procs 2>/dev/null || true").stdout.split()
    assert procs == []
    finished = [e for e in sb.job_events(invocation) if e["event"] == "job.finished"]
    assert finished and finished[-1]["outcome"] == "terminated"
    sb.run("rm -f /var/lib/e2e-root/sleeper.pid", check=False)


def test_in_process_deadline_kills_the_tree_first(units):
    """timeout= fires inside the runner before systemd's limit: cleanup ran, exit 124, Result=exit-code."""
    sb = units
    state = sb.start_oneshot("e2e-slow.service", timeout=60)
    assert state["ExecMainStatus"] == "124"
    assert state["Result"] == "exit-code"
    assert sb.read_file("/var/lib/e2e-root/slow.cleaned") == "yes"
    assert "job.timeout" in [e["event"] for e in sb.job_events(state["InvocationID"])]


def test_unit_kill_switch_fires_for_oneshot(units):
    """The unit's TimeoutStartSec= kills a oneshot run that outlives it (Result=timeout) — the
    seed's RuntimeMaxSec= would be ignored here by systemd 252 for Type=oneshot."""
    sb = units
    started = time.monotonic()
    state = sb.start_oneshot("e2e-backstop.service", timeout=60)
    assert state["Result"] == "timeout"
    assert time.monotonic() - started < 40
    unit_text = sb.read_file("/etc/systemd/system/e2e-backstop.service")
    assert "RuntimeMaxSec" not in unit_text and "TimeoutStartSec=4s" in unit_text


def test_persistent_timer_catches_up_a_missed_run_once(units):
    """Persistent=true: a timer whose stamp says the last elapse was missed fires once on start."""
    sb = units
    sb.systemctl("stop", "e2e-persist.timer", check=False)
    sb.run("rm -f /var/lib/e2e-root/persist.count", check=False)
    stamp = "/var/lib/systemd/timers/stamp-e2e-persist.timer"
    sb.run(f"mkdir -p /var/lib/systemd/timers && touch -d '3 days ago' {stamp}")
    sb.systemctl("start", "e2e-persist.timer")
    sb.wait_for(lambda: sb.exists("/var/lib/e2e-root/persist.count"), timeout=60)
    sb.wait_unit_inactive("e2e-persist.service", timeout=30)
    time.sleep(2)  # a second, wrong catch-up run would show up here
    assert len(sb.read_file("/var/lib/e2e-root/persist.count").split()) == 1
    assert sb.show("e2e-persist.service", "Result")["Result"] == "success"
