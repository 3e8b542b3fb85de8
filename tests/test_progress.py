"""ctx.progress: steps counted cheaply, reported at a bounded rate to the log, to systemd
(sd_notify STATUS= on a real datagram socket) and, on a real terminal (tmux), as one live line."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from jobrunner.run.progress import Reporter, format_amount, format_duration
from jobrunner.systemd.sdnotify import Notifier

from .conftest import Launcher, clean_env
from .test_imports import PROBE


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Log:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def info(self, event: str, **kw: Any) -> None:
        self.events.append({"event": event, **kw})


class Sent:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def send(self, message: str) -> bool:
        self.messages.append(message)
        return True


def reporter(**kw: Any) -> tuple[Reporter, Log, Sent, Clock]:
    log, sent, clock = Log(), Sent(), Clock()
    rep = Reporter(log, notifier=sent, clock=clock, thread=False, **kw)  # type: ignore[arg-type]
    return rep, log, sent, clock


def test_an_hour_long_step_logs_every_30s_and_its_end_with_duration_and_rate():
    rep, log, sent, clock = reporter()
    with rep.step("copy", total=3600 * 1000, unit="B") as p:
        for _ in range(3600 * 4):  # an hour, ticked four times a second
            clock.now += 0.25
            p.advance(250)
            rep.tick()
    clock.now += 0.5
    rep.tick()  # the status is cleared once STATUS_GAP has passed since the last datagram
    running = [e for e in log.events if e["state"] == "running"]
    assert 119 <= len(running) <= 120
    assert all(e["event"] == "progress" and e["step"] == "copy" for e in log.events)
    end = log.events[-1]
    assert end["state"] == "done" and end["duration_s"] == 3600.0 and end["rate"] == 1000.0
    assert end["percent"] == 100.0 and end["done"] == 3600 * 1000
    # STATUS= at most every 2 s (and once cleared at the end)
    assert len(sent.messages) <= 3600 / 2 + 2
    assert sent.messages[-1] == "STATUS="
    assert re.fullmatch(r"STATUS=copy \d+% \(.* / 3\.4 MiB, 1000 B/s, ETA .*\)", sent.messages[5])


def test_steps_nest_follow_and_fail():
    rep, log, sent, clock = reporter()
    with pytest.raises(RuntimeError), rep.step("backup", total=2, unit="parts") as outer:
        with rep.step("files", total=10) as inner:
            clock.now += 2
            inner.advance(5)
            rep.tick()
            assert sent.messages[-1].startswith("STATUS=backup > files 50% (5 / 10, 2.5/s, ETA 2s)")
        outer.advance()
        with rep.step("urls") as urls:  # no total: what is done and the rate
            clock.now += 4
            urls.advance(10)
            rep.tick()
            assert sent.messages[-1] == "STATUS=backup > urls (10, 2.5/s)"
            raise RuntimeError("boom")
    states = [(e["step"], e["state"]) for e in log.events]
    assert states == [("backup > files", "done"), ("backup > urls", "failed"), ("backup", "failed")]
    assert log.events[1]["total"] is None and log.events[1]["rate"] == 2.5


def test_follow_file_and_follow_io_read_a_child_without_touching_its_bytes(tmp_path):
    rep, log, sent, clock = reporter()
    out = tmp_path / "out"
    child = subprocess.Popen(["dd", "if=/dev/zero", f"of={out}", "bs=64k", "count=64", "status=none"])
    with rep.step("dump", total=64 * 65536, unit="B") as p:
        p.follow_file(out)
        child.wait()
        clock.now += 1
        rep.tick()
        assert p.done == 64 * 65536
    code = "import sys; sys.stdin.readline(); open('/dev/zero', 'rb').read(1000000); sys.stdin.readline()"
    reader = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    assert reader.stdin is not None
    try:
        with rep.step("read", unit="B") as p:
            p.follow_io(reader.pid)
            reader.stdin.write(b"go\n")
            reader.stdin.flush()
            deadline = time.monotonic() + 5
            while p.done < 1_000_000 and time.monotonic() < deadline:
                time.sleep(0.05)
                rep.tick()
            assert p.done >= 1_000_000
    finally:
        reader.stdin.close()
        reader.wait(5)


def test_follow_commands_counts_a_named_stage_of_a_pipeline() -> None:
    """``follow_commands(command="cat")``: the reads of the ``cat`` inside a shell pipeline of
    one of the run's process groups, found by name in /proc."""

    class Groups:
        pgids: set[int] = set()

    rep, log, sent, clock = reporter(groups=Groups())
    proc = subprocess.Popen(
        ["sh", "-c", "(read go; head -c 3000000 /dev/zero; sleep 1) | cat > /dev/null"],
        start_new_session=True,
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    Groups.pgids.add(proc.pid)
    try:
        with rep.step("stage", total=3_000_000, unit="B") as p:
            deadline = time.monotonic() + 5
            while not _named("cat", proc.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            p.follow_commands(command="cat")  # counts from now: the pipeline waits for "go"
            proc.stdin.write(b"go\n")
            proc.stdin.close()
            deadline = time.monotonic() + 5
            while p.done < 3_000_000 and time.monotonic() < deadline:
                time.sleep(0.05)
                rep.tick()
            assert 3_000_000 <= p.done < 3_100_000
    finally:
        proc.wait(5)


def test_follow_may_report_a_growing_total_and_update_ends_following():
    rep, log, sent, clock = reporter()
    reads = iter([(10.0, 100.0), None, (50.0, 200.0)])
    with rep.step("sync", unit="B") as p:
        p.follow(lambda: next(reads))
        clock.now += 1
        rep.tick()
        assert (p.done, p.total) == (10.0, 100.0)
        rep.tick()  # None: no news
        assert (p.done, p.total) == (10.0, 100.0)
        rep.tick()
        assert (p.done, p.total) == (50.0, 200.0)
        p.update(200)
    end = log.events[-1]
    assert end["done"] == 200 and end["total"] == 200 and isinstance(end["total"], int)


def test_many_short_steps_never_flood_systemd():
    """A step starting or ending shows at once, but datagrams stay STATUS_GAP apart."""
    rep, log, sent, clock = reporter()
    for _ in range(1000):  # 1000 steps of 10 ms: 10 s
        with rep.step("item", total=1):
            clock.now += 0.01
            rep.tick()
    assert len(sent.messages) <= 10 / 0.5 + 2
    assert len([e for e in log.events if e["state"] == "done"]) == 1000  # each end is logged: keep steps coarse


def _named(name: str, pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes() if entry.isdigit() else b""
        except OSError:
            continue
        if stat and stat[stat.find(b"(") + 1 : stat.rfind(b")")] == name.encode():
            if int(stat[stat.rfind(b")") + 2 :].split()[2]) == pgid:
                return True
    return False


def test_formats():
    assert format_amount(1536, "B") == "1.5 KiB" and format_amount(3 * 1024**3, "B") == "3.0 GiB"
    assert format_amount(1234, "URLs") == "1,234 URLs" and format_amount(12.5, "") == "12.5"
    assert format_duration(45) == "45s" and format_duration(185) == "3m05s" and format_duration(7380) == "2h03m"


def test_sdnotify_sends_a_datagram_to_notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        assert Notifier(path).send("STATUS=hello")
        assert server.recv(4096) == b"STATUS=hello"
    abstract = f"@jobrunner-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + abstract[1:])
        server.settimeout(5)
        assert Notifier(abstract).send("STATUS=x")
        assert server.recv(4096) == b"STATUS=x"
    assert not Notifier("").send("STATUS=x") and not Notifier("relative").enabled


JOB = """
import time
from jobrunner import job

@job()
def slow(ctx):
    with ctx.progress("compressing files", total=40, unit="B") as p:
        for _ in range(40):
            p.advance(1)
            time.sleep(0.05)
        ctx.log.info("halfway.not")
        print("printed")
    with ctx.progress("urls") as p:
        for _ in range(10):
            p.advance()
            time.sleep(0.05)
"""


def test_a_run_on_a_pipe_is_pure_json_and_sends_status_to_systemd(launcher: Launcher, tmp_path):
    launcher.write_job("slow", JOB)
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(0.2)
        run = launcher.run("slow", env=launcher.env(NOTIFY_SOCKET=path))
        messages = []
        while True:
            try:
                messages.append(server.recv(4096).decode())
            except TimeoutError:
                break
    assert run.returncode == 0, run.stderr
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", run.stdout)  # no \r, no escape sequence
    progress = [e for e in run.events if e["event"] == "progress"]
    assert [(e["step"], e["state"]) for e in progress] == [("compressing files", "done"), ("urls", "done")]
    assert progress[0]["duration_s"] >= 2 and progress[0]["total"] == 40 and progress[0]["rate"] > 0
    statuses = [m for m in messages if m.startswith("STATUS=compressing files")]
    assert statuses and all(re.match(r"STATUS=compressing files \d+% ", m) for m in statuses)
    assert len(messages) <= 6  # every 2 s at most, plus each step's first and the final clear
    assert messages[-1] == "STATUS="


def test_progress_on_a_pipe_never_imports_the_terminal_code(launcher: Launcher):
    launcher.write_job("slow", JOB.replace("range(40)", "range(2)").replace("range(10)", "range(2)"))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "slow"], capture_output=True, text=True, timeout=60, env=launcher.env()
    )
    loaded = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    assert "jobrunner.run.progress" in loaded and "jobrunner.run.progress_tty" not in loaded
    noop = subprocess.run(
        [sys.executable, "-c", PROBE, "jobs.noop"], capture_output=True, text=True, timeout=60, env=launcher.env()
    )
    loaded = set(json.loads(noop.stderr.strip().splitlines()[-1]))
    assert "jobrunner.run.lifecycle" in loaded
    assert not {"jobrunner.run.progress", "jobrunner.run.progress_tty", "jobrunner.systemd.sdnotify"} & loaded


def test_on_a_real_terminal_the_live_line_is_drawn_and_cleared(launcher: Launcher, tmp_path):
    """tmux is the terminal (apt: tmux); capture-pane shows the screen as a user sees it."""
    tmux = shutil.which("tmux")
    assert tmux, "tmux is needed for this test (apt-get install tmux)"
    launcher.write_job("slow", JOB.replace("0.05", "0.1"))
    env = {k: v for k, v in launcher.env().items() if k != "JOBRUNNER_LOG_FORMAT"}
    done = tmp_path / "done"
    script = tmp_path / "run.sh"
    exports = " ".join(f"{k}={_sh(v)}" for k, v in env.items())
    script.write_text(f"cd {_sh(str(tmp_path))} && env -i {exports} {sys.executable} -m jobrunner slow; touch {done}\n")
    session = f"jr-progress-{os.getpid()}"
    socket_name = ["-L", session]  # a private tmux server
    subprocess.run(
        [tmux, *socket_name, "new-session", "-d", "-s", session, "-x", "160", "-y", "40", f"sh {script}; sleep 60"],
        check=True,
        env=clean_env(TERM="xterm"),
    )
    try:
        seen = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not done.exists():
            screen = subprocess.run(
                [tmux, *socket_name, "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
            live = [line for line in screen.splitlines() if re.match(r"compressing files \d+% \(\d+ B / 40 B", line)]
            if live:
                seen = live[0]
            time.sleep(0.1)
        assert done.exists(), "the job did not finish"
        assert seen, "the live line never appeared"
        final = subprocess.run(
            [tmux, *socket_name, "capture-pane", "-p", "-t", session], capture_output=True, text=True
        ).stdout
        lines = [line for line in final.splitlines() if line.strip()]
        assert not any(line.startswith(("compressing files", "urls")) for line in lines), final  # cleared
        assert any("job.finished" in line for line in lines) and any("halfway.not" in line for line in lines)
        assert sum("progress" in line and "state=done" in line for line in lines) >= 1
    finally:
        subprocess.run([tmux, *socket_name, "kill-server"], capture_output=True)


def _sh(value: str) -> str:
    import shlex

    return shlex.quote(value)


LONG_STEP = """
import time
from jobrunner import job

@job()
def wide(ctx):
    with ctx.progress("copying " + "x" * 150, total=30) as p:
        for _ in range(30):
            p.advance(1)
            time.sleep(0.05)
"""


@pytest.mark.parametrize(("cols", "width"), [(0, 80), (100, 100)])
def test_the_live_line_fits_the_terminal_and_a_0_column_one_gets_80(launcher: Launcher, cols: int, width: int):
    """A terminal that reports 0 columns (a serial console, ``script`` without a size) gets an
    80-column line, as ``shutil.get_terminal_size`` falls back, not a bare ``…``; a sized one
    its own width (one column kept free, the cut marked ``…``)."""
    import shlex

    launcher.write_job("wide", LONG_STEP)
    env = {k: v for k, v in launcher.env().items() if k != "JOBRUNNER_LOG_FORMAT"}
    command = shlex.join([sys.executable, "-m", "jobrunner", "wide"])
    done = subprocess.run(
        ["script", "-qec", f"stty cols {cols} rows 40; {command}; echo rc=$?", "/dev/null"],
        capture_output=True,
        timeout=60,
        env=env,
        cwd=launcher.tmp,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    out = done.stdout.decode("utf-8", "replace")
    assert "rc=0" in out, out
    drawn = [chunk.split("\r")[0] for chunk in out.split("\r\x1b[K")[1:]]
    lines = [text for text in drawn if text.startswith("copying")]
    assert lines, out
    assert all(len(text) == width - 1 and text.endswith("…") for text in lines), lines
