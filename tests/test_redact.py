"""jobrunner.redact: secrets are masked in every string jobrunner writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jobrunner.redact import MASK, Redactor, default_redactor, reset_default_redactor, secret_env_name

TELEGRAM = "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/12345678"
TELEGRAM_TOKEN = "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
JSON_HOOK = "json://user:s3cretpass@hooks.example.com/path"
MAILTO = "mailto://user:pass1234@gmail.com"


def test_registered_value_masked_everywhere_in_a_string():
    """Every occurrence of a registered secret is replaced by ***."""
    redactor = Redactor(["hunter22"])
    assert redactor.redact("pw=hunter22, again hunter22!") == f"pw={MASK}, again {MASK}!"


def test_longer_secret_wins_over_its_prefix():
    """When one secret contains another, the longer one is masked whole, leaving no tail behind."""
    redactor = Redactor(["abcd", "abcdefgh"])
    assert redactor.redact("x abcdefgh y") == f"x {MASK} y"


def test_registered_values_masked_in_nested_structures():
    """Strings nested in dicts, lists and tuples are masked; other values and the input are left alone."""
    redactor = Redactor(["topsecret"])
    original = {"a": ["x topsecret", ("topsecret", 1)], "b": {"c": "topsecret"}, "n": 5, "f": None}
    result = redactor.redact_value(original)
    assert result == {"a": [f"x {MASK}", (MASK, 1)], "b": {"c": MASK}, "n": 5, "f": None}
    assert original["b"]["c"] == "topsecret"


@pytest.mark.parametrize(
    ("short", "expected"),
    [
        ("abc", f"{MASK} ab x abcd"),
        ("ab", f"abc {MASK} x abcd"),
        ("x", f"abc ab {MASK} abcd"),
        ("   ab  ", f"abc {MASK} x abcd"),
    ],
)
def test_short_values_are_masked_as_whole_tokens(short, expected):
    """Values under 8 characters (of any length, stripped) are masked where they stand alone, never
    inside a longer word."""
    redactor = Redactor([short])
    assert redactor.redact("abc ab x abcd") == expected


@pytest.mark.parametrize("blank", ["", "   ", "\n", "***"])
def test_blank_values_are_ignored(blank):
    """Empty and white-space values (and the mask itself) are not registered: they would mask nothing or everything."""
    redactor = Redactor([blank])
    assert redactor.redact("a b *** c") == "a b *** c"


def test_non_strings_are_not_registered() -> None:
    """Registering a non-string value is ignored rather than failing."""
    redactor = Redactor()
    redactor.add(12345678)  # type: ignore[arg-type]
    assert redactor.redact("12345678") == "12345678"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mysql://wp:pw1234@db/x", f"mysql://wp:{MASK}@db/x"),
        ("postgres://u:p%40ss@h:5432/db", f"postgres://u:{MASK}@h:5432/db"),
        ("redis://:sekrit@cache:6379/0", f"redis://:{MASK}@cache:6379/0"),
        ("see https://admin:hunter2@example.org/x now", f"see https://admin:{MASK}@example.org/x now"),
    ],
)
def test_url_userinfo_password_masked_unregistered(text, expected):
    """The password of scheme://user:password@host is masked even when never registered."""
    assert Redactor().redact(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://x/?token=abc123&b=2", f"https://x/?token={MASK}&b=2"),
        ("https://x/?a=1&password=zz", f"https://x/?a=1&password={MASK}"),
        ("https://x/?api_key=K3Y&page=2", f"https://x/?api_key={MASK}&page=2"),
        ("https://x/?access_token=abc", f"https://x/?access_token={MASK}"),
        ("GET /hook?sig=deadbeef#frag", f"GET /hook?sig={MASK}#frag"),
    ],
)
def test_query_parameters_named_like_secrets_masked(text, expected):
    """Query parameters named token/password/api_key/... have their values masked."""
    assert Redactor().redact(text) == expected


def test_plain_text_is_unchanged():
    """Text with no secrets and no credential shapes comes back unchanged."""
    text = "backup written to /mnt/backups/2024-01-01.tar.gz (1234 bytes) https://example.org/?page=2"
    assert Redactor(["unrelated-secret"]).redact(text) == text


