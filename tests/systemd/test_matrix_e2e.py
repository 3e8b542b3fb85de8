"""A slice of the failure-path matrix (tests/test_matrix.py) under a real systemd (see README.md
here for the sandbox): rendered units and transient ones, each run's ``Result=`` and exit status,
the journal's priority of its lines (err for a failure, info for a success), the state and
history it recorded, the one notification a real HTTP receiver on the host got (the runner's;
``alert-failure@`` stays silent), no traceback in the journal, and the status page's row.

The slice: success with a cleanup that raises, raise, a command exiting non-zero, retries
exhausted, an instance that raises, ``exec`` of a script exiting 2, and a raise logged in the
console format to the journal (the issue's first path).
"""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections.abc import Iterator
from functools import partial

import pytest

from ..test_notify_receivers import HttpReceiver
from ..test_statuspage import rows
from .sandbox import Sandbox

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

PY = "/opt/jobrunner/bin/python"
PKG = "matrixe2e"
JOBS_DIR = f"/etc/jobrunner/jobs/{PKG}"
UNITS = "/root/matrix-units"

JOBS = """
from jobrunner import Retry, job

@job()
def e2e_m_ok(ctx):
    def fails():
        raise OSError("scratch dir vanished")
    ctx.cleanup(fails)

@job()
def e2e_m_boom(ctx):
    raise ValueError("disk full")

@job()
def e2e_m_cmd(ctx):
    ctx.run(["sh", "-c", "exit 3"])

@job(retry=Retry(attempts=3, delay=0.01, backoff="fixed"))
def e2e_m_flaky(ctx):
    raise ValueError("still broken")

@job()
def e2e_m_console(ctx):
    raise ValueError("disk full")

@job(instances=True, instance_group="e2e-m-site")
def e2e_m_site(ctx):
    raise ValueError("site " + str(ctx.instance) + " is broken")
"""

# unit, state name, exit status, Result=, outcome, attempts, notified
RENDERED = [
    ("e2e-m-ok.service", "e2e_m_ok", 0, "success", "success", 1, False),
    ("e2e-m-boom.service", "e2e_m_boom", 1, "exit-code", "failure", 1, True),
    ("e2e-m-cmd.service", "e2e_m_cmd", 1, "exit-code", "failure", 1, True),
    ("e2e-m-flaky.service", "e2e_m_flaky", 1, "exit-code", "failure", 3, True),
    ("e2e-m-site@s1.service", "e2e_m_site@s1", 1, "exit-code", "failure", 1, True),
]


@pytest.fixture(scope="module")
def hook() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def matrix_units(installed_sandbox: Sandbox, hook: HttpReceiver) -> Sandbox:
    sb = installed_sandbox
    sb.write_file(f"{JOBS_DIR}/__init__.py", "")
    sb.write_file(f"{JOBS_DIR}/jobs.py", textwrap.dedent(JOBS))
    sb.write_file("/etc/jobrunner/instances/e2e-m-site/s1.env", "SITE=s1\n")
    sb.write_file(
        "/etc/jobrunner/jobrunner.env",
        f"JOBRUNNER_PATH=/etc/jobrunner/jobs\nJOBRUNNER_NOTIFY_URLS={hook.url(path='/matrix')}\n",
    )
    env = {"JOBRUNNER_PATH": "/etc/jobrunner/jobs"}
    sb.run([PY, "-m", "jobrunner", "units", "render", "--out", UNITS, "--package", PKG], env=env)
    sb.run([PY, "-m", "jobrunner", "units", "install", "--dir", UNITS], env=env, timeout=120)
    for unit, *_ in RENDERED:
        sb.pin(unit, reload=False)
    sb.daemon_reload()
    return sb


def _journal_text(sb: Sandbox, invocation: str) -> str:
    return "\n".join(str(r.get("MESSAGE", "")) for r in sb.journal_json(invocation=invocation))


def _notifications(hook: HttpReceiver, name: str) -> list[dict]:
    return [b for b in hook.json_bodies() if b.get("title", "").split(" ")[1:2] == [name]]


