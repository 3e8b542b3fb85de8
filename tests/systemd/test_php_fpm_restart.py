"""php_fpm_restart under real systemd: the rendered, hardened unit restarts Debian's own
php8.2-fpm.service and then proves FPM answers a FastCGI ping on the pool's socket.

The check is the job's own FastCGI client talking to /run/php/php8.2-fpm.sock (srw-rw----
www-data): no web server needed, and the same request works whether nginx is healthy or not.
"""

from __future__ import annotations

import shutil

import pytest

from .sandbox import Sandbox

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

UNIT = "php-fpm-restart.service"
FPM = "php8.2-fpm.service"
POOL = "/etc/php/8.2/fpm/pool.d/www.conf"


@pytest.fixture(scope="module")
def fpm_sandbox(installed_sandbox: Sandbox) -> Sandbox:
    if not shutil.which("php-fpm8.2"):
        pytest.skip("php8.2-fpm is not installed on the host (see .ci/run)")
    sb = installed_sandbox
    pool = sb.read_file(POOL)
    if "\nping.path = /ping" not in pool:
        sb.write_file(POOL, pool + "\nping.path = /ping\nping.response = pong\n")
    sb.systemctl("restart", FPM, timeout=60)
    sb.run(["jobrunner", "units", "render", "--out", "/root/jr-units", "php_fpm_restart"])
    sb.run(["jobrunner", "units", "install", "--dir", "/root/jr-units"], timeout=120)
    sb.pin(UNIT)
    return sb


def test_restart_under_the_hardened_unit_and_check_serves(fpm_sandbox: Sandbox):
    """Result=success, php-fpm's MainPID changed, and the job logged a passing FastCGI ping."""
    sb = fpm_sandbox
    unit_text = sb.read_file(f"/etc/systemd/system/{UNIT}")
    assert "CapabilityBoundingSet=\n" in unit_text and "SupplementaryGroups=www-data" in unit_text
    before = sb.show(FPM, "MainPID", "ActiveState")
    assert before["ActiveState"] == "active"
    st = sb.start_oneshot(UNIT)
    assert st["Result"] == "success", sb.job_events(st["InvocationID"], UNIT)
    after = sb.show(FPM, "MainPID", "ActiveState")
    assert after["ActiveState"] == "active" and after["MainPID"] != before["MainPID"]
    events = sb.job_events(st["InvocationID"], UNIT)
    serving = [e for e in events if e["event"] == "php_fpm.serving"]
    assert serving and serving[0]["check"] == "unix:/run/php/php8.2-fpm.sock /ping", events
    assert [e["outcome"] for e in events if e["event"] == "job.finished"] == ["success"]


def test_not_serving_after_restart_fails_the_unit(fpm_sandbox: Sandbox):
    """FPM restarts but never gives the expected answer: the unit fails with a one-line reason."""
    sb = fpm_sandbox
    sb.write_file("/etc/default/php-fpm-restart", "PHP_FPM_PING_RESPONSE=never-this\nPHP_FPM_CHECK_TIMEOUT=2\n")
    try:
        st = sb.start_oneshot(UNIT)
    finally:
        sb.run(["rm", "-f", "/etc/default/php-fpm-restart"])
    assert st["Result"] == "exit-code" and st["ExecMainStatus"] == "1"
    failed = [e for e in sb.job_events(st["InvocationID"], UNIT) if e["event"] == "job.failed"]
    message = failed[0]["exception"]["message"]
    assert message.startswith("php8.2-fpm does not serve after restart:")
    assert "expected 'never-this'" in message
    assert sb.show(FPM, "ActiveState")["ActiveState"] == "active"
