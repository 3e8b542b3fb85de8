"""Job instances (issue 19): ``@job(instances=...)``, ``run --instance``, instance names, the
per-instance env file, state, lock, metrics, notification titles and alert's job of a unit;
and the host-wide counting lock (``concurrency=Slots(...)``).

Real subprocesses of ``python -m jobrunner`` in private directories (the ``launcher`` fixture).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jobrunner import ConfigError, Lock, Slots, UsageError, job
from jobrunner.instances import MAX_INSTANCE_NAME, check_instance_name, expand_instances, known_instances
from jobrunner.notify.message import failure_message
from jobrunner.observe.failed_unit import job_of_unit
from jobrunner.observe.metrics import render_job_metrics
from jobrunner.run.model import RunResult
from tests.conftest import Launcher, ledger_entries, overlaps, wait_for

SITE_JOB = """
from jobrunner import JobContext, job

@job(instances=True, lock=True, schedule="hourly")
def site(ctx: JobContext) -> None:
    ctx.log.info("seen", instance=ctx.instance, site=ctx.env.get("SITE"), shared=ctx.env.get("SHARED"),
                 lock=ctx.lock.name if ctx.lock else None, state_dir=ctx.state_dir)
    if ctx.env.get("FAIL"):
        raise RuntimeError("site " + str(ctx.instance) + " is broken")

@job(lock=True)
def plain(ctx: JobContext) -> None:
    ctx.log.info("seen", instance=ctx.instance)
