"""Template units for instantiable jobs (issue 19): ``<unit>@.service`` + ``<unit>@.timer``,
what differs from a plain unit, and the real ``systemd-analyze verify`` / ``security`` on them
(for the sample instance ``verify``, as ``units verify`` does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobrunner import Lock, Slots, job
from jobrunner.unitgen.ini import parse_unit
from jobrunner.unitgen.render import RenderOptions, render_instance_tmpfiles, render_jobs
from jobrunner.unitgen.verify import verify_dir


@job(
    schedule="02:15",
    jitter="1h",
    fixed_jitter=True,
    persistent=True,
    lock=True,
    timeout="2h",
    instances="optional",
    instance_group="wp",
    write_paths=["/var/backups/site"],
    instance_write_paths=["/var/backups/site/%i"],
    concurrency=Slots("backup", 2),
)
def site_backup(ctx: object) -> None:
    """Back a site up."""


@job(schedule="*:0/15", lock=True, user="www-data", instances=True, instance_group="wp", write_paths=["-/srv/%i/tmp"])
def site_cron(ctx: object) -> None:
    """Run a site's cron."""


@job(lock=Lock(name="shared-name"), instances=True)
def by_hand(ctx: object) -> None:
    """No schedule: no timer."""


def _values(text: str, section: str, key: str) -> list[str]:
    return [v for k, v in parse_unit(text)[section] if k == key]


@pytest.fixture(scope="module")
def files() -> dict[str, str]:
    return render_jobs([site_backup, site_cron, by_hand], RenderOptions())


def test_which_files(files: dict[str, str]) -> None:
    units = sorted(name for name in files if name.endswith((".service", ".timer")))
    assert units == [
        "alert-failure@.service",
        "by-hand@.service",
        "site-backup.service",  # instances="optional": the plain (single-site) units too
        "site-backup.timer",
        "site-backup@.service",
        "site-backup@.timer",
        "site-cron@.service",  # instances=True: the template only
        "site-cron@.timer",
    ]


def test_template_service(files: dict[str, str]) -> None:
    text = files["site-backup@.service"]
    assert _values(text, "Service", "ExecStart") == [
        f"/opt/jobrunner/bin/python -m jobrunner run {site_backup.ref} --instance %i"
    ]
    assert _values(text, "Service", "StateDirectory") == ["jobrunner/site_backup@%i"]
    assert _values(text, "Service", "SyslogIdentifier") == ["site-backup@%i"]
    assert _values(text, "Service", "EnvironmentFile") == [
        "-/etc/jobrunner/jobrunner.env",
        "-/etc/default/site-backup",
        "/etc/jobrunner/instances/wp/%i.env",
    ]
    assert _values(text, "Service", "ReadWritePaths") == ["-/run/lock/jobrunner", "/var/backups/site/%i"]
    assert _values(text, "Unit", "Description") == ["jobrunner job site_backup@%i: Back a site up."]
    assert _values(text, "Unit", "OnFailure") == ["alert-failure@%n.service"]
    plain = files["site-backup.service"]
    assert _values(plain, "Service", "ReadWritePaths") == ["-/run/lock/jobrunner", "/var/backups/site"]
    assert _values(plain, "Service", "StateDirectory") == ["jobrunner/site_backup"]
    assert "--instance" not in plain


def test_template_timer(files: dict[str, str]) -> None:
    text = files["site-backup@.timer"]
    assert _values(text, "Timer", "Unit") == ["site-backup@%i.service"]
    assert _values(text, "Timer", "FixedRandomDelay") == ["yes"]
    assert _values(text, "Unit", "Description") == ["Schedule of jobrunner job site_backup@%i"]


def test_percent_in_a_plain_path_is_still_escaped() -> None:
    @job(instances="optional", write_paths=["/srv/100%"], instance_write_paths=["/srv/100%/%i"])
    def odd(ctx: object) -> None: ...

    files = render_jobs([odd])
    assert _values(files["odd.service"], "Service", "ReadWritePaths") == ["/srv/100%%"]
    assert "/srv/100%%/%i" in _values(files["odd@.service"], "Service", "ReadWritePaths")


def test_shared_tmpfiles_leave_instances_to_instances_add(files: dict[str, str]) -> None:
    tmpfiles = files["tmpfiles.d/jobrunner.conf"]
    assert "%i" not in tmpfiles
    assert "site_cron" not in tmpfiles  # its lock files are per instance
    assert "d /var/backups/site 0750 root root -" in tmpfiles  # the plain job's


def test_instance_tmpfiles() -> None:
    text = render_instance_tmpfiles([j.for_instance("shop.example") for j in (site_backup, site_cron)], "test")
    assert "f /run/lock/jobrunner/site_cron@shop.example.lock 0600 www-data - -" in text
    assert "d /var/backups/site/shop.example 0750 root root -" in text
    assert "/srv/shop.example/tmp" not in text  # '-': optional, never made


def test_templates_verify_clean_within_their_thresholds(files: dict[str, str], tmp_path: Path) -> None:
    for name, text in files.items():
        if name.endswith((".service", ".timer")):
            (tmp_path / name).write_text(text)
    scores, problems = verify_dir(tmp_path)
    assert problems == []
    names = {s.unit for s in scores}
    assert {"site-backup@.service", "site-cron@.service", "by-hand@.service"} <= names
    assert all(s.ok for s in scores)
