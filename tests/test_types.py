"""jobrunner.types: the contract for job authors. The runtime's context, the file lock and the
Redis lease satisfy the protocols (at run time, and under ``mypy --strict`` when mypy is
installed); job() takes typed keyword settings documented in one place; the shipped jobs are
typed against ``JobContext`` and import only the public API; declaration and context no longer
import each other."""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

import jobrunner
from jobrunner import HeldLock, JobContext
from jobrunner._datatype import field_names
from jobrunner.declaration import Job, job
from jobrunner.locks.file import FileLock
from jobrunner.redact import Redactor
from jobrunner.run.context import Context

ROOT = Path(__file__).resolve().parents[1]
JOBS = sorted((ROOT / "jobs").glob("*.py"))

# What a job may import: the package's public names and these modules (jobrunner/__init__.py).
PUBLIC_MODULES = {
    "jobrunner",
    "jobrunner.types",
    "jobrunner.settings",
    "jobrunner.files",
    "jobrunner.fencing",
    "jobrunner.validate",
    "jobrunner.timespan",
    "jobrunner.redact",
    "jobrunner.errors",
}


def noop(ctx: JobContext) -> None:
    """Nothing."""


def _context(tmp_path: Path, **kwargs) -> Context:
    return Context(
        job=job(noop),
        log=structlog.get_logger(),
        env={"A": "1"},
        run_id="r1",
        dry_run=False,
        redactor=Redactor(),
        state_dir=str(tmp_path),
        **kwargs,
    )


def test_protocols_are_public():
    assert jobrunner.JobContext is JobContext and jobrunner.HeldLock is HeldLock
    from jobrunner import types

    assert {"JobContext", "HeldLock", "JobFunction", "Span", "Completed"} <= set(types.__all__)
    assert types.Completed.__name__ == "Completed"  # imported on first use


def test_the_runtime_context_is_a_job_context(tmp_path):
    ctx = _context(tmp_path)
    assert isinstance(ctx, JobContext)
    assert ctx.lock is None and ctx.remaining() is None and ctx.options == {}


def test_a_file_lock_is_a_held_lock(tmp_path):
    lock = FileLock(str(tmp_path / "x.lock"))
    assert isinstance(lock, HeldLock)
    assert (lock.name, lock.held, lock.fencing_token) == (str(tmp_path / "x.lock"), False, None)
    with lock:
        assert lock.held
    assert not lock.held
    lock.release()  # twice is fine


def test_sh_takes_run_keywords(tmp_path):
    """ctx.sh has run's keywords spelled out (typed), and passes them on."""
    ctx = _context(tmp_path)
    out = ctx.sh("echo $A$B", env={"B": "2"}, capture=True)
    assert (out.returncode, out.stdout.strip()) == (0, "12")
    assert inspect.signature(Context.sh).parameters.keys() - {"self", "script"} == (
        inspect.signature(Context.run).parameters.keys() - {"self", "argv"}
    )


# --- job(): typed keywords, documented once -------------------------------------------------


def _keywords() -> list[str]:
    return [p.name for p in inspect.signature(job).parameters.values() if p.kind is p.KEYWORD_ONLY]


def test_job_keywords_are_the_job_fields():
    """Every setting is an explicit keyword of job(), and every one is a field of Job."""
    fields = set(field_names(Job)) - {"func", "module", "description", "instance"}  # instance: for_instance
    assert set(_keywords()) == fields


def test_each_setting_is_documented_in_jobs_docstring():
    """job()'s docstring is the one place a setting is explained (docs/writing-jobs.md points there)."""
    doc = inspect.getdoc(job) or ""
    missing = [name for name in _keywords() if f"``{name}``" not in doc]
    assert missing == []
    assert "``options``" not in (Job.__doc__ or "") and "``schedule``" not in (Job.__doc__ or "")


def test_bare_and_called_forms_still_build_the_same_job():
    def backup(ctx: JobContext) -> None:
        """Back up."""

    bare, called = job(backup), job()(backup)
    assert bare == called
    assert (bare.cleanup_timeout, bare.kill_grace, bare.network, bare.unit) == (60.0, 10.0, False, "backup")


def test_network_is_false_unless_said_or_a_redis_lock():
    def j(ctx: JobContext) -> None: ...

    assert job(lock="redis://127.0.0.1:6379/0")(j).network is True
    assert job(network=True)(j).network is True
    with pytest.raises(jobrunner.ConfigError, match="network: a lease needs the network"):
        job(lock="redis://127.0.0.1:6379/0", network=False)(j)


