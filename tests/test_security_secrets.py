"""Issue #13, findings 7 and 11: no secret reaches a log line, whatever way the job lets it out.

Through the real CLI: the job reads its secrets from the environment (an env file or the
unit's), and the tests look for them in everything the run writes (stdout, stderr, state).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from jobrunner.redact import MASK

from .attacker import as_user

PEM_LINES = [
    "-----BEGIN OPENSSH PRIVATE KEY-----",
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    "QyNTUxOQAAACDx3kQ8wZ7pG0kR2nq0Vt3M9mYx1cE5b0hQqJ9u2yTqAAAAJgtJd6pLSXe",
    "-----END OPENSSH PRIVATE KEY-----",
]
PEM = "\n".join(PEM_LINES) + "\n"
TOKEN = "Tk9sHq2Lw8ZrX4Vd1Pq7"


def everything(launcher, run, job: str) -> str:
    state = launcher.state_dir / job / "state.json"
    return run.stdout + run.stderr + (state.read_text() if state.exists() else "")


# --- finding 7 ------------------------------------------------------------------------------


def test_short_password_is_masked_as_a_word_and_words_are_left_alone(launcher):
    """A 4-character DB password ('pass') is masked where it stands, but 'password' and 'passing' survive
    (before: under 4 characters nothing was masked, and 4 to 7 were masked inside words: '***word')."""
    launcher.write_job(
        "shorty",
        """
        from jobrunner import job

        @job
        def shorty(ctx):
            pw = ctx.env["DB_PASSWORD"]
            ctx.log.info("db.login", note=f"password {pw} passing", other=f"pin {ctx.env['PIN_SECRET']}!")
    """,
    )
    run = launcher.run("shorty", env=launcher.env(DB_PASSWORD="pass", PIN_SECRET="42"))
    assert run.returncode == 0, run.stderr
    event = run.event("db.login")
    assert event["note"] == f"password {MASK} passing"
    assert event["other"] == f"pin {MASK}!"


def test_pem_key_printed_line_by_line_is_masked(launcher):
    """A multi-line private key in an env var, cat'ed by a command (one log line per key line), leaks no line."""
    launcher.write_job(
        "pem",
        """
        from jobrunner import job

        @job
        def pem(ctx):
            ctx.run(["printenv", "SSH_PRIVATE_KEY"])
    """,
    )
    run = launcher.run("pem", env=launcher.env(SSH_PRIVATE_KEY=PEM))
    assert run.returncode == 0, run.stderr
    out = everything(launcher, run, "pem")
    for line in PEM_LINES[1:3]:
        assert line not in out
    assert [e["line"] for e in run.events if e["event"] == "proc.output"][1:3] == [MASK, MASK]


SPLITTER = """
    import sys
    from jobrunner import job

    @job
    def splitter(ctx):
        code = (
            "import os, sys; t = os.environ['API_TOKEN']; cut = int(sys.argv[1]);"
            "sys.stdout.write('x' * int(sys.argv[2]) + t[:cut] + '\\\\n' + t[cut:] + ' done\\\\n')"
        )
        ctx.run([sys.executable, "-c", code, ctx.env["CUT"], ctx.env["PAD"]])
"""


@pytest.mark.parametrize("cut", [6, 10, 14])
def test_token_split_across_two_output_lines_is_masked(launcher, cut):
    """A token a command prints broken over two lines leaks neither half (before: each line was masked alone)."""
    launcher.write_job("splitter", SPLITTER)
    run = launcher.run("splitter", env=launcher.env(API_TOKEN=TOKEN, CUT=str(cut), PAD="4"))
    assert run.returncode == 0, run.stderr
    lines = [e["line"] for e in run.events if e["event"] == "proc.output"]
    assert lines == [f"xxxx{MASK}", f"{MASK} done"]
    assert TOKEN[:cut] not in run.stdout and TOKEN[cut:] not in run.stdout


