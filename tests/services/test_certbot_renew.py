"""certbot_renew against a local ACME CA (pebble) with a certificate obtained by real certbot."""

from __future__ import annotations

import shlex
from pathlib import Path

from .conftest import Acme


def _reload_script(tmp_path: Path) -> tuple[str, Path]:
    record = tmp_path / "reloads.txt"
    script = tmp_path / "reload.sh"
    script.write_text(f'#!/bin/sh\necho reloaded "$@" >> {shlex.quote(str(record))}\n')
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
    run = launcher.run(
        "run",
        "jobs.certbot_renew",
        env=_env(launcher, pebble, reload_cmd, CERTBOT_EXTRA_ARGS="--force-renewal"),
        timeout=120,
    )
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
    run = launcher.run(
        "run",
        "jobs.certbot_renew",
        env=_env(launcher, pebble, "false", CERTBOT_EXTRA_ARGS="--force-renewal"),
        timeout=120,
    )
    assert run.returncode == 1
    assert "certbot.renewed" in run.names()
    assert run.event("job.failed")["exception"]["type"] == "CommandFailed"


def test_certbot_failure_fails_without_reload(launcher, pebble: Acme, tmp_path: Path):
    """certbot cannot reach the CA (wrong CA bundle), also on its one retry: exit 1, nothing
    renewed, no reload."""
    reload_cmd, record = _reload_script(tmp_path)
    env = _env(launcher, pebble, reload_cmd, CERTBOT_EXTRA_ARGS="--force-renewal", CERTBOT_RETRY_DELAY="1s")
    env["REQUESTS_CA_BUNDLE"] = "/etc/ssl/certs/ca-certificates.crt"
    run = launcher.run("run", "jobs.certbot_renew", env=env, timeout=120)
    assert run.returncode == 1
    assert "certbot renew exited with status 1" in run.event("job.failed")["exception"]["message"]
    assert [e["attempt"] for e in run.events if e["event"] == "certbot.retrying"] == [1]
    assert [e["argv"][0] for e in run.events if e["event"] == "proc.started"] == ["certbot", "certbot"]
    assert not record.exists()


def test_a_failed_attempt_is_retried_and_the_renewal_completes(launcher, pebble: Acme, tmp_path: Path):
    """The CA is unreachable on the first attempt (its CA file appears only after certbot
    failed): certbot.retrying, then the retry renews and the reload runs once; exit 0."""
    reload_cmd, record = _reload_script(tmp_path)
    late_ca = tmp_path / "late-ca.pem"
    env = _env(launcher, pebble, reload_cmd, CERTBOT_EXTRA_ARGS="--force-renewal", CERTBOT_RETRY_DELAY="2s")
    env["REQUESTS_CA_BUNDLE"] = str(late_ca)
    before = pebble.cert_serial()
    proc = launcher.start("run", "jobs.certbot_renew", env=env)
    seen = []
    for line in proc.stdout:  # streamed: the retry's sleep gives time to put the CA in place
        seen.append(line)
        if '"event":"certbot.retrying"' in line:
            late_ca.write_bytes(pebble.ca.read_bytes())
            break
    assert late_ca.exists(), "".join(seen)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, "".join(seen) + rest + err
    assert pebble.cert_serial() != before
    assert record.read_text() == "reloaded nginx\n"


def test_bad_retry_settings_are_config_errors(launcher, pebble: Acme, tmp_path: Path):
    """CERTBOT_RETRIES / CERTBOT_RETRY_DELAY that make no sense: exit 78 naming them, certbot not run."""
    for name, value in (("CERTBOT_RETRIES", "lots"), ("CERTBOT_RETRIES", "9"), ("CERTBOT_RETRY_DELAY", "soon")):
        run = launcher.run("run", "jobs.certbot_renew", env=_env(launcher, pebble, "true", **{name: value}))
        assert run.returncode == 78, run.stdout
        assert name in run.event("job.failed")["exception"]["message"]
        assert "proc.started" not in run.names()