# --- no import cycle --------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Modules ``path`` imports (relative ones as ``.name``), TYPE_CHECKING blocks included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_declaration_and_context_do_not_import_each_other_at_run_time():
    """declaration types against the JobContext protocol and never imports context; context
    imports declaration only for the type checker; types imports no other jobrunner module
    at run time but ``_datatype`` (for ``Completed``, which it owns since the layering: a public
    type must not live above the public utilities)."""
    assert ".context" not in _imports(ROOT / "jobrunner" / "declaration.py")
    code = """
import sys
import jobrunner.run.context, jobrunner.types
print(sorted(m for m in sys.modules if m.startswith("jobrunner.")))
"""
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert "jobrunner.declaration" not in loaded.stdout
    code = "import sys, jobrunner.types; print(sorted(m for m in sys.modules if m.startswith('jobrunner.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "['jobrunner._datatype', 'jobrunner.types']"


# --- the shipped jobs ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_jobs_import_only_the_public_api(path: Path):
    """A shipped job is an example of what a job author may do: no jobrunner._anything, no
    runtime internals (context, runner, locks, state …), not even named in a string."""
    bad = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("jobrunner"):
            if node.module not in PUBLIC_MODULES:
                bad.append(node.module)
            elif node.module == "jobrunner":
                bad += [a.name for a in node.names if a.name not in jobrunner.__all__ or a.name == "Context"]
        elif isinstance(node, ast.Import):
            bad += [a.name for a in node.names if a.name.startswith("jobrunner") and a.name not in PUBLIC_MODULES]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"jobrunner\._", node.value):
            bad.append(node.value)
    assert bad == []


def _job_functions(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(
            (isinstance(d, ast.Name) and d.id == "job")
            or (isinstance(d, ast.Call) and getattr(d.func, "id", "") == "job")
            for d in node.decorator_list
        )
    ]


@pytest.mark.parametrize(
    "path", [p for p in JOBS if not p.name.startswith("_") and p.name != "__init__.py"], ids=lambda p: p.name
)
def test_every_shipped_job_is_typed(path: Path):
    """``def wp_backup(ctx: JobContext) -> None``: what an editor needs to help a job author."""
    functions = _job_functions(path)
    assert functions, f"{path.name} declares no job"
    for fn in functions:
        (arg,) = fn.args.args
        assert arg.annotation is not None and ast.unparse(arg.annotation) == "JobContext", fn.name
        assert fn.returns is not None and ast.unparse(fn.returns) == "None", fn.name


# --- under mypy --strict -----------------------------------------------------------------------

TYPED = """
from __future__ import annotations

from jobrunner import HeldLock, Job, JobContext, job
from jobrunner.run.context import Context
from jobrunner.locks.file import FileLock
from jobrunner.locks.redis import RedisLease


def context_is_a_job_context(ctx: Context) -> JobContext:
    return ctx


def file_lock_is_held_lock(lock: FileLock) -> HeldLock:
    return lock


def redis_lease_is_held_lock(lease: RedisLease) -> HeldLock:
    return lease


@job(schedule="02:15", lock=True, timeout="2h", write_paths=["/mnt/backups"], retry=3)
def nightly(ctx: JobContext) -> None:
    ctx.cleanup(print, "done", end="\\n")
    out = ctx.run(["true"], capture=True)
    ctx.log.info("ran", code=out.returncode, stdout=out.stdout, left=ctx.remaining())
    if ctx.lock is not None and ctx.lock.fencing_token is not None:
        ctx.log.info("fenced", token=ctx.lock.fencing_token + 1)


bare: Job = job(nightly.func)
"""

TYPO = """
from jobrunner import JobContext, job

@job(timeot="2h")
def a(ctx: JobContext) -> None: ...

@job(hardening="paranoid")
def b(ctx: JobContext) -> None: ...

@job
def c(ctx: JobContext) -> None:
    ctx.cleanup(print, nope=1)
    ctx.run("a string, not a list")  # a str is a Sequence[str]: allowed by the type, refused at run time
    ctx.env["X"] = "1"
"""


def _mypy(tmp_path: Path, *paths: str) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install mypy)")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--no-error-summary",
            "--cache-dir",
            str(tmp_path / "cache"),
            *paths,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