@pytest.mark.parametrize(
    "name",
    [
        "DB_PASSWORD",
        "PGPASSWORD",
        "WP_DB_PASS",
        "MYSQL_ROOT_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "API_TOKEN",
        "GITHUB_TOKEN",
        "S3_SECRET_KEY",
        "RESTIC_PASSWORD",
        "BORG_PASSPHRASE",
        "SMTP_PASS",
        "B2_APPLICATION_KEY",
        "KEY",
        "api_key",
        # MySQL's own client variable and its common short form: the WordPress VPS case.
        "MYSQL_PWD",
        "DB_PWD",
    ],
)
def test_secret_env_names(name):
    """Names that say 'secret' (password, token, key, pwd ...) are recognised as secret."""
    assert secret_env_name(name)


@pytest.mark.parametrize("name", ["HOME", "PATH", "LANG", "TZ", "WP_PATH", "KEYBOARD_LAYOUT", "MONKEY", "USER"])
def test_ordinary_env_names(name):
    """Ordinary variable names are not taken for secrets."""
    assert not secret_env_name(name)


def test_add_env_registers_secret_named_values_only():
    """add_env masks the values of secret-named variables and leaves ordinary ones visible."""
    redactor = Redactor()
    redactor.add_env({"DB_PASSWORD": "Zq9-hunter2", "WP_PATH": "/var/www/html", "API_TOKEN": "", "HOME": "/root"})
    assert redactor.redact("pw Zq9-hunter2 in /var/www/html") == f"pw {MASK} in /var/www/html"


def test_add_env_mysql_pwd():
    """MYSQL_PWD (read by the mysql client itself) is registered as a secret."""
    redactor = Redactor()
    redactor.add_env({"MYSQL_PWD": "hunter2hunter"})
    assert redactor.redact("mysqldump -phunter2hunter") == f"mysqldump -p{MASK}"


def test_add_env_url_variables_register_their_credentials():
    """Credentials inside *_URL / *_DSN values are registered, so they are masked outside any URL too."""
    redactor = Redactor()
    redactor.add_env(
        {"REDIS_URL": "redis://:cachepass99@cache:6379/0", "SENTRY_DSN": "https://abcdef0123456789@o1.ingest/1"}
    )
    assert redactor.redact("auth cachepass99 failed") == f"auth {MASK} failed"
    assert redactor.redact("key abcdef0123456789") == f"key {MASK}"


@pytest.mark.parametrize("separator", [" ", ",", ", ", "\n"])
def test_notify_urls_tokens_masked_in_any_text(separator):
    """Tokens and passwords of the Apprise URLs in JOBRUNNER_NOTIFY_URLS are masked wherever they appear."""
    redactor = Redactor()
    redactor.add_env({"JOBRUNNER_NOTIFY_URLS": separator.join([TELEGRAM, JSON_HOOK, MAILTO])})
    text = redactor.redact(
        f"telegram said 401 for bot{TELEGRAM_TOKEN}; json hook s3cretpass rejected; smtp login pass1234 refused"
    )
    for secret in (TELEGRAM_TOKEN, "s3cretpass", "pass1234"):
        assert secret not in text
    assert text.count(MASK) == 3
    whole = redactor.redact(f"{TELEGRAM} {JSON_HOOK} {MAILTO}")
    for secret in (TELEGRAM_TOKEN, "s3cretpass", "pass1234"):
        assert secret not in whole


def test_processor_masks_an_event_dict():
    """Used as a structlog processor, the redactor masks string and nested fields of the event dict."""
    redactor = Redactor(["topsecret"])
    event = {
        "event": "db.connect",
        "dsn": "mysql://wp:topsecret@db/wp",
        "args": ["-ptopsecret"],
        "n": 3,
        "exception": {"type": "OSError", "message": "denied for topsecret", "frames": []},
    }
    out = redactor(None, "info", event)
    assert out["event"] == "db.connect" and out["n"] == 3
    assert out["dsn"] == f"mysql://wp:{MASK}@db/wp"
    assert out["args"] == [f"-p{MASK}"]
    assert out["exception"]["message"] == f"denied for {MASK}"


def test_processor_accepts_named_tuples():
    """A namedtuple field (e.g. shutil.disk_usage()) is redacted without raising, keeping its values."""
    redactor = Redactor(["topsecret"])
    usage = shutil.disk_usage("/")
    out = redactor(None, "info", {"event": "disk.usage", "usage": usage})
    assert list(out["usage"]) == list(usage)


