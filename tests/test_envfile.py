"""jobrunner.envfile: systemd EnvironmentFile= syntax, stricter where systemd silently ignores mistakes."""

from __future__ import annotations

import os
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrunner.envfile import MAX_ENV_FILE, load_env_file, parse_env
from jobrunner.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1\n", {"A": "1"}),
        ("A=1", {"A": "1"}),
        ("# comment\n; other comment\n\n  # indented\nA=1\n", {"A": "1"}),
        ("\n\n\nA=1\n\n", {"A": "1"}),
        ("  A  =  spaced value  \n", {"A": "spaced value"}),
        ("A=x # not a comment\n", {"A": "x # not a comment"}),
        ("A=\n", {"A": ""}),
        ("A=x\nA=y\n", {"A": "y"}),
        ("A=x\r\nB=y\r\n", {"A": "x", "B": "y"}),
        ("A=a=b=c\n", {"A": "a=b=c"}),
        ("_x9=1\n", {"_x9": "1"}),
        ("export_dir=/srv\n", {"export_dir": "/srv"}),
    ],
)
def test_plain_lines(text, expected):
    """KEY=value lines, comments, blank lines and surrounding white space parse as systemd does."""
    assert parse_env(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A='lit $x \\\\ \"q\" `c`'\n", 'lit $x \\\\ "q" `c`'),
        ("A='  padded  '\n", "  padded  "),
        ("A='multi\nline'\n", "multi\nline"),
        ('A="a\\"b\\\\c\\$d\\`e"\n', 'a"b\\c$d`e'),
        ('A="keep \\n as is"\n', "keep \\n as is"),
        ('A="  padded  "\n', "  padded  "),
        ('A="multi\nline"\n', "multi\nline"),
        ('A="joined \\\nline"\n', "joined line"),
        ("A='x'y\"z\"w\n", "xyzw"),
        ('A="quoted"   \n', "quoted"),
    ],
)
def test_quotes(text, expected):
    """Single quotes are literal; double quotes unescape only \\\" \\\\ \\$ \\` and join escaped newlines."""
    assert parse_env(text) == {"A": expected}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=one \\\ntwo\n", "one two"),
        ("A=a\\ b\n", "a b"),
        ("A=\\ \n", " "),
        ("A=trailing   \t\n", "trailing"),
        ("A=x\\", "x"),
    ],
)
def test_unquoted_backslashes_and_trailing_space(text, expected):
    """Unquoted: backslash-newline continues the line, backslash escapes a character, trailing space is dropped."""
    assert parse_env(text) == {"A": expected}


def test_continuation_counts_lines():
    """After a continued line and a multi-line quoted value, errors still name the right line."""
    text = "A=one \\\ntwo\nB=\"x\ny\"\nC='p\nq'\nbroken\n"
    with pytest.raises(ConfigError, match=r"f\.env:7:"):
        parse_env(text, "f.env")


@pytest.mark.parametrize("line", ["export A=1", "export\tA=1", "  export A=1"])
def test_export_is_refused_with_line_number(line):
    """'export KEY=value' raises ConfigError mentioning 'export' and the file:line."""
    with pytest.raises(ConfigError) as caught:
        parse_env(f"# vars\nOK=1\n{line}\n", "/etc/app.env")
    assert "export" in str(caught.value)
    assert str(caught.value).startswith("/etc/app.env:3:")


def test_line_without_equals_names_file_and_line():
    """A line with no '=' raises ConfigError naming file:line, never quoting the line (it may be a secret)."""
    with pytest.raises(ConfigError) as caught:
        parse_env("A=1\n\nnoequals here\n", "site.env")
    assert str(caught.value).startswith("site.env:3:")
    assert "noequals" not in str(caught.value)


@pytest.mark.parametrize("key", ["1A", "A-B", "A B", "", "A.B", "É"])
def test_invalid_names_are_refused(key):
    """A variable name that is not [A-Za-z_][A-Za-z0-9_]* raises ConfigError with file:line."""
    with pytest.raises(ConfigError, match=r"^x\.env:2: .*not a valid variable name"):
        parse_env(f"OK=1\n{key}=value\n", "x.env")


@pytest.mark.parametrize(
    ("text", "kind"),
    [("A='open\n", "single"), ('A="open\n', "double"), ('A="x\\', "double"), ('B=1\nA="a\\"\n', "double")],
)
def test_unclosed_quotes_are_refused(text, kind):
    """An unclosed quote raises ConfigError naming the kind of quote and the variable."""
    with pytest.raises(ConfigError, match=f"unclosed {kind} quote in A"):
        parse_env(text)


@pytest.mark.parametrize("text", ["A=\x00\n", 'A="a\x00b"\n'])
def test_nul_is_refused(text):
    """A NUL byte in a value raises ConfigError (it could never reach the environment)."""
    with pytest.raises(ConfigError, match="NUL"):
        parse_env(text)


