"""The nine bugs that survived the mutation audit of issue 24, each pinned by a behaviour a user
relies on (rows 24-1 to 24-9 of tests/MUTATIONS.md): replant one and a test here fails."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from jobrunner.store.history import RunRecord
from jobrunner.store.state import StateStore

from .conftest import REPO, Launcher, jobrunner_cli
from .test_notify_receivers import HttpReceiver, receiver


# 12 -- observe/late.py: the repeat window runs from the last send, not from the episode's start
def test_a_job_late_for_days_is_told_once_per_window_not_every_check(launcher: Launcher, receiver: HttpReceiver):
    """A job late for 30 h (longer than the 6 h repeat window): the first check tells, the next
    checks within 6 h of that send tell nothing (not a notification every 15 minutes)."""
    launcher.write_job("latejobs", "from jobrunner import job\n\n@job(schedule='hourly')\ndef hourly(ctx):\n    pass\n")
    old = time.time() - 30 * 3600
    StateStore("hourly", str(launcher.state_dir)).update(
        lambda s: s.update(last_start=old, last_finish=old + 1, last_success=old + 1, last_outcome="success")
    )
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=receiver.url(), JOBRUNNER_NOTIFY_TIMEOUT="10s")
    for _ in range(3):
        assert launcher.run("health", "--package", "latejobs", "--notify", env=env).returncode == 2
    time.sleep(0.3)
    titles = [b["title"] for b in receiver.json_bodies()]
    assert len(titles) == 1 and titles[0].startswith("⏰ hourly is late on"), titles


# 13 -- admin/instances.py: an env file without jobrunner's hash beside it is not jobrunner's
SITE_JOBS = """
from jobrunner import JobContext, job

@job(instances=True, instance_group="site", lock=True, schedule="hourly")
def site_backup(ctx: JobContext) -> None:
    pass
