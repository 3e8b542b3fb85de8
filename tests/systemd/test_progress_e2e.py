"""ctx.progress under a real systemd (see README.md here for the sandbox): the rendered unit
(``NotifyAccess=main``) lets the runner's ``STATUS=`` through, so ``systemctl show -p
StatusText`` names the step with a percentage while the job runs and changes as it goes; the
journal keeps each step's end with its duration; the unit still scores within its threshold."""

from __future__ import annotations

import re
import textwrap

import pytest

from .sandbox import Sandbox

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

PY = "/opt/jobrunner/bin/python"
JOBS_DIR = "/etc/jobrunner/jobs/progressjobs"
UNITS = "/root/progress-units"

MODULES = {
    "__init__.py": "",
    "longrun.py": """
        import time
        from jobrunner import job

        @job(hardening="strict", network=False, timeout="5m")
        def e2e_progress(ctx):
            with ctx.progress("backup", total=3, unit="steps") as outer:
                with ctx.progress("copy", total=100 * 1024 * 1024, unit="B") as p:
                    for _ in range(80):
                        p.advance(1280 * 1024)
                        time.sleep(0.1)
                outer.advance()
                with ctx.progress("verify") as p:
                    for _ in range(30):
                        p.advance()
                        time.sleep(0.1)
                outer.advance()
                # a command's own bytes, read from /proc inside the hardened unit
                with ctx.progress("stream", total=30_000_000, unit="B") as p:
                    p.follow_commands(command="cat")
                    ctx.sh("for i in $(seq 30); do head -c 1000000 /dev/zero; sleep 0.1; done | cat > /dev/null")
                outer.advance()
    """,
}


@pytest.fixture(scope="module")
def progress_unit(installed_sandbox: Sandbox) -> Sandbox:
    sb = installed_sandbox
    for name, text in MODULES.items():
        sb.write_file(f"{JOBS_DIR}/{name}", textwrap.dedent(text))
    sb.write_file("/etc/jobrunner/jobrunner.env", "JOBRUNNER_PATH=/etc/jobrunner/jobs\n")
    env = {"JOBRUNNER_PATH": "/etc/jobrunner/jobs"}
    sb.run([PY, "-m", "jobrunner", "units", "render", "--out", UNITS, "--package", "progressjobs"], env=env)
    sb.run([PY, "-m", "jobrunner", "units", "install", "--dir", UNITS], env=env, timeout=120)
    sb.pin("e2e-progress.service", reload=False)
    sb.daemon_reload()
    return sb


def test_status_text_follows_the_steps_and_the_journal_keeps_their_ends(progress_unit: Sandbox):
    sb = progress_unit
    unit = "e2e-progress.service"
    assert sb.show(unit, "NotifyAccess")["NotifyAccess"] == "main"
    sb.systemctl("start", "--no-block", unit)
    texts: list[str] = []
    status_lines: list[str] = []
    pages: list[str] = []
    env = {"JOBRUNNER_PATH": "/etc/jobrunner/jobs"}

    def finished() -> bool:
        state = sb.show(unit, "StatusText", "ActiveState", "InvocationID")
        text = state.get("StatusText", "")
        if text and (not texts or texts[-1] != text):
            texts.append(text)
            if len(status_lines) < 1 and "copy" in text:
                status_lines.append(sb.systemctl("status", unit, check=False).stdout)
                # the status page, written now, shows the run and its step
                sb.run([PY, "-m", "jobrunner", "status", "--html", "/root/page.html", "e2e_progress"], env=env)
                pages.append(sb.read_file("/root/page.html"))
        return bool(state.get("InvocationID")) and state.get("ActiveState") in ("inactive", "failed")

    sb.wait_for(finished, timeout=90, interval=0.25)
    final = sb.show(unit, "Result", "ExecMainStatus", "InvocationID", "StatusText")
    assert final["Result"] == "success", final
    assert final["StatusText"] == "", final  # cleared when the last step ended
    copying = [t for t in texts if re.match(r"backup > copy \d+% \(.* / 100\.0 MiB, .*ETA", t)]
    assert len(copying) >= 2, texts  # it changes while the step runs
    assert len({re.match(r"backup > copy (\d+)%", t).group(1) for t in copying}) >= 2  # type: ignore[union-attr]
    assert any(t.startswith("backup > verify (") for t in texts), texts
    streamed = [int(m.group(1)) for t in texts if (m := re.match(r"backup > stream (\d+)% ", t))]
    assert any(0 < pct < 100 for pct in streamed), texts  # cat's reads, seen from /proc mid-run
    assert status_lines and re.search(r'Status: "backup > copy \d+%', status_lines[0]), status_lines
    assert pages and re.search(
        r'running</span>.*?<div class="why desk \w+" title="backup &gt; copy \d+%', pages[0], re.S
    ), pages
    events = [e for e in sb.job_events(final["InvocationID"]) if e["event"] == "progress"]
    ends = [(e["step"], e["state"]) for e in events if e["state"] != "running"]
    assert ends == [
        ("backup > copy", "done"),
        ("backup > verify", "done"),
        ("backup > stream", "done"),
        ("backup", "done"),
    ]
    copy = next(e for e in events if e["step"] == "backup > copy" and e["state"] == "done")
    assert 7 <= copy["duration_s"] <= 30 and copy["percent"] == 100.0 and copy["rate"] > 0
    assert len(events) <= 4 + 1  # the ends, and at most one 30 s event: never a flood


def test_the_unit_with_notify_access_scores_within_its_threshold(progress_unit: Sandbox):
    sb = progress_unit
    text = sb.read_file(f"{UNITS}/e2e-progress.service")
    assert "NotifyAccess=main" in text
    verify = sb.run([PY, "-m", "jobrunner", "units", "verify", "--dir", UNITS], check=False, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
