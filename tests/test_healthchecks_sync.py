"""``jobrunner checks sync`` against a real healthchecks server (v3.13, tests/healthchecks_server.py):
create, dry run, idempotence, update, checks left alone, prune, adopt; the env file's checks; the
API key in no output."""

from __future__ import annotations

import os
import re
import textwrap

import pytest

pytestmark = pytest.mark.slow

BACKUP = '''
from jobrunner import Lock, job

@job(schedule="02:15", jitter="5m", timeout="{timeout}", lock=Lock(wait="30m"), notify="ops")
def backup(ctx):
    """Nightly backup of the sites."""
'''

CRON = """
from jobrunner import job

@job(schedule=["*:0/15", "Mon 03:00"], timeout="10m")
def cron_job(ctx):
    pass

@job
def by_hand(ctx):
    pass
"""


def _package(launcher, timeout: str = "2h") -> None:
    pkg = launcher.jobs / "hcjobs"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "backup.py").write_text(textwrap.dedent(BACKUP.format(timeout=timeout)))
    (pkg / "cron.py").write_text(textwrap.dedent(CRON))


def _env_file(launcher, project, *, url: str | None = None, key: str | None = None, mode: int = 0o600, extra: str = ""):
    path = launcher.tmp / "healthchecks.env"
    path.write_text(
        f"HC_API_URL={url or project.server.url}\nHC_API_KEY={key or project.api_key}\nHC_TZ=Europe/Berlin\n{extra}"
    )
    path.chmod(mode)
    return path


def _sync(launcher, env_file, *args: str):
    run = launcher.run("checks", "sync", "--package", "hcjobs", "--env-file", str(env_file), *args)
    return run


def _writes(project) -> int:
    """How many POST/DELETE requests to the management API the server has logged."""
    log = (project.server.work / "server.log").read_text(errors="replace")
    return len(re.findall(r'"(?:POST|DELETE) /api/v3/checks/', log))


def _lines(run) -> dict[str, str]:
    """The plan's lines by slug: ``{"backup": "create  backup  name 'backup', …"}``."""
    out = {}
    for line in run.stdout.splitlines()[:-1]:
        words = line.split()
        slug = words[2] if words[0] == "would" else words[1]
        out[slug] = line
    return out


