"""Each ``@job`` setting is said once and checked everywhere it is repeated.

A setting is written in four places: the typed overload users' editors read, the
implementation (its default), the ``Job`` record (its normalised value) and the docstring that
documents it. Python cannot derive an ``@overload`` from another signature, so this test holds
them together: a setting added in one place and forgotten in another fails here.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing

from jobrunner.declaration import Job, job


def _settings(fn) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def test_the_typed_overload_names_every_setting_with_the_implementations_types() -> None:
    """The keyword overload and the implementation take the same settings, each with the same annotation."""
    overloads = typing.get_overloads(job)
    keyword = [o for o in overloads if _settings(o)]
    assert len(overloads) == 2 and len(keyword) == 1
    declared, implemented = _settings(keyword[0]), _settings(job)
    assert list(declared) == list(implemented)
    for name, param in implemented.items():
        assert declared[name].annotation == param.annotation, name
        assert declared[name].default is Ellipsis, name  # the overload shows no default of its own


def test_every_setting_is_a_field_of_job_and_documented() -> None:
    """Each setting becomes a ``Job`` field (``name`` is the job's own) and has its bullet in ``job``'s docstring."""
    fields = {f.name for f in dataclasses.fields(Job)} if dataclasses.is_dataclass(Job) else set(Job.__annotations__)
    doc = job.__doc__ or ""
    for name in _settings(job):
        assert name in fields, f"{name} is not a Job field"
        assert f"``{name}``" in doc, f"{name} is not documented in job()'s docstring"


def test_every_setting_is_checked_and_a_wrong_type_is_named() -> None:
    """``_check`` knows every setting: a value of a wrong kind is a ConfigError naming the setting, never a pass-through."""
    import pytest

    from jobrunner.errors import ConfigError

    def probe(ctx):
        pass

    for name in _settings(job):
        try:
            job(**{name: object()})(probe)  # type: ignore[call-overload]  # a wrong type, on purpose
        except ConfigError as exc:
            assert f": {name}:" in str(exc), (name, str(exc))
        else:
            pytest.fail(f"@job({name}=object()) was accepted: the setting is not checked")
