"""A crontab line of www-data must never make root give www-data a file (trust boundaries, finding 1).

The attack: www-data's own crontab holds ``0 * * * * true >> /etc/shadow 2>&1``; root imports it
with ``--user www-data`` as docs/migrating.md says, renders and installs the units. Before the fix
the redirection became ``log_file``, tmpfiles.d got ``f /etc/shadow 0640 www-data``, logrotate
``create 0640 www-data`` and the unit ``ReadWritePaths=-/etc/shadow``: ``systemd-tmpfiles
--create`` re-owned the shadow file to www-data. Here a planted root-only file stands in for
``/etc/shadow`` (and ``/etc/shadow`` itself is only read), and the real tmpfiles is run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .attacker import User, as_user
from .conftest import REPO, clean_env


def _cli(*args: str, stdin: str = "", cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", *args],
        capture_output=True,
        text=True,
        timeout=120,
        input=stdin,
        cwd=cwd,
        env=clean_env(PYTHONPATH=f"{REPO}:{cwd}", **env),
        check=False,
    )


@pytest.fixture
def root_secret(tmp_path: Path) -> Path:
    """A root-owned 0600 file in a root-only directory: what /etc/shadow is."""
    secret_dir = tmp_path / "etc"
    secret_dir.mkdir(mode=0o755)
    secret = secret_dir / "shadow"
    secret.write_text("root:$y$secret:19000::::::\n")
    os.chmod(secret, 0o600)
    return secret


def _import_and_render(tmp_path: Path, crontab: str, user: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path / "imported"
    done = _cli("import", "crontab", "--user", user, "--out", str(out), "-", stdin=crontab)
    assert done.returncode == 0, done.stderr
    units = tmp_path / "units"
    render = _cli("units", "render", "--package", out.name, "--out", str(units), cwd=tmp_path)
    files = {p.name: p.read_text() for p in units.rglob("*") if p.is_file()} if units.exists() else {}
    return render, files


def test_www_data_crontab_redirect_to_a_root_file_is_not_given_to_www_data(
    tmp_path: Path, www_data: User, root_secret: Path
) -> None:
    """The redirection stays in the command (it runs as www-data, who cannot open the file);
    no tmpfiles, logrotate or ReadWritePaths line names the file; tmpfiles leaves it root's."""
    before = os.stat(root_secret)
    crontab = f"0 * * * * true >> {root_secret} 2>&1\n5 * * * * true >> /etc/shadow 2>&1\n"
    render, files = _import_and_render(tmp_path, crontab, "www-data")
    assert render.returncode == 0, render.stderr
    text = "\n".join(files.values())
    assert str(root_secret) not in "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    assert "/etc/shadow" not in files.get("jobrunner.conf", "")
    assert "ReadWritePaths=-/etc/shadow" not in text and f"ReadWritePaths=-{root_secret}" not in text
    assert "logrotate" not in " ".join(files) or str(root_secret) not in files.get("jobrunner", "")
    module = next((tmp_path / "imported").glob("*_1.py")).read_text()
    assert f">> {root_secret} 2>&1" in module and "log_file" not in module.split("@job(")[1].split(")\ndef")[0]
    conf = tmp_path / "units" / "tmpfiles.d" / "jobrunner.conf"
    subprocess.run(["systemd-tmpfiles", "--create", str(conf)], capture_output=True, check=False)
    after = os.stat(root_secret)
    assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode) == (0, before.st_mode)
    assert as_user(www_data, ["cat", str(root_secret)], check=False).returncode != 0


def test_a_redirect_to_www_datas_own_log_is_still_taken(tmp_path: Path, www_data: User) -> None:
    """A file www-data already owns (in a directory nobody else can change) is its log_file, as before."""
    logs = tmp_path / "wwwlogs"
    logs.mkdir(mode=0o755)
    os.chown(logs, www_data.uid, www_data.gid)
    own = logs / "cron.log"
    own.touch(mode=0o640)
    os.chown(own, www_data.uid, www_data.gid)
    render, files = _import_and_render(tmp_path, f"*/5 * * * * true >> {own} 2>&1\n", "www-data")
    assert render.returncode == 0, render.stderr
    assert f"f {own} 0640 www-data www-data -" in files["jobrunner.conf"]


@pytest.mark.parametrize("kind", ["log_file", "write_paths"])
def test_render_refuses_to_give_another_users_path_to_a_job(tmp_path: Path, root_secret: Path, kind: str) -> None:
    """A hand-written declaration naming root's file for a www-data job: ``units render`` exits
    78 with one line naming the job, the field and the owner, and writes nothing."""
    pkg = tmp_path / "handjobs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    value = f"log_file={str(root_secret)!r}" if kind == "log_file" else f"write_paths=[{str(root_secret.parent)!r}]"
    (pkg / "grab.py").write_text(
        textwrap.dedent(f"""
        from jobrunner import job

        @job(schedule="hourly", user="www-data", {value})
        def grab(ctx):
            pass
        """)
    )
    out = tmp_path / "units"
    done = _cli("units", "render", "--package", "handjobs", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 78, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "grab" in lines[0] and kind in lines[0] and "belongs to root" in lines[0], lines
    assert not out.exists() or not any(out.rglob("*.service"))


def test_render_refuses_a_new_path_in_a_system_tree_for_a_non_root_job(tmp_path: Path) -> None:
    """A log file that does not exist yet under /etc (a profile script, a drop-in) is not made for www-data."""
    pkg = tmp_path / "handjobs2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plant.py").write_text(
        "from jobrunner import job\n\n"
        '@job(schedule="hourly", user="www-data", log_file="/etc/profile.d/zz-jobrunner-test.sh")\n'
        "def plant(ctx):\n    pass\n"
    )
    done = _cli("units", "render", "--package", "handjobs2", "--out", str(tmp_path / "u"), cwd=tmp_path)
    assert done.returncode == 78 and "lies in /etc" in done.stderr, done.stderr
    assert not os.path.exists("/etc/profile.d/zz-jobrunner-test.sh")


@pytest.mark.parametrize(
    ("path", "kind", "allowed"),
    [
        ("/var/lib/jr-test-state-dir-xyz", "directory", True),  # /var/lib/NAME: a state directory of its own
        ("/var/lib/dpkg/jr-test-xyz", "directory", False),  # inside another program's directory
        ("/var/lib/jr-test-state-file-xyz", "file", False),  # a file, not a directory of its own
        ("/var/cache/jr-test-cache-xyz", "directory", True),
        ("/etc/jr-test-xyz", "directory", False),
        ("/srv/jr-test-xyz", "directory", True),  # outside the system's trees
    ],
)
def test_new_paths_for_a_non_root_job_at_each_depth(path: str, kind: str, allowed: bool) -> None:
    """A new path for www-data: a direct child of /var/lib or /var/cache is allowed (as
    StateDirectory= makes one), one level deeper or a file there is not, nor anything in /etc."""
    from jobrunner.unitgen.ownership import foreign_path

    assert not os.path.lexists(path)
    assert (foreign_path(path, "www-data", kind=kind) is None) is allowed