def test_sync_creates_updates_and_is_idempotent(launcher, hc_project):
    """Dry run changes nothing; the sync creates one oncalendar check per scheduled job with the
    job's schedule, the time zone, a grace from jitter+accuracy+lock wait+timeout, tags and a
    description; a second sync changes nothing; a changed job is an update of just that field."""
    _package(launcher)
    env_file = _env_file(launcher, hc_project)
    dry = _sync(launcher, env_file, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = _lines(dry)
    assert lines["backup"].startswith("would create") and "schedule '02:15'" in lines["backup"]
    assert lines["cron-job"].startswith("would create") and "schedule '*:0/15\\nMon 03:00'" in lines["cron-job"]
    assert lines["by-hand"].startswith("skip") and "no schedule" in lines["by-hand"]
    assert dry.stdout.splitlines()[-1] == "dry run: 2 to create, 1 skipped; nothing changed"
    assert hc_project.checks() == {}

    before = _writes(hc_project)  # the session's server: other tests' writes are in its log too
    first = _sync(launcher, env_file)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == "2 created, 1 skipped"
    checks = hc_project.checks()
    assert sorted(checks) == ["backup", "cron-job"]
    backup = checks["backup"]
    assert backup["schedule"] == "02:15" and backup["tz"] == "Europe/Berlin" and "timeout" not in backup
    # 5 min jitter + 1 min accuracy + 30 min lock wait + 2 h timeout + 2 min = 2 h 38 min
    assert backup["grace"] == (5 + 1 + 30 + 120 + 2) * 60
    host = os.uname().nodename.split(".")[0]
    assert backup["tags"] == " ".join(sorted({"jobrunner", "ops", host}))
    assert (
        backup["desc"]
        == f"Nightly backup of the sites.\nManaged by jobrunner checks sync on {host} (hcjobs.backup:backup)"
    )
    assert checks["cron-job"]["schedule"] == "*:0/15\nMon 03:00" and checks["cron-job"]["grace"] == 13 * 60

    writes = _writes(hc_project)
    assert writes - before == 2  # the two creates
    second = _sync(launcher, env_file)
    assert second.returncode == 0
    assert second.stdout.splitlines()[-1] == "2 unchanged, 1 skipped"
    assert hc_project.checks() == checks  # nothing changed on the server,
    assert _writes(hc_project) == writes  # nor was anything sent to change

    _package(launcher, timeout="3h")
    dry = _sync(launcher, env_file, "--dry-run")
    assert _lines(dry)["backup"].split(None, 3)[3] == "grace: 2h 38min -> 3h 38min"
    assert hc_project.checks() == checks
    update = _sync(launcher, env_file)
    assert update.stdout.splitlines()[-1] == "1 updated, 1 unchanged, 1 skipped"
    assert hc_project.checks()["backup"]["grace"] == checks["backup"]["grace"] + 3600
    assert hc_project.checks()["backup"]["uuid"] == backup["uuid"]  # the same check, updated
    assert hc_project.api_key not in dry.stdout + first.stdout + second.stdout + update.stdout


def test_checks_not_made_by_the_sync_are_left_alone_unless_asked(launcher, hc_project):
    """A check made by hand with a job's slug is left alone (--adopt takes it over); a check of a
    job that is gone is listed as stale and deleted only with --prune; other checks are never touched."""
    _package(launcher)
    hand = hc_project.create(name="by hand", slug="backup", timeout=86400, desc="made in the web UI")
    other = hc_project.create(name="other", slug="other", timeout=3600)
    theirs = "Managed by jobrunner checks sync on web9 (jobs.x:x)"
    web9 = hc_project.create(name="cron-job", slug="cron-job", timeout=3600, desc=theirs)
    web9_gone = hc_project.create(name="gone", slug="gone", timeout=3600, desc=theirs)
    env_file = _env_file(launcher, hc_project)
    run = _sync(launcher, env_file)
    assert run.returncode == 0
    assert "not made by jobrunner checks sync (--adopt takes it over)" in _lines(run)["backup"]
    checks = hc_project.checks()
    assert checks["backup"]["desc"] == "made in the web UI" and checks["backup"]["timeout"] == 86400
    assert checks["other"] == other

    assert "managed by jobrunner checks sync on web9" in _lines(run)["cron-job"]

    adopt = _sync(launcher, env_file, "--adopt", "--prune")
    assert _lines(adopt)["backup"].startswith("update")
    adopted = hc_project.checks()["backup"]
    assert adopted["uuid"] == hand["uuid"] and adopted["schedule"] == "02:15" and "timeout" not in adopted
    # another host's checks: never adopted, never pruned
    assert "gone" not in _lines(adopt) and _lines(adopt)["cron-job"].startswith("leave")
    assert hc_project.checks()["cron-job"] == web9 and hc_project.checks()["gone"] == web9_gone
    hc_project.api("DELETE", f"checks/{web9['uuid']}")
    assert _sync(launcher, env_file).returncode == 0  # now this host's cron-job

    (launcher.jobs / "hcjobs" / "cron.py").unlink()
    stale = _sync(launcher, env_file)
    assert "stale" in _lines(stale)["cron-job"] and "cron-job" in hc_project.checks()
    pruned = _sync(launcher, env_file, "--prune")
    assert _lines(pruned)["cron-job"].startswith("delete")
    assert sorted(hc_project.checks()) == ["backup", "gone", "other"]


def test_a_synced_check_takes_the_jobs_pings(launcher, hc_project):
    """The slug the sync gives a job is the one ``JOBRUNNER_PING_URL=…/<ping key>/{job}`` pings:
    after a run, the check is up with the run's duration."""
    _package(launcher)
    assert _sync(launcher, _env_file(launcher, hc_project)).returncode == 0
    env = launcher.env(JOBRUNNER_PING_URL=hc_project.ping_url("{job}"))
    run = launcher.run("run", "hcjobs.backup", env=env)
    assert run.returncode == 0 and "ping.rejected" not in run.names()
    check = hc_project.checks()["backup"]
    assert check["status"] == "up" and check["n_pings"] == 2


def test_bad_configuration_is_one_line_without_the_key(launcher, hc_project):
    """A world-readable env file, a missing key, a key the server refuses, a server that is down:
    one line naming what to fix, exit 78 (1 for the unreachable server), the key nowhere."""
    _package(launcher)
    readable = _env_file(launcher, hc_project, mode=0o644)
    run = _sync(launcher, readable)
    assert run.returncode == 78 and run.stderr.count("\n") == 1
    assert str(readable) in run.stderr and "readable by every user" in run.stderr

    wrong = "wrongkeywrongkeywrongkeywrongkey"
    run = _sync(launcher, _env_file(launcher, hc_project, key=wrong))
    assert run.returncode == 78 and run.stderr.count("\n") == 1 and "refused HC_API_KEY" in run.stderr
    assert wrong not in run.stderr + run.stdout

    short = _env_file(launcher, hc_project, key="tooshort")
    run = _sync(launcher, short)
    assert run.returncode == 78 and "HC_API_KEY is not a healthchecks API key" in run.stderr
    assert "tooshort" not in run.stderr

    from .test_notify_receivers import closed_port

    down = _env_file(launcher, hc_project, url=f"http://127.0.0.1:{closed_port()}/api/v3/")
    run = _sync(launcher, down)
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "Connection refused" in run.stderr
    assert hc_project.api_key not in run.stderr

    v1 = _env_file(launcher, hc_project, url=f"{hc_project.server.url}/api/v1/")
    run = _sync(launcher, v1)
    assert run.returncode == 78 and "needs /api/v3/" in run.stderr

    usage = launcher.run("checks", "sync", "--api-key", hc_project.api_key)
    assert usage.returncode == 64 and usage.stderr.count("\n") == 1


def test_a_check_that_cannot_be_made_is_one_error_line_and_the_rest_synced(launcher, hc_project):
    """Schedules longer than the server takes: that job's line says so, the others are synced,
    exit 1. A time zone the server refuses: each line carries the server's reason."""
    _package(launcher)
    many = [f"*-*-{day:02d} 04:00" for day in range(1, 16)]
    (launcher.jobs / "hcjobs" / "many.py").write_text(
        f"from jobrunner import job\n\n@job(schedule={many!r})\ndef many(ctx):\n    pass\n"
    )
    run = _sync(launcher, _env_file(launcher, hc_project))
    assert run.returncode == 1
    line = _lines(run)["many"]
    assert line.startswith("error") and "longer than the 100 characters healthchecks takes" in line, line
    assert sorted(hc_project.checks()) == ["backup", "cron-job"]
    assert run.stdout.splitlines()[-1] == "2 created, 1 skipped, 1 failed"

    (launcher.jobs / "hcjobs" / "many.py").unlink()
    refused = _sync(launcher, _env_file(launcher, hc_project, extra="HC_TZ=Mars/Olympus_Mons\n"))
    assert refused.returncode == 1
    line = _lines(refused)["backup"]
    assert line.startswith("error") and "HTTP 400 json validation error: tz is not a valid timezone" in line, line
    assert hc_project.checks()["backup"]["tz"] == "Europe/Berlin"


SITES = """
from jobrunner import job

@job(schedule="02:15", timeout="1h", instances=True, instance_group="web")
def site_backup(ctx):
    ctx.log.info("site_backup.ran", site=ctx.instance)
"""


def test_one_check_per_site_and_each_site_pings_its_own(launcher, hc_project):
    """A job with instances (many sites on one server) gets one check per added site, named
    from the instance's unit (`site-backup@shop.example` → slug `site-backup-shop-example`),
    and `{job}` in the ping URL is that same slug: a site's run pings its own check, so one
    site's success never covers another's silence."""
    pkg = launcher.jobs / "hcsites"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(SITES))
    instances = launcher.tmp / "instances"
    (instances / "web").mkdir(parents=True)
    for site in ("shop.example", "blog.example"):
        env_file = instances / "web" / f"{site}.env"
        env_file.write_text(f"SITE={site}\n")
        env_file.chmod(0o640)
    env_file = _env_file(launcher, hc_project)
    env = launcher.env(JOBRUNNER_INSTANCES_DIR=str(instances))
    run = launcher.run("checks", "sync", "--package", "hcsites", "--env-file", str(env_file), env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    checks = hc_project.checks()
    assert {"site-backup-shop-example", "site-backup-blog-example"} <= set(checks), sorted(checks)
    assert "site-backup" not in checks  # no instance-less check that nothing would ever ping

    ping_env = {**env, "JOBRUNNER_PING_URL": hc_project.ping_url("{job}")}
    site = launcher.run("run", "hcsites", "--instance", "shop.example", env=ping_env)
    assert site.returncode == 0 and "ping.rejected" not in site.names(), site.stdout + site.stderr
    checks = hc_project.checks()
    assert checks["site-backup-shop-example"]["status"] == "up"
    assert checks["site-backup-blog-example"]["status"] == "new"  # not pinged by the other site
