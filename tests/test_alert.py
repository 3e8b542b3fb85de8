"""`jobrunner alert UNIT` without a real systemd (the real one: tests/systemd/test_alert_e2e.py)."""

from __future__ import annotations

import json

from .test_notify_receivers import receiver


def test_alert_without_systemctl_still_sends(launcher, receiver, tmp_path):
    """With no systemctl/journalctl on PATH the alert still goes out, saying why the state is unknown."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = launcher.env(JOBRUNNER_NOTIFY_URLS=receiver.url(), PATH=str(empty))
    run = launcher.run("alert", "mystery.service", env=env)
    assert run.returncode == 0, run.stderr
    message = json.loads(receiver.wait(1)[0]["body"])
    assert message["title"].startswith("💀 mystery.service failed on") and "state unknown" in message["title"]
    assert "problem:   systemctl" in message["message"]


def test_alert_without_configuration_exits_78(launcher):
    """Nothing configured: one line, exit 78."""
    run = launcher.run("alert", "x.service")
    assert run.returncode == 78 and run.stderr.count("\n") == 1


def test_journal_json_lines_are_formatted_like_the_runner_tail():
    """A jobrunner JSON line in MESSAGE becomes the compact tail form; other lines stay as they are."""
    from jobrunner.observe.failed_unit import _format, _reason
    from jobrunner.run.logs import format_tail_line

    line = json.dumps(
        {
            "ts": "2026-01-02T03:04:05.000000Z",
            "level": "error",
            "event": "job.failed",
            "job": "x",
            "run_id": "r",
            "host": "h",
            "attempts": 2,
        }
    )
    assert _format(line, format_tail_line) == "03:04:05 error job.failed attempts=2"
    assert _format("plain output", format_tail_line) == "plain output"
    assert _reason({"Result": "signal", "ExecMainCode": "2", "ExecMainStatus": "9"}) == "killed by SIGKILL"
    assert _reason({"Result": "oom-kill"}) == "killed: out of memory"
    assert _reason({"Result": "exit-code", "ExecMainCode": "1", "ExecMainStatus": "1"}) == "exit 1"