def test_token_cut_at_the_line_limit_is_masked(launcher):
    """A token straddling the 64 KiB line cut: the part before the cut is masked, not logged
    (before: the first bytes of the token ended the truncated line)."""
    launcher.write_job("splitter", SPLITTER)
    pad = 64 * 1024 - 8  # the cut falls after 8 characters of the token
    run = launcher.run("splitter", env=launcher.env(API_TOKEN=TOKEN, CUT=str(len(TOKEN)), PAD=str(pad)))
    assert run.returncode == 0, run.stderr
    first = [e["line"] for e in run.events if e["event"] == "proc.output"][0]
    assert first.endswith(f"x{MASK} …[truncated]"), first[-60:]
    assert TOKEN[:8] not in run.stdout


def test_exec_command_line_password_option_is_masked(launcher):
    """`jobrunner exec` with --password=… in the command: proc.started shows --password=***, and the
    command's own echo of it is masked too (before: the argv was logged as it was)."""
    secret = "Sup3r-S3cret-1"
    run = launcher.run("exec", "dumpdb", "--", "echo", f"--password={secret}", "--user", "wp")
    assert run.returncode == 0, run.stderr
    assert run.event("proc.started")["argv"] == ["echo", f"--password={MASK}", "--user", "wp"]
    assert secret not in everything(launcher, run, "dumpdb")


def test_env_file_syntax_error_does_not_echo_the_line(launcher, tmp_path):
    """A broken line of an env file is named by file and line number only: its text may be a password."""
    launcher.write_job("noop", "from jobrunner import job\n@job\ndef noop(ctx):\n    pass\n")
    bad = tmp_path / "site.env"
    bad.write_text("DB_USER=wp\nhunter2-the-password\n")
    bad.chmod(0o600)
    run = launcher.run("noop", "--env-file", str(bad))
    assert run.returncode == 78
    assert f"{bad}:2:" in run.stderr
    assert "hunter2" not in run.stderr and run.stderr.count("\n") == 1


SECRET_ENV = "DB_PASSWORD='Zq9-hunter2-xyz'\n"


def test_world_readable_env_file_with_a_secret_is_refused(launcher, tmp_path):
    """An env file holding DB_PASSWORD that every user can read: exit 78, one line naming it and chmod 600."""
    launcher.write_job("noop", "from jobrunner import job\n@job\ndef noop(ctx):\n    pass\n")
    env_file = tmp_path / "secrets.env"
    env_file.write_text(SECRET_ENV)
    env_file.chmod(0o644)
    run = launcher.run("noop", "--env-file", str(env_file))
    assert run.returncode == 78, run.stderr
    assert run.stderr.count("\n") == 1 and f"chmod 600 {env_file}" in run.stderr and "DB_PASSWORD" in run.stderr
    assert "Zq9" not in run.stderr
    env_file.chmod(0o600)
    assert launcher.run("noop", "--env-file", str(env_file)).returncode == 0
    # Settings only (no secret in it): world-readable is fine.
    plain = tmp_path / "plain.env"
    plain.write_text("BACKUP_DIR=/srv/backup\n")
    plain.chmod(0o644)
    assert launcher.run("noop", "--env-file", str(plain)).returncode == 0


def test_env_file_another_user_can_write_is_refused(launcher, attacker, request):
    """An env file the attacker can write (group/world-writable, or the attacker's own) sets root's
    environment: refused with exit 78 and the fix, before the job runs."""
    launcher.write_job("noop", "from jobrunner import job\n@job\ndef noop(ctx):\n    ctx.log.info('ran')\n")
    shared = Path(tempfile.mkdtemp(prefix="jr-envfile-", dir="/tmp"))  # pytest's tmp_path is root-only
    shared.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    env_file = shared / "app.env"
    env_file.write_text("BACKUP_DIR=/srv/backup\n")
    env_file.chmod(0o666)
    # The attacker really can change it: PATH, LD_PRELOAD, PYTHONPATH for a root process.
    as_user(attacker, ["sh", "-c", f"echo PYTHONSTARTUP=/tmp/evil.py >> {env_file}"])
    run = launcher.run("noop", "--env-file", str(env_file))
    assert run.returncode == 78, run.stderr
    assert f"chmod go-w {env_file}" in run.stderr and "ran" not in run.stdout
    env_file.chmod(0o644)
    os.chown(env_file, attacker.uid, attacker.gid)
    run = launcher.run("noop", "--env-file", str(env_file))
    assert run.returncode == 78, run.stderr
    assert f"chown root: {env_file}" in run.stderr and run.stderr.count("\n") == 1