@pytest.mark.parametrize(
    "value",
    [OSError("auth failed for topsecret"), {"topsecret"}, Path("/keys/topsecret")],
    ids=["exception", "set", "path"],
)
def test_processor_masks_non_string_values(value):
    """Non-string field values (an exception, a set, a Path) are masked too, since the renderer str()s them."""
    redactor = Redactor(["topsecret"])
    out = redactor(None, "info", {"event": "x", "value": value})
    assert "topsecret" not in str(out["value"])


def test_default_redactor_is_primed_from_environ(monkeypatch):
    """default_redactor() reads os.environ once and reset_default_redactor() forgets it."""
    monkeypatch.setenv("JOBRUNNER_TEST_DB_PASSWORD", "envsecret42")
    reset_default_redactor()
    assert default_redactor().redact("envsecret42") == MASK
    assert default_redactor() is default_redactor()
    monkeypatch.delenv("JOBRUNNER_TEST_DB_PASSWORD")
    reset_default_redactor()
    assert default_redactor().redact("envsecret42") == "envsecret42"


# Through the CLI: a password never reaches stdout, stderr or the state file.

PASSWORD = "Zq9-hunter2-xyz"

LEAKY_JOB = """
    from jobrunner import job

    @job
    def leaky(ctx):
        pw = ctx.env["DB_PASSWORD"]
        ctx.log.info("db.connect", dsn=f"mysql://wp:{pw}@db/wp", note=f"using {pw}")
        ctx.run(["echo", pw])
        ctx.run(["sh", "-c", 'echo "stderr $DB_PASSWORD" >&2'])
        raise RuntimeError(f"cannot connect with password {pw}")
"""


def test_cli_password_appears_nowhere(launcher):
    """A DB_PASSWORD logged in a field, echoed by a command and raised in an error is *** in stdout, stderr and state."""
    launcher.write_job("leaky", LEAKY_JOB)
    run = launcher.run("leaky", env=launcher.env(DB_PASSWORD=PASSWORD))
    assert run.returncode == 1, run.stderr
    state_text = (launcher.state_dir / "leaky" / "state.json").read_text()
    everything = run.stdout + run.stderr + state_text
    assert PASSWORD not in everything
    assert run.event("db.connect")["note"] == f"using {MASK}"
    assert [e["line"] for e in run.events if e["event"] == "proc.output"] == [MASK, f"stderr {MASK}"]
    assert run.event("job.failed")["exception"]["message"] == f"cannot connect with password {MASK}"
    assert MASK in launcher.state("leaky")["last_error"]


def test_cli_exception_object_field_is_masked(launcher):
    """A job logging the exception object itself (error=exc) does not leak the password it carries."""
    launcher.write_job(
        "leaky_exc",
        """
        from jobrunner import job

        @job
        def leaky_exc(ctx):
            try:
                raise OSError("auth failed for " + ctx.env["DB_PASSWORD"])
            except OSError as exc:
                ctx.log.warning("db.retrying", error=exc)
    """,
    )
    run = launcher.run("leaky_exc", env=launcher.env(DB_PASSWORD=PASSWORD))
    assert run.returncode == 0, run.stderr
    assert PASSWORD not in run.stdout + run.stderr
    assert MASK in run.event("db.retrying")["error"]


def test_cli_logging_a_named_tuple_does_not_fail_the_job(launcher):
    """A job logging shutil.disk_usage() (a namedtuple) succeeds and the values are logged."""
    launcher.write_job(
        "disk",
        """
        import shutil
        from jobrunner import job

        @job
        def disk(ctx):
            ctx.log.info("disk.usage", usage=shutil.disk_usage("/"))
    """,
    )
    run = launcher.run("disk")
    assert run.returncode == 0, run.stdout
    assert len(run.event("disk.usage")["usage"]) == 3


# Issue #13, finding 7: short secrets, multi-line values, secrets split across lines, command lines.


def test_short_secret_masks_the_word_not_longer_words():
    """A 4-character password is masked where it stands alone (user:pass@, 'pass') but 'password' and
    'passing' are left whole: no more '***word'."""
    redactor = Redactor(["pass"])
    assert redactor.redact("password passing pass x:pass@h") == f"password passing {MASK} x:{MASK}@h"


def test_long_secret_is_masked_inside_words():
    """A secret of 8 characters or more is masked wherever it appears, inside a longer word too."""
    assert Redactor(["hunter22"]).redact("xhunter22y") == f"x{MASK}y"


