"""JobState: the typed state record (attributes, a schema version), and the one store around it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from jobrunner._datatype import field_names
from jobrunner.errors import ConfigError
from jobrunner.store.state import SCHEMA_VERSION, JobState, StateStore, note_finish

# What a runner before JobState wrote (no "schema"), with a key no version knows.
OLD_FILE = {
    "job": "nightly",
    "last_run_id": "r1",
    "last_outcome": "failure",
    "last_exit_code": 1,
    "last_error": "OSError: x",
    "last_start": 100.0,
    "last_finish": 160.5,
    "last_failure": 160.5,
    "last_success": 50,
    "last_duration_s": 60.5,
    "last_attempts": 1,
    "consecutive_failures": 2,
    "runs": {"success": 3, "failure": 2},
    "durations_s": [1.0, 60.5],
    "notify": {"failure_notified": True, "suppressed": 1},
    "notified_run_id": "r1",
    "notify_tags": ["ops"],
    "ping": {"queue": [], "body_limit": 100},
    "future_key": {"kept": [1, 2]},
}


def test_every_schema_key_is_an_attribute():
    """The record's attributes are the file's keys (plus ``extra``, for the keys it does not know)."""
    from jobrunner.store.state import _SCHEMA

    names = set(field_names(JobState)) - {"extra"}
    assert names == set(_SCHEMA)


def test_an_old_file_round_trips_with_its_unknown_keys():
    """from_dict/to_dict give back what an older runner wrote, unknown keys included."""
    state = JobState.from_dict(json.loads(json.dumps(OLD_FILE)))
    assert state.schema is None and state.last_outcome == "failure" and state.consecutive_failures == 2
    assert state.runs == {"success": 3, "failure": 2} and state.extra == {"future_key": {"kept": [1, 2]}}
    assert state.to_dict() == OLD_FILE


def test_store_loads_an_old_file_and_writes_the_schema_version(tmp_path):
    """An old state file loads as a JobState; the first write stamps the schema and keeps the rest."""
    store = StateStore("nightly", str(tmp_path))
    os.makedirs(store.dir)
    with open(store.path, "w") as handle:
        json.dump(OLD_FILE, handle)
    assert store.load().last_error == "OSError: x"
    written = store.apply(lambda s: s.note_start(run_id="r2", pid=7, now=200.0))
    on_disk = json.loads(open(store.path).read())
    assert on_disk["schema"] == SCHEMA_VERSION == written.schema
    assert on_disk["running"] == {"run_id": "r2", "pid": 7, "since": 200.0}
    assert {k: v for k, v in on_disk.items() if k not in ("schema", "running", "last_start")} == {
        k: v for k, v in OLD_FILE.items() if k != "last_start"
    }


@pytest.mark.parametrize(
    "data, why",
    [
        ([1, 2], "not a JSON object"),
        ({"runs": "x"}, "field 'runs' is str, not dict"),
        ({"consecutive_failures": True}, "field 'consecutive_failures' is bool, not int"),
        ({"last_success": "yesterday"}, "field 'last_success' is str"),
        ({"running": {"since": "now"}}, "field 'running.since' must be a number"),
        ({"durations_s": ["fast"]}, "field 'durations_s' must be a list of numbers"),
        ({"runs": {"success": 1.5}}, "field 'runs' must map outcomes to whole numbers"),
        ({"schema": "1"}, "field 'schema' is str, not int"),
    ],
)
def test_wrong_types_are_refused_with_the_field(tmp_path, data, why):
    """from_dict is the schema check: a wrong type names the field; the store calls the file unreadable."""
    with pytest.raises(ValueError, match=why.replace("(", r"\(")):
        JobState.from_dict(data)
    store = StateStore("j", str(tmp_path))
    os.makedirs(store.dir)
    with open(store.path, "w") as handle:
        json.dump(data, handle)
    with pytest.raises(ConfigError, match="unreadable"):
        store.load()


def test_nulls_read_as_not_recorded():
    """A null is the same as a missing key (and is not written back)."""
    state = JobState.from_dict({"last_error": None, "consecutive_failures": None, "runs": {}})
    assert state.last_error is None and state.consecutive_failures is None and state.empty
    assert state.to_dict() == {}


def test_the_record_and_the_plain_dict_agree():
    """note_finish on a JobState and on the plain dict of the same record give the same file."""
    typed, plain = JobState(), {}
    for i, outcome in enumerate(("success", "failure", "skipped", "timeout", "success")):
        kw = dict(
            run_id=f"r{i}",
            outcome=outcome,
            exit_code=0 if outcome == "success" else 1,
            started=i,
            duration_s=1.0,
            attempts=1,
            error="E" if outcome != "success" else None,
            now=10.0 + i,
        )
        typed.note_finish(**kw)
        note_finish(plain, **kw)
    assert typed.to_dict() == plain
    assert typed.consecutive_failures == 0 and typed.runs == {"success": 2, "failure": 1, "skipped": 1, "timeout": 1}


def test_apply_folds_several_changes_into_one_write(tmp_path):
    """apply() runs every change on the record read under the lock, then writes once."""
    store = StateStore("j", str(tmp_path))
    store.apply(lambda s: setattr(s, "consecutive_failures", 1))
    inode = os.stat(store.path).st_ino
    written = store.apply(
        lambda s: setattr(s, "consecutive_failures", (s.consecutive_failures or 0) + 1),
        lambda s: s.notify.update(suppressed=3),
    )
    assert written.consecutive_failures == 2 and written.notify == {"suppressed": 3} and written.job == "j"
    assert os.stat(store.path).st_ino != inode
    assert store.load() == written


def test_try_apply_reports_instead_of_raising(tmp_path: Path) -> None:
    """A state that cannot be written is reported (the run goes on), and nothing is returned."""
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    said: list[str] = []
    assert StateStore("j", str(blocked)).try_apply(lambda s: None, report=said.append) is None
    assert len(said) == 1 and said[0]


def test_the_schema_checked_on_read_is_the_records_own_annotations():
    """``state.json`` is read against ``_SCHEMA``; each of its entries says what the ``JobState``
    annotation says (float fields take whole numbers too, as JSON writes them), and every field
    but ``extra`` is in it, so a field added to the record and forgotten in the schema fails here."""
    import types as types_module
    import typing

    from jobrunner.store import state as state_module

    hints = typing.get_type_hints(state_module.JobState)
    schema = state_module._SCHEMA
    assert set(schema) == set(hints) - {"extra"}
    for key, types in schema.items():
        hint = hints[key]
        args = (
            [a for a in typing.get_args(hint) if a is not type(None)]
            if isinstance(hint, types_module.UnionType)
            else [hint]
        )
        origin = typing.get_origin(args[0]) or args[0]
        expected = (int, float) if origin is float else (origin,)
        assert tuple(types) == expected, (key, types, hint)
