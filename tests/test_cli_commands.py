"""jobrunner.cli's registry: every command is a module with HELP, configure(parser) and main(args),
`jobrunner --help` lists exactly the registry, and --package is one option with one default."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from jobrunner.cli import COMMANDS

from .conftest import REPO, clean_env, jobrunner_cli

# Run in a fresh interpreter: imports the command's module alone, checks its interface, and
# prints what it found (a broken import or a wrong signature fails here, named).
CHECK = """
import argparse, importlib, inspect, json, sys
from jobrunner.cli import COMMANDS, Parser
name = sys.argv[1]
before = set(sys.modules)
module = importlib.import_module(COMMANDS[name].module)
found = {"help": getattr(module, "HELP", None), "problems": []}
for attr in ("configure", "main"):
    fn = getattr(module, attr, None)
    if not callable(fn):
        found["problems"].append(f"no {attr}()")
    elif len(inspect.signature(fn).parameters) != 1:
        found["problems"].append(f"{attr}{inspect.signature(fn)} does not take exactly one argument")
if not found["problems"]:
    parser = Parser(prog=f"jobrunner {name}", description=module.HELP)
    if module.configure(parser) is not None:
        found["problems"].append("configure() returned something")
    found["options"] = sorted(o for a in parser._actions for o in a.option_strings)
    found["package_default"] = parser.get_default("package")
others = [n for n, info in COMMANDS.items() if info.module != module.__name__ and info.module in sys.modules]
found["other_commands_imported"] = others
print(json.dumps(found))
"""


# exec shares run's options and its run call (so that `run`, the timer path, imports one module).
SHARES = {"exec": ["run"]}


def _check(name: str, **env: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, name],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(PYTHONPATH=str(REPO), **env),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, f"{name}: {COMMANDS[name].module} does not import:\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_module_has_the_interface(name):
    """Each registered module imports on its own (no other command with it), has HELP equal to
    the registry's line, configure(parser) and main(args), one argument each."""
    found = _check(name)
    assert found["problems"] == [], f"{name}: {found['problems']}"
    assert found["help"] == COMMANDS[name].help, f"{name}: HELP differs from the registry's"
    assert found["other_commands_imported"] == SHARES.get(name, []), f"{name} imports other commands"


def test_every_command_lives_in_the_cli_package():
    """One module per command under jobrunner/cli/, named as the command."""
    assert set(COMMANDS) == {
        "run",
        "exec",
        "list",
        "status",
        "history",
        "health",
        "silence",
        "unsilence",
        "alert",
        "notify",
        "units",
        "version",
        "import",
        "checks",
        "instances",
    }
    for name, info in COMMANDS.items():
        assert info.module == f"jobrunner.cli.{name}"
        assert (REPO / "jobrunner" / "cli" / f"{name}.py").is_file()


def test_help_lists_exactly_the_registry_and_imports_no_command():
    """`jobrunner --help` names every registered command with its help line, and no other."""
    proc = jobrunner_cli("--help")
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    listed = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in table}
    assert listed == {name: info.help for name, info in COMMANDS.items()}
    probe = (
        "import sys, io, contextlib\nfrom jobrunner.cli import COMMANDS, main\n"
        "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
        "print([n for n, i in COMMANDS.items() if i.module in sys.modules])"
    )
    proc = _python(probe)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c CODE`` with the checkout importable and a clean environment."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(PYTHONPATH=str(REPO)),
        cwd=REPO,
        check=False,
    )


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_has_help(name):
    """`jobrunner COMMAND --help` exits 0 and says the command's HELP."""
    proc = jobrunner_cli(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert COMMANDS[name].help in " ".join(proc.stdout.split())


def test_main_can_run_twice_in_one_process():
    """The command modules `list` and `exec` become attributes of jobrunner.cli: the CLI must
    not depend on the builtins of those names (a second call in the same process works)."""
    probe = (
        "import io, contextlib\nfrom jobrunner.cli import main\ncodes = []\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    for argv in (['list', '--no-next'], ['exec', '--help'], ['list', '--no-next'], ['frob-nicate']):\n"
        "        try:\n            codes.append(main(argv))\n"
        "        except SystemExit as exc:\n            codes.append(exc.code)\n"
        "print(codes)"
    )
    proc = _python(probe)
    assert proc.stdout.strip() == "[0, 0, 0, 64]", proc.stderr


def test_package_is_one_option_with_one_default():
    """list, health and units render have the same --package NAME, default $JOBRUNNER_PACKAGE
    else jobs; status has it too, defaulting to $JOBRUNNER_PACKAGE alone."""
    for name in ("list", "health", "status"):
        assert "--package" in _check(name)["options"], name
    assert {n: _check(n)["package_default"] for n in ("list", "health", "status")} == {
        "list": "jobs",
        "health": "jobs",
        "status": None,
    }
    assert {n: _check(n, JOBRUNNER_PACKAGE="mine")["package_default"] for n in ("list", "health", "status")} == {
        "list": "mine",
        "health": "mine",
        "status": "mine",
    }
    render_help = jobrunner_cli("units", "render", "--help", JOBRUNNER_PACKAGE="mine").stdout
    assert "--package NAME" in render_help and "$JOBRUNNER_PACKAGE" in render_help


PKG = """
from jobrunner import job

@job(schedule="hourly")
def pkg_one(ctx):
    pass
"""


def test_jobrunner_package_is_the_default_of_list_health_and_units(launcher, tmp_path):
    """JOBRUNNER_PACKAGE names the package for list, health, units render and status."""
    pkg = launcher.jobs / "envjobs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text(PKG)
    env = launcher.env(JOBRUNNER_PACKAGE="envjobs")
    listed = launcher.run("list", "--json", "--no-next", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["job"] for line in listed.stdout.splitlines()] == ["envjobs.one:pkg_one"]
    health = launcher.run("health", "--json", env=env)
    assert [j["job"] for j in json.loads(health.stdout)["jobs"]] == ["pkg_one"], health.stdout
    status = launcher.run("status", env=env)
    assert [json.loads(line)["job"] for line in status.stdout.splitlines()] == ["pkg_one"], status.stderr
    out = tmp_path / "units"
    render = launcher.run("units", "render", "--out", str(out), env=env)
    assert render.returncode == 0, render.stderr
    assert (out / "pkg-one.timer").is_file()


def test_list_keeps_its_positional_package(launcher):
    """`jobrunner list PACKAGE` (the older form) still works; two different packages are a usage error."""
    launcher.write_job("solo", PKG)
    pkg = launcher.jobs / "posjobs"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "one.py").write_text(PKG)
    positional = launcher.run("list", "posjobs", "--json", "--no-next")
    option = launcher.run("list", "--package", "posjobs", "--json", "--no-next")
    assert positional.returncode == 0 and positional.stdout == option.stdout != ""
    both = launcher.run("list", "posjobs", "--package", "other")
    assert both.returncode == 64 and both.stderr.startswith("jobrunner: ") and both.stderr.count("\n") == 1
