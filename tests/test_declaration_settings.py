"""Each ``@job`` setting is written once, in ``SETTINGS``, and checked everywhere it is repeated.

The table in jobrunner/declaration.py holds each setting's default, check, section and doc;
``job()`` applies it and its docstring is made from it. Two places still spell the settings out,
because static typing reads them: the typed overload (the *accepted* types, what users' editors
show) and the ``Job`` record (the *normalised* types). Python cannot derive either from a table,
so these tests hold them to it: a setting added in one place and forgotten in another fails here.
"""

from __future__ import annotations

import inspect
import pydoc
import typing

import pytest

from jobrunner._datatype import field_names
from jobrunner.declaration import SECTIONS, SETTINGS, Job, job
from jobrunner.errors import ConfigError

NAMES = [s.name for s in SETTINGS]
# Not settings: what the function gives (func, module, description) and for_instance() sets.
NOT_SETTINGS = {"func", "module", "description", "instance"}
# Finished by _build's cross-setting rules after their own check: the job's name, the unit's
# default from it, and network (True with a lease).
FINISHED_BY_BUILD = {"name", "unit", "network"}


def probe(ctx):
    """A probe."""


def _keyword_only(fn) -> dict[str, inspect.Parameter]:
    params = inspect.signature(fn, follow_wrapped=False).parameters
    return {name: p for name, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def test_the_typed_overload_names_the_tables_settings_in_order_without_defaults() -> None:
    """The keyword overload (what editors and mypy read) takes exactly the table's settings, in its order, each ``= ...``."""
    overloads = typing.get_overloads(job)
    assert len(overloads) == 2
    bare, keyword = overloads
    assert list(inspect.signature(bare).parameters) == ["func"] and not _keyword_only(bare)
    declared = _keyword_only(keyword)
    assert list(declared) == NAMES
    for name, param in declared.items():
        assert param.default is Ellipsis, f"the overload gives {name} a default of its own: the table's is the one"
    assert len(NAMES) == len(set(NAMES)), "a setting is in the table twice"


def test_the_job_record_has_a_field_per_setting_of_the_type_its_check_returns() -> None:
    """``Job``'s fields are the settings plus what the function gives; each setting's check is
    annotated to return that field's type (mypy holds the check to its annotation)."""
    assert set(field_names(Job)) - NOT_SETTINGS == set(NAMES)
    annotations = Job.__annotations__
    for s in SETTINGS:
        if s.name in FINISHED_BY_BUILD:
            continue
        returns = s.check.__annotations__["return"]
        assert returns == annotations[s.name], (
            f"{s.name}: {s.check.__name__} returns {returns}, Job holds {annotations[s.name]}"
        )


def test_the_tables_defaults_give_the_job_records_defaults() -> None:
    """``@job`` with no settings builds the ``Job`` whose fields are ``Job``'s own defaults, and
    each default passes its own check unchanged in meaning."""
    built = job(probe)
    bare = Job(func=probe, name="probe", module=__name__)
    for name in NAMES:
        if name in ("name", "unit"):
            continue
        assert getattr(built, name) == getattr(bare, name), f"{name}: the table's default is not Job's"
    assert (built.name, built.unit, built.network) == ("probe", "probe", False)
    for s in SETTINGS:
        if s.name not in FINISHED_BY_BUILD:
            assert s.check(s.default, s.name) == getattr(bare, s.name), s.name


def test_a_setting_given_at_its_default_is_not_given() -> None:
    """``@job(probe)`` with a setting at the table's default still builds (as before); any other value is the positional misuse."""
    assert job(probe, hardening="strict", persistent=False).name == "probe"  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"not @job\(positional\)"):
        job(probe, hardening="basic")  # type: ignore[call-overload]


def _doc_lines() -> list[str]:
    return inspect.cleandoc(job.__doc__ or "").splitlines()


def test_the_docstring_documents_each_setting_once_in_its_section() -> None:
    """``job()``'s docstring has the four sections in order, and each setting has one bullet, in its section, in table order."""
    lines = _doc_lines()
    starts = [lines.index(section) for section in SECTIONS]
    assert starts == sorted(starts)
    ends = [*starts[1:], len(lines)]
    for section, start, end in zip(SECTIONS, starts, ends, strict=True):
        bullets = [line.split("``")[1] for line in lines[start:end] if line.startswith("- ``")]
        assert bullets == [s.name for s in SETTINGS if s.section == section], section
    for s in SETTINGS:
        assert sum(line.startswith(f"- ``{s.name}``: ") for line in lines) == 1, s.name
        assert s.doc.strip() and not s.doc.endswith("\n"), s.name


def test_help_shows_every_setting_with_its_type_and_the_tables_default() -> None:
    """``help(jobrunner.job)`` prints the settings as a signature would: the overload's types, the table's defaults."""
    shown = inspect.signature(job)
    settings = {name: p for name, p in shown.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert list(settings) == NAMES
    for s in SETTINGS:
        assert settings[s.name].default == s.default, s.name
    text = pydoc.plain(pydoc.render_doc(job))
    assert "schedule: 'str | Sequence[str]' = ()" in text
    assert "hardening: 'Hardening' = 'strict'" in text
    assert "cleanup_timeout: 'Span' = '60s'" in text
    assert "-> 'Job | Callable[[JobFunction], Job]'" in text
    assert "- ``condition``: " in text and "When it runs (the ``.timer``):" in text


def test_every_setting_is_checked_and_a_wrong_type_is_named() -> None:
    """Every setting's check runs: a value of a wrong kind is a ConfigError naming the setting, never a pass-through."""
    for name in NAMES:
        try:
            job(**{name: object()})(probe)  # type: ignore[call-overload]  # a wrong type, on purpose
        except ConfigError as exc:
            assert f": {name}:" in str(exc), (name, str(exc))
        else:
            pytest.fail(f"@job({name}=object()) was accepted: the setting is not checked")


def test_an_unknown_setting_is_named_whatever_the_order_given() -> None:
    """An unknown setting is the first one alphabetically, as before; a bad known one is reported in table order."""
    with pytest.raises(ConfigError, match=r"unknown setting 'aaa'$"):
        job(zzz=1, aaa=2)(probe)  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match=r": jitter: "):
        job(timeout=0, jitter="bad")(probe)
