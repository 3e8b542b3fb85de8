"""``jobrunner units ...`` through the real command line, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobrunner.unitgen.testing import committed_units, job_package

REPO = Path(__file__).resolve().parents[1]

GOOD = """
from jobrunner.declaration import job
@job(schedule="02:15", user="www-data", timeout="10m", lock=True)
def nightly(ctx): pass
@job(schedule="*:0/15", network=True, user="www-data")
def poller(ctx): pass
"""


def jobrunner(*args: str, path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, JOBRUNNER_PATH=str(path), PYTHONPATH=f"{REPO}:{path}")
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", *args], capture_output=True, text=True, env=env, cwd=path, timeout=120
    )


@pytest.fixture
def package(tmp_path) -> str:
    return job_package(tmp_path, {"jobs": GOOD})


def test_render_verify_check(tmp_path, package):
    out = tmp_path / "units"
    done = jobrunner("units", "render", "--package", package, "--out", str(out), path=tmp_path)
    assert done.returncode == 0, done.stderr
    first = committed_units(out)
    assert set(first) == {
        "alert-failure@.service",
        "nightly.service",
        "nightly.timer",
        "poller.service",
        "poller.timer",
        "tmpfiles.d/jobrunner.conf",
    }
    again = jobrunner("units", "render", "--package", package, "--out", str(out), path=tmp_path)
    assert again.returncode == 0 and "0 changed" in again.stdout
    assert committed_units(out) == first
    check = jobrunner("units", "render", "--package", package, "--out", str(out), "--check", path=tmp_path)
    assert check.returncode == 0, check.stderr

    verify = jobrunner("units", "verify", "--dir", str(out), path=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert "nightly.service: exposure 0.9 (threshold 1.5) ok" in verify.stdout
    assert "poller.service: exposure" in verify.stdout

    strict = jobrunner("units", "verify", "--dir", str(out), "--threshold", "0.1", path=tmp_path)
    assert strict.returncode == 1
    lines = strict.stderr.splitlines()
    assert len(lines) == 3 and all(line.startswith("jobrunner: security: ") for line in lines)

    (out / "nightly.timer").write_text((out / "nightly.timer").read_text().replace("02:15", "03:15"))
    (out / "stale.timer").write_text((out / "nightly.timer").read_text())
    drift = jobrunner("units", "render", "--package", package, "--out", str(out), "--check", path=tmp_path)
    assert drift.returncode == 1
    assert "nightly.timer is out of date" in drift.stderr and "stale.timer is out of date" in drift.stderr
    fixed = jobrunner("units", "render", "--package", package, "--out", str(out), path=tmp_path)
    assert fixed.returncode == 0 and not (out / "stale.timer").exists()
    assert committed_units(out) == first


def test_bad_schedule_exits_78_with_one_line(tmp_path):
    bad = job_package(
        tmp_path,
        {"jobs": "from jobrunner.declaration import job\n@job(schedule='Mon..Fri 25:00')\ndef broken(ctx): pass\n"},
    )
    done = jobrunner("units", "render", "--package", bad, "--out", str(tmp_path / "u"), path=tmp_path)
    assert done.returncode == 78
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert f"job {bad}.jobs:broken" in done.stderr and "Mon..Fri 25:00" in done.stderr
    assert not (tmp_path / "u").exists()


def test_install_uninstall_via_cli(tmp_path, package):
    out, root = tmp_path / "units", tmp_path / "root"
    assert jobrunner("units", "render", "--package", package, "--out", str(out), path=tmp_path).returncode == 0
    first = jobrunner("units", "install", "--dir", str(out), "--root", str(root), "--env", "staging", path=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "+++ b/etc/systemd/system/nightly.timer" in first.stdout
    second = jobrunner("units", "install", "--dir", str(out), "--root", str(root), path=tmp_path)
    assert second.returncode == 0 and "+++ /dev/null" in second.stdout  # the staging drop-ins go
    third = jobrunner("units", "install", "--dir", str(out), "--root", str(root), path=tmp_path)
    assert "nothing to change" in third.stdout
    gone = jobrunner("units", "uninstall", "--root", str(root), path=tmp_path)
    assert gone.returncode == 0
    assert [p for p in root.rglob("*") if p.is_file()] == []


def test_usage_errors_exit_64(tmp_path):
    done = jobrunner("units", "frobnicate", path=tmp_path)
    assert done.returncode == 64 and len(done.stderr.splitlines()) == 1