def test_flag_values_of_secret_named_variables_are_not_secrets():
    """SMTP_AUTH=1 or USE_TOKEN=yes are settings: '1' and 'yes' are not masked in every line."""
    redactor = Redactor()
    redactor.add_env({"SMTP_AUTH": "1", "USE_TOKEN": "yes", "XDG_SESSION_TYPE": "tty", "DB_PASS": "ab"})
    assert redactor.redact("attempt 1: yes on tty, ab") == f"attempt 1: yes on tty, {MASK}"


PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDx3kQ8wZ7pG0kR2nq0Vt3M9mYx1cE5b0hQqJ9u2yTqAAAAJgtJd6pLSXe\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


def test_multi_line_secret_is_masked_line_by_line():
    """A PEM key in a secret-named variable is masked whole and each of its lines alone."""
    redactor = Redactor()
    redactor.add_env({"SSH_PRIVATE_KEY": PEM})
    body_lines = PEM.splitlines()[1:3]
    for line in body_lines:
        assert line not in redactor.redact(f"printed: {line}")
    assert redactor.redact(PEM).count(MASK) >= 1 and not any(line in redactor.redact(PEM) for line in body_lines)
    # Written with literal \n (as in a JSON key file), too.
    escaped = Redactor()
    escaped.add_env({"GCP_PRIVATE_KEY": PEM.replace("\n", "\\n")})
    assert body_lines[0] not in escaped.redact(body_lines[0])


SPLIT = "Tk9sHq2Lw8ZrX4Vd"


@pytest.mark.parametrize("cut", [1, 3, 4, 8, 12, 15])
def test_secret_split_across_two_lines_leaks_at_most_three_characters(cut):
    """LineStream masks a secret broken by a line break: the end of the first line (4 or more of its
    characters) and the rest at the start of the next; at most 3 characters ever show."""
    stream = Redactor([SPLIT]).stream()
    first = stream(f"token={SPLIT[:cut]}")
    second = stream(f"{SPLIT[cut:]} rest")
    shown = first[len("token=") :].replace(MASK, "") + second.replace(MASK, "").replace(" rest", "")
    assert len(shown) <= 3, (first, second)
    assert second.endswith(" rest")


def test_secret_spanning_three_lines_is_masked_in_the_middle_line():
    """A long secret wrapped over three lines: the middle line lies wholly inside it and is masked."""
    secret = "A1b2C3d4E5f6G7h8I9j0K1l2"
    stream = Redactor([secret]).stream()
    out = [stream(secret[:8]), stream(secret[8:16]), stream(secret[16:])]
    assert out == [MASK, MASK, MASK]


def test_line_stream_leaves_ordinary_lines_alone():
    """Lines that share no 4-character edge with a secret come back unchanged."""
    stream = Redactor([SPLIT]).stream()
    assert [stream("backup done"), stream("42 files")] == ["backup done", "42 files"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["mydump", "--password=s3cr3t-x", "db"], ["mydump", f"--password={MASK}", "db"]),
        (["tool", "--api-token", "abc", "-v"], ["tool", "--api-token", MASK, "-v"]),
        (
            ["tool", "--password-file", "/etc/pw", "--no-password"],
            ["tool", "--password-file", "/etc/pw", "--no-password"],
        ),
        (["mysqldump", "-uwp", "-pS3cret", "wp"], ["mysqldump", "-uwp", f"-p{MASK}", "wp"]),
        (["mysql", "-p", "wordpress"], ["mysql", "-p", "wordpress"]),
        (["redis-cli", "-a", "hunter2", "ping"], ["redis-cli", "-a", MASK, "ping"]),
        (["env", "DB_PASSWORD=zz9", "HOME=/root", "backup"], ["env", f"DB_PASSWORD={MASK}", "HOME=/root", "backup"]),
    ],
)
def test_command_line_secret_options_are_masked(argv, expected):
    """Values of options named like secrets (and mysql's -p, redis-cli's -a) are masked in a logged argv."""
    from jobrunner.redact import mask_argv

    assert mask_argv(argv) == expected


def test_a_masked_option_value_is_masked_in_later_output_too():
    """Once an argv with --password=X is logged, X is a registered secret: the command's echo of it is masked."""
    redactor = Redactor()
    event = redactor(None, "info", {"event": "proc.started", "argv": ["echo", "--password=Sup3r-S3cret-1"]})
    assert event["argv"] == ["echo", f"--password={MASK}"]
    assert redactor.redact("connected as Sup3r-S3cret-1") == f"connected as {MASK}"