@pytest.mark.slow
def test_protocols_type_check_against_the_runtime(tmp_path):
    """mypy --strict accepts Context as JobContext, FileLock and RedisLease as HeldLock, a
    typed job and its declaration."""
    (tmp_path / "typed_use.py").write_text(TYPED)
    run = _mypy(
        tmp_path,
        str(tmp_path / "typed_use.py"),
        "jobrunner/types.py",
        "jobrunner/settings.py",
        "jobrunner/declaration.py",
        "jobrunner/run/context.py",
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.slow
def test_mypy_catches_what_an_editor_should(tmp_path):
    """A misspelt setting, a value outside the choices, a cleanup's wrong keyword and writing
    to ctx.env are type errors."""
    (tmp_path / "typo.py").write_text(TYPO)
    run = _mypy(tmp_path, str(tmp_path / "typo.py"))
    lines = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert sorted({int(line.split(":")[1]) for line in lines}) == [4, 7, 12, 14], run.stdout


@pytest.mark.slow
def test_the_shipped_jobs_pass_mypy_strict(tmp_path):
    run = _mypy(tmp_path, "jobs")
    assert run.returncode == 0, run.stdout + run.stderr


# --- ctx.lock and ctx.hold_lock through real runs ----------------------------------------------

LOCKING = """
from jobrunner import HeldLock, JobContext, job

@job(lock=True)
def locking(ctx: JobContext) -> None:
    assert isinstance(ctx.lock, HeldLock)
    area = ctx.hold_lock("area", shared=True)
    ctx.log.info("locks.held", own=ctx.lock.name, own_held=ctx.lock.held, fence=ctx.lock.fencing_token,
                 area=area.name, area_held=area.held)
"""


def test_hold_lock_takes_a_named_lock_for_the_run(launcher, tmp_path):
    launcher.write_job("locking", LOCKING)
    run = launcher.run("locking")
    assert run.returncode == 0, run.stderr
    held = run.event("locks.held")
    lock_dir = launcher.env()["JOBRUNNER_LOCK_DIR"]
    assert (
        held["own"] == os.path.join(lock_dir, "locking.lock") and held["own_held"] is True and held.get("fence") is None
    )
    assert held["area"] == os.path.join(lock_dir, "area.lock") and held["area_held"] is True
    assert [e["event"] for e in run.events if e["event"].startswith("lock.")].count("lock.acquired") == 2
    with FileLock(held["area"]):  # released at the end of the run
        pass


@pytest.mark.skipif(not shutil.which("flock"), reason="needs flock(1)")
def test_hold_lock_busy_is_a_skip(launcher):
    """Another holder (here flock(1), exclusive) keeps the named lock: LockBusy, exit 75."""
    launcher.write_job("locking", LOCKING)
    path = os.path.join(launcher.env()["JOBRUNNER_LOCK_DIR"], "area.lock")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    holder = subprocess.Popen(["flock", "--exclusive", path, "sleep", "30"])
    try:
        assert _wait_held(path)
        run = launcher.run("locking")
        assert run.returncode == 75, run.stderr
        assert "locks.held" not in run.names()
    finally:
        holder.kill()
        holder.wait()


def _wait_held(path: str) -> bool:
    from .conftest import wait_for

    def busy() -> bool:
        try:
            FileLock(path).acquire().release()
            return False
        except jobrunner.LockBusy:
            return True

    return wait_for(busy, 10)


REDIS_LOCKING = """
from jobrunner import HeldLock, JobContext, Lock, job

@job(lock=Lock(redis="{url}", ttl="2s"))
def leased(ctx: JobContext) -> None:
    assert isinstance(ctx.lock, HeldLock)
    ctx.log.info("lease.held", name=ctx.lock.name, held=ctx.lock.held, fence=ctx.lock.fencing_token)
"""


@pytest.mark.skipif(
    not (shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server")),
    reason="needs redis-server (apt-get install redis-server)",
)
def test_a_redis_lease_is_a_held_lock(launcher, tmp_path):
    """ctx.lock with a Redis lease: the same protocol, with a fencing token."""
    pytest.importorskip("redis")
    from .test_redislock import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    try:
        server.settle(2)
        launcher.write_job("leased", REDIS_LOCKING.format(url=server.url))
        run = launcher.run("leased")
        assert run.returncode == 0, run.stdout + run.stderr
        held = run.event("lease.held")
        assert held["name"].endswith("leased") and held["held"] is True
        assert isinstance(held["fence"], int) and held["fence"] > 0
    finally:
        server.stop()
