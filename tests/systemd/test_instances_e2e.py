"""Instances under a real systemd (issue 19): template units rendered and installed with the
project's commands, three instances added with ``jobrunner instances add`` (timers enabled per
instance, spread by FixedRandomDelay=), each instance's unit run to success with its own env
file and state, the two-slot limit held when all three start at once, one broken instance
failing only its unit with one notification naming it (alert-failure@ receives the instance's
unit and stays silent: the runner reported it), health/status one row per instance.

A generic job package here; the WordPress jobs on the real stack are in
tests/wp/test_wp_sites_e2e.py. The HTTP receiver listens on the host's 127.0.0.1 (the sandbox
shares the host's network; network=False jobs may reach localhost).
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from ..conftest import overlaps
from ..test_notify_receivers import HttpReceiver

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

PY = "/opt/jobrunner/bin/python"
PKG_DIR = "/usr/local/lib/jr-sites-test"
SITES = ("a.example", "b.example", "c.example")
LEDGER = "/var/lib/e2e-ledger/ledger"

JOBS = """
import os, time
from jobrunner import JobContext, Slots, job

@job(
    instances=True,
    instance_group="e2esite",
    schedule="03:00",
    jitter="6h",
    fixed_jitter=True,
    lock=True,
    timeout="5m",
    instance_write_paths=["/var/lib/e2e-sites/%i", "/var/lib/e2e-ledger"],
    concurrency=Slots("e2e-backup", 2),
)
def e2e_site(ctx: JobContext) -> None:
    if ctx.env.get("BROKEN"):
        raise RuntimeError("the database of " + str(ctx.instance) + " is broken")
    def mark(kind):
        fd = os.open("/var/lib/e2e-ledger/ledger", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, (kind + " " + str(ctx.instance) + " " + str(time.monotonic_ns()) + "\\n").encode())
        os.close(fd)
    mark("in")
    time.sleep(2)
    with open("/var/lib/e2e-sites/" + ctx.instance + "/site-" + ctx.env["SITE"], "w") as out:
        out.write(ctx.run_id)
    mark("out")


@job(instances=True, instance_group="e2esite")
def e2e_kill(ctx: JobContext) -> None:
    import signal
    ctx.log.info("about.to.die", site=ctx.instance)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture(scope="module")
def sites(installed_sandbox):
    sb = installed_sandbox
    receiver = HttpReceiver()
    sb.write_file(f"{PKG_DIR}/sitee2e/__init__.py", textwrap.dedent(JOBS))
    sb.write_file(
        "/etc/jobrunner/jobrunner.env",
        f"JOBRUNNER_PATH={PKG_DIR}\nJOBRUNNER_NOTIFY_URLS=json://127.0.0.1:{receiver.port}/hook\n"
        "JOBRUNNER_NOTIFY_TIMEOUT=5s\n",
    )
    env = {"JOBRUNNER_PATH": PKG_DIR}
    sb.run([PY, "-m", "jobrunner", "units", "render", "--package", "sitee2e", "--out", "/root/site-units"], env=env)
    sb.run([PY, "-m", "jobrunner", "units", "install", "--dir", "/root/site-units"], env=env, timeout=120)
    added = {}
    for site in SITES:
        added[site] = sb.run(
            [PY, "-m", "jobrunner", "instances", "add", "e2esite", site, "--set", f"SITE={site[0]}"]
            + ["--package", "sitee2e"],
            env=env,
            timeout=120,
        )
        sb.pin(f"e2e-site@{site}.service", reload=False)
        sb.pin(f"e2e-kill@{site}.service", reload=False)
    sb.daemon_reload()
    try:
        yield sb, receiver, env, added
    finally:
        receiver.close()


def _start_all(sb, units: list[str]) -> dict[str, dict]:
    sb.systemctl("start", "--no-block", *units)
    return {unit: sb.wait_unit_inactive(unit, timeout=120) for unit in units}


def test_instances_add_enables_each_timer_and_fixed_delay_spreads_them(sites):
    sb, _, _, added = sites
    for site, result in added.items():
        assert f"systemctl enable --now e2e-site@{site}.timer" in result.stdout
        assert sb.systemctl("is-enabled", f"e2e-site@{site}.timer").stdout.strip() == "enabled"
    nexts = {
        site: sb.show(f"e2e-site@{site}.timer", "NextElapseUSecRealtime")["NextElapseUSecRealtime"] for site in SITES
    }
    assert all(nexts.values()), nexts
    # One schedule (03:00, 6h of fixed jitter), three instances: three different moments.
    assert len(set(nexts.values())) == 3, nexts
    assert sb.show("e2e-site@a.example.timer", "FixedRandomDelay")["FixedRandomDelay"] == "yes"


