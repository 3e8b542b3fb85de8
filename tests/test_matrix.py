"""A failure is a failure on every path (issue 24): outcomes × outputs × entries, through the real CLI.

Each cell runs one job through ``python -m jobrunner`` and asserts, together: the exit code, the
state's last outcome, the history record, the notification a real HTTP receiver got (at most
one), the status page's row (``jobrunner status --html``), and no traceback anywhere.

- outcomes: success, raise, a command exiting non-zero, an ``exec`` script exiting 2, timeout,
  SIGTERM, lock busy, retries exhausted, a cleanup that raises, a job module that fails to import;
- outputs: JSON on a pipe, console on a pipe, a real pty of 100 columns, a pty of 0 columns
  (script(1) with ``stty cols 0``), a log file (``log_file=``);
- entries: ``run``, ``exec``, an instance run (``run --instance``).

Cells that do not exist are left out by construction: ``exec`` has no Python to raise, no
cleanup, no module to import and no ``log_file=``; ``exec`` script exits 2 is ``exec``'s alone.
The cell count and time are in the module's last test's docstring and docs/testing.md.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Launcher, stop_group, wait_for
from .test_notify_receivers import HttpReceiver
from .test_statuspage import rows

JOBS = """
import os, time
from jobrunner import Retry, job

INST = dict(instances=True, instance_group="sites") if os.environ.get("MATRIX_INSTANCES") else {}
LOG = os.environ.get("MATRIX_LOG_FILE") or None


