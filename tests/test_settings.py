"""jobrunner.settings: a job's settings read from its environment, each mistake a ConfigError
naming the variable, the value and what it must be (a job exits 78 on it)."""

from __future__ import annotations

import pytest

from jobrunner.errors import ConfigError
from jobrunner.settings import env_bool, env_int, env_percent, env_span, env_words


def _refused(call, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("env", [{}, {"KEEP": ""}, {"KEEP": "   "}])
def test_unset_or_blank_is_the_default(env):
    """An unset variable and a blank one (``KEEP=`` in an env file) both take the default."""
    assert env_int(env, "KEEP", 7) == 7
    assert env_span(env, "KEEP", "2min") == 120.0
    assert env_percent(env, "KEEP", 80) == 80
    assert env_bool(env, "KEEP", True) is True


@pytest.mark.parametrize(("raw", "value"), [("7", 7), (" 12 ", 12), ("0", 0), ("+3", 3), ("-2", -2)])
def test_env_int_reads_whole_numbers(raw, value):
    assert env_int({"N": raw}, "N", 1) == value


@pytest.mark.parametrize(
    ("raw", "bounds", "expected"),
    [
        ("x", {}, "N='x': must be a whole number"),
        ("4.5", {"min": 1, "max": 32}, "N='4.5': must be a whole number from 1 to 32"),
        ("1_000", {}, "N='1_000': must be a whole number"),
        ("0", {"min": 1}, "N='0': must be a whole number of 1 or more"),
        ("-1", {"min": 0}, "N='-1': must be a whole number of 0 or more"),
        ("9", {"min": 0, "max": 5}, "N='9': must be a whole number from 0 to 5"),
        ("9", {"max": 5}, "N='9': must be a whole number of 5 or less"),
    ],
)
def test_env_int_refuses_naming_the_variable_and_the_range(raw, bounds, expected):
    assert _refused(env_int, {"N": raw}, "N", 1, **bounds) == expected


@pytest.mark.parametrize(("raw", "seconds"), [("90", 90.0), ("1.5", 1.5), ("2min", 120.0), ("1h 30min", 5400.0)])
def test_env_span_reads_seconds_and_systemd_spans(raw, seconds):
    assert env_span({"D": raw}, "D", 1) == seconds


def test_env_span_refuses_a_bad_span_with_timespans_reason():
    """The message is the one certbot_renew always gave: the variable, the value, the reason."""
    message = _refused(env_span, {"CERTBOT_RETRY_DELAY": "soon"}, "CERTBOT_RETRY_DELAY", "2min")
    assert message.startswith("CERTBOT_RETRY_DELAY='soon': ")
    assert "not a time span" in message


def test_env_span_bounds_are_written_as_spans():
    message = _refused(env_span, {"T": "15min"}, "T", 10, min=0.1, max=600)
    assert message == "T='15min': must be a time span from 100ms to 10min"


@pytest.mark.parametrize(("raw", "value"), [("80", 80), ("80%", 80), ("12.5", 12.5), ("0", 0), ("100 %", 100)])
def test_env_percent_reads_percentages(raw, value):
    got = env_percent({"P": raw}, "P", 50)
    assert got == value
    assert isinstance(got, int) == isinstance(value, int)  # whole numbers stay ints (logged as 80, not 80.0)


@pytest.mark.parametrize("raw", ["abc", "101", "-1", "nan", "inf", "5%%", "%"])
def test_env_percent_refuses_what_is_not_a_percentage(raw):
    assert _refused(env_percent, {"P": raw}, "P", 50) == f"P={raw!r}: must be a percentage from 0 to 100"


def test_env_percent_with_a_lower_bound():
    assert _refused(env_percent, {"DISK_WARN_PERCENT": "0"}, "DISK_WARN_PERCENT", 80, min=1) == (
        "DISK_WARN_PERCENT='0': must be a percentage from 1 to 100"
    )


def test_env_words_splits_like_a_shell_without_one():
    env = {"ARGS": "--bwlimit 4M --exclude '*.tmp' \"a b\" $HOME"}
    assert env_words(env, "ARGS") == ["--bwlimit", "4M", "--exclude", "*.tmp", "a b", "$HOME"]


def test_env_words_default_when_unset_and_nothing_when_empty():
    """Unset: the default's words; set to nothing: no words (a job may refuse an empty command)."""
    assert env_words({}, "RELOAD_COMMAND", "systemctl reload nginx") == ["systemctl", "reload", "nginx"]
    assert env_words({"RELOAD_COMMAND": ""}, "RELOAD_COMMAND", "systemctl reload nginx") == []
    assert env_words({}, "ARGS") == []


def test_env_words_refuses_unbalanced_quotes():
    assert _refused(env_words, {"ARGS": "--name 'open"}, "ARGS") == "ARGS: No closing quotation"


@pytest.mark.parametrize("raw", ["1", "yes", "TRUE", "on", " On "])
def test_env_bool_true_words(raw):
    assert env_bool({"F": raw}, "F") is True


@pytest.mark.parametrize("raw", ["0", "no", "False", "off"])
def test_env_bool_false_words(raw):
    assert env_bool({"F": raw}, "F", True) is False


def test_env_bool_refuses_anything_else_rather_than_reading_it_as_no():
    """RESTORE_FORCE=maybe is a mistake to report, not a silent 'no'."""
    message = _refused(env_bool, {"RESTORE_FORCE": "maybe"}, "RESTORE_FORCE")
    assert message == "RESTORE_FORCE='maybe': must be 1, yes, true, on or 0, no, false, off"


# Through a real run: the job's mistake is exit 78 and one job.failed line naming the variable.

SETTINGS_JOB = """
from jobrunner import job, JobContext
from jobrunner.settings import env_int, env_span

@job
def configured(ctx: JobContext) -> None:
    keep = env_int(ctx.env, "KEEP", 7, min=1)
    delay = env_span(ctx.env, "DELAY", "1s")
    ctx.log.info("configured.read", keep=keep, delay_s=delay)
"""


def test_a_jobs_bad_setting_exits_78_naming_it(launcher):
    launcher.write_job("configured", SETTINGS_JOB)
    good = launcher.run("configured", env=launcher.env(KEEP="3", DELAY="2min"))
    assert good.returncode == 0, good.stderr
    assert good.event("configured.read")["keep"] == 3 and good.event("configured.read")["delay_s"] == 120.0
    bad = launcher.run("configured", env=launcher.env(KEEP="none"))
    assert bad.returncode == 78
    assert bad.event("job.failed")["exception"]["message"] == "KEEP='none': must be a whole number of 1 or more"
