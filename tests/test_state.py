"""jobrunner.store.state: one small JSON file per job, updated atomically under a lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
from typing import Any

import pytest

from jobrunner.errors import ConfigError
from jobrunner.store.state import (
    KEEP_DURATIONS,
    StateStore,
    atomic_write,
    default_state_dir,
    note_finish,
    note_start,
)

from .conftest import Run

WORKERS = 20
INCREMENTS = 25


def _finish(
    state: dict,
    outcome: str,
    *,
    run_id: str = "r",
    duration: float = 1.0,
    error: str | None = None,
    now: float = 1000.0,
) -> None:
    note_finish(
        state,
        run_id=run_id,
        outcome=outcome,
        exit_code={"success": 0, "skipped": 75}.get(outcome, 1),
        started=now - duration,
        duration_s=duration,
        attempts=1,
        error=error,
        now=now,
    )


def test_read_without_file_is_empty(tmp_path):
    """A job that never ran has an empty state and no directory is created by reading."""
    store = StateStore("never", str(tmp_path))
    assert store.read() == {}
    assert not os.path.exists(store.dir)


def test_paths_follow_root_and_job(tmp_path):
    """The state file is <root>/<job>/state.json."""
    store = StateStore("wp_backup", str(tmp_path))
    assert store.path == str(tmp_path / "wp_backup" / "state.json")


def test_default_state_dir_honours_environment(monkeypatch, tmp_path):
    """JOBRUNNER_STATE_DIR overrides the default state directory."""
    monkeypatch.setenv("JOBRUNNER_STATE_DIR", str(tmp_path))
    assert default_state_dir() == str(tmp_path)


def test_update_writes_json_and_returns_state(tmp_path):
    """update() applies the change, records the job name, writes valid JSON and returns the new state."""
    store = StateStore("job1", str(tmp_path))
    result = store.update(lambda s: s.update(count=1))
    assert result == {"count": 1, "job": "job1"}
    assert json.loads(open(store.path).read()) == result
    assert store.read() == result


def test_update_leaves_no_temp_files(tmp_path):
    """After updates only state.json and the lock file remain in the job's directory."""
    store = StateStore("job1", str(tmp_path))
    for i in range(5):
        store.update(lambda s, i=i: s.update(i=i))
    assert sorted(os.listdir(store.dir)) == [".state.lock", "state.json"]


def test_failed_change_keeps_old_state(tmp_path):
    """When the change function raises, the file keeps the previous state and no temp file is left."""
    store = StateStore("job1", str(tmp_path))
    store.update(lambda s: s.update(count=1))

    def boom(state: dict) -> None:
        state["count"] = 2
        raise RuntimeError("change failed")

    with pytest.raises(RuntimeError):
        store.update(boom)
    assert store.read()["count"] == 1
    assert sorted(os.listdir(store.dir)) == [".state.lock", "state.json"]


def test_unserialisable_value_is_written_as_text(tmp_path):
    """A value JSON cannot encode is stored as its str() rather than breaking the write."""
    store = StateStore("job1", str(tmp_path))
    store.update(lambda s: s.update(where=tmp_path))
    assert store.read()["where"] == str(tmp_path)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b'"text"'])
def test_unreadable_state_is_config_error(tmp_path, content):
    """read() of a corrupt or non-object state file raises ConfigError naming the file."""
    store = StateStore("job1", str(tmp_path))
    os.makedirs(store.dir)
    with open(store.path, "wb") as handle:
        handle.write(content)
    with pytest.raises(ConfigError, match="state.json"):
        store.read()


def test_empty_state_file_reads_as_empty(tmp_path):
    """A zero-byte state file reads as an empty state."""
    store = StateStore("job1", str(tmp_path))
    os.makedirs(store.dir)
    open(store.path, "wb").close()
    assert store.read() == {}


