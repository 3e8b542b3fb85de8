"""Rendering: directives and values per declaration, hardening levels, shared files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobrunner.errors import ConfigError
from jobrunner.timespan import parse_timespan
from jobrunner.unitgen.render import render_all
from jobrunner.unitgen.testing import directives, job_package

BACKUP = '''
from jobrunner.declaration import job, Lock

@job(schedule=["02:15", "Sun 05:00"], persistent=True, jitter="5m", fixed_jitter=True,
     accuracy="1m", lock=Lock(wait="30s"), timeout="2h", user="www-data", group="www-data",
     hardening="strict", write_paths=["/mnt/backups"], network=True,
     log_file="/var/log/jobrunner/wp-backup.log", working_dir="/var/www/html",
     env_files=["/etc/wordpress/wp.env", "-/etc/wordpress/optional.env"],
     cleanup_timeout="2m", kill_grace="20s")
def wp_backup(ctx):
    """Nightly full backup (100% of it)."""

@job(hardening="standard", user="www-data")
def manual(ctx):
    pass

@job(schedule="daily", hardening="basic", user="www-data")
def basic_job(ctx):
    pass

@job(schedule="*:0/15", lock="/var/lock/legacy.lock", unit="legacy-sync")
def root_strict(ctx):
    pass

@job(schedule="daily", user="www-data", read_paths=["/home/site/data"])
def home_reader(ctx):
    pass
'''


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    root = tmp_path_factory.mktemp("jobs")
    package = job_package(root, {"backup": BACKUP})
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(root))
    try:
        yield package, render_all(package, python="/usr/local/jr/bin/python")
    finally:
        mp.undo()


def render_source(tmp_path, monkeypatch, source: str) -> dict[str, str]:
    package = job_package(tmp_path, {"m": source})
    monkeypatch.syspath_prepend(str(tmp_path))
    return render_all(package)


def test_files_per_job(rendered):
    _, files = rendered
    assert sorted(files) == [
        "alert-failure@.service",
        "basic-job.service",
        "basic-job.timer",
        "home-reader.service",
        "home-reader.timer",
        "legacy-sync.service",
        "legacy-sync.timer",
        "logrotate.d/jobrunner",
        "manual.service",  # no schedule: no timer
        "tmpfiles.d/jobrunner.conf",
        "wp-backup.service",
        "wp-backup.timer",
    ]


def test_timer_directives(rendered):
    _, files = rendered
    timer = directives(files["wp-backup.timer"], "Timer")
    assert timer["OnCalendar"] == ["02:15", "Sun 05:00"]
    assert timer["Persistent"] == ["yes"]
    assert parse_timespan(timer["RandomizedDelaySec"][0]) == 300
    assert timer["FixedRandomDelay"] == ["yes"]
    assert parse_timespan(timer["AccuracySec"][0]) == 60
    assert timer["Unit"] == ["wp-backup.service"]
    assert directives(files["wp-backup.timer"], "Install") == {"WantedBy": ["timers.target"]}
    plain = directives(files["basic-job.timer"], "Timer")
    assert plain["Persistent"] == ["no"]
    assert "RandomizedDelaySec" not in plain and "FixedRandomDelay" not in plain and "AccuracySec" not in plain


def test_service_directives(rendered):
    package, files = rendered
    text = files["wp-backup.service"]
    unit, svc = directives(text, "Unit"), directives(text, "Service")
    assert unit["OnFailure"] == ["alert-failure@%n.service"]
    assert unit["Wants"] == ["network-online.target"] and unit["After"] == ["network-online.target"]
    assert unit["Description"] == ["jobrunner job wp_backup: Nightly full backup (100%% of it)."]
    assert svc["Type"] == ["oneshot"]
    assert svc["User"] == ["www-data"] and svc["Group"] == ["www-data"]
    assert svc["WorkingDirectory"] == ["/var/www/html"]
    assert svc["ExecStart"] == [f"/usr/local/jr/bin/python -m jobrunner run {package}.backup:wp_backup"]
    assert svc["SuccessExitStatus"] == ["75 143"]
    assert svc["EnvironmentFile"] == [
        "-/etc/jobrunner/jobrunner.env",
        "/etc/wordpress/wp.env",
        "-/etc/wordpress/optional.env",
        "-/etc/default/wp-backup",
    ]
    env = svc["Environment"]
    assert "JOBRUNNER_STATE_DIR=/var/lib/jobrunner" in env
    assert "JOBRUNNER_LOCK_DIR=/run/lock/jobrunner" in env
    assert svc["StateDirectory"] == ["jobrunner/wp_backup"]
    assert svc["SyslogIdentifier"] == ["wp-backup"]
    assert svc["KillMode"] == ["control-group"]
    assert svc["ReadWritePaths"] == ["-/run/lock/jobrunner", "/mnt/backups", "-/var/log/jobrunner/wp-backup.log"]
    assert "RuntimeMaxSec" not in svc  # ignored by systemd 252 for Type=oneshot


def test_timeouts_formula(rendered):
    _, files = rendered
    svc = directives(files["wp-backup.service"], "Service")
    # timeout 2h + lock wait 30s + kill_grace 20s + cleanup 2m + 60s margin
    assert parse_timespan(svc["TimeoutStartSec"][0]) == 7200 + 30 + 20 + 120 + 60
    # kill_grace 20s + cleanup 2m + 15s margin
    assert parse_timespan(svc["TimeoutStopSec"][0]) == 20 + 120 + 15
    no_timeout = directives(files["manual.service"], "Service")
    assert parse_timespan(no_timeout["TimeoutStartSec"][0]) == 6 * 3600
    assert parse_timespan(no_timeout["TimeoutStopSec"][0]) == 10 + 60 + 15


def test_network_only_when_declared(rendered):
    _, files = rendered
    for name in ("manual.service", "basic-job.service", "legacy-sync.service"):
        unit = directives(files[name], "Unit")
        assert "Wants" not in unit and "After" not in unit
    strict_offline = directives(files["legacy-sync.service"], "Service")
    assert strict_offline["IPAddressDeny"] == ["any"] and strict_offline["IPAddressAllow"] == ["localhost"]
    online = directives(files["wp-backup.service"], "Service")
    assert "IPAddressDeny" not in online
    assert online["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]


def test_absolute_lock_opens_its_directory(rendered):
    _, files = rendered
    svc = directives(files["legacy-sync.service"], "Service")
    assert svc["ReadWritePaths"] == ["/var/lock"]
    assert "User" not in svc  # root
    assert "PrivateUsers" not in svc  # would break root's file ownership


SEED_BASIC = {"NoNewPrivileges": "yes", "PrivateTmp": "yes"}
SEED_STANDARD = {**SEED_BASIC, "ProtectSystem": "strict", "ProtectHome": "read-only"}
SEED_STRICT = {
    **SEED_STANDARD,
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectControlGroups": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictRealtime": "yes",
}
STRICT_EXTRA = {
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
    "PrivateUsers": "yes",
}


def test_hardening_basic(rendered):
    _, files = rendered
    svc = directives(files["basic-job.service"], "Service")
    for key, value in SEED_BASIC.items():
        assert svc[key] == [value]
    for absent in ("ProtectSystem", "MemoryDenyWriteExecute", "SystemCallFilter", "PrivateUsers"):
        assert absent not in svc


def test_hardening_standard(rendered):
    _, files = rendered
    svc = directives(files["manual.service"], "Service")
    for key, value in SEED_STANDARD.items():
        assert svc[key] == [value], key
    assert svc["SystemCallFilter"] == ["@system-service"]
    for absent in ("MemoryDenyWriteExecute", "PrivateUsers", "IPAddressDeny"):
        assert absent not in svc


def test_hardening_strict(rendered):
    _, files = rendered
    svc = directives(files["wp-backup.service"], "Service")
    for key, value in {**SEED_STRICT, **STRICT_EXTRA}.items():
        if key != "ProtectHome":
            assert svc[key] == [value], key
    assert svc["ProtectHome"] == ["yes"]
    assert svc["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert svc["SystemCallErrorNumber"] == ["EPERM"]


def test_strict_keeps_declared_home_paths_reachable(rendered):
    _, files = rendered
    svc = directives(files["home-reader.service"], "Service")
    assert svc["ProtectHome"] == ["read-only"]
    assert svc["ReadOnlyPaths"] == ["/home/site/data"]


def test_tmpfiles_and_logrotate(rendered):
    _, files = rendered
    tmpfiles = [line for line in files["tmpfiles.d/jobrunner.conf"].splitlines() if not line.startswith("#")]
    assert tmpfiles == [
        "d /run/lock/jobrunner 0755 root root -",  # root's alone: nobody else can plant a lock file
        "f /run/lock/jobrunner/wp_backup.lock 0600 www-data - -",  # made for the non-root job
        "d /mnt/backups 0750 www-data www-data -",  # write_paths exist before the unit starts
        "d /var/log/jobrunner - - - -",
        "f /var/log/jobrunner/wp-backup.log 0640 www-data www-data -",
    ]
    logrotate = files["logrotate.d/jobrunner"]
    assert "/var/log/jobrunner/wp-backup.log {" in logrotate
    for line in ("daily", "rotate 14", "compress", "missingok", "notifempty", "create 0640 www-data www-data"):
        assert f"    {line}\n" in logrotate
    assert "    copytruncate" not in logrotate


SHARED_LOCK = """
from jobrunner.declaration import job, Lock

