"""Torture tests: storms with SIGKILLs, SIGTERM at every phase, faults, output floods, secrets.

All through the real CLI in subprocesses. Each test is bounded in count and time (the whole
file stays around a minute on a 2-core machine) and never waits without a timeout.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import ledger_entries, pid_alive, wait_for

pytestmark = pytest.mark.slow

# ---------------------------------------------------------------------------------------------
# Many launches with random SIGKILLs of the holders

LEDGER_JOB = """
    import os, time
    from jobrunner import job

    @job(lock=True)
    def critical(ctx):
        fd = os.open(ctx.env["LEDGER"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"in {os.getpid()} {time.monotonic_ns()}\\n".encode())
        time.sleep(float(ctx.env.get("HOLD", "0")))
        os.write(fd, f"out {os.getpid()} {time.monotonic_ns()}\\n".encode())
        os.close(fd)
"""

WAVES = int(os.environ.get("TORTURE_WAVES", "25"))  # 25 × 20 = 500 launches
WAVE_SIZE = 20


def _ledger(path: Path) -> list[tuple[str, int, int]]:
    """The ledger with its writers' pids as ints, to match the processes started."""
    return [(kind, int(pid), ns) for kind, pid, ns in ledger_entries(path)]


def test_launch_storm_with_random_sigkills_never_overlaps(launcher, tmp_path: Path) -> None:
    """WAVES×20 launches of a locked job; in random waves the holder is SIGKILLed mid-section.

    Each ``in`` must follow the previous holder's ``out``, or, for a killed holder (``in``
    without ``out``), the moment the test reaped it (its death is somewhere before that)."""
    rng = random.Random(20261125)
    launcher.write_job("critical", LEDGER_JOB)
    ledger = tmp_path / "ledger"
    reaped: dict[int, int] = {}  # killed pid -> monotonic_ns when reaped
    codes: list[int] = []
    for wave in range(WAVES):
        kill = rng.random() < 0.5
        hold = "2" if kill else f"{rng.uniform(0.02, 0.3):.3f}"
        env = launcher.env(LEDGER=str(ledger), HOLD=hold)
        before = {pid for _, pid, _ in _ledger(ledger)}
        procs = {}
        for _ in range(WAVE_SIZE):
            proc = launcher.start("critical", env=env)
            procs[proc.pid] = proc
        if kill:

            def holder_in(before: set[int] = before) -> int | None:
                new = [pid for kind, pid, _ in _ledger(ledger) if kind == "in" and pid not in before]
                return new[0] if new else None

            assert wait_for(lambda: holder_in() is not None, 30), f"wave {wave}: nobody got the lock"
            time.sleep(rng.uniform(0.0, 0.4))
            victim = holder_in()
            assert victim is not None
            assert victim in procs
            os.kill(victim, signal.SIGKILL)
            procs[victim].wait(timeout=30)
            reaped[victim] = time.monotonic_ns()
        for proc in procs.values():
            run = launcher.finish(proc, timeout=60)
            codes.append(run.returncode)
    rows = _ledger(ledger)
    ins = [r for r in rows if r[0] == "in"]
    outs = {pid: ts for kind, pid, ts in rows if kind == "out"}
    killed = [pid for _, pid, _ in ins if pid not in outs]
    assert set(killed) == set(reaped), (killed, reaped)
    # Sections ordered by entry; each one must end (out, or reap bound) before the next begins.
    ins.sort(key=lambda r: r[2])
    for (_, pid, _), (_, nxt, nxt_in) in itertools.pairwise(ins):
        end = outs.get(pid, reaped.get(pid))
        assert end is not None and nxt_in > end, f"run {nxt} entered at {nxt_in} before {pid} left ({end})"
    assert set(codes) <= {0, 75, -signal.SIGKILL}, sorted(set(codes))
    assert codes.count(-signal.SIGKILL) == len(reaped)
    assert codes.count(0) == len(ins) - len(reaped)
    assert len(codes) == WAVES * WAVE_SIZE
    # No stale lock: a final run takes it at once.
    final = launcher.run("critical", env=launcher.env(LEDGER=str(ledger), HOLD="0"), timeout=60)
    assert final.returncode == 0, final.stdout + final.stderr
    assert final.event("lock.acquired")


# ---------------------------------------------------------------------------------------------
# SIGTERM at every phase of a run

PHASES_JOB = """
    import os, time
    from jobrunner import job, Lock, Retry

    def _note(path, text):
        with open(path, "a") as handle:
            handle.write(text + "\\n")

    @job(lock=Lock(wait=os.environ.get("WAIT") or None), kill_grace="2s",
         retry=Retry(attempts=3, delay="30s", on=(OSError,)) if os.environ.get("RETRY") else None)
    def phases(ctx):
        e = ctx.env
        if ctx.attempt == 1:
            ctx.cleanup(lambda: _note(e["CLEANUPS"], "cleanup"))
            if e.get("SLOW_CLEANUP"):
                def slow():
                    _note(e["MARKS"], "cleanup-started")
                    time.sleep(1.5)
                ctx.cleanup(slow)
        _note(e["MARKS"], f"attempt {ctx.attempt}")
        ctx.run(["sh", "-c", 'echo $$ >> "$PIDS"; sleep 100 & echo $! >> "$PIDS"; '
                 + ("wait" if e.get("MID_JOB") else "exit 0")])
        if e.get("RETRY"):
            raise OSError("transient, retry me")
        if e.get("HOLD"):
            time.sleep(float(e["HOLD"]))
"""


class _Lines:
    """Reads a process's stdout lines in a thread (so a test can wait for an event)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.proc = proc
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.append(line)

    def has(self, event: str) -> bool:
        return any(f'"event":"{event}"' in line for line in self.lines)

    def events(self) -> list[dict]:
        self.thread.join(30)
        return [json.loads(line) for line in self.lines if line.strip()]


def _phase_env(launcher, tmp_path: Path, **extra: str) -> dict[str, str]:
    return launcher.env(
        CLEANUPS=str(tmp_path / "cleanups"), MARKS=str(tmp_path / "marks"), PIDS=str(tmp_path / "pids"), **extra
    )


def _count(path: Path, text: str) -> int:
    return path.read_text().splitlines().count(text) if path.exists() else 0


def _pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _terminate_when(launcher, proc, ready, timeout: float = 30):
    lines = _Lines(proc)
    assert wait_for(lambda: ready(lines), timeout), "".join(lines.lines)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=40)
    return code, lines.events()


def _assert_lock_free(launcher, tmp_path):
    run = launcher.run("phases", env=_phase_env(launcher, tmp_path / "after"), timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("phase", ["lock_wait", "mid_job", "retry_sleep"])
def test_sigterm_at_each_phase(launcher, tmp_path, phase):
    """SIGTERM before the lock, mid-job, mid-retry-sleep: exit 143, cleanup exactly as often as
    registered, no process of the job left, the lock free afterwards."""
    launcher.write_job("phases", PHASES_JOB)
    (tmp_path / "after").mkdir()
    holder = None
    if phase == "lock_wait":
        holder = launcher.start("phases", env=_phase_env(launcher, tmp_path / "after", HOLD="3"))
        assert wait_for(lambda: _count(tmp_path / "after" / "marks", "attempt 1") == 1, 30)
        env = _phase_env(launcher, tmp_path, WAIT="60s")
        proc = launcher.start("phases", env=env)
        code, events = _terminate_when(launcher, proc, lambda lines: lines.has("lock.waiting"))
        expected_cleanups = 0  # the job never started: nothing was registered
    elif phase == "mid_job":
        proc = launcher.start("phases", env=_phase_env(launcher, tmp_path, MID_JOB="1"))
        code, events = _terminate_when(launcher, proc, lambda lines: len(_pids(tmp_path / "pids")) >= 2)
        expected_cleanups = 1
    else:
        proc = launcher.start("phases", env=_phase_env(launcher, tmp_path, RETRY="1"))
        code, events = _terminate_when(launcher, proc, lambda lines: lines.has("job.retry"))
        expected_cleanups = 1
    assert code == 143, events
    names = [e["event"] for e in events]
    assert names[-1] == "job.finished" and events[-1]["outcome"] == "terminated", names
    assert "job.terminated" in names
    assert _count(tmp_path / "cleanups", "cleanup") == expected_cleanups
    for pid in _pids(tmp_path / "pids"):
        assert wait_for(lambda pid=pid: not pid_alive(pid), 10), f"orphan {pid} survived ({phase})"
    if holder is not None:
        assert launcher.finish(holder).returncode == 0
    _assert_lock_free(launcher, tmp_path)


def test_sigterm_during_cleanup_is_deferred(launcher, tmp_path):
    """A SIGTERM while cleanups run does not cut them short: ``signal.deferred`` is logged and
    the run ends with its own outcome (here success, exit 0), each cleanup exactly once."""
    launcher.write_job("phases", PHASES_JOB)
    (tmp_path / "after").mkdir()
    proc = launcher.start("phases", env=_phase_env(launcher, tmp_path, SLOW_CLEANUP="1"))
    code, events = _terminate_when(launcher, proc, lambda lines: _count(tmp_path / "marks", "cleanup-started") == 1)
    finished = events[-1]
    assert finished["event"] == "job.finished", events
    assert (code, finished["outcome"]) == (0, "success")
    deferred = [e for e in events if e["event"] == "signal.deferred"]
    assert deferred and deferred[0]["signals"] == ["SIGTERM"]
    assert _count(tmp_path / "cleanups", "cleanup") == 1
    for pid in _pids(tmp_path / "pids"):
        assert wait_for(lambda pid=pid: not pid_alive(pid), 10), f"orphan {pid}"
    _assert_lock_free(launcher, tmp_path)


# ---------------------------------------------------------------------------------------------
# Faults: state dir unusable, lock dir uncreatable, disk full, stdout closed

SIMPLE_JOB = """
    from jobrunner import job

    @job(lock=True)
    def simple(ctx):
        ctx.run(["echo", "hello from the child"])
        ctx.log.info("simple.done")
"""


def _env_with(launcher, **override: str) -> dict[str, str]:
    """The launcher's environment with some of its own JOBRUNNER_* settings replaced."""
    env = launcher.env()
    env.update(override)
    return env


def test_state_dir_is_a_file(launcher, tmp_path):
    """A file where the state dir should be (read-only in effect, even for root): exit 0
    unchanged, ``state.write_failed`` logged, the result still in ``job.finished``."""
    launcher.write_job("simple", SIMPLE_JOB)
    blocker = tmp_path / "statefile"
    blocker.write_text("not a directory\n")
    run = launcher.run("simple", env=_env_with(launcher, JOBRUNNER_STATE_DIR=str(blocker)), timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.event("state.write_failed")["level"] == "error"
    assert run.event("job.finished")["outcome"] == "success"


def test_lock_dir_uncreatable_is_exit_78(launcher, tmp_path):
    """JOBRUNNER_LOCK_DIR under a file: one ``job.failed`` naming the lock directory, exit 78."""
    launcher.write_job("simple", SIMPLE_JOB)
    (tmp_path / "afile").write_text("x")
    run = launcher.run(
        "simple", env=_env_with(launcher, JOBRUNNER_LOCK_DIR=str(tmp_path / "afile" / "locks")), timeout=60
    )
    assert run.returncode == 78, run.stdout + run.stderr
    failed = run.event("job.failed")
    assert failed["exception"]["type"] == "ConfigError"
    message = failed["exception"]["message"]
    assert "lock directory" in message and "JOBRUNNER_LOCK_DIR" in message and "\n" not in message
    assert run.event("job.finished")["exit_code"] == 78
    assert "Traceback" not in run.stderr
    assert "proc.started" not in run.names()  # the job never ran


def test_state_disk_full(launcher, tmp_path):
    """A full 64 KiB tmpfs as the state dir: exit 0 unchanged, the result still logged."""
    if not shutil.which("unshare") or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) for a private tmpfs")
    launcher.write_job("simple", SIMPLE_JOB)
    state = tmp_path / "fullstate"
    state.mkdir()
    script = (
        'mount -t tmpfs -o size=64k tmpfs "$JOBRUNNER_STATE_DIR" || exit 99; '
        'dd if=/dev/zero of="$JOBRUNNER_STATE_DIR/fill" bs=4k 2>/dev/null; '
        'mkdir -p "$JOBRUNNER_STATE_DIR/simple"; '
        'dd if=/dev/zero of="$JOBRUNNER_STATE_DIR/simple/fill2" bs=512 2>/dev/null; '
        f"exec {sys.executable} -m jobrunner simple"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        env=_env_with(launcher, JOBRUNNER_STATE_DIR=str(state)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode == 99:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    names = [e["event"] for e in events]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    failed = [e for e in events if e["event"] == "state.write_failed"]
    assert failed and "space" in failed[0]["error"].lower(), names
    assert events[-1]["event"] == "job.finished" and events[-1]["outcome"] == "success"


@pytest.mark.parametrize("how", ["closed", "broken_pipe"])
def test_stdout_gone(launcher, tmp_path, how):
    """stdout closed (fd 1 not open) or a pipe nobody reads: the run completes, exit 0, and the
    state records the success."""
    launcher.write_job("simple", SIMPLE_JOB)
    env = launcher.env()
    argv = [sys.executable, "-m", "jobrunner", "simple"]
    if how == "closed":
        proc = subprocess.run(
            ["sh", "-c", 'exec "$@" >&-', "sh", *argv],
            env=env,
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
        code, err = proc.returncode, proc.stderr
    else:
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            proc = subprocess.run(
                argv, env=env, cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60
            )
        finally:
            os.close(write_end)
        code, err = proc.returncode, proc.stderr
    assert code == 0, err
    state = launcher.state("simple")
    assert state["last_outcome"] == "success" and state["last_exit_code"] == 0
    assert "running" not in state


# ---------------------------------------------------------------------------------------------
# Output floods

FLOOD_LINES = int(os.environ.get("TORTURE_FLOOD_LINES", "500000"))
RSS_LIMIT_MIB = 150

FLOOD_JOB = """
    from jobrunner import job

    @job
    def flood(ctx):
        ctx.sh(ctx.env["FLOOD"])
        # The runner's own high-water mark. (wait4's ru_maxrss would also count the pre-exec
        # moment when the forked child still had the whole pytest process mapped.)
        with open("/proc/self/status") as status, open(ctx.env["HWM_FILE"], "w") as out:
            out.write(next(l for l in status if l.startswith("VmHWM:")).split()[1])
"""


def _flood(launcher, tmp_path, shell: str) -> tuple[int, float, int, dict]:
    """Run the flood job; stream its stdout, parse every line. (exit, peak RSS MiB, lines, last)."""
    launcher.write_job("flood", FLOOD_JOB)
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobrunner", "flood"],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=launcher.env(FLOOD=shell, HWM_FILE=str(tmp_path / "hwm")),
            cwd=tmp_path,
            start_new_session=True,
        )
    launcher.procs.append(proc)
    timer = threading.Timer(120, lambda: os.killpg(proc.pid, signal.SIGKILL))  # never a hang
    timer.start()
    count, last, longest, truncated = 0, {}, 0, 0
    try:
        for raw in proc.stdout:  # type: ignore[union-attr]
            last = json.loads(raw)  # every line is one JSON object
            longest = max(longest, len(raw))
            count += 1
            if last.get("event") == "proc.output" and str(last.get("line", "")).endswith("…[truncated]"):
                truncated += 1
        _, status, _usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    last["_longest"], last["_truncated"] = longest, truncated
    hwm = tmp_path / "hwm"
    return code, (int(hwm.read_text()) / 1024 if hwm.exists() else float("inf")), count, last


def test_flood_of_lines(launcher, tmp_path):
    """FLOOD_LINES lines through ctx.run: no hang, bounded RSS, exit 0, every line JSON."""
    code, rss, count, last = _flood(launcher, tmp_path, f"seq -f 'flood line %.0f' 1 {FLOOD_LINES}")
    assert code == 0, (tmp_path / "stderr").read_text()
    assert last["event"] == "job.finished" and last["outcome"] == "success"
    assert count >= FLOOD_LINES
    assert rss < RSS_LIMIT_MIB, f"runner peak RSS {rss:.0f} MiB"


def test_flood_single_50mb_line(launcher, tmp_path):
    """One 50 MB line without a newline: cut with a marker, no hang, bounded RSS, exit 0."""
    code, rss, count, last = _flood(launcher, tmp_path, "head -c 50000000 /dev/zero | tr '\\0' x")
    assert code == 0, (tmp_path / "stderr").read_text()
    assert last["event"] == "job.finished" and last["outcome"] == "success"
    assert last["_longest"] < 1024 * 1024  # the line was cut, not copied whole into the log
    assert last["_truncated"] == 1  # logged once, with the marker
    assert rss < RSS_LIMIT_MIB, f"runner peak RSS {rss:.0f} MiB"


# ---------------------------------------------------------------------------------------------
# Secrets never leave the process

SECRET_JOB = """
    import os
    from jobrunner import job

    @job(lock=True)
    def leaky(ctx):
        ctx.log.info("db.connect", url=ctx.env["DB_URL"])
        ctx.run(["sh", "-c", 'echo "child sees $DB_PASSWORD"; echo "s3 $AWS_SECRET_ACCESS_KEY" >&2'])
        raise RuntimeError(
            f"login failed for {ctx.env['DB_PASSWORD']} at https://svc:ExcUrlPw5566@api.example.org/v1"
            f" key {ctx.env['AWS_SECRET_ACCESS_KEY']}"
        )
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the socket goes


def test_secrets_never_reach_any_output(launcher, tmp_path):
    """Env secrets, an Apprise URL token, a URL password and an exception message: none of the
    secret values appears in stdout, stderr, the state dir, the metrics dir or the lock dir."""
    launcher.write_job("leaky", SECRET_JOB)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    port = _closed_port()
    secrets = {
        "DB_PASSWORD": "Db-Pa55w0rd-7Qx9",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzSECRET",
        "notify token": "NtfyT0ken8812aa",
        "notify password": "NtfyPw77zz",
        "url password": "UrlPw-3141",
        "exception url password": "ExcUrlPw5566",
    }
    env = launcher.env(
        DB_PASSWORD=secrets["DB_PASSWORD"],
        AWS_SECRET_ACCESS_KEY=secrets["AWS_SECRET_ACCESS_KEY"],
        AWS_ACCESS_KEY_ID="AKIAEXAMPLE0000",
        DB_URL=f"mysql://wp:{secrets['url password']}@127.0.0.1:3306/wordpress",
        JOBRUNNER_NOTIFY_URLS=(
            f"json://hook:{secrets['notify password']}@127.0.0.1:{port}/notify?token={secrets['notify token']}"
        ),
        JOBRUNNER_METRICS_DIR=str(metrics),
    )
    run = launcher.run("leaky", env=env, timeout=90)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.event("job.failed")
    produced = [("stdout", run.stdout.encode()), ("stderr", run.stderr.encode())]
    for root in (launcher.state_dir, metrics, launcher.lock_dir):
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                produced.append((str(path), path.read_bytes()))
    assert any(name.endswith("state.json") for name, _ in produced)
    leaks = [(what, name) for what, value in secrets.items() for name, data in produced if value.encode() in data]
    assert not leaks, leaks
    assert "***" in run.stdout  # redacted, not silently dropped
