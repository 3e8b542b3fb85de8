"""The committed units/ directory is exactly what the jobs/ declarations render, and it is valid."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jobrunner.unitgen import render_all
from jobrunner.unitgen.testing import committed_units

from .conftest import REPO, clean_env


def test_committed_units_match_the_declarations():
    """Re-rendering jobs/ gives byte for byte the files in units/ (run `jobrunner units render` after a change)."""
    rendered = render_all(package="jobs")
    committed = committed_units(REPO / "units")
    assert sorted(committed) == sorted(rendered), "units/ is stale: run `python -m jobrunner units render`"
    stale = [name for name in rendered if rendered[name] != committed[name]]
    assert stale == [], f"units/ is stale for {stale}: run `python -m jobrunner units render`"


def test_every_job_has_a_service_and_scheduled_jobs_a_timer():
    """Each job of jobs/ has its .service in units/, and a .timer when it has a schedule."""
    from jobrunner.run.loader import discover

    files = set(committed_units(REPO / "units"))
    for job in discover("jobs"):
        assert f"{job.unit}.service" in files
        assert (f"{job.unit}.timer" in files) == bool(job.schedule)


@pytest.mark.slow
def test_committed_units_verify_and_meet_security_thresholds():
    """`jobrunner units verify` (systemd-analyze verify + security --offline) passes on units/."""
    proc = subprocess.run(
        [sys.executable, "-m", "jobrunner", "units", "verify", "--dir", str(REPO / "units")],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(PYTHONPATH=str(REPO)),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
