"""``@reboot`` daemons imported as services, started by a real systemd: the unit that
``jobrunner import crontab --user www-data`` writes for a line of www-data's crontab is put in
place with the install command the import prints, runs the daemon as www-data with cron's
environment and the command's ``%``, ``$``, ``\\`` and quotes as the shell got them under cron,
and is started again after a ``kill -9``. No project install is needed: the unit runs
``/bin/sh`` and ``sleep``.
"""

from __future__ import annotations

import os
import pwd
import re

import pytest

from ..test_import_cron import jobrunner

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

WWW = pwd.getpwnam("www-data")


def _import(tmp_path, sb, crontab: str) -> tuple[str, str]:
    """Import ``crontab`` as www-data's on the host; put the service in place inside the
    sandbox with the printed install command. ``(unit, unit text)``."""
    stem = sb.unit_name("cron-daemon")
    out = tmp_path / stem
    proc = jobrunner(
        "import", "crontab", "--user", "www-data", "--name", stem, "--out", str(out), "--strict", "-", stdin=crontab
    )
    assert proc.returncode == 0, proc.stderr
    unit = f"{stem}.service"
    text = (out / "services" / unit).read_text()
    (hint,) = [line for line in proc.stderr.splitlines() if "install -m 0644" in line]
    command = hint.split("put it in place with: ", 1)[1]
    sb.write_file(str(out / "services" / unit), text, mode=0o600)  # the same paths inside
    env = out / "services" / f"{stem}.env"
    if env.exists():
        sb.write_file(str(env), env.read_text(), mode=0o600)
    sb.run(command, timeout=60)
    return unit, text


def _main_pid(sb, unit: str) -> int:
    return int(sb.show(unit, "MainPID")["MainPID"])


def test_reboot_daemon_runs_as_the_lines_user_and_is_restarted(tmp_path, sandbox):
    sb = sandbox
    token = os.urandom(4).hex()
    out_file = f"/tmp/daemon-{token}.out"
    crontab = (
        "GREETING=50% off $HOME \\o/\n"
        f'@reboot printf \'\\%s|\\%s|\\%s|\\%s|\\%s\\n\' "$LOGNAME" "$(id -un)" "$(pwd)" "$GREETING" '
        f"'a\"b\\\\c${{x}}' > {out_file}; nohup sleep 1000 &\n"
    )
    unit, text = _import(tmp_path, sb, crontab)
    try:
        state = sb.wait_for(
            lambda: (s := sb.show(unit, "ActiveState", "MainPID")) and s["ActiveState"] == "active" and s
        )
        first = int(state["MainPID"])
        assert sb.show(unit, "UnitFileState")["UnitFileState"] == "enabled"  # systemctl enable --now
        # What cron's shell would have printed: \% is %, \\ is \, and $HOME stays in GREETING.
        line = sb.wait_for(lambda: sb.exists(out_file) and sb.read_file(out_file))
        home = WWW.pw_dir if os.path.isdir(WWW.pw_dir) else "/"
        assert line == f'www-data|www-data|{home}|50% off $HOME \\o/|a"b\\c${{x}}\n'
        status = sb.run(["cat", f"/proc/{first}/status"]).stdout
        assert re.search(rf"^Uid:\s+{WWW.pw_uid}\s+{WWW.pw_uid}\s+{WWW.pw_uid}\s+{WWW.pw_uid}$", status, re.M)
        environ = sb.run(["cat", f"/proc/{first}/environ"]).stdout.split("\0")
        assert "GREETING=50% off $HOME \\o/" in environ and "LOGNAME=www-data" in environ
        # The crontab's own variable came from /etc/default/<unit> (0600, root's), not the unit
        # file every user can read.
        assert "GREETING=" not in text and "GREETING" not in sb.show(unit, "Environment")["Environment"]
        env_file = f"/etc/default/{unit.removesuffix('.service')}"
        assert sb.run(["stat", "-c", "%a %U", env_file]).stdout.split() == ["600", "root"]
        assert "SHELL=/bin/sh" in environ and "PATH=/usr/bin:/bin" in environ
        # A crash: started again after RestartSec=, as www-data again.
        sb.systemctl("kill", "--kill-who=main", "--signal=KILL", unit)
        after = sb.wait_for(
            lambda: (
                (s := sb.show(unit, "ActiveState", "MainPID", "NRestarts"))
                and s["NRestarts"] == "1"
                and s["ActiveState"] == "active"
                and s
            ),
            timeout=30,
        )
        second = int(after["MainPID"])
        assert second != first
        assert sb.run(["stat", "-c", "%u", f"/proc/{second}"]).stdout.strip() == str(WWW.pw_uid)
        # A stop is no failure: it is not started again.
        sb.systemctl("stop", unit)
        assert sb.show(unit, "ActiveState")["ActiveState"] == "inactive"
    finally:
        sb.systemctl("disable", "--now", unit, check=False)


def test_www_data_cannot_have_its_daemon_started_in_roots_home(tmp_path, sandbox):
    """Attacker: www-data's crontab sets HOME=/root. The unit says WorkingDirectory=/root, which
    systemd enters as www-data (after User=), as cron did: the start fails (200/CHDIR), nothing
    of the line runs in root's home, and nothing runs as root."""
    sb = sandbox
    assert (os.stat("/root").st_mode & 0o077) == 0, "the host's /root is not private: this test needs it"
    token = os.urandom(4).hex()
    crontab = f"HOME=/root\n@reboot touch /tmp/ran-{token}; nohup sleep 1000 &\n"
    unit, text = _import(tmp_path, sb, crontab)
    try:
        assert "WorkingDirectory=/root" in text and "User=www-data" in text
        state = sb.wait_for(
            lambda: (s := sb.show(unit, "ExecMainStatus", "NRestarts")) and s["ExecMainStatus"] == "200" and s
        )
        assert state["ExecMainStatus"] == "200"  # EXIT_CHDIR
        assert not sb.exists(f"/tmp/ran-{token}")
    finally:
        sb.systemctl("disable", "--now", unit, check=False)
        sb.systemctl("reset-failed", unit, check=False)