def test_load_env_file_reads_and_names_the_file(tmp_path):
    """load_env_file parses a file and its errors carry the file's path."""
    good = tmp_path / "good.env"
    good.write_text("# app\nDB_HOST=localhost\nDB_NAME='wp'\n")
    assert load_env_file(str(good)) == {"DB_HOST": "localhost", "DB_NAME": "wp"}
    bad = tmp_path / "bad.env"
    bad.write_text("A=1\nbroken\n")
    with pytest.raises(ConfigError, match=rf"^{bad}:2:"):
        load_env_file(str(bad))


def test_missing_file_is_config_error_unless_optional(tmp_path):
    """A missing env file is a ConfigError naming it, and an empty dict when optional=True."""
    missing = tmp_path / "nope.env"
    with pytest.raises(ConfigError, match="nope.env.*not found"):
        load_env_file(str(missing))
    assert load_env_file(str(missing), optional=True) == {}


def test_directory_and_non_utf8_are_config_errors(tmp_path):
    """A directory or a non-UTF-8 file is a ConfigError, not an OSError or UnicodeDecodeError."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_env_file(str(tmp_path))
    latin = tmp_path / "latin1.env"
    latin.write_bytes(b"A=caf\xe9\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_env_file(str(latin))


_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # a Unicode category name, as characters() takes it
_VALUES = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=_SURROGATES), max_size=40),
    st.text(alphabet=st.sampled_from(list(" \t\n\r\\\"'$`#;=éü€😀")), max_size=20),
)


def _quote(value: str) -> str:
    escaped = "".join("\\" + c if c in '\\"$`' else c for c in value)
    return f'"{escaped}"'


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.dictionaries(_NAMES, _VALUES, max_size=8))
def test_double_quoted_values_round_trip(env):
    """Any NUL-free value written as KEY="escaped" (\\ \" $ ` backslashed) parses back unchanged."""
    text = "".join(f"{key}={_quote(value)}\n" for key, value in env.items())
    assert parse_env(text) == env


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.lists(
            st.sampled_from(
                ["A", "b_", "=", '"', "'", "\\", "\n", "\r", "\t", " ", "#", ";", "$", "`", "1", "export ", "\x00", "é"]
            ),
            max_size=40,
        ).map("".join),
    )
)
def test_arbitrary_text_raises_only_config_error(text):
    """Whatever the text, parse_env returns a dict of str or raises ConfigError, nothing else."""
    try:
        parsed = parse_env(text, "fuzz.env")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.env:")
        return
    assert all(isinstance(k, str) and isinstance(v, str) and "\x00" not in v for k, v in parsed.items())


# Through the CLI.

ENV_JOB = """
    from jobrunner import job

    @job
    def show_env(ctx):
        ctx.log.info("env.seen", x=ctx.env["X"], y=ctx.env["Y"])
"""


def test_cli_bad_env_file_exits_78_naming_file_and_line(launcher, tmp_path):
    """--env-file with a bad line exits 78 with one stderr line naming the file and line, before the job runs."""
    launcher.write_job("show_env", ENV_JOB)
    bad = tmp_path / "bad.env"
    bad.write_text("X=1\nexport Y=2\n")
    run = launcher.run("run", "show_env", "--env-file", str(bad))
    assert run.returncode == 78, run.stderr
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert f"{bad}:2:" in run.stderr
    assert "env.seen" not in run.stdout
    assert not launcher.state_dir.exists()


def test_cli_missing_env_file_exits_78(launcher, tmp_path):
    """--env-file naming a missing file exits 78 with one line naming it."""
    launcher.write_job("show_env", ENV_JOB)
    run = launcher.run("run", "show_env", "--env-file", str(tmp_path / "missing.env"))
    assert run.returncode == 78
    assert run.stderr.count("\n") == 1 and "missing.env" in run.stderr


def test_cli_env_file_values_reach_ctx_env(launcher, tmp_path):
    """Values from --env-file (quotes and escapes applied) are what the job sees in ctx.env."""
    launcher.write_job("show_env", ENV_JOB)
    good = tmp_path / "good.env"
    good.write_text('# settings\nX="hello \\"world\\" $HOME"\nY=\'lit\\n\'   \n')
    run = launcher.run("run", "show_env", "--env-file", str(good))
    assert run.returncode == 0, run.stderr
    seen = run.event("env.seen")
    assert seen["x"] == 'hello "world" $HOME'
    assert seen["y"] == "lit\\n"


def test_env_file_is_read_through_a_symlink_and_bounded(tmp_path):
    """An env file named by a symlink is read (the path is the admin's: ``EnvironmentFile=``
    follows it too); a FIFO is refused at once, naming what it is; a file over 1 MiB is refused."""
    real = tmp_path / "real.env"
    real.write_text("A=1\n")
    (tmp_path / "link.env").symlink_to(real)
    assert load_env_file(str(tmp_path / "link.env")) == {"A": "1"}
    os.mkfifo(tmp_path / "fifo.env")
    with pytest.raises(ConfigError, match=r"fifo.env: cannot read env file: not a regular file \(a FIFO"):
        load_env_file(str(tmp_path / "fifo.env"))
    big = tmp_path / "big.env"
    big.write_bytes(b"A=" + b"x" * MAX_ENV_FILE + b"\n")
    with pytest.raises(ConfigError, match=r"big.env: env file is larger than 1024 KiB: not read"):
        load_env_file(str(big))
