"""JOBRUNNER_REQUIRE_ALL=1 (CI): a skip is a failure, at run time *and* at collection time.

A module-level ``pytest.importorskip("redis")`` with the client missing once made the 27 tests
of tests/test_redislock.py vanish while the CI run still passed. Each case runs pytest in a
subprocess on a throwaway test file, with this suite's hooks loaded (``-p tests.conftest``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from .conftest import REPO, clean_env

CASES = {
    "importorskip": """
        import pytest
        pytest.importorskip("jobrunner_no_such_module_anywhere")

        def test_one():
            pass

        def test_two():
            pass
    """,
    "module_skip": """
        import pytest
        pytest.skip("no such component here", allow_module_level=True)

        def test_one():
            pass
    """,
    "runtime_skip": """
        import pytest

        def test_one():
            pytest.skip("no such component here")
    """,
}


def _pytest(tmp_path, source: str, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_vanishing.py").write_text(textwrap.dedent(source))
    (tmp_path / "test_present.py").write_text("def test_present():\n    pass\n")  # as the rest of the suite
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            "-q",
            "-rA",
            "--rootdir",
            str(tmp_path),
            "-c",
            "/dev/null",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env=clean_env(PYTHONPATH=str(REPO), **env),
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_skip_fails_the_run_when_everything_must_run(tmp_path, case):
    """Under JOBRUNNER_REQUIRE_ALL=1 the run exits non-zero and says why, whether the skip
    happened while collecting the module or while running a test."""
    proc = _pytest(tmp_path, CASES[case], JOBRUNNER_REQUIRE_ALL="1")
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "where everything must run" in output, output
    assert ("jobrunner_no_such_module_anywhere" if case == "importorskip" else "no such component here") in output


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_skip_is_only_a_skip_on_a_developer_machine(tmp_path, case):
    """Without JOBRUNNER_REQUIRE_ALL the same files are plain skips beside a passing test (exit 0)."""
    proc = _pytest(tmp_path, CASES[case])
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert output.splitlines()[-1].startswith("1 passed, 1 skipped"), output