def test_rendered_units_fail_and_succeed_as_their_jobs_did(matrix_units: Sandbox, hook: HttpReceiver) -> None:
    sb = matrix_units
    problems = []
    for unit, name, status, result, outcome, attempts, notified in RENDERED:
        state = sb.start_oneshot(unit, timeout=90)
        invocation = state["InvocationID"]
        try:
            assert (state["ExecMainStatus"], state["Result"]) == (str(status), result), state
            events = sb.job_events(invocation)
            finished = [e for e in events if e["event"] == "job.finished"]
            assert [(e["outcome"], e["_PRIORITY"]) for e in finished] == [(outcome, "6" if status == 0 else "3")]
            if outcome == "failure":
                assert [e["_PRIORITY"] for e in events if e["event"] == "job.failed"] == ["3"], events
            if name == "e2e_m_ok":
                assert [e["_PRIORITY"] for e in events if e["event"] == "cleanup.failed"] == ["3"], events
            assert "Traceback" not in _journal_text(sb, invocation)
            saved = json.loads(sb.read_file(f"/var/lib/jobrunner/{name}/state.json"))
            assert (saved["last_outcome"], saved["last_exit_code"]) == (outcome, status), saved
            history = [json.loads(x) for x in sb.read_file(f"/var/lib/jobrunner/{name}/history.jsonl").splitlines()]
            assert (history[-1]["outcome"], history[-1]["attempts"]) == (outcome, attempts), history
            if notified:
                assert sb.wait_for(partial(_notifications, hook, name), timeout=20)
            time.sleep(0.3)  # alert-failure@, were it to tell again, would have by now
            got = _notifications(hook, name)
            assert len(got) == (1 if notified else 0), got
        except AssertionError as exc:
            problems.append(f"{unit}: {exc}")
    assert not problems, "\n".join(problems)
    page = sb.run([PY, "-m", "jobrunner", "status", "--html", "/root/matrix.html"], check=False)
    assert page.returncode == 0 and "Traceback" not in page.stderr, page.stderr
    shown = rows(sb.read_file("/root/matrix.html"))
    for _, name, _, _, outcome, _, _ in RENDERED:
        assert outcome in shown[name], shown


@pytest.mark.parametrize(
    ("name", "argv", "status", "fmt"),
    [
        ("e2e_m_exec", ["exec", "e2e_m_exec", "--", "sh", "-c", "echo partial; exit 2"], 2, "json"),
        ("e2e_m_console", ["run", f"{PKG}.jobs:e2e_m_console"], 1, "console"),
    ],
)
def test_transient_runs_keep_their_failure_in_the_journal(
    matrix_units: Sandbox, hook: HttpReceiver, name: str, argv: list[str], status: int, fmt: str
) -> None:
    """``exec`` of a script exiting 2, and a raise logged in the console format: under systemd
    (stdout on the journal) exit 2 / 1, Result=exit-code, the failure's lines at priority err."""
    sb = matrix_units
    unit = sb.unit_name("e2e-m-transient")
    before = len(_notifications(hook, name))
    done = sb.run(
        [
            "systemd-run",
            f"--unit={unit}",
            "--wait",
            "--collect",
            "--property=EnvironmentFile=/etc/jobrunner/jobrunner.env",
            f"--setenv=JOBRUNNER_LOG_FORMAT={fmt}",
            PY,
            "-m",
            "jobrunner",
            *argv,
        ],
        check=False,
        timeout=90,
    )
    said = done.stdout + done.stderr
    assert done.returncode == status, said
    assert re.search(r"Finished with result: exit-code", said) and f"status={status}" in said, said
    records = sb.journal_json(unit=f"{unit}.service")
    lines = [(str(r.get("MESSAGE", "")), r.get("PRIORITY")) for r in records if r.get("_SYSTEMD_INVOCATION_ID")]
    assert "Traceback" not in "\n".join(m for m, _ in lines)
    finished = [(m, p) for m, p in lines if "job.finished" in m]
    assert len(finished) == 1 and finished[0][1] == "3" and "failure" in finished[0][0], lines
    if fmt == "console":
        failed = [(m, p) for m, p in lines if "job.failed" in m]
        assert len(failed) == 1 and failed[0][1] == "3" and "ValueError: disk full" in failed[0][0], lines
    saved = json.loads(sb.read_file(f"/var/lib/jobrunner/{name}/state.json"))
    assert (saved["last_outcome"], saved["last_exit_code"]) == ("failure", status), saved
    assert sb.wait_for(lambda: len(_notifications(hook, name)) > before, timeout=20)
    time.sleep(0.3)
    assert len(_notifications(hook, name)) == before + 1
