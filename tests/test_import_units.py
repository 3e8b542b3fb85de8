"""``jobrunner import units``: Debian's own .service + .timer pairs (from the packages) as jobs.

What maps becomes a setting, what systemd keeps as it was goes through ``systemd=``, and
what does not map is listed in the module and on stderr, never dropped silently.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from .debian_packages import debian
from .test_import_cron import jobrunner, load

PAIRS = {
    "certbot": "lib/systemd/system/certbot.timer",
    "e2fsprogs": "lib/systemd/system/e2scrub_all.timer",
    "mdadm": "lib/systemd/system/mdcheck_start.timer",
    "php-common": "lib/systemd/system/phpsessionclean.timer",
    "sysstat": "lib/systemd/system/sysstat-collect.timer",
    "ntpsec": "lib/systemd/system/ntpsec-rotate-stats.timer",
}


def _import(debian, tmp_path: Path, *extra: str):
    timers = [str(debian.file(p, rel)) for p, rel in sorted(PAIRS.items())]
    monitor = str(debian.file("mdadm", "lib/systemd/system/mdmonitor-oneshot.timer"))
    out = tmp_path / "fromunits"
    proc = jobrunner("import", "units", *timers, monitor, "--out", str(out), *extra)
    return proc, out


def test_debian_timer_units_map_to_settings(debian, tmp_path):
    proc, out = _import(debian, tmp_path, "--strict")
    assert proc.returncode == 0, proc.stderr
    certbot = load(out, "certbot").certbot
    assert certbot.schedule == ("*-*-* 00,12:00:00",) and certbot.persistent and certbot.jitter == 43200
    assert certbot.systemd == {"Service": {"PrivateTmp": "true"}} and certbot.hardening == "basic"
    text = (out / "certbot.py").read_text()
    assert "#     ExecStart=/usr/bin/certbot -q renew --no-random-sleep-on-renew" in text  # the unit's lines, verbatim
    assert 'ctx.run(["/usr/bin/certbot", "-q", "renew", "--no-random-sleep-on-renew"])' in text

    scrub = load(out, "e2scrub_all")
    assert scrub.ENVIRONMENT == {"SERVICE_MODE": "1"} and scrub.e2scrub_all.jitter == 60
    assert scrub.e2scrub_all.systemd["Unit"] == {
        "ConditionACPower": "true",
        "ConditionCapability": ["CAP_SYS_ADMIN", "CAP_SYS_RAWIO"],
    }
    assert "SyslogIdentifier=e2scrub_all" in proc.stderr  # not mapped: said, not dropped

    mdcheck = load(out, "mdcheck_start")
    job = mdcheck.mdcheck_start
    assert job.unit == "mdcheck_start" and job.schedule == ("Sun *-*-1..7 1:00:00",)
    assert job.env_files == ("-/run/sysconfig/mdadm",) and mdcheck.ENVIRONMENT == {"MDADM_CHECK_DURATION": "6 hours"}
    text = (out / "mdcheck_start.py").read_text()
    assert 'ctx.run(["/usr/lib/mdadm/mdadm_env.sh"], env=env, check=False)' in text
    assert 'ctx.run(["/usr/share/mdadm/mdcheck", "--duration", env.get("MDADM_CHECK_DURATION", "")], env=env)' in text
    assert "Not mapped" in text and "WantedBy=mdmonitor.service" in text and "Also=mdcheck_continue.timer" in text
    assert "not mapped: mdcheck_start.timer: [Install] WantedBy=mdmonitor.service" in proc.stderr

    monitor = (out / "mdmonitor_oneshot.py").read_text()
    assert '*env.get("MDADM_MONITOR_ARGS", "").split()' in monitor  # $VAR: split at whitespace, as systemd does
    assert "Type=simple" in monitor

    php = load(out, "phpsessionclean").phpsessionclean
    assert php.systemd == {"Service": {"ProtectHome": "true", "ProtectSystem": "true", "PrivateTmp": "true"}}
    assert load(out, "ntpsec_rotate_stats").ntpsec_rotate_stats.systemd == {"Unit": {"+Requisite": "ntpsec.service"}}


def test_imported_units_render_and_verify(debian, tmp_path):
    """The round trip: render the imported jobs and 'jobrunner units verify' them. ntpsec's
    Requisite=ntpsec.service, kept as it was, names a unit this machine lacks: verify says
    exactly that and nothing else."""
    proc, out = _import(debian, tmp_path)
    assert proc.returncode == 0, proc.stderr
    units = tmp_path / "units"
    render = jobrunner("units", "render", "--package", out.name, "--out", str(units), JOBRUNNER_PATH=str(tmp_path))
    assert render.returncode == 0, render.stderr
    assert "OnCalendar=*-*-* 00,12:00:00" in (units / "certbot.timer").read_text()
    assert "RandomizedDelaySec=12h" in (units / "certbot.timer").read_text()
    assert (units / "mdcheck_start.timer").is_file() and (units / "sysstat-collect.timer").is_file()
    verify = jobrunner("units", "verify", "--dir", str(units))
    problems = [line for line in verify.stderr.splitlines() if line.startswith("jobrunner: ")]
    has_ntpsec = Path("/lib/systemd/system/ntpsec.service").exists()
    if has_ntpsec:
        assert verify.returncode == 0, verify.stdout + verify.stderr
    else:
        assert problems == [
            "jobrunner: verify: ntpsec-rotate-stats.service: Failed to create "
            "ntpsec-rotate-stats.service/start: Unit ntpsec.service not found."
        ], verify.stderr
    assert verify.stdout.count(" ok\n") == len(list(units.glob("*.service")))


def test_a_unit_without_execstart_is_named(tmp_path):
    bad = tmp_path / "broken.service"
    bad.write_text(
        textwrap.dedent("""\
        [Unit]
        Description=No command

        [Service]
        Type=oneshot
        User=www-data
    """)
    )
    (tmp_path / "broken.timer").write_text("[Timer]\nOnCalendar=daily\n")
    good = tmp_path / "fine.service"
    good.write_text("[Service]\nExecStart=/bin/echo fine\nRestart=on-failure\n")
    proc = jobrunner("import", "units", str(tmp_path / "broken.timer"), str(good), "--strict")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"jobrunner: {bad}:4: no ExecStart= in [Service]: nothing to run, not imported" in proc.stderr
    assert "not mapped: fine.service: [Service] Restart=on-failure" in proc.stderr
    assert "def fine(ctx: JobContext)" in proc.stdout and 'ctx.run(["/bin/echo", "fine"])' in proc.stdout
    missing = jobrunner("import", "units", str(tmp_path / "nothere.timer"))
    assert missing.returncode == 0 and f"{tmp_path / 'nothere.timer'}:0: no such file or directory" in missing.stderr
