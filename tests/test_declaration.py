"""jobrunner.declaration: @job, Lock and Retry are immutable values checked when built."""

from __future__ import annotations

import dataclasses

import pytest

from jobrunner.declaration import HARDENING_LEVELS, Alert, Job, Lock, Retry, job
from jobrunner.errors import ConfigError


def nightly_backup(ctx):
    """Back up the database.

    The rest of the docstring is not the description.
    """
    return ("ran", ctx)


def undocumented(ctx):
    return ctx


def test_bare_decorator_builds_a_job():
    """@job without arguments gives a Job named after the function, with no lock, timeout or retry."""
    declared = job(nightly_backup)
    assert isinstance(declared, Job)
    assert declared.name == "nightly_backup"
    assert declared.module == __name__
    assert declared.ref == f"{__name__}:nightly_backup"
    assert (declared.lock, declared.timeout, declared.retry) == (None, None, None)
    assert declared.hardening == "strict"


def test_job_calls_its_function():
    """Calling a Job calls the declared function with the context and returns its result."""
    assert job(nightly_backup)("ctx") == ("ran", "ctx")


def test_decorator_with_settings():
    """@job(...) converts time spans to seconds and keeps the other settings."""
    declared = job(
        schedule="02:15",
        persistent=True,
        jitter="5m",
        fixed_jitter=True,
        accuracy="1m",
        timeout="2h",
        user="www-data",
        hardening="standard",
        write_paths=["/mnt/backups", "-/var/optional"],
        options={"keep": 7},
    )(nightly_backup)
    assert declared.schedule == ("02:15",)
    assert declared.persistent is True and declared.fixed_jitter is True
    assert (declared.jitter, declared.accuracy, declared.timeout) == (300.0, 60.0, 7200.0)
    assert declared.user == "www-data" and declared.hardening == "standard"
    assert declared.write_paths == ("/mnt/backups", "-/var/optional")
    assert declared.options == {"keep": 7}


def test_positional_argument_with_settings_is_refused():
    """@job(fn, setting=...) is a programming mistake and raises TypeError."""
    with pytest.raises(TypeError):
        job(nightly_backup, timeout="1h")


def test_unit_name_defaults_to_job_name_with_dashes():
    """The unit name is the job name with '_' written as '-'."""
    assert job(nightly_backup).unit == "nightly-backup"
    assert job(name="wp_db_dump")(nightly_backup).unit == "wp-db-dump"
    assert job(unit="custom.name")(nightly_backup).unit == "custom.name"


def test_description_is_first_docstring_line():
    """The description is the docstring's first line, or empty without a docstring."""
    assert job(nightly_backup).description == "Back up the database."
    assert job(undocumented).description == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, Lock()),
        ("backups", Lock(name="backups")),
        ("/var/lock/backup.lock", Lock(name="/var/lock/backup.lock")),
        (Lock(wait="30s", shared=True), Lock(wait="30s", shared=True)),
        (False, None),
        (None, None),
    ],
)
def test_lock_shorthands(value, expected):
    """lock=True is Lock(), a string is Lock(name=...), False/None is no lock."""
    assert job(lock=value)(nightly_backup).lock == expected


def test_lock_defaults_and_wait_seconds():
    """Lock() is exclusive, non-blocking, skip-on-busy; wait is kept in seconds."""
    lock = Lock()
    assert (lock.name, lock.wait, lock.shared, lock.busy, lock.wait_seconds) == (None, None, False, "skip", None)
    assert Lock(wait="1min 30s").wait_seconds == 90.0


def test_retry_shorthand_and_defaults():
    """retry=3 is Retry(attempts=3); Retry's defaults are exponential from 1 s capped at 5 min on Exception."""
    declared = job(retry=3)(nightly_backup)
    assert declared.retry == Retry(attempts=3)
    retry = Retry()
    assert (retry.attempts, retry.backoff, retry.on) == (3, "exponential", (Exception,))
    assert (retry.delay_seconds, retry.max_delay_seconds) == (1.0, 300.0)


def test_retry_on_single_type_becomes_tuple():
    """Retry(on=OSError) is normalised to a one-element tuple."""
    assert Retry(on=OSError).on == (OSError,)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"timeout": "5parsecs"}, "timeout"),
        ({"jitter": "3x"}, "jitter"),
        ({"accuracy": "soon"}, "accuracy"),
        ({"timeout": "-5s"}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "0"}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"hardening": "paranoid"}, "hardening"),
        ({"write_paths": ["mnt/backups"]}, "write_paths"),
        ({"write_paths": "relative"}, "write_paths"),
        ({"read_paths": ["etc"]}, "read_paths"),
        ({"working_dir": "rel"}, "working_dir"),
        ({"retry": 0}, "retry"),
        ({"retry": "3"}, "retry"),
        ({"lock": 5}, "lock"),
        ({"lock": "bad name"}, "lock"),
        ({"persistent": "yes"}, "persistent"),
        ({"schedule": ""}, "schedule"),
        ({"user": "Root Admin"}, "user"),
        ({"options": [1]}, "options"),
        ({"cleanup_timeout": None}, "cleanup_timeout"),
        ({"unit": "my unit"}, "unit"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_setting_is_config_error_naming_job_and_field(settings, field):
    """A bad setting raises ConfigError whose message names the job and the field."""
    with pytest.raises(ConfigError) as caught:
        job(**settings)(nightly_backup)
    message = str(caught.value)
    assert "'nightly_backup'" in message
    assert field in message
    assert "\n" not in message


def test_bad_job_name_is_config_error():
    """A name with spaces is refused with a ConfigError naming it."""
    with pytest.raises(ConfigError, match="'bad name'"):
        job(name="bad name")(nightly_backup)


# The values are wrong on purpose, types included: the run-time validation is under test.
@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: Lock(wait="abc"), "lock wait"),
        (lambda: Lock(shared="yes"), "lock shared"),  # type: ignore[arg-type]
        (lambda: Lock(busy="x"), "lock busy"),  # type: ignore[arg-type]
        (lambda: Lock(name="a b"), "lock name"),
        (lambda: Retry(attempts=0), "retry attempts"),
        (lambda: Retry(attempts=True), "retry attempts"),
        (lambda: Retry(on=(KeyboardInterrupt,)), "retry on"),
        (lambda: Retry(on=()), "retry on"),
        (lambda: Retry(backoff="linear"), "retry backoff"),  # type: ignore[arg-type]
        (lambda: Retry(delay="x"), "retry delay"),
    ],
)
def test_bad_lock_or_retry_fails_when_built(build, field):
    """Lock and Retry validate when built: a bad value raises ValueError naming the field."""
    with pytest.raises(ValueError, match=field):
        build()