"""


def test_an_env_file_written_by_hand_is_neither_overwritten_nor_removed(launcher: Launcher):
    """An instance env file with no hash beside it (written by hand, copied from another host):
    ``instances add`` and ``remove`` refuse without ``--force``; ``list`` marks it edited."""
    launcher.write_job("sitejobs", SITE_JOBS)
    env = launcher.env(
        JOBRUNNER_INSTANCES_DIR=str(launcher.tmp / "instances"), JOBRUNNER_TMPFILES_DIR=str(launcher.tmp / "tmpfiles")
    )
    env_file = launcher.tmp / "instances" / "site" / "copied.env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("SITE_PATH=/srv/copied\n")
    env_file.chmod(0o640)
    for args in (("add", "site", "copied", "--set", "SITE_PATH=/x"), ("remove", "site", "copied")):
        done = launcher.run("instances", *args, "--no-enable", "--package", "sitejobs", env=env)
        assert done.returncode == 78 and "edited by hand" in done.stderr, done.stderr
        assert env_file.read_text() == "SITE_PATH=/srv/copied\n"
    listed = launcher.run("instances", "list", "--json", "--package", "sitejobs", env=env)
    assert [json.loads(line)["edited"] for line in listed.stdout.splitlines()] == [True]


# 14 -- importer/units.py: an empty ExecStart= resets the list, as systemd does
def test_an_empty_execstart_resets_the_commands(tmp_path: Path):
    """The drop-in idiom ``ExecStart=`` then ``ExecStart=NEW``: only NEW is run."""
    unit = tmp_path / "reset.service"
    unit.write_text("[Service]\nType=oneshot\nExecStart=/bin/echo old\nExecStart=\nExecStart=/bin/echo new\n")
    done = jobrunner_cli("import", "units", str(unit))
    assert done.returncode == 0, done.stderr
    runs = [
        line.strip() for line in done.stdout.splitlines() if "ctx.run(" in line and not line.lstrip().startswith("#")
    ]
    assert runs == ['ctx.run(["/bin/echo", "new"])'], done.stdout


# 15 -- fleet/stream.py matrix: a skip after a failure does not hide the failure
def test_the_fleet_matrix_shows_a_failure_behind_a_newer_skip():
    from jobrunner.fleet.stream import matrix
    from jobrunner.observe.statuspage import render_fleet

    records = [
        RunRecord("backup", "web1", "a", 100.0, 2.0, "success", 0),
        RunRecord("backup", "web1", "b", 200.0, 2.0, "failure", 1),
        RunRecord("backup", "web1", "c", 300.0, 0.0, "skipped", 75),
    ]
    cell = matrix(records)[("web1", "backup")]
    assert cell["last_outcome"] == "failure" and cell["last_start"] == 200.0
    page = render_fleet(records, now=400.0)
    assert "failure" in page


# 16 -- observe/statuspage.py: the running step (systemd StatusText, set by the job) is escaped
def test_the_running_step_is_escaped_on_the_page():
    from jobrunner.observe.statuspage import JobView, render

    now = time.time()
    view = JobView("backup", running_since=now - 5, step="<img src=x onerror=alert(1)> 42%")
    page = render([view], host="h", now=now)
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt; 42%" in page


# 17 -- admin/checks_sync.py: a job without a timeout gets an hour of grace
def test_a_job_without_a_timeout_gets_an_hours_grace():
    """1 min accuracy + 1 h (no timeout) + 2 min, rounded up to the minute: 63 min."""
    from jobrunner import job
    from jobrunner.admin.checks_sync import grace_seconds

    @job(schedule="daily")
    def untimed(ctx):
        pass

    @job(schedule="daily", timeout="10m")
    def timed(ctx):
        pass

    assert grace_seconds(untimed) == 63 * 60
    assert grace_seconds(timed) == 13 * 60


# 18 -- run/progress.py follow_io: only the bytes read since the step started count
def test_follow_io_counts_from_the_start_not_the_bytes_read_before():
    from .test_progress import reporter

    rep, _log, _sent, _clock = reporter()
    code = (
        "import sys; open('/dev/zero', 'rb').read(8_000_000); print('ready', flush=True); "
        "sys.stdin.readline(); open('/dev/zero', 'rb').read(1_000_000); print('done', flush=True); "
        "sys.stdin.readline()"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        with rep.step("read", unit="B") as p:
            p.follow_io(child.pid)
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline() == "done\n"
            rep.tick()
            assert 1_000_000 <= p.done < 2_000_000, p.done
    finally:
        child.stdin.close()
        child.wait(5)


# 19 -- observe/metrics.py: an expired silence is exported as none
def test_an_expired_silence_is_not_exported_as_active():
    from jobrunner.observe.metrics import render_job_metrics

    from .test_metrics import parse, value

    now = time.time()
    expired = parse(render_job_metrics("j", {"silence": {"until": now - 60}}, host="h"))
    assert value(expired, "jobrunner_silenced_until_timestamp_seconds") == 0
    active = parse(render_job_metrics("j", {"silence": {"until": now + 3600}}, host="h"))
    assert value(active, "jobrunner_silenced_until_timestamp_seconds") > now


# 20 -- locks/file.py: the job lock is never opened through a planted symlink
def test_a_planted_job_lock_symlink_is_refused_not_followed(launcher: Launcher, tmp_path: Path):
    """``<lock dir>/JOB.lock`` planted as a symlink to a root-owned file: the run refuses in one
    line (exit 78) and never opens, locks or creates the file behind it."""
    launcher.write_job("locked", "from jobrunner import job\n\n@job(lock=True)\ndef locked(ctx):\n    pass\n")
    launcher.lock_dir.mkdir(mode=0o755)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (launcher.lock_dir / "locked.lock").symlink_to(victim)
    probe = textwrap.dedent(f"""
        import fcntl, subprocess, sys
        fd = open({str(victim)!r}, "rb")
        fcntl.flock(fd, fcntl.LOCK_EX)
        print(subprocess.run(sys.argv[1:], timeout=60).returncode)
    """)
    # The victim held by another process: a lock taken through the link would block (exit 75).
    done = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, "-m", "jobrunner", "run", "locked"],
        capture_output=True,
        text=True,
        timeout=90,
        env=launcher.env(),
        cwd=REPO,
    )
    assert done.stdout.splitlines()[-1] == "78", done.stdout + done.stderr
    assert "Too many levels of symbolic links" in done.stdout and "Traceback" not in done.stdout + done.stderr
    assert victim.read_text() == "precious\n" and (launcher.lock_dir / "locked.lock").is_symlink()