def ready(ctx):
    with open(os.environ["MATRIX_READY"] + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(os.environ["MATRIX_READY"] + ".tmp", os.environ["MATRIX_READY"])


@job(log_file=LOG, **INST)
def success(ctx):
    ctx.log.info("work.done")

@job(log_file=LOG, **INST)
def boom(ctx):
    raise ValueError("disk full")

@job(log_file=LOG, **INST)
def command(ctx):
    ctx.run(["sh", "-c", "exit 3"])

@job(log_file=LOG, timeout="0.5s", **INST)
def slow(ctx):
    time.sleep(30)

@job(log_file=LOG, **INST)
def stopme(ctx):
    ready(ctx)
    time.sleep(30)

@job(log_file=LOG, lock=True, **INST)
def locked(ctx):
    pass

@job(log_file=LOG, retry=Retry(attempts=3, delay=0.01, backoff="fixed"), **INST)
def flaky(ctx):
    raise ValueError("still broken")

@job(log_file=LOG, **INST)
def tidy(ctx):
    def fails():
        raise OSError("scratch dir vanished")
    ctx.cleanup(fails)
"""

READY_SH = 'echo $PPID > "$MATRIX_READY.tmp" && mv "$MATRIX_READY.tmp" "$MATRIX_READY" && sleep 30'


@dataclass(frozen=True)
class Outcome:
    """What a cell runs and what it must end as."""

    job: str  # the job (run) or the name (exec)
    code: int  # the exit code
    outcome: str | None  # the state's and history's outcome; None: nothing recorded
    notified: str | None  # the notification's title starts with this emoji; None: no notification
    exec_args: tuple[str, ...] | None = None  # exec's options and command; None: no exec cell
    exec_code: int | None = None  # exec's exit code when not ``code`` (the command's own status)
    attempts: int = 1
    error: str | None = None  # how the error reads, in the finished line and a console's job.failed
    lock: bool = False  # the lock is held by another process during the run
    sigterm: bool = False  # SIGTERM once the job is running


OUTCOMES: dict[str, Outcome] = {
    "success": Outcome("success", 0, "success", None, ("--", "true")),
    "raise": Outcome("boom", 1, "failure", "❌", error="ValueError: disk full"),
    "command": Outcome("command", 1, "failure", "❌", ("--", "sh", "-c", "exit 3"), exec_code=3),
    "exec-exit-2": Outcome("script", 2, "failure", "❌", ("--", "sh", "-c", "echo partial; exit 2")),
    "timeout": Outcome("slow", 124, "timeout", "⏱", ("--timeout", "0.5s", "--", "sleep", "30")),
    "sigterm": Outcome("stopme", 143, "terminated", "🛑", ("--", "sh", "-c", READY_SH), sigterm=True),
    "lock-busy": Outcome("locked", 75, "skipped", None, ("--lock", "--", "true"), lock=True),
    "retries": Outcome(
        "flaky",
        1,
        "failure",
        "❌",
        ("--retry", "3", "--retry-delay", "0s", "--", "sh", "-c", "exit 1"),
        attempts=3,
        error="still broken",
    ),
    "cleanup-raises": Outcome("tidy", 0, "success", None),
    "import-fails": Outcome("broken", 78, None, None),
}
OUTPUTS = ("json-pipe", "console-pipe", "pty-100", "pty-0", "log-file")
ENTRIES = ("run", "exec", "instance")


def _exists(entry: str, outcome: str, output: str) -> bool:
    if entry == "exec":
        return OUTCOMES[outcome].exec_args is not None and output != "log-file"
    return outcome != "exec-exit-2"


GROUPS = [
    pytest.param(e, o, id=f"{e}-{o}") for e in ENTRIES for o in OUTCOMES if any(_exists(e, o, out) for out in OUTPUTS)
]
CELLS = sum(_exists(e, o, out) for e in ENTRIES for o in OUTCOMES for out in OUTPUTS)


@pytest.fixture(scope="module")
def hook() -> Iterator[HttpReceiver]:
    server = HttpReceiver()
    yield server
    server.close()


def _command(entry: str, spec: Outcome) -> list[str]:
    if entry == "exec":
        assert spec.exec_args is not None
        return ["exec", spec.job, *spec.exec_args]
    module = "broken" if spec.job == "broken" else f"matrixjobs:{spec.job}"
    return ["run", module, *(["--instance", "s1"] if entry == "instance" else [])]


def _popen(launcher: Launcher, argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=launcher.tmp,
        start_new_session=True,
    )
    launcher.procs.append(proc)
    return proc


class Cell:
    """One cell: its own job modules, state, locks and instances (a ``Launcher`` in its own
    directory), so the outputs of one outcome run side by side."""

    def __init__(self, root: Path, hook: HttpReceiver, entry: str, name: str, output: str) -> None:
        root.mkdir()
        self.launcher = launcher = Launcher(root)
        self.entry, self.name, self.output, self.hook = entry, name, output, hook
        self.spec = spec = OUTCOMES[name]
        self.code = spec.exec_code if entry == "exec" and spec.exec_code is not None else spec.code
        launcher.write_job("matrixjobs", JOBS)
        launcher.write_job("broken", "import jobrunner_no_such_module\n")
        (root / "instances" / "sites").mkdir(parents=True)
        (root / "instances" / "sites" / "s1.env").write_text("SITE=s1\n")
        self.route = f"/{hook.port}/{root.parent.name}/{output}"  # this cell's notifications
        self.ready = root / "ready"
        self.log_file = root / "job.log"
        self.page = root / "index.html"
        self.state_name = spec.job + ("@s1" if entry == "instance" else "")
        self.env = launcher.env(
            JOBRUNNER_NOTIFY_URLS=hook.url(path=self.route),
            JOBRUNNER_NOTIFY_TIMEOUT="10s",
            JOBRUNNER_INSTANCES_DIR=str(root / "instances"),
            MATRIX_READY=str(self.ready),
            **({"MATRIX_INSTANCES": "1"} if entry == "instance" else {}),
            **({"MATRIX_LOG_FILE": str(self.log_file)} if output == "log-file" else {}),
        )
        self.held: int | None = None
        self.out = self.err = ""

    def start(self) -> None:
        if self.spec.lock:  # taken as another run would: flock on its file in the lock directory
            self.launcher.lock_dir.mkdir(mode=0o755)
            self.held = os.open(self.launcher.lock_dir / f"{self.state_name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self.held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        args, env = _command(self.entry, self.spec), self.env
        if self.output.startswith("pty"):
            cols = self.output.split("-")[1]
            env = {k: v for k, v in env.items() if k != "JOBRUNNER_LOG_FORMAT"}  # a TTY's default: console
            command = shlex.join([sys.executable, "-m", "jobrunner", *args])
            argv = ["script", "-qec", f"stty cols {cols} rows 40; {command}; echo rc=$?", "/dev/null"]
        else:
            if self.output == "console-pipe":
                env = env | {"JOBRUNNER_LOG_FORMAT": "console"}
            argv = [sys.executable, "-m", "jobrunner", *args]
        self.proc = _popen(self.launcher, argv, env)

    def stop(self) -> None:
        if self.spec.sigterm:
            assert wait_for(self.ready.exists, timeout=30), f"{self.output}: the job never started"
            os.kill(int(self.ready.read_text()), signal.SIGTERM)

    def finish(self) -> None:
        try:
            out, self.err = self.proc.communicate(timeout=60)
        finally:
            if self.held is not None:
                os.close(self.held)
        self.out = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|\r", "", out)  # a terminal's colours and redraws
        self.returncode = self.proc.returncode

    def render_page(self) -> None:
        self.page_proc = _popen(
            self.launcher, [sys.executable, "-m", "jobrunner", "status", "--html", str(self.page)], self.env
        )

    def check(self) -> None:
        spec, out, text = self.spec, self.out, self.out + self.err

        # The exit code (a pty's is the rc= line script(1) printed after it), no traceback.
        if self.output.startswith("pty"):
            codes = re.findall(r"rc=(\d+)", out)
            assert codes and int(codes[-1]) == self.code, text
        else:
            assert self.returncode == self.code, text
        assert "Traceback" not in text and "could not write log event" not in text, text

        # What the output says: one finished line in the output's format, the error readable.
        if spec.outcome is None:  # the module cannot be imported: one line, nothing recorded
            assert "cannot be imported" in text and len([x for x in text.splitlines() if x.strip()]) <= 2, text
        elif self.output in ("json-pipe", "log-file"):
            finished = [json.loads(x) for x in out.splitlines() if '"event":"job.finished"' in x]
            assert [(f["outcome"], f["exit_code"]) for f in finished] == [(spec.outcome, self.code)], out
            level = "info" if spec.outcome in ("success", "skipped") else "error"  # the journal's priority
            assert finished[0]["level"] == level, finished
            if spec.error is not None and self.entry != "exec":
                assert spec.error in finished[0]["error"], finished
        else:
            finished_lines = [x for x in out.splitlines() if "job.finished" in x]
            assert len(finished_lines) == 1 and f"outcome={spec.outcome}" in finished_lines[0], out
            if spec.outcome not in ("success", "skipped"):
                assert "error=" in finished_lines[0], out
            if spec.outcome == "failure" and self.entry != "exec":
                failed = [x for x in out.splitlines() if "job.failed" in x]
                assert len(failed) == 1 and "error=" in failed[0], out  # one readable error line
                assert spec.error is None or spec.error in failed[0], failed
        if self.name == "cleanup-raises":
            assert text.count("cleanup.failed") == 1, text
        if self.output == "log-file":
            if spec.outcome is None:
                assert not self.log_file.exists()
            else:
                logged = [json.loads(x) for x in self.log_file.read_text().splitlines()]
                assert [e["outcome"] for e in logged if e["event"] == "job.finished"] == [spec.outcome]

        # The state and the history.
        state_dir = self.launcher.state_dir / self.state_name
        if spec.outcome is None:
            assert not state_dir.exists()
        else:
            state = self.launcher.state(self.state_name)
            assert state["runs"] == {spec.outcome: 1}, state
            if spec.outcome == "skipped":  # a skip is counted, not a result: the last outcome stays
                assert state.get("last_outcome") is None and state["consecutive_skips"] == 1, state
            else:
                assert state["last_outcome"] == spec.outcome and state["last_exit_code"] == self.code, state
            history = (state_dir / "history.jsonl").read_text().splitlines()
            records = [json.loads(x) for x in history if x.strip()]
            assert len(records) == 1, records
            assert (records[0]["outcome"], records[0]["exit_code"]) == (spec.outcome, self.code), records
            if spec.outcome != "skipped":
                assert records[0]["attempts"] == spec.attempts, records

        # The notification the receiver got: at most one, the right one.
        got = [json.loads(r["body"]) for r in self.hook.requests if r["path"] == self.route]
        if spec.notified is None:
            assert got == [], got
        else:
            assert len(got) == 1 and got[0]["title"].startswith(f"{spec.notified} {self.state_name} "), got

        # The status page's row.
        _, page_err = self.page_proc.communicate(timeout=60)
        assert self.page_proc.returncode == 0 and "Traceback" not in page_err, page_err
        shown = rows(self.page.read_text())
        if spec.outcome is None:
            assert self.state_name not in shown, shown
        else:
            assert spec.outcome in shown[self.state_name], shown


@pytest.mark.parametrize(("entry", "name"), GROUPS)
def test_matrix(tmp_path: Path, hook: HttpReceiver, entry: str, name: str) -> None:
    """Every output of one entry and outcome, run side by side (each cell in its own
    directories); every cell's failures reported together."""
    cells = [Cell(tmp_path / out, hook, entry, name, out) for out in OUTPUTS if _exists(entry, name, out)]
    try:
        for cell in cells:
            cell.start()
        for cell in cells:
            cell.stop()
        for cell in cells:
            cell.finish()
        routes = {c.route for c in cells if c.spec.notified is not None}
        wait_for(lambda: routes <= {r["path"] for r in hook.requests}, timeout=10)
        time.sleep(0.05)  # a second notification, were one sent, would be in by now
        for cell in cells:
            cell.render_page()
        problems = []
        for cell in cells:
            try:
                cell.check()
            except AssertionError as exc:
                problems.append(f"[{entry}-{name}-{cell.output}] {exc}")
        assert not problems, "\n\n".join(problems)
    finally:
        for cell in cells:
            cell.launcher.reap()
            for proc in [getattr(cell, "page_proc", None)]:
                if proc is not None and proc.poll() is None:
                    stop_group(proc)


def test_the_matrix_has_its_cells() -> None:
    """10 outcomes × 5 outputs × 3 entries, less what cannot exist: exec has no raise, no
    cleanup, no module to import and no log_file=; only exec has a script exiting 2."""
    assert len(GROUPS) == 25 and CELLS == 118
