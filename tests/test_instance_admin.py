"""``jobrunner instances add|remove|list`` (issue 19): the env file written atomically 0640
from ``--set`` flags, its hash, hand edits kept unless ``--force``, the tmpfiles.d snippet
(applied by the real ``systemd-tmpfiles``), ``list`` with each job's last outcome, one-line
errors with their exit codes. Real subprocesses in private directories; systemd's own part
(timers enabled per instance) is in tests/systemd/test_instances_e2e.py."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from jobrunner.envfile import parse_env
from tests.conftest import Launcher

JOBS = """
from jobrunner import JobContext, job

@job(instances=True, instance_group="site", lock=True, schedule="hourly",
     instance_write_paths=["{out}/%i"])
def site_backup(ctx: JobContext) -> None:
    ctx.log.info("seen", path=ctx.env["SITE_PATH"], secret=ctx.env.get("DB_PASSWORD"))
    if ctx.env.get("FAIL"):
        raise RuntimeError("broken")

@job(instances=True, instance_group="site", user="www-data", lock=True)
def site_cron(ctx: JobContext) -> None:
    pass

@job
def plain(ctx: JobContext) -> None:
    pass
"""


@pytest.fixture
def admin(launcher: Launcher) -> Launcher:
    launcher.write_job("sitejobs", JOBS.format(out=launcher.tmp / "out"))
    return launcher


def _env(launcher: Launcher) -> dict[str, str]:
    return launcher.env(
        JOBRUNNER_INSTANCES_DIR=str(launcher.tmp / "instances"),
        JOBRUNNER_TMPFILES_DIR=str(launcher.tmp / "tmpfiles"),
    )


def _cli(launcher: Launcher, *args: str):
    return launcher.run("instances", *args, "--package", "sitejobs", env=_env(launcher))


def test_add_writes_the_env_file_hash_and_tmpfiles(admin: Launcher) -> None:
    result = _cli(
        admin,
        "add",
        "site",
        "shop.example",
        "--set",
        "SITE_PATH=/srv/shop",
        "--set",
        "DB_PASSWORD=p 'q\" $x",
        "--no-enable",
    )
    assert result.returncode == 0, result.stderr
    env_file = admin.tmp / "instances" / "site" / "shop.example.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o640 and env_file.stat().st_uid == 0
    assert parse_env(env_file.read_text()) == {"SITE_PATH": "/srv/shop", "DB_PASSWORD": "p 'q\" $x"}
    assert (admin.tmp / "instances" / "site" / ".shop.example.env.sha256").exists()
    assert not list((admin.tmp / "instances" / "site").glob(".*.tmp"))
    conf = (admin.tmp / "tmpfiles" / "jobrunner-site@shop.example.conf").read_text()
    assert "f /run/lock/jobrunner/site_cron@shop.example.lock 0600 www-data - -" in conf
    assert f"d {admin.tmp}/out/shop.example 0750 root root -" in conf
    assert not (admin.tmp / "out").exists()  # --no-enable: written, not applied
    assert "timers not enabled (--no-enable): systemctl enable --now site-backup@shop.example.timer" in result.stdout


def test_add_applies_tmpfiles_and_names_the_timers_without_systemd(launcher: Launcher) -> None:
    """Without --no-enable the snippet is applied by the real systemd-tmpfiles (a root job's
    write path here: nothing outside the test's directory); systemd is not PID 1 here, so the
    timers are named for the admin, not enabled."""
    launcher.write_job(
        "solo",
        f"""
        from jobrunner import JobContext, job

        @job(instances=True, schedule="daily", instance_write_paths=["{launcher.tmp}/out/%i"])
        def solo(ctx: JobContext) -> None:
            pass
        """,
    )
    env = _env(launcher)
    result = launcher.run("instances", "add", "solo", "one", "--set", "A=1", "--package", "solo", env=env)
    assert result.returncode == 0, result.stderr
    made = launcher.tmp / "out" / "one"
    assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) == 0o750
    assert "+ systemd-tmpfiles --create" in result.stdout
    assert "timers not enabled (systemd is not running here): systemctl enable --now solo@one.timer" in result.stdout


def test_the_env_file_written_is_the_one_a_run_reads(admin: Launcher) -> None:
    assert _cli(admin, "add", "site", "a", "--set", "SITE_PATH=/srv/a", "--no-enable").returncode == 0
    run = admin.run("run", "sitejobs:site_backup", "--instance", "a", env=_env(admin))
    assert run.returncode == 0, run.stderr
    assert run.event("seen")["path"] == "/srv/a"


def test_add_again_replaces_what_jobrunner_wrote(admin: Launcher) -> None:
    assert _cli(admin, "add", "site", "a", "--set", "SITE_PATH=/one", "--no-enable").returncode == 0
    assert _cli(admin, "add", "site", "a", "--set", "SITE_PATH=/two", "--no-enable").returncode == 0
    assert parse_env((admin.tmp / "instances/site/a.env").read_text()) == {"SITE_PATH": "/two"}


def test_hand_edited_env_file_is_kept_unless_forced(admin: Launcher) -> None:
    assert _cli(admin, "add", "site", "a", "--set", "SITE_PATH=/one", "--no-enable").returncode == 0
    env_file = admin.tmp / "instances/site/a.env"
    env_file.write_text(env_file.read_text() + "EXTRA=by-hand\n")
    for args in (("add", "site", "a", "--set", "SITE_PATH=/two"), ("remove", "site", "a")):
        refused = _cli(admin, *args, "--no-enable")
        assert refused.returncode == 78
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "edited by hand" in lines[0] and "--force" in lines[0]
        assert "EXTRA=by-hand" in env_file.read_text()
    removed = _cli(admin, "remove", "site", "a", "--force", "--no-enable")
    assert removed.returncode == 0, removed.stderr
    assert not env_file.exists() and not (admin.tmp / "tmpfiles/jobrunner-site@a.conf").exists()
    assert not (admin.tmp / "instances/site/.a.env.sha256").exists()


def test_remove_keeps_state_and_refuses_an_unknown_instance(admin: Launcher) -> None:
    assert _cli(admin, "add", "site", "a", "--set", "SITE_PATH=/a", "--no-enable").returncode == 0
    assert admin.run("run", "sitejobs:site_backup", "--instance", "a", env=_env(admin)).returncode == 0
    assert _cli(admin, "remove", "site", "a", "--no-enable").returncode == 0
    assert (admin.state_dir / "site_backup@a" / "state.json").exists()
    again = _cli(admin, "remove", "site", "a", "--no-enable")
    assert again.returncode == 78 and "no instance 'a' of site" in again.stderr


def test_list_shows_each_instance_and_job_with_its_last_outcome(admin: Launcher) -> None:
    for name, extra in (("a.example", []), ("b.example", ["--set", "FAIL=1"])):
        assert _cli(admin, "add", "site", name, "--set", f"SITE_PATH=/{name}", *extra, "--no-enable").returncode == 0
        admin.run("run", "sitejobs:site_backup", "--instance", name, env=_env(admin))
    listed = _cli(admin, "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    by_job = {r["job"]: r for r in rows}
    assert sorted(by_job) == [
        "site_backup@a.example",
        "site_backup@b.example",
        "site_cron@a.example",
        "site_cron@b.example",
    ]
    assert by_job["site_backup@a.example"]["last_outcome"] == "success"
    assert by_job["site_backup@b.example"]["last_outcome"] == "failure"
    assert by_job["site_cron@a.example"]["last_outcome"] is None
    assert by_job["site_cron@a.example"]["unit"] == "site-cron@a.example.service"
    table = _cli(admin, "list", "site").stdout
    assert "site_backup@b.example  failure" in table and "never ran" in table
    by_job_name = _cli(admin, "list", "site_cron", "--json").stdout
    assert len(by_job_name.splitlines()) == 4


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("add", "site", "../x"), 64, "no '/' and no '..'"),
        (("add", "site", "a/b"), 64, "no '/'"),
        (("add", "site", "a\nb"), 64, "instance name 'a\\nb'"),
        (("add", "site", "x" * 300), 64, "300 characters"),
        (("add", "site", "ok", "--set", "1BAD=x"), 64, "KEY=VALUE"),
        (("add", "site", "ok", "--set", "NOEQUALS"), 64, "KEY=VALUE"),
        (("add", "nope", "ok"), 78, "no instance group or instantiable job 'nope'"),
        (("add", "plain", "ok"), 78, "no instance group or instantiable job 'plain'"),
        (("remove", "site", ".."), 64, "no '/' and no '..'"),
    ],
)
def test_bad_input_is_one_line(admin: Launcher, args: tuple[str, ...], code: int, says: str) -> None:
    result = _cli(admin, *args, "--no-enable") if args[0] != "list" else _cli(admin, *args)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert not (admin.tmp / "instances" / "site").exists() or not any((admin.tmp / "instances" / "site").iterdir())


def test_a_group_directory_others_can_change_is_refused(admin: Launcher) -> None:
    base = admin.tmp / "instances"
    base.mkdir(mode=0o777)
    base.chmod(0o777)
    result = _cli(admin, "add", "site", "a", "--set", "SITE_PATH=/a", "--no-enable")
    assert result.returncode == 78 and "can be changed by other users" in result.stderr
    assert not Path(base / "site" / "a.env").exists()