def test_update_recovers_from_unreadable_state(tmp_path):
    """update() over a corrupt file starts afresh, flags the recovery and writes valid JSON."""
    store = StateStore("job1", str(tmp_path))
    os.makedirs(store.dir)
    with open(store.path, "w") as handle:
        handle.write("{half")
    state = store.update(lambda s: s.update(count=1))
    assert state == {"recovered_from_unreadable_state": True, "count": 1, "job": "job1"}
    assert store.read() == state


def test_atomic_write_sets_mode_and_replaces(tmp_path):
    """atomic_write replaces the file's content whole and applies the mode."""
    target = tmp_path / "f.json"
    target.write_text("old")
    atomic_write(str(target), b"new", mode=0o600)
    assert target.read_bytes() == b"new"
    assert (target.stat().st_mode & 0o777) == 0o600
    assert os.listdir(tmp_path) == ["f.json"]


def _increment_many(root: str, count: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait(10)
    store = StateStore("counter", root)
    for _ in range(count):
        store.update(lambda s: s.update(count=s.get("count", 0) + 1))


def test_concurrent_updates_from_processes_lose_nothing(tmp_path):
    """20 processes each incrementing a counter 25 times under update() end at exactly 500."""
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_increment_many, args=(str(tmp_path), INCREMENTS, start)) for _ in range(WORKERS)]
    try:
        for proc in procs:
            proc.start()
        start.set()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0] * WORKERS
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    store = StateStore("counter", str(tmp_path))
    assert store.read()["count"] == WORKERS * INCREMENTS
    assert sorted(os.listdir(store.dir)) == [".state.lock", "state.json"]


def test_readers_never_see_a_partial_file(tmp_path):
    """While writers update, every read of the state file parses as a complete JSON object."""
    store = StateStore("counter", str(tmp_path))
    store.update(lambda s: s.update(count=0, padding="x" * 20000))
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_increment_many, args=(str(tmp_path), 40, start)) for _ in range(4)]
    reads = 0
    try:
        for proc in procs:
            proc.start()
        start.set()
        while any(proc.is_alive() for proc in procs):
            with open(store.path, "rb") as handle:
                data = json.loads(handle.read())
            assert data["padding"] == "x" * 20000
            reads += 1
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0] * 4
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    assert reads > 0
    assert store.read()["count"] == 160


def test_concurrent_updates_from_threads_lose_nothing(tmp_path):
    """Threads of one process updating the same store also serialise (flock on separate descriptors)."""
    store_root = str(tmp_path)

    def work() -> None:
        store = StateStore("counter", store_root)
        for _ in range(20):
            store.update(lambda s: s.update(count=s.get("count", 0) + 1))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert StateStore("counter", store_root).read()["count"] == 160


def test_record_start_marks_running() -> None:
    """note_start records the running run's id, pid and start time."""
    state: dict[str, Any] = {}
    note_start(state, run_id="abc", pid=42, now=500.0)
    assert state == {"running": {"run_id": "abc", "pid": 42, "since": 500.0}, "last_start": 500.0}


def test_record_finish_success_fields() -> None:
    """A success records outcome, exit code, duration, attempts, last_success and clears running."""
    state: dict[str, Any] = {}
    note_start(state, run_id="r", pid=1, now=990.0)
    _finish(state, "success", duration=10.0, now=1000.0)
    assert "running" not in state
    assert state["last_outcome"] == "success" and state["last_exit_code"] == 0
    assert state["last_success"] == 1000.0 and state["last_finish"] == 1000.0
    assert state["last_start"] == 990.0 and state["last_duration_s"] == 10.0
    assert state["last_attempts"] == 1 and state["last_run_id"] == "r"
    assert state["consecutive_failures"] == 0
    assert state["runs"] == {"success": 1}


def test_record_finish_keeps_another_runs_running_marker() -> None:
    """Finishing run A does not erase the running marker of a different run B."""
    state: dict[str, Any] = {}
    note_start(state, run_id="B", pid=2, now=1.0)
    _finish(state, "failure", run_id="A")
    assert state["running"]["run_id"] == "B"


