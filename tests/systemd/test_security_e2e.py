"""docs/security.md under a real systemd: what www-data can do to root through jobrunner's
units and `jobrunner alert`, tried for real in the sandbox (issue #13, findings 2 and 4).

The jobs are rendered and installed with the project's own commands (tmpfiles included); the
attacker is the sandbox's www-data, acting with `setpriv`. The notification receiver listens on
the host's 127.0.0.1 (the sandbox shares the host's network).
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from ..test_notify_receivers import HttpReceiver

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

PY = "/opt/jobrunner/bin/python"
JOBS_DIR = "/etc/jobrunner/jobs/secjobs"
STATE = "/var/lib/jobrunner"
AS_WWW = ["setpriv", "--reuid=www-data", "--regid=www-data", "--init-groups", "--"]

MODULES = {
    "__init__.py": "",
    "jobs.py": """
        import os, signal
        from jobrunner import job

        # www-data's job, killed before the runner can report: the alert handler (root) reports it.
        @job(user="www-data", lock=True)
        def jr_sec_www(ctx):
            ctx.log.info("sec.www", uid=os.geteuid())
            os.kill(os.getpid(), signal.SIGKILL)

        @job(lock=True)
        def jr_sec_root(ctx):
            ctx.log.info("sec.root")

    """,
    # Rendered as a job, then broken in place: its runs fail before the runner records anything.
    "broken.py": """
        from jobrunner import job

        @job(lock=True)
        def jr_sec_broken(ctx):
            pass
    """,
}


@pytest.fixture(scope="module")
def sec(installed_sandbox):
    sb = installed_sandbox
    receiver = HttpReceiver()
    for name, text in MODULES.items():
        sb.write_file(f"{JOBS_DIR}/{name}", textwrap.dedent(text))
    env_text = (
        f"JOBRUNNER_PATH=/etc/jobrunner/jobs\nJOBRUNNER_NOTIFY_URLS=json://127.0.0.1:{receiver.port}/hook\n"
        "JOBRUNNER_NOTIFY_TIMEOUT=5s\n"
    )
    sb.write_file("/etc/jobrunner/jobrunner.env", env_text, mode=0o600)
    env = {"JOBRUNNER_PATH": "/etc/jobrunner/jobs"}
    sb.run([PY, "-m", "jobrunner", "units", "render", "--out", "/root/sec-units", "--package", "secjobs"], env=env)
    sb.run([PY, "-m", "jobrunner", "units", "install", "--dir", "/root/sec-units"], env=env, timeout=120)
    sb.write_file(f"{JOBS_DIR}/broken.py", "raise RuntimeError('broken at import')\n")
    for unit in ("jr-sec-www", "jr-sec-root", "jr-sec-broken"):
        sb.pin(f"{unit}.service", reload=False)
    sb.daemon_reload()
    try:
        yield sb, receiver
    finally:
        receiver.close()


def _alerts(sb, unit: str) -> int:
    records = sb.journal_json(extra_args=["SYSLOG_IDENTIFIER=jobrunner-alert"])
    return sum(1 for r in records if unit in str(r.get("MESSAGE", "")))


def _fail_and_wait_for_alert(sb, unit: str) -> str:
    before = _alerts(sb, unit)
    state = sb.start_oneshot(unit, timeout=60)
    sb.wait_for(lambda: _alerts(sb, unit) > before, timeout=30)
    return state["InvocationID"]


def _alert_by_hand(sb, unit: str):
    return sb.run(
        f"set -a; . /etc/jobrunner/jobrunner.env; {PY} -m jobrunner alert {unit}",
        check=False,
        env={"JOBRUNNER_STATE_DIR": STATE},
        timeout=60,
    )


def test_non_root_jobs_lock_file_is_made_by_tmpfiles_and_private(sec):
    """The lock directory is root's (0755) and tmpfiles made www-data's job its own 0600 lock
    file: the job runs under its unit and takes it; nobody else can even open it."""
    sb, _ = sec
    mode = sb.run(["stat", "-c", "%a %U", "/run/lock/jobrunner", "/run/lock/jobrunner/jr_sec_www.lock"]).stdout.split(
        "\n"
    )
    assert mode[0] == "755 root" and mode[1] == "600 www-data"
    sb.start_oneshot("jr-sec-root.service", timeout=60)
    mode = sb.run(["stat", "-c", "%a %U", "/run/lock/jobrunner/jr_sec_root.lock"]).stdout.strip()
    assert mode == "600 root"
    held = sb.run([*AS_WWW, "flock", "-n", "/run/lock/jobrunner/jr_sec_root.lock", "true"], check=False)
    assert held.returncode != 0 and "Permission denied" in held.stderr


def test_alert_never_takes_a_path_from_the_job_users_state(sec):
    """Finding 2: www-data rewrites its state so that its `job` field points into root's job
    ("../jr_sec_root") and plants `.state.lock` as a symlink to a file root would create; root's
    `jobrunner alert` for the www-data unit neither touches root's state nor creates the file."""
    sb, receiver = sec
    sb.start_oneshot("jr-sec-root.service", timeout=60)
    root_state = sb.read_file(f"{STATE}/jr_sec_root/state.json")
    _fail_and_wait_for_alert(sb, "jr-sec-www.service")
    own = f"{STATE}/jr_sec_www"
    assert sb.run(["stat", "-c", "%U", own]).stdout.strip() == "www-data"
    state = json.loads(sb.read_file(f"{own}/state.json"))
    assert state["notify"]["failure_notified"] is True  # the alert handler recorded its report
    # Not yet handled, so the handler (throttled: it reported minutes ago) records a hold.
    state.update(job="../jr_sec_root", notified_run_id="not-this-one")
    sb.run(
        [*AS_WWW, "sh", "-c", f"cat > {own}/state.json.new && mv {own}/state.json.new {own}/state.json"],
        input=json.dumps(state),
    )
    sb.run([*AS_WWW, "sh", "-c", f"rm -f {own}/.state.lock && ln -s /etc/jr-sec-planted {own}/.state.lock"])
    alert = _alert_by_hand(sb, "jr-sec-www.service")
    assert alert.returncode == 0, alert.stdout + alert.stderr
    assert "held back" in alert.stdout and "could not record" in alert.stdout  # .state.lock is refused
    assert not sb.exists("/etc/jr-sec-planted")
    assert sb.read_file(f"{STATE}/jr_sec_root/state.json") == root_state
    owners = sb.run(["sh", "-c", f"stat -c %U {own}/* {own}/.state.lock"]).stdout.split()
    assert set(owners) == {"www-data"}, owners


def test_alert_is_not_silenced_by_another_jobs_state(sec):
    """Finding 2 (nothing another user does stops a root job silently): a root job fails before
    its runner records anything; www-data writes that invocation into its own state as "already
    notified"; root's alert for the root unit still reports it."""
    sb, receiver = sec
    invocation = _fail_and_wait_for_alert(sb, "jr-sec-broken.service")
    own = f"{STATE}/jr_sec_www"
    state = json.loads(sb.read_file(f"{own}/state.json"))
    state.update(notified_run_id=invocation, last_run_id=invocation, job="jr_sec_broken")
    sb.run(
        [*AS_WWW, "sh", "-c", f"cat > {own}/state.json.new && mv {own}/state.json.new {own}/state.json"],
        input=json.dumps(state),
    )
    before = len(receiver.requests)
    alert = _alert_by_hand(sb, "jr-sec-broken.service")
    assert alert.returncode == 0, alert.stdout + alert.stderr
    assert "already reported" not in alert.stdout
    receiver.wait(before + 1)
    time.sleep(0.3)
    sent = [json.loads(r["body"]) for r in receiver.requests[before:]]
    assert any("jr-sec-broken.service failed" in m["title"] for m in sent), sent