@job(lock=Lock(name="site"), user="www-data", group="site")
def a(ctx):
    pass

@job(lock=Lock(name="site", shared=True))
def b(ctx):
    pass

@job(lock=Lock(name="other"), user="www-data")
def c(ctx):
    pass

@job(lock=Lock(name="other"), user="backup")
def d(ctx):
    pass
"""


def test_lock_shared_across_users_needs_a_group(tmp_path, monkeypatch):
    """A lock shared by jobs of two users is made 0660 root:<their group>; without one group it is
    refused at render time, naming the lock and the jobs (never a world-openable lock file)."""
    with pytest.raises(ConfigError, match=r"lock other is shared by jobs .*c \(user www-data\).*d \(user backup\)"):
        render_source(tmp_path, monkeypatch, SHARED_LOCK)
    files = render_source(tmp_path, monkeypatch, SHARED_LOCK.split('@job(lock=Lock(name="other")')[0])
    assert "f /run/lock/jobrunner/site.lock 0660 root site -" in files["tmpfiles.d/jobrunner.conf"].splitlines()


def test_headers_and_determinism(rendered):
    package, files = rendered
    assert render_all(package, python="/usr/local/jr/bin/python") == files
    for name, text in files.items():
        assert text.startswith("# Generated by jobrunner"), name
    assert f"job {package}.backup:wp_backup" in files["wp-backup.service"]
    assert f"job {package}.backup:wp_backup" in files["wp-backup.timer"]


def test_selected_jobs_shared_files_hold_their_lines(rendered):
    package, files = rendered
    some = render_all(package, ["manual"], python="/usr/local/jr/bin/python")
    assert sorted(some) == ["alert-failure@.service", "manual.service", "tmpfiles.d/jobrunner.conf"]
    # the shared files hold the selected job's lines alone (units render merges them into
    # --out's, tests/test_firsthour.py): a subset of the full render's, never another job's
    mine = some["tmpfiles.d/jobrunner.conf"].splitlines()
    assert set(mine) <= set(files["tmpfiles.d/jobrunner.conf"].splitlines())
    assert "logrotate.d/jobrunner" not in some  # manual has no log file: another job's is not its to write
    with pytest.raises(ConfigError, match="no job 'nope'"):
        render_all(package, ["nope"])


def test_no_log_file_no_logrotate(tmp_path, monkeypatch):
    files = render_source(tmp_path, monkeypatch, "from jobrunner.declaration import job\n@job\ndef plain(ctx): pass\n")
    assert sorted(files) == ["alert-failure@.service", "plain.service", "tmpfiles.d/jobrunner.conf"]
    assert "ReadWritePaths" not in directives(files["plain.service"], "Service")  # no lock, no paths


def test_bad_schedule_names_the_job(tmp_path, monkeypatch):
    source = "from jobrunner.declaration import job\n@job(schedule='Mon..Fri 25:00')\ndef broken(ctx): pass\n"
    with pytest.raises(ConfigError) as info:
        render_source(tmp_path, monkeypatch, source)
    assert ":broken" in str(info.value) and "Mon..Fri 25:00" in str(info.value)
    assert "\n" not in str(info.value)


def test_overrides_replace_append_remove(tmp_path, monkeypatch):
    source = """
    from jobrunner.declaration import job
    @job(schedule="Sun 05:00", systemd={
        "Service": {"CapabilityBoundingSet": "CAP_KILL", "+ReadWritePaths": ["/run/php", "/var/run/x"],
                    "ProcSubset": None, "PrivateNetwork": False},
        "Timer": {"Persistent": True}})
    def php_restart(ctx):
        pass
    """
    files = render_source(tmp_path, monkeypatch, source)
    svc = directives(files["php-restart.service"], "Service")
    assert svc["CapabilityBoundingSet"] == ["CAP_KILL"]
    assert svc["ReadWritePaths"] == ["/run/php", "/var/run/x"]
    assert "ProcSubset" not in svc
    assert svc["PrivateNetwork"] == ["no"]
    assert directives(files["php-restart.timer"], "Timer")["Persistent"] == ["yes"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"Service": {"bad key": "x"}}, "not a directive name"),
        ({"Service": {"User": "a\nb"}}, "several lines"),
        ({"Service": ["User"]}, "must be a dict"),
        ({"Service": {"RuntimeMaxSec": "1h"}}, "RuntimeMaxSec= has no effect"),
    ],
)
def test_bad_overrides_are_config_errors(tmp_path, monkeypatch, options, message):
    source = f"from jobrunner.declaration import job\n@job(systemd={options!r})\ndef odd(ctx): pass\n"
    with pytest.raises(ConfigError, match=message) as info:
        render_source(tmp_path, monkeypatch, source)
    assert "odd" in str(info.value)


def test_fixed_jitter_without_jitter_is_an_error(tmp_path, monkeypatch):
    source = "from jobrunner.declaration import job\n@job(schedule='daily', fixed_jitter=True)\ndef j(ctx): pass\n"
    with pytest.raises(ConfigError, match="fixed_jitter"):
        render_source(tmp_path, monkeypatch, source)


def test_alert_unit(rendered):
    _, files = rendered
    svc = directives(files["alert-failure@.service"], "Service")
    assert svc["Type"] == ["oneshot"]
    assert svc["ExecStart"] == ["/usr/local/jr/bin/python -m jobrunner alert %i"]
    assert "IPAddressDeny" not in svc and "OnFailure" not in directives(files["alert-failure@.service"], "Unit")
    assert svc["NoNewPrivileges"] == ["yes"] and svc["ProtectSystem"] == ["strict"]
