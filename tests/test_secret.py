"""ctx.secret(value): a value only the job knows (not from the environment, so no other net
catches it) is masked in every log line, command output line, error and state record."""

from __future__ import annotations

import json

from jobrunner.redact import MASK

# Nothing about it says "secret": no URL, no key=value, not in the environment.
VALUE = "Zq8vL2cobalt4471Wm"

LEAKY = """
    from pathlib import Path
    from jobrunner import job

    @job(lock=True)
    def leaky(ctx):
        value = Path(ctx.env["VAULT_FILE"]).read_text().strip()
        ctx.secret(value)
        ctx.log.info("vault.read", value=value, note=f"got {value} from the vault")
        ctx.run(["echo", f"the command printed {value}"])
        ctx.sh(f"echo 'stderr of {value}' >&2")
        raise RuntimeError(f"login refused for {value}")
"""


def test_registered_secret_is_masked_in_logs_errors_and_state(launcher, tmp_path):
    """Logged as a field, printed by commands, raised in an error and so
    recorded as last_error: the value appears nowhere, the mask everywhere it was."""
    vault = tmp_path / "vault.txt"
    vault.write_text(VALUE + "\n")
    launcher.write_job("leaky", LEAKY)
    run = launcher.run("leaky", env=launcher.env(VAULT_FILE=str(vault)))
    assert run.returncode == 1, run.stdout + run.stderr
    state_text = (launcher.state_dir / "leaky" / "state.json").read_text()
    everything = run.stdout + run.stderr + state_text
    assert VALUE not in everything, "the registered secret leaked"

    read = run.event("vault.read")
    assert read["value"] == MASK and read["note"] == f"got {MASK} from the vault"
    outputs = [e["line"] if "line" in e else json.dumps(e) for e in run.events if e["event"] == "proc.output"]
    assert any(f"the command printed {MASK}" in line for line in outputs), outputs
    assert any(f"stderr of {MASK}" in line for line in outputs), outputs
    assert run.event("job.failed")["exception"]["message"] == f"login refused for {MASK}"
    assert run.event("job.finished")["error"] == f"RuntimeError: login refused for {MASK}"
    assert json.loads(state_text)["last_error"] == f"RuntimeError: login refused for {MASK}"
