"""php_fpm_restart's serve check against a real php-fpm pool (the systemd restart itself is
tested in tests/systemd/test_php_fpm_restart.py)."""

from __future__ import annotations

from jobs.php_fpm_restart import fastcgi_get

from .conftest import Web


def test_fastcgi_client_gets_the_pools_ping(web: Web):
    """The built-in FastCGI client gets 'pong' from FPM's ping.path, and a 404 for an unknown script."""
    assert fastcgi_get(str(web.fpm_socket), "/ping", 5) == (200, "pong")
    status, _ = fastcgi_get(str(web.fpm_socket), "/nonexistent.php", 5)
    assert status == 404


def test_graceful_reload_then_check_passes(launcher, web: Web):
    """A restart command (here FPM's own graceful reload, USR2) followed by a passing FastCGI ping."""
    pid = web.fpm_pid.read_text().strip()
    run = launcher.run(
        "run",
        "jobs.php_fpm_restart",
        env=launcher.env(PHP_FPM_RESTART_COMMAND=f"kill -USR2 {pid}", PHP_FPM_SOCKET=str(web.fpm_socket)),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    serving = run.event("php_fpm.serving")
    assert serving["check"] == f"unix:{web.fpm_socket} /ping" and serving["attempts"] >= 1


def test_check_through_the_web_server(launcher, web: Web):
    """PHP_FPM_CHECK_URL: the check goes through nginx's /fpm-ping location instead."""
    run = launcher.run(
        "run",
        "jobs.php_fpm_restart",
        env=launcher.env(PHP_FPM_RESTART_COMMAND="true", PHP_FPM_CHECK_URL=f"{web.base}/fpm-ping"),
    )
    assert run.returncode == 0, run.stdout
    assert "/fpm-ping" in web.paths()


def test_not_serving_after_restart_fails_loudly(launcher, web: Web):
    """The "restart" stops FPM for good: the checks fail within PHP_FPM_CHECK_TIMEOUT and the run exits 1."""
    pid = web.fpm_pid.read_text().strip()
    run = launcher.run(
        "run",
        "jobs.php_fpm_restart",
        env=launcher.env(
            PHP_FPM_SERVICE="php8.2-fpm",  # like systemctl, the command returns once FPM is down (it removes its socket on exit)
            PHP_FPM_RESTART_COMMAND=f"sh -c 'kill -TERM {pid}; while [ -S {web.fpm_socket} ]; do sleep 0.05; done'",
            PHP_FPM_SOCKET=str(web.fpm_socket),
            PHP_FPM_CHECK_TIMEOUT="2",
        ),
    )
    assert run.returncode == 1
    message = run.event("job.failed")["exception"]["message"]
    assert message.startswith("php8.2-fpm does not serve after restart:") and "within 2s" in message
    assert run.event("job.finished")["duration_s"] < 6


def test_wrong_ping_response_fails(launcher, web: Web):
    """FPM answers, but not with the expected ping response: a failure naming what came back."""
    run = launcher.run(
        "run",
        "jobs.php_fpm_restart",
        env=launcher.env(
            PHP_FPM_RESTART_COMMAND="true",
            PHP_FPM_SOCKET=str(web.fpm_socket),
            PHP_FPM_PING_RESPONSE="ready",
            PHP_FPM_CHECK_TIMEOUT="1",
        ),
    )
    assert run.returncode == 1
    assert "body 'pong' (expected 'ready')" in run.event("job.failed")["exception"]["message"]