def test_each_instance_runs_in_its_unit_and_two_slots_hold(sites):
    sb, _, env, _ = sites
    sb.run(["rm", "-f", LEDGER])
    units = [f"e2e-site@{site}.service" for site in SITES]
    states = _start_all(sb, units)
    for unit, state in states.items():
        assert (state["Result"], state["ExecMainStatus"]) == ("success", "0"), sb.run(
            ["journalctl", "-u", unit, "-n", "30", "--no-pager"], check=False
        ).stdout
    for site in SITES:
        listing = sb.run(["ls", f"/var/lib/e2e-sites/{site}"]).stdout.split()
        assert listing == [f"site-{site[0]}"]  # its own env file, its own directory
        state = json.loads(sb.read_file(f"/var/lib/jobrunner/e2e_site@{site}/state.json"))
        assert state["last_outcome"] == "success"
    rows = [line.split() for line in sb.read_file(LEDGER).splitlines() if line.strip()]
    entries = [(kind, who, int(ns)) for kind, who, ns in rows]
    assert len(entries) == 6
    assert overlaps(entries) == 1  # never 3 inside at once; 2 were
    waits = []
    for unit, state in states.items():
        events = sb.job_events(state["InvocationID"], unit=unit)
        assert {e.get("instance") for e in events} == {unit.split("@")[1].removesuffix(".service")}
        waits += [e for e in events if e["event"] == "lock.waiting"]
    assert waits and all(w["slots"] == 2 for w in waits)


def test_health_status_and_list_one_row_per_instance(sites):
    sb, _, env, _ = sites
    health = json.loads(
        sb.run(
            [PY, "-m", "jobrunner", "health", "--package", "sitee2e", "--json", "e2e_site"], env=env, check=False
        ).stdout
    )
    assert sorted(r["job"] for r in health["jobs"]) == [f"e2e_site@{s}" for s in SITES]
    status = sb.run([PY, "-m", "jobrunner", "status", "--json"], env=env).stdout
    assert sorted(json.loads(line)["job"] for line in status.splitlines() if "e2e_site" in line) == [
        f"e2e_site@{s}" for s in SITES
    ]
    listed = sb.run([PY, "-m", "jobrunner", "instances", "list", "e2esite", "--package", "sitee2e"], env=env).stdout
    assert len([line for line in listed.splitlines() if line.startswith("e2esite") and "e2e_site@" in line]) == 3


def test_a_broken_instance_fails_alone_with_one_notification_naming_it(sites):
    sb, receiver, env, _ = sites
    sb.run(
        [PY, "-m", "jobrunner", "instances", "add", "e2esite", "b.example", "--set", "SITE=b", "--set", "BROKEN=1"]
        + ["--package", "sitee2e"],
        env=env,
        timeout=120,
    )
    before = len(receiver.requests)
    states = _start_all(sb, [f"e2e-site@{site}.service" for site in SITES])
    assert states["e2e-site@b.example.service"]["Result"] == "exit-code"
    assert states["e2e-site@a.example.service"]["Result"] == "success"
    assert states["e2e-site@c.example.service"]["Result"] == "success"

    def alert_done() -> bool:
        lines = sb.journal_json(extra_args=["SYSLOG_IDENTIFIER=jobrunner-alert"])
        return any("e2e-site@b.example.service" in str(r.get("MESSAGE", "")) for r in lines)

    sb.wait_for(alert_done, timeout=60)
    time.sleep(1.0)  # a second notification would arrive now
    got = receiver.requests[before:]
    assert len(got) == 1, [r["body"][:200] for r in got]
    message = json.loads(got[0]["body"])
    assert "e2e_site@b.example failed" in message["title"]
    assert "the database of b.example is broken" in message["message"]
    alert_lines = [str(r.get("MESSAGE", "")) for r in sb.journal_json(extra_args=["SYSLOG_IDENTIFIER=jobrunner-alert"])]
    assert any("already reported" in m and "e2e-site@b.example.service" in m for m in alert_lines), alert_lines


def test_bad_instance_names_in_the_sandbox(sites):
    sb, _, env, _ = sites
    for bad in ("../x", "a/b", "x" * 300, "a\nb"):
        result = sb.run([PY, "-m", "jobrunner", "run", "sitee2e:e2e_site", "--instance", bad], env=env, check=False)
        assert result.returncode == 64
        assert len(result.stderr.strip().splitlines()) == 1 and "instance name" in result.stderr


def test_a_sigkilled_instance_is_reported_by_alert_failure(sites):
    """What the runner cannot report (SIGKILL): alert-failure@ gets e2e-kill@c.example.service,
    finds the job e2e_kill@c.example from the unit's own StateDirectory=, trusts its state (the
    run it recorded as running) and sends one notification naming the instance's unit."""
    sb, receiver, _, _ = sites
    before = len(receiver.requests)
    unit = "e2e-kill@c.example.service"
    state = sb.start_oneshot(unit, timeout=120)
    assert state["Result"] == "signal"

    def alert_done() -> bool:
        lines = sb.journal_json(extra_args=["SYSLOG_IDENTIFIER=jobrunner-alert"])
        return any(unit in str(r.get("MESSAGE", "")) for r in lines)

    sb.wait_for(alert_done, timeout=60)
    time.sleep(1.0)
    got = receiver.requests[before:]
    assert len(got) == 1, [r["body"][:200] for r in got]
    message = json.loads(got[0]["body"])
    assert f"{unit} failed" in message["title"] and "SIGKILL" in message["title"]
    assert "job:       e2e_kill@c.example" in message["message"]
    assert "the runner did not get to finish this run" in message["message"]
