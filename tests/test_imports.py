"""Import cost: a timer tick imports what its path needs and nothing else; the public API is stable."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import clean_env

PROBE = """
import json, runpy, sys
sys.argv = ["jobrunner", *sys.argv[1:]]
try:
    runpy.run_module("jobrunner", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted(sys.modules)) + "\\n")
"""

NEVER_ON_THE_RUN_PATH = (
    "apprise",
    "tenacity",
    "redis",
    "filelock",
    "requests",
    "jobrunner.unitgen",
    "jobrunner.notify",
)


def modules_after(tmp_path, *args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(JOBRUNNER_STATE_DIR=str(tmp_path / "s"), JOBRUNNER_LOCK_DIR=str(tmp_path / "l")),
    )
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


def test_noop_run_imports_no_optional_library(tmp_path):
    """`python -m jobrunner jobs.noop` imports neither apprise, tenacity, redis nor unit rendering."""
    loaded = modules_after(tmp_path, "jobs.noop")
    assert "jobrunner.run.lifecycle" in loaded  # the probe did run a job
    bad = sorted(m for m in loaded if m.split(".")[0] in NEVER_ON_THE_RUN_PATH or m.startswith(NEVER_ON_THE_RUN_PATH))
    assert bad == []
    assert "jobrunner.locks.file" not in loaded  # noop takes no lock


def test_retrying_job_imports_tenacity(tmp_path, launcher):
    """tenacity is imported exactly when a job declares retries."""
    launcher.write_job(
        "retrier", "from jobrunner import job, Retry\n@job(retry=Retry(attempts=2))\ndef retrier(ctx): pass\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "retrier"], capture_output=True, text=True, timeout=60, env=launcher.env()
    )
    assert "tenacity" in set(json.loads(proc.stderr.strip().splitlines()[-1]))


def test_all_matches_public_names():
    """jobrunner.__all__ lists exactly the public names the package exposes, and each resolves."""
    import jobrunner

    public = {name for name in dir(jobrunner) if not name.startswith("_")} | {"__version__"}
    assert set(jobrunner.__all__) == public
    for name in jobrunner.__all__:
        assert getattr(jobrunner, name) is not None


def test_errors_all_matches_public_names():
    """jobrunner.errors.__all__ names every public error and exit code."""
    from jobrunner import errors

    public = {
        n for n, v in vars(errors).items() if not n.startswith("_") and (isinstance(v, type) or n.startswith("EXIT_"))
    }
    assert set(errors.__all__) == public


def test_an_instance_run_imports_only_the_instances_module_more(tmp_path, launcher):
    """`run --instance` adds jobrunner.instances (names, the env file) and nothing else to a
    plain run's imports; jobrunner.admin.instances (instances add/remove) stays off the path."""
    launcher.write_job("either", "from jobrunner import job\n@job(instances='optional')\ndef either(ctx): pass\n")
    (tmp_path / "inst" / "either").mkdir(parents=True)
    (tmp_path / "inst" / "either" / "one.env").write_text("A=1\n")
    (tmp_path / "inst" / "either" / "one.env").chmod(0o600)
    env = launcher.env(JOBRUNNER_INSTANCES_DIR=str(tmp_path / "inst"))

    def loaded(*args: str) -> set[str]:
        proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60, env=env)
        return set(json.loads(proc.stderr.strip().splitlines()[-1]))

    plain, instance = loaded("either"), loaded("either", "--instance", "one")
    assert "jobrunner.run.lifecycle" in plain and "jobrunner.run.lifecycle" in instance
    assert instance - plain == {"jobrunner.instances"}
    assert "jobrunner.instances" not in plain


def test_an_import_inside_a_function_keeps_something_off_the_timer_tick(tmp_path):
    """An import sits inside a function only to keep a module off the timer tick (apprise,
    tenacity, a configured-only feature): where the importing module and the imported one are
    both loaded by ``jobrunner jobs.noop`` anyway, it saves nothing and belongs at the top."""
    import ast
    from pathlib import Path

    loaded = modules_after(tmp_path, "jobs.noop")
    package = Path(__file__).resolve().parent.parent / "jobrunner"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if module not in loaded:
            continue
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    targets = [node.module]
                else:
                    continue
                offenders += [f"{module}:{node.lineno} {function.name}: {t}" for t in targets if t in loaded]
    assert offenders == [], "\n".join(offenders)
