"""certbot_renew against a local ACME CA (pebble) with a certificate obtained by real certbot."""

from __future__ import annotations

import shlex
from pathlib import Path

from .conftest import Acme


def _reload_script(tmp_path: Path) -> tuple[str, Path]:
    record = tmp_path / "reloads.txt"
    script = tmp_path / "reload.sh"
    script.write_text(f"#!/bin/sh\necho reloaded \"$@\" >> {shlex.quote(str(record))}\n")
    script.chmod(0o755)
    return f"{script} nginx", record


def _env(launcher, acme: Acme, reload_cmd: str, **extra: str) -> dict[str, str]:
    return launcher.env(CERTBOT_ARGS=acme.certbot_args(), RELOAD_COMMAND=reload_cmd, **acme.env(), **extra)


def test_nothing_due_means_no_reload(launcher, pebble: Acme, tmp_path: Path):
    """A fresh certificate is not due: certbot runs, the certificate is unchanged, the reload command never runs."""
    reload_cmd, record = _reload_script(tmp_path)
    before = pebble.cert_serial()
    run = launcher.run("run", "jobs.certbot_renew", env=_env(launcher, pebble, reload_cmd))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.event("certbot.nothing_renewed")["reload"] == "skipped"
    assert "certbot.reloaded" not in run.names()
    assert not record.exists()
    assert pebble.cert_serial() == before


def test_renewed_means_exactly_one_reload(launcher, pebble: Acme, tmp_path: Path):
    """--force-renewal via CERTBOT_EXTRA_ARGS: a new certificate from the CA, and the reload ran exactly once."""
    reload_cmd, record = _reload_script(tmp_path)
    before = pebble.cert_serial()
    run = launcher.run("run", "jobs.certbot_renew",
                       env=_env(launcher, pebble, reload_cmd, CERTBOT_EXTRA_ARGS="--force-renewal"), timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert pebble.cert_serial() != before
    renewed = run.event("certbot.renewed")
    assert renewed["count"] == 1 and renewed["lineages"] == [str(pebble.config_dir / "live" / pebble.domain)]
    assert record.read_text() == "reloaded nginx\n"
    # and the next regular run finds nothing due again
    again = launcher.run("run", "jobs.certbot_renew", env=_env(launcher, pebble, reload_cmd))
    assert again.returncode == 0 and "certbot.nothing_renewed" in again.names()
    assert record.read_text() == "reloaded nginx\n"


def test_failed_reload_fails_the_run(launcher, pebble: Acme, tmp_path: Path):
    """A renewal whose reload command fails is a failure (the new certificate is not being served)."""
    run = launcher.run("run", "jobs.certbot_renew",
                       env=_env(launcher, pebble, "false", CERTBOT_EXTRA_ARGS="--force-renewal"), timeout=120)
    assert run.returncode == 1
    assert "certbot.renewed" in run.names()
    assert run.event("job.failed")["exception"]["type"] == "CommandFailed"


def test_certbot_failure_fails_without_reload(launcher, pebble: Acme, tmp_path: Path):
    """certbot cannot reach the CA (wrong CA bundle): exit 1, nothing renewed, no reload."""
    reload_cmd, record = _reload_script(tmp_path)
    env = _env(launcher, pebble, reload_cmd, CERTBOT_EXTRA_ARGS="--force-renewal")
    env["REQUESTS_CA_BUNDLE"] = "/etc/ssl/certs/ca-certificates.crt"
    run = launcher.run("run", "jobs.certbot_renew", env=env, timeout=120)
    assert run.returncode == 1
    assert "certbot renew exited with status 1" in run.event("job.failed")["exception"]["message"]
    assert not record.exists()
