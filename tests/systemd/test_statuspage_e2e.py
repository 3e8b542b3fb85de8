"""History and the status page under a real systemd: jobs of two users (root and www-data) run in
their hardened units (StateDirectory= per job, UMask=0077) and record their history; the shipped
status-page unit pair, installed by jobrunner itself, produces the page in
/var/www/jobrunner-status from every user's history, with the next runs from systemd; `jobrunner
history` as root lists the runs, and each run's journalctl command shows that run's log."""

from __future__ import annotations

import json
import re

import pytest

from .sandbox import Sandbox

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

ROOT = "/srv/jrsp"
PACKAGE = "jrsp_jobs"
ENV = {"JOBRUNNER_PATH": ROOT}
JOBS = """
from jobrunner import job

@job(schedule="hourly")
def jrsp_ok(ctx):
    ctx.log.info("ok.ran")

@job(schedule="hourly", user="www-data")
def jrsp_fail(ctx):
    ctx.log.info("about.to.fail")
    raise RuntimeError("the disk is full")
"""
PAGE = "/var/www/jobrunner-status/index.html"


@pytest.fixture(scope="module")
def page_installed(installed_sandbox: Sandbox) -> Sandbox:
    sb = installed_sandbox
    assert sb.installed is not None
    py = sb.installed.python
    sb.write_file(f"{ROOT}/{PACKAGE}/__init__.py", "")
    sb.write_file(f"{ROOT}/{PACKAGE}/page_jobs.py", JOBS)
    sb.write_file("/etc/jobrunner/jobrunner.env", f"JOBRUNNER_PATH={ROOT}\n")
    # one set (install replaces the set it installed before): the two jobs and the shipped page
    render = [py, "-m", "jobrunner", "units", "render", "--out", f"{ROOT}/units", "--package", PACKAGE]
    sb.run([*render, "jrsp_ok", "jrsp_fail", "jobs.status_page:status_page"], env=ENV, timeout=120)
    sb.run([py, "-m", "jobrunner", "units", "install", "--dir", f"{ROOT}/units"], env=ENV, timeout=120)
    for unit in ("jrsp-ok", "jrsp-fail", "status-page"):
        assert sb.show(f"{unit}.timer", "ActiveState")["ActiveState"] == "active"
        sb.pin(f"{unit}.service", reload=False)
    sb.daemon_reload()
    return sb


def test_the_status_unit_renders_every_users_history(page_installed: Sandbox):
    sb = page_installed
    for _ in range(2):
        assert sb.start_oneshot("jrsp-ok.service")["Result"] == "success"
    failed = sb.start_oneshot("jrsp-fail.service")
    assert failed["Result"] == "exit-code"
    # the www-data job's history: its own file, 0640, in its own 0750 directory
    assert sb.run(["stat", "-c", "%U %a", "/var/lib/jobrunner/jrsp_fail/history.jsonl"]).stdout.split() == [
        "www-data",
        "640",
    ]
    record = json.loads(sb.read_file("/var/lib/jobrunner/jrsp_fail/history.jsonl").splitlines()[-1])
    assert record["run_id"] == failed["InvocationID"].replace("-", "")
    assert record["outcome"] == "failure" and record["error"] == "RuntimeError: the disk is full"

    state = sb.start_oneshot("status-page.service")
    assert (state["Result"], state["ExecMainStatus"]) == ("success", "0"), sb.run(
        ["journalctl", "-u", "status-page.service", "-n", "30", "--no-pager"], check=False
    ).stdout
    assert sb.run(["stat", "-c", "%a", "/var/www/jobrunner-status", PAGE]).stdout.split() == ["755", "644"]
    text = sb.read_file(PAGE)
    table = text.split('<table class="jobs board">', 1)[1].split("</table>", 1)[0]
    found = [
        dict(re.findall(r'<td class="[^"]*" data-label="([^"]+)">(.*?)</td>', row, re.S))
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)
    ]
    cells = {}
    for row in found:
        link = re.search(r"<a [^>]*>(.*?)</a>", row.get("Job", ""))
        if link:
            cells[re.sub(r"<[^>]+>", "", link.group(1))] = row
    assert "success" in cells["jrsp_ok"]["State"]
    assert "failure" in cells["jrsp_fail"]["State"] and "1 failed" in cells["jrsp_fail"]["Streak"]
    for job in ("jrsp_ok", "jrsp_fail"):
        assert ">in " in cells[job]["Next run"], cells[job]  # from the timer, via systemctl
        assert '<svg class="spark"' in cells[job]["Recent durations"]
    assert "about.to.fail" in text  # the tail of the last failure's output


def test_history_as_root_and_the_log_command(page_installed: Sandbox):
    sb = page_installed
    assert sb.installed is not None
    proc = sb.run([sb.installed.python, "-m", "jobrunner", "history", "--json"], timeout=60)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    runs = [r for r in rows if "summary" not in r]
    summaries = {r["summary"]["job"]: r["summary"] for r in rows if "summary" in r}
    assert {"jrsp_ok", "jrsp_fail"} <= set(summaries)
    assert summaries["jrsp_fail"]["failure_streak"] >= 1 and summaries["jrsp_ok"]["failure_streak"] == 0
    assert [r["start"] for r in runs] == sorted((r["start"] for r in runs), reverse=True)
    failure = next(r for r in runs if r["job"] == "jrsp_fail")
    log = sb.run(failure["log"].split() + ["--no-pager", "-o", "cat"], timeout=60).stdout
    assert "about.to.fail" in log