"""


def _instances(launcher: Launcher) -> Path:
    base = launcher.tmp / "instances"
    (base / "site").mkdir(parents=True, exist_ok=True)
    return base


def _add(base: Path, group: str, name: str, text: str) -> None:
    path = base / group / f"{name}.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o640)


def _env(launcher: Launcher, **extra: str) -> dict[str, str]:
    return launcher.env(JOBRUNNER_INSTANCES_DIR=str(launcher.tmp / "instances"), **extra)


# --- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shop.example", "a", "blog-2.example.org", "Site_3", "x" * MAX_INSTANCE_NAME])
def test_valid_instance_names(name: str) -> None:
    assert check_instance_name(name) == name


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("a/b", "no '/'"),
        ("..", "no '/' and no '..'"),
        ("shop..example", "no '..'"),
        ("a\nb", "letters, digits"),
        ("x" * 300, "300 characters: at most 64"),
        ("", "empty"),
        (".hidden", "starting with a letter or digit"),
        ("-dash", "starting with a letter or digit"),
        ("a b", "letters, digits"),
        ("a@b", "letters, digits"),
        ("a\\x2db", "letters, digits"),
        ("ünï", "ASCII"),
    ],
)
def test_invalid_instance_names_are_one_line_usage_errors(name: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_instance_name(name)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message and len(message) < 200
    assert caught.value.exit_code == 64


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a\nb", "x" * 300, ".."])
def test_bad_instance_on_the_command_line_exits_64_with_one_line(launcher: Launcher, bad: str) -> None:
    launcher.write_job("sitejobs", SITE_JOB)
    _instances(launcher)
    result = launcher.run("run", "sitejobs:site", "--instance", bad, env=_env(launcher))
    assert result.returncode == 64, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jobrunner: instance name"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (launcher.state_dir).exists() or not any(launcher.state_dir.iterdir())


# --- declaration -------------------------------------------------------------------------


def test_declaration_binds_instances() -> None:
    @job(
        instances="optional",
        instance_group="wp",
        lock=Lock(name="wpbackup", wait="1m"),
        write_paths=["/var/backups/wordpress"],
        instance_write_paths=["/var/backups/wordpress/%i"],
    )
    def wp_thing(ctx: object) -> None: ...

    assert wp_thing.instantiable and wp_thing.instance is None
    assert wp_thing.lock_name == "wpbackup"
    bound = wp_thing.for_instance("shop.example")
    assert (bound.name, bound.unit, bound.instance) == (
        "wp_thing@shop.example",
        "wp-thing@shop.example",
        "shop.example",
    )
    assert (bound.base_name, bound.base_unit, bound.ref) == ("wp_thing", "wp-thing", f"{wp_thing.module}:wp_thing")
    assert bound.write_paths == ("/var/backups/wordpress/shop.example",)
    assert bound.lock_name == "wpbackup@shop.example"  # sites exclude their own runs only
    assert not bound.instantiable
    chain = bound.env_file_chain
    assert chain[0] == "-/etc/jobrunner/jobrunner.env"
    assert chain[-2] == "-/etc/default/wp-thing"
    assert chain[-1].endswith("/wp/shop.example.env") and not chain[-1].startswith("-")  # required, last
    template = wp_thing.for_instance("%i")
    assert template.env_file_chain[-1] == "/etc/jobrunner/instances/wp/%i.env"
    assert template.write_paths == ("/var/backups/wordpress/%i",)


def test_absolute_lock_path_is_shared_by_instances() -> None:
    @job(instances=True, lock="/var/lock/legacy.lock")
    def legacy(ctx: object) -> None: ...

    assert legacy.for_instance("a").lock_name == "/var/lock/legacy.lock"


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"instances": "yes"}, "instances: 'yes': use True, False or 'optional'"),
        ({"instances": 1}, "instances: 1: use True, False or 'optional'"),
        ({"instance_group": "wp"}, "instance_group= needs instances=True"),
        ({"write_paths": ["/srv/%i"]}, "'%i' (the instance name) belongs in an instantiable job"),
        ({"instances": "optional", "write_paths": ["/srv/%i"]}, "belongs in instance_write_paths"),
        ({"instances": True, "instance_group": "a/b"}, "is not a group name"),
        ({"concurrency": 2}, "use Slots(name, slots)"),
    ],
)
def test_bad_instance_declarations_fail_at_import(settings: dict, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        job(name="bad_one", **settings)(lambda ctx: None)
    assert says in str(caught.value)


def test_instances_true_allows_percent_i_in_plain_paths() -> None:
    @job(instances=True, write_paths=["/srv/sites/%i"])
    def per_site(ctx: object) -> None: ...

    assert per_site.for_instance("b").write_paths == ("/srv/sites/b",)


@pytest.mark.parametrize("slots", [0, -1, True, 1025, "2"])
def test_bad_slots(slots: object) -> None:
    with pytest.raises(ValueError, match="slots="):
        Slots("backup", slots)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slots name"):
        Slots("a/b", 2)


def test_plain_job_refuses_an_instance() -> None:
    @job
    def lonely(ctx: object) -> None: ...

    with pytest.raises(UsageError, match="not instantiable"):
        lonely.for_instance("a")


# --- runs --------------------------------------------------------------------------------


def test_instance_run_gets_its_own_env_state_lock_and_log_fields(launcher: Launcher) -> None:
    launcher.write_job("sitejobs", SITE_JOB)
    base = _instances(launcher)
    _add(base, "site", "shop.example", "SITE=shop\n")
    _add(base, "site", "blog.example", "SITE=blog\n")
    shared = launcher.tmp / "shared.env"
    shared.write_text("SHARED=yes\nSITE=overridden-by-the-instance\n")
    shared.chmod(0o600)
    runs = {
        name: launcher.run("run", "sitejobs:site", "--instance", name, "--env-file", str(shared), env=_env(launcher))
        for name in ("shop.example", "blog.example")
    }
    for name, result in runs.items():
        assert result.returncode == 0, result.stderr
        seen = result.event("seen")
        assert seen["job"] == f"site@{name}" and seen["instance"] == name
        # --env-file comes last as always; the instance's file came before it.
        assert seen["site"] == "overridden-by-the-instance" and seen["shared"] == "yes"
        assert seen["lock"] == str(launcher.lock_dir / f"site@{name}.lock")
        assert seen["state_dir"] == str(launcher.state_dir / f"site@{name}")
        assert all(e["instance"] == name for e in result.events)
        assert launcher.state(f"site@{name}")["last_outcome"] == "success"
    # Without --env-file the instance's own value is seen.
    alone = launcher.run("run", "sitejobs:site", "--instance", "shop.example", env=_env(launcher))
    assert alone.event("seen")["site"] == "shop"
    assert not (launcher.state_dir / "site").exists()


def test_instance_env_file_is_read_after_the_shared_ones(launcher: Launcher, tmp_path: Path) -> None:
    """The job's env_files come before the instance's file, which wins."""
    launcher.write_job(
        "ordered",
        f"""
        from jobrunner import JobContext, job

        @job(instances=True, env_files=["{tmp_path}/shared.env"])
        def ordered(ctx: JobContext) -> None:
            ctx.log.info("seen", site=ctx.env["SITE"], other=ctx.env["OTHER"])
        """,
    )
    (tmp_path / "shared.env").write_text("SITE=shared\nOTHER=from-shared\n")
    (tmp_path / "shared.env").chmod(0o600)
    _add(_instances(launcher), "ordered", "one", "SITE=one\n")
    result = launcher.run("run", "ordered", "--instance", "one", env=_env(launcher))
    assert result.returncode == 0, result.stderr
    assert result.event("seen") | {} == result.event("seen")
    assert (result.event("seen")["site"], result.event("seen")["other"]) == ("one", "from-shared")


def test_instance_env_file_checked_like_other_env_files(launcher: Launcher) -> None:
    launcher.write_job("sitejobs", SITE_JOB)
    base = _instances(launcher)
    _add(base, "site", "open", "SITE=x\n")
    (base / "site" / "open.env").chmod(0o666)
    result = launcher.run("run", "sitejobs:site", "--instance", "open", env=_env(launcher))
    assert result.returncode == 78
    assert "open.env" in result.stderr and "writable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_instance_never_added_is_a_config_error_naming_the_fix(launcher: Launcher) -> None:
    launcher.write_job("sitejobs", SITE_JOB)
    _instances(launcher)
    result = launcher.run("run", "sitejobs:site", "--instance", "typo.example", env=_env(launcher))
    assert result.returncode == 78
    assert "instance 'typo.example' of site is not configured" in result.stderr
    assert "jobrunner instances add site typo.example" in result.stderr


def test_instantiable_job_without_instance_and_plain_with_one_exit_64(launcher: Launcher) -> None:
    launcher.write_job("sitejobs", SITE_JOB)
    _instances(launcher)
    missing = launcher.run("run", "sitejobs:site", env=_env(launcher))
    assert missing.returncode == 64
    assert missing.stderr.strip() == (
        "jobrunner: job site runs per instance: give --instance NAME (e.g. --instance shop.example)"
    )
    extra = launcher.run("run", "sitejobs:plain", "--instance", "a", env=_env(launcher))
    assert extra.returncode == 64
    assert extra.stderr.strip() == "jobrunner: job plain has no instances: run it without --instance"
    plain = launcher.run("run", "sitejobs:plain", env=_env(launcher))
    assert plain.returncode == 0 and plain.event("seen").get("instance") is None
    assert "instance" not in plain.event("job.started")


def test_optional_instances_run_both_ways(launcher: Launcher) -> None:
    launcher.write_job(
        "either",
        """
        from jobrunner import JobContext, job

        @job(instances="optional", instance_group="grp")
        def either(ctx: JobContext) -> None:
            ctx.log.info("seen", instance=ctx.instance, where=ctx.env.get("WHERE", "shared"))
        """,
    )
    _add(_instances(launcher), "grp", "one", "WHERE=one\n")
    plain = launcher.run("run", "either", env=_env(launcher))
    one = launcher.run("run", "either", "--instance", "one", env=_env(launcher))
    assert (plain.returncode, one.returncode) == (0, 0), plain.stderr + one.stderr
    assert plain.event("seen")["where"] == "shared" and plain.event("seen").get("instance") is None
    assert one.event("seen")["where"] == "one" and one.event("seen")["job"] == "either@one"


def test_exec_with_an_instance(launcher: Launcher) -> None:
    _add(_instances(launcher), "wrapped", "a", "WHO=a\n")
    result = launcher.run("exec", "wrapped", "--instance", "a", "--", "sh", "-c", 'echo "who=$WHO"', env=_env(launcher))
    assert result.returncode == 0, result.stderr
    assert any(e.get("line") == "who=a" for e in result.events)
    assert result.event("job.finished")["job"] == "wrapped@a"
    assert launcher.state("wrapped@a")["last_outcome"] == "success"


def test_one_broken_instance_fails_alone(launcher: Launcher) -> None:
    launcher.write_job("sitejobs", SITE_JOB)
    base = _instances(launcher)
    _add(base, "site", "good", "SITE=good\n")
    _add(base, "site", "bad", "SITE=bad\nFAIL=1\n")
    good = launcher.run("run", "sitejobs:site", "--instance", "good", env=_env(launcher))
    bad = launcher.run("run", "sitejobs:site", "--instance", "bad", env=_env(launcher))
    assert (good.returncode, bad.returncode) == (0, 1)
    assert launcher.state("site@good")["last_outcome"] == "success"
    assert launcher.state("site@bad")["last_outcome"] == "failure"
    assert "site bad is broken" in launcher.state("site@bad")["last_error"]


def test_health_status_and_list_show_one_row_per_instance(launcher: Launcher) -> None:
    launcher.write_job("sitejobs", SITE_JOB)
    base = _instances(launcher)
    for name in ("a.example", "b.example", "c.example"):
        _add(base, "site", name, f"SITE={name}\n")
        assert launcher.run("run", "sitejobs:site", "--instance", name, env=_env(launcher)).returncode == 0
    env = _env(launcher)
    health = launcher.run("health", "--package", "sitejobs", "--json", env=env)
    rows = {r["job"]: r for r in json.loads(health.stdout)["jobs"]}
    assert sorted(rows) == ["plain", "site@a.example", "site@b.example", "site@c.example"]
    assert rows["site@a.example"]["unit"] == "site@a.example"
    only = launcher.run("health", "--package", "sitejobs", "--json", "site", env=env)
    assert sorted(r["job"] for r in json.loads(only.stdout)["jobs"]) == [
        "site@a.example",
        "site@b.example",
        "site@c.example",
    ]
    status = launcher.run("status", "--json", "--package", "sitejobs", env=env)
    jobs = [json.loads(line)["job"] for line in status.stdout.splitlines()]
    assert jobs == ["plain", "site@a.example", "site@b.example", "site@c.example"]
    listed = [
        json.loads(line)
        for line in launcher.run("list", "--package", "sitejobs", "--json", env=env).stdout.splitlines()
    ]
    by_job = {r["job"]: r for r in listed}
    assert by_job["sitejobs:site"]["instances"] == ["a.example", "b.example", "c.example"]
    assert by_job["sitejobs:plain"]["instances"] is None


def test_history_of_a_job_shows_its_instances(launcher: Launcher) -> None:
    launcher.write_job("sitejobs", SITE_JOB)
    base = _instances(launcher)
    for name in ("a.example", "b.example"):
        _add(base, "site", name, f"SITE={name}\n")
        assert launcher.run("run", "sitejobs:site", "--instance", name, env=_env(launcher)).returncode == 0
    shown = launcher.run("history", "site", "--json", env=_env(launcher))
    assert shown.returncode == 0, shown.stderr
    runs = [json.loads(line) for line in shown.stdout.splitlines()]
    assert sorted(r["job"] for r in runs if "run_id" in r) == ["site@a.example", "site@b.example"]
    assert sorted(r["summary"]["job"] for r in runs if "summary" in r) == ["site@a.example", "site@b.example"]
    one = launcher.run("history", "site@b.example", "--json", env=_env(launcher))
    assert [json.loads(line)["job"] for line in one.stdout.splitlines() if "run_id" in line] == ["site@b.example"]


def test_known_instances_skip_strays(tmp_path: Path) -> None:
    (tmp_path / "wp").mkdir()
    for entry in ("a.env", "b.env~", ".c.env", "README", "d.env"):
        (tmp_path / "wp" / entry).write_text("")
    assert known_instances("wp", str(tmp_path)) == ["a", "d"]
    assert known_instances("none", str(tmp_path)) == []


def test_expand_instances(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_INSTANCES_DIR", str(tmp_path / "inst"))

    @job(instances="optional", instance_group="g")
    def opt(ctx: object) -> None: ...

    @job(instances=True, instance_group="g")
    def req(ctx: object) -> None: ...

    state = tmp_path / "state"
    assert [j.name for j in expand_instances([opt, req], str(state))] == ["opt"]
    (tmp_path / "inst" / "g").mkdir(parents=True)
    (tmp_path / "inst" / "g" / "s1.env").write_text("")
    assert [j.name for j in expand_instances([opt, req], str(state))] == ["opt@s1", "req@s1"]
    (state / "opt").mkdir(parents=True)
    (state / "opt" / "state.json").write_text("{}")
    assert [j.name for j in expand_instances([opt, req], str(state))] == ["opt", "opt@s1", "req@s1"]


# --- metrics, notifications, alert -------------------------------------------------------


def test_metrics_carry_an_instance_label() -> None:
    text = render_job_metrics(
        "wp_backup@shop.example", {"last_outcome": "success", "runs": {"success": 1}}, host="h", instance="shop.example"
    )
    assert 'jobrunner_consecutive_failures{job_name="wp_backup",host="h",instance_name="shop.example"} 0' in text
    plain = render_job_metrics("wp_backup", {}, host="h")
    assert 'instance_name="' not in plain and 'job_name="wp_backup"' in plain


def test_notification_title_names_the_instance() -> None:
    @job(instances=True)
    def wp_backup(ctx: object) -> None: ...

    bound = wp_backup.for_instance("shop.example")
    title, body = failure_message(
        job=bound,
        host="h",
        run_id="r",
        result=RunResult("failure", 1, 1, 2.0),
        error="boom",
        tail=[],
        state={},
        suppressed=0,
    )
    assert "wp_backup@shop.example failed on h" in title
    assert "wp-backup@shop.example.service" in body


@pytest.mark.parametrize(
    ("props", "job_name"),
    [
        (
            {"Id": "wp-backup@shop.example.service", "StateDirectory": "jobrunner/wp_backup@shop.example"},
            "wp_backup@shop.example",
        ),
        ({"Id": "wp-backup.service", "StateDirectory": "jobrunner/wp_backup"}, "wp_backup"),
        ({"StateDirectory": "jobrunner/wp_backup@shop.example"}, "wp_backup@shop.example"),
        # the unit's instance and the state directory's disagree: not trusted
        ({"Id": "wp-backup@other.service", "StateDirectory": "jobrunner/wp_backup@shop.example"}, None),
        ({"Id": "wp-backup@a.service", "StateDirectory": "jobrunner/wp_backup"}, None),
        ({"Id": "x@a.service", "StateDirectory": "jobrunner/x@..bad"}, None),
        ({"Id": "x@a.service", "StateDirectory": "jobrunner/@a"}, None),
        # systemd lists StateDirectory= sorted: the shared jobrunner/keys may come first
        (
            {"Id": "wp-backup@b.example.service", "StateDirectory": "jobrunner/keys jobrunner/wp_backup@b.example"},
            "wp_backup@b.example",
        ),
        ({"Id": "wp-backup.service", "StateDirectory": "jobrunner/keys jobrunner/wp_backup"}, "wp_backup"),
        ({"Id": "odd.service", "StateDirectory": "jobrunner/keys jobrunner/other"}, "keys"),
    ],
)
def test_alert_finds_the_instance_job_of_a_unit(props: dict[str, str], job_name: str | None) -> None:
    assert job_of_unit(props) == job_name


# --- the counting lock -------------------------------------------------------------------

SLOT_JOB = """
import os, time
from jobrunner import JobContext, Slots, job