def test_consecutive_failures_count_and_reset() -> None:
    """consecutive_failures grows with each failure or timeout and resets to 0 on success."""
    state: dict[str, Any] = {}
    _finish(state, "failure", error="OSError: disk full")
    _finish(state, "timeout")
    _finish(state, "failure", error="OSError: again")
    assert state["consecutive_failures"] == 3
    assert state["last_error"] == "OSError: again"
    assert state["last_failure"] == 1000.0
    _finish(state, "success")
    assert state["consecutive_failures"] == 0
    assert "last_error" not in state
    _finish(state, "failure")
    assert state["consecutive_failures"] == 1


def test_durations_are_capped() -> None:
    """Only the last KEEP_DURATIONS (10) durations are kept, newest last."""
    state: dict[str, Any] = {}
    for i in range(15):
        _finish(state, "success", duration=float(i))
    assert KEEP_DURATIONS == 10
    assert state["durations_s"] == [float(i) for i in range(5, 15)]


def test_runs_count_per_outcome() -> None:
    """runs counts each outcome separately."""
    state: dict[str, Any] = {}
    for outcome in ("success", "failure", "success", "skipped", "timeout", "skipped", "terminated"):
        _finish(state, outcome)
    assert state["runs"] == {"success": 2, "failure": 1, "skipped": 2, "timeout": 1, "terminated": 1}


def test_skipped_only_counts() -> None:
    """A skipped run bumps runs.skipped and last_skipped and touches no result field."""
    state: dict[str, Any] = {}
    _finish(state, "failure", error="boom", now=100.0)
    before = {k: v for k, v in state.items() if k != "runs"}
    _finish(state, "skipped", now=200.0)
    assert state["runs"] == {"failure": 1, "skipped": 1}
    assert state["last_skipped"] == 200.0
    skip_streak = ("runs", "last_skipped", "skipped_since", "consecutive_skips")
    assert {k: v for k, v in state.items() if k not in skip_streak} == before


# Through the CLI: a state directory that cannot be written does not change the job's outcome.

OK_JOB = "from jobrunner import job\n@job\ndef ok(ctx):\n    ctx.log.info('did.it')\n"


def _assert_state_failure_is_logged_only(run) -> None:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    failed = run.event("state.write_failed")
    assert failed["level"] == "error"
    finished = run.event("job.finished")
    assert finished["outcome"] == "success" and finished["exit_code"] == 0


def test_cli_state_path_blocked_by_a_file(launcher):
    """When the state directory is a regular file, the job still succeeds and logs state.write_failed at error."""
    launcher.write_job("ok", OK_JOB)
    launcher.state_dir.write_text("not a directory")
    run = launcher.run("ok")
    _assert_state_failure_is_logged_only(run)
    assert launcher.state_dir.read_text() == "not a directory"


def _can_mount_readonly_tmpfs(tmp_path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", f"mount -t tmpfs -o ro tmpfs {probe}"],
        capture_output=True,
        timeout=10,
        check=False,
    )
    probe.rmdir()
    return proc.returncode == 0


def test_cli_read_only_state_dir(launcher, tmp_path):
    """On a read-only file system (tmpfs mounted ro in a private mount namespace) the job still exits 0."""
    if not _can_mount_readonly_tmpfs(tmp_path):
        pytest.skip("needs unshare --mount and permission to mount tmpfs (root)")
    launcher.write_job("ok", OK_JOB)
    launcher.state_dir.mkdir()
    env = launcher.env()
    script = f'mount -t tmpfs -o ro tmpfs "{launcher.state_dir}" && exec "$0" -m jobrunner ok'
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, sys.executable],
        capture_output=True,
        text=True,
        env=env,
        cwd=launcher.tmp,
        timeout=60,
        check=False,
    )
    run = Run(proc)
    _assert_state_failure_is_logged_only(run)
    assert "Read-only" in run.event("state.write_failed")["error"]
    assert os.listdir(launcher.state_dir) == []