@pytest.mark.parametrize(
    "settings",
    [{"retry": Retry(attempts=1)}, {"lock": Lock(busy="fail")}, {"timeout": "1ms"}],
)
def test_valid_lock_and_retry_values_are_accepted(settings):
    """Boundary values (one attempt, busy='fail', a 1 ms timeout) are valid declarations."""
    assert isinstance(job(**settings)(nightly_backup), Job)


@pytest.mark.parametrize("level", HARDENING_LEVELS)
def test_every_hardening_level_is_accepted(level):
    """Each documented hardening level is a valid setting."""
    assert job(hardening=level)(nightly_backup).hardening == level


def test_job_is_frozen() -> None:
    """A Job cannot be changed after it is declared."""
    declared = job(timeout="1h")(nightly_backup)
    with pytest.raises(dataclasses.FrozenInstanceError):
        declared.timeout = 5.0  # type: ignore[misc]


def test_lock_and_retry_are_frozen() -> None:
    """Lock and Retry values cannot be changed after they are built."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Lock().shared = True  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Retry().attempts = 9  # type: ignore[misc]


def test_options_are_copied_from_the_declaration():
    """The options dict given to @job is copied, so later changes to the caller's dict do not leak in."""
    given = {"keep": 7}
    declared = job(options=given)(nightly_backup)
    given["keep"] = 1
    assert declared.options == {"keep": 7}


# Through the CLI: a bad declaration is exit 78 and one line on stderr, no traceback.

BAD_DECLARATIONS = {
    "bad_timeout": 'from jobrunner import job\n@job(timeout="5parsecs")\ndef bad_timeout(ctx):\n    pass\n',
    "bad_setting": "from jobrunner import job\n@job(colour='red')\ndef bad_setting(ctx):\n    pass\n",
    "bad_lock": 'from jobrunner import job, Lock\n@job(lock=Lock(wait="abc"))\ndef bad_lock(ctx):\n    pass\n',
    "bad_retry": "from jobrunner import job, Retry\n@job(retry=Retry(attempts=0))\ndef bad_retry(ctx):\n    pass\n",
}


@pytest.mark.parametrize(
    ("module", "field"),
    [
        ("bad_timeout", "timeout"),
        ("bad_setting", "colour"),
        ("bad_lock", "lock wait"),
        ("bad_retry", "attempts"),
    ],
)
def test_cli_bad_declaration_exits_78_with_one_line(launcher, module, field):
    """Running a module with a bad declaration exits 78 with one stderr line naming the field, no traceback."""
    launcher.write_job(module, BAD_DECLARATIONS[module])
    run = launcher.run(module)
    assert run.returncode == 78, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.endswith("\n")
    assert "Traceback" not in run.stderr
    assert module in run.stderr and field in run.stderr
    assert run.stdout == ""


def test_replace_copies_every_field_and_checks_the_result_again() -> None:
    """``jobrunner._datatype.replace`` (``dataclasses.replace`` for our data types): an instance,
    an alert override and ``with_alert`` change what they name and keep every other field;
    computed fields are made again, a bad value is refused, an unknown field named."""
    from jobrunner._datatype import field_names, replace
    from jobrunner.rules.alerting import parse_override, with_alert

    declared = job(timeout="1h", instances=True, write_paths=["/srv/%i"], alert=Alert(after=2, max_duration="1h"))(
        nightly_backup
    )
    bound = declared.for_instance("shop")
    kept = set(field_names(Job)) - {"name", "unit", "instance", "write_paths", "read_paths"}
    assert all(getattr(bound, f) == getattr(declared, f) for f in kept)
    assert (bound.name, bound.write_paths) == ("nightly_backup@shop", ("/srv/shop",))
    quieter = with_alert(declared, Alert(after=5))
    assert quieter.alert == Alert(after=5)
    assert all(getattr(quieter, f) == getattr(declared, f) for f in set(field_names(Job)) - {"alert"})
    changed = parse_override(declared.alert, "max_duration=2h", where="x")
    assert changed is not None and changed.after == 2 and changed.max_seconds == 7200.0  # made again
    with pytest.raises(ValueError):
        replace(Lock(), busy="later")  # the checks run on the result
    with pytest.raises(TypeError, match="'wait_seconds'"):
        replace(Lock(), wait_seconds=3.0)  # computed, not given