@job(instances=True, lock=True, timeout="{timeout}", concurrency=Slots("backup", 2))
def slotted(ctx: JobContext) -> None:
    ledger = os.environ["LEDGER"]
    def mark(kind):
        fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{{kind}} {{ctx.instance}} {{time.monotonic_ns()}}\\n".encode())
        os.close(fd)
    mark("in")
    time.sleep(float(os.environ.get("HOLD", "1.0")))
    mark("out")
"""


def _slot_sites(launcher: Launcher, timeout: str = "60s") -> None:
    launcher.write_job("slotjobs", SLOT_JOB.format(timeout=timeout))
    base = _instances(launcher)
    for name in ("s1", "s2", "s3"):
        _add(base, "slotted", name, f"SITE={name}\n")


def test_two_slots_hold_with_three_started_at_once(launcher: Launcher) -> None:
    _slot_sites(launcher)
    ledger = launcher.tmp / "ledger"
    env = _env(launcher, LEDGER=str(ledger), HOLD="1.0")
    procs = [launcher.start("run", "slotjobs", "--instance", name, env=env) for name in ("s1", "s2", "s3")]
    results = [launcher.finish(p) for p in procs]
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    entries = ledger_entries(ledger)
    assert len(entries) == 6
    assert overlaps(entries) == 1  # at most 2 inside at once, and 2 did run together
    waiting = [r.event("lock.waiting") for r in results if "lock.waiting" in r.names()]
    assert len(waiting) >= 1
    assert all(w["slots"] == 2 and w["path"].endswith("backup.slot*.lock") for w in waiting)
    acquired = {r.event("lock.acquired")["path"] for r in results if r.event("lock.acquired").get("slots")}
    assert acquired <= {str(launcher.lock_dir / "backup.slot0.lock"), str(launcher.lock_dir / "backup.slot1.lock")}


def test_slots_from_the_environment(launcher: Launcher) -> None:
    _slot_sites(launcher)
    ledger = launcher.tmp / "ledger"
    env = _env(launcher, LEDGER=str(ledger), HOLD="0.5", JOBRUNNER_SLOTS_BACKUP="1")
    procs = [launcher.start("run", "slotjobs", "--instance", name, env=env) for name in ("s1", "s2", "s3")]
    results = [launcher.finish(p) for p in procs]
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    assert overlaps(ledger_entries(ledger)) == 0
    assert all(w["slots"] == 1 for r in results for w in r.events if w["event"] == "lock.waiting")


def test_bad_slot_count_in_the_environment_is_a_config_error(launcher: Launcher) -> None:
    _slot_sites(launcher)
    env = _env(launcher, LEDGER=str(launcher.tmp / "l"), JOBRUNNER_SLOTS_BACKUP="lots")
    result = launcher.run("run", "slotjobs", "--instance", "s1", env=env)
    assert result.returncode == 78
    assert "JOBRUNNER_SLOTS_BACKUP='lots'" in result.event("job.failed")["exception"]["message"]


def test_slot_wait_ends_at_the_deadline(launcher: Launcher) -> None:
    _slot_sites(launcher, timeout="60s")
    launcher.write_job(
        "hasty",
        """
        from jobrunner import JobContext, Slots, job

        @job(timeout="2s", concurrency=Slots("backup", 2))
        def hasty(ctx: JobContext) -> None:
            ctx.log.info("ran")
        """,
    )
    ledger = launcher.tmp / "ledger"
    env = _env(launcher, LEDGER=str(ledger), HOLD="6", JOBRUNNER_SLOTS_BACKUP="1")
    first = launcher.start("run", "slotjobs", "--instance", "s1", env=env)
    assert wait_for(lambda: ledger.exists(), timeout=20)
    second = launcher.run("run", "hasty", env=env)
    assert second.returncode == 75, second.stderr
    assert launcher.finish(first).returncode == 0
    busy = second.event("lock.busy")
    assert "all 1 slots of backup are taken" in busy["reason"]
    assert second.event("lock.waiting")["slots"] == 1
    assert "ran" not in second.names()
    assert launcher.state("hasty")["runs"] == {"skipped": 1}
    assert second.event("job.finished")["duration_s"] < 3.5


def test_dry_run_takes_no_slot(launcher: Launcher) -> None:
    _slot_sites(launcher)
    env = _env(launcher, LEDGER=str(launcher.tmp / "l"), HOLD="0")
    result = launcher.run("run", "slotjobs", "--instance", "s1", "--dry-run", env=env)
    assert result.returncode == 0
    assert not any(e["event"] == "lock.acquired" for e in result.events)
    assert not os.path.exists(launcher.lock_dir / "backup.slot0.lock")


def test_a_bad_instance_name_is_checked_before_the_job_is_loaded(launcher: Launcher) -> None:
    result = launcher.run("run", "no_such_module", "--instance", "../x", env=_env(launcher))
    assert result.returncode == 64
    assert result.stderr.strip().startswith("jobrunner: instance name '../x'")