# --- finding 11 -----------------------------------------------------------------------------

PRINTER = """
    import subprocess
    import sys
    from jobrunner import job

    @job
    def printer(ctx):
        pw = ctx.env["DB_PASSWORD"]
        print("connecting with", pw)
        ctx.log.info("db.connecting")
        sys.stderr.write(f"stderr says {pw}\\n")
        subprocess.run(["sh", "-c", 'echo "child says $DB_PASSWORD"; echo "child err $DB_PASSWORD" >&2'], check=True)
        print("done")
"""


def test_job_printing_a_secret_is_masked(launcher):
    """print(), sys.stderr and a plain-subprocess child of the job write the DB password: every line
    reaches the log as a masked job.output event, none as it is (before: all three went out raw)."""
    launcher.write_job("printer", PRINTER)
    run = launcher.run("printer", env=launcher.env(DB_PASSWORD="Zq9-hunter2-xyz"))
    assert run.returncode == 0, run.stderr
    assert "Zq9-hunter2-xyz" not in everything(launcher, run, "printer")
    outputs = [(e["stream"], e["line"]) for e in run.events if e["event"] == "job.output"]
    assert ("stdout", f"connecting with {MASK}") in outputs
    assert ("stderr", f"stderr says {MASK}") in outputs
    assert ("stdout", f"child says {MASK}") in outputs and ("stderr", f"child err {MASK}") in outputs
    names = run.names()
    # What the job printed before logging comes before that event, and all of it before job.finished.
    assert names.index("job.output") < names.index("db.connecting")
    assert max(i for i, n in enumerate(names) if n == "job.output") < names.index("job.finished")
    assert run.stderr == ""


def test_job_output_events_carry_the_run_and_stay_one_json_object_per_line(launcher):
    """Lots of output from a thread while the main thread logs: every stdout line is one JSON object."""
    launcher.write_job(
        "noisy",
        """
        import threading
        from jobrunner import job

        @job
        def noisy(ctx):
            def chatter():
                for i in range(3000):
                    print(f"line {i} " + "y" * 200)
            thread = threading.Thread(target=chatter)
            thread.start()
            for i in range(300):
                ctx.log.info("tick", i=i, pad="z" * 300)
            thread.join()
    """,
    )
    run = launcher.run("noisy")
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    output = [e for e in events if e["event"] == "job.output"]
    assert len(output) == 3000 and len([e for e in events if e["event"] == "tick"]) == 300
    assert {e["run_id"] for e in events} == {events[0]["run_id"]} and output[0]["job"] == "noisy"
    assert [int(e["line"].split()[1]) for e in output] == list(range(3000))


def test_stdout_is_restored_after_the_run(launcher):
    """After the run the real stdout and stderr are back: in-process, a second print goes straight out."""
    launcher.write_job("plain", "from jobrunner import job\n@job\ndef plain(ctx):\n    print('inside')\n")
    code = (
        "import sys; from jobrunner.run.loader import load_job; from jobrunner.run.lifecycle import run_job;"
        "r = run_job(load_job('plain')); print('after run', r.exit_code); sys.stderr.write('err after\\n')"
    )
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=launcher.env(), cwd=launcher.tmp, timeout=60
    )
    lines = proc.stdout.splitlines()
    assert lines[-1] == "after run 0" and proc.stderr == "err after\n"
    assert json.loads(lines[1])["line"] == "inside"
