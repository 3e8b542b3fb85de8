"""JobState: the typed state record (attributes, a schema version), and the one store around it."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest

from jobrunner._datatype import field_names
from jobrunner.errors import ConfigError
from jobrunner.store import state as state_module
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


# The keys of state.json, schema version 1: the file format the sections must not change.
FILE_KEYS = {
    None: {
        "schema", "job", "last_run_id", "last_outcome", "last_exit_code", "last_error", "last_start", "last_finish",
        "last_success", "last_failure", "last_duration_s", "last_attempts", "consecutive_failures", "runs",
        "durations_s", "running", "recovered_from_unreadable_state",
    },
    "skips": {"last_skipped", "skipped_since", "consecutive_skips", "skip_holder"},
    "notifications": {"notify", "ping", "notify_tags", "notified_run_id"},
    "alerting": {"alert", "anomaly", "anomalies"},
    "silencing": {"silence"},
}  # fmt: skip


def test_every_file_key_is_a_field_of_the_state_or_of_one_section():
    """The file's keys are the attributes of ``JobState`` and of its sections, each key in one place."""
    sections = {name: cls for name, cls in state_module._SECTIONS.items()}
    assert set(sections) == set(FILE_KEYS) - {None}
    assert set(field_names(JobState)) - {"extra"} == FILE_KEYS[None] | set(sections)
    for name, cls in sections.items():
        assert set(field_names(cls)) == FILE_KEYS[name], name
    assert {key: spec.section for key, spec in state_module._KEYS.items()} == {
        key: section for section, keys in FILE_KEYS.items() for key in keys
    }


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
        lambda s: s.notifications.notify.update(suppressed=3),
    )
    assert (
        written.consecutive_failures == 2 and written.notifications.notify == {"suppressed": 3} and written.job == "j"
    )
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
    """``state.json`` is read against types derived from the annotations of ``JobState`` and its
    sections (parsed once, at import); here ``typing`` derives them again, independently: float
    fields take whole numbers too (as JSON writes them), collections without ``None`` are written
    only when not empty."""
    import types as types_module
    import typing

    for section, keys in FILE_KEYS.items():
        owner = JobState if section is None else state_module._SECTIONS[section]
        hints = typing.get_type_hints(owner)
        for key in keys:
            hint = hints[key]
            union = isinstance(hint, types_module.UnionType)
            args = [a for a in typing.get_args(hint) if a is not type(None)] if union else [hint]
            origin = typing.get_origin(args[0]) or args[0]
            expected = (int, float) if origin is float else (origin,)
            spec = state_module._KEYS[key]
            assert spec.types == expected, (key, spec.types, hint)
            assert spec.collection == (not union), key


@pytest.mark.parametrize(
    "annotation, types, nullable",
    [
        ("int | None", (int,), True),
        ("float | None", (int, float), True),
        ("str", (str,), False),
        ("bool | None", (bool,), True),
        ("dict[str, int | None]", (dict,), False),
        ("list[dict[str, Any]] | None", (list,), True),
        ("int | str", (int, str), False),
    ],
)
def test_the_annotations_json_can_hold_are_read(annotation, types, nullable):
    assert state_module.json_types(annotation) == (types, nullable)


@pytest.mark.parametrize("annotation", ["set[str]", "Path | None", "None", "tuple[int, ...]", "Any", "dict[str, int"])
def test_an_annotation_the_file_cannot_hold_is_refused(annotation):
    with pytest.raises(TypeError, match="is not a type state.json can hold"):
        state_module.json_types(annotation, "JobState.x")


@pytest.mark.parametrize(
    "change, why",
    [
        (
            "    consecutive_skips: set[int] | None = None\n",
            r"JobState\.skips\.consecutive_skips: 'set\[int\] \| None'",
        ),
        (
            "    consecutive_skips: int | None = None\n    notify_tags: list[str] | None = None\n",
            "'notify_tags' is already",
        ),
        (
            "    consecutive_skips: int | None = None\n    last_outcome: str | None = None\n",
            "'last_outcome' is already",
        ),
    ],
)
def test_a_field_the_file_cannot_hold_fails_at_import(change, why):
    """A field whose type JSON cannot carry, or a key in two places, stops the module from
    loading, naming the field: it is found by the first test that imports the state, not by a
    user whose file cannot be read."""
    import types as types_module

    source = Path(state_module.__file__).read_text()
    line = "    consecutive_skips: int | None = None\n"
    assert source.count(line) == 1
    module = types_module.ModuleType("jobrunner.store._state_copy")
    with pytest.raises(TypeError, match=why):
        exec(compile(source.replace(line, change), "copy", "exec"), module.__dict__)


FIXTURES = Path(__file__).parent / "fixtures" / "state"


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_real_state_files_are_written_back_byte_for_byte(tmp_path, name):
    """State files written by the runner before the sections (tests/fixtures/state) load into the
    sections and are written back with the same bytes, by ``to_dict`` and by a store's write."""
    raw = (FIXTURES / name).read_bytes()
    state = JobState.from_dict(json.loads(raw))
    assert state.extra == {}
    assert json.dumps(state.to_dict(), indent=1, sort_keys=True).encode() + b"\n" == raw
    store = StateStore(json.loads(raw)["job"], str(tmp_path))
    os.makedirs(store.dir)
    Path(store.path).write_bytes(raw)
    assert store.apply() == state
    assert Path(store.path).read_bytes() == raw


def test_real_state_files_fill_their_sections():
    """Each feature reads its keys from its section."""
    skipping = JobState.from_dict(json.loads((FIXTURES / "skipping.json").read_text()))
    assert skipping.skips.consecutive_skips == 2 and skipping.skips.skip_holder["user"] == "root"
    assert skipping.skips.skipped_since <= skipping.skips.last_skipped and skipping.runs == {"skipped": 2}
    assert skipping.alerting.alert["min_duration_s"] == 30.0
    failer = JobState.from_dict(json.loads((FIXTURES / "failer.json").read_text()))
    assert failer.silencing.silence["reason"] == "migrating"
    assert failer.notifications.notify_tags == ["ops", "mail"]
    assert failer.notifications.notified_run_id == failer.last_run_id
    noisy = JobState.from_dict(json.loads((FIXTURES / "noisy.json").read_text()))
    assert noisy.notifications.notify["sent"]["failure"]["held"] == 2
    pinged = JobState.from_dict(json.loads((FIXTURES / "pinged.json").read_text()))
    assert len(pinged.notifications.ping["queue"]) == 2
    sleeper = JobState.from_dict(json.loads((FIXTURES / "sleeper.json").read_text()))
    assert sleeper.alerting.anomaly["kind"] == "too_short" and sleeper.alerting.anomalies == {"too_short": 2}
    assert sleeper.skips.skipped_since is None and sleeper.skips.last_skipped is not None


@pytest.mark.parametrize(
    "data, why",
    [
        ({"consecutive_skips": 1.5}, "field 'consecutive_skips' is float, not int"),
        ({"skipped_since": True}, "field 'skipped_since' is bool, not int/float"),
        ({"skip_holder": [1]}, "field 'skip_holder' is list, not dict"),
        ({"notify": "x"}, "field 'notify' is str, not dict"),
        ({"notify_tags": "ops"}, "field 'notify_tags' is str, not list"),
        ({"notified_run_id": 7}, "field 'notified_run_id' is int, not str"),
        ({"anomalies": {"too_slow": "2"}}, "field 'anomalies' must map kinds to whole numbers"),
        ({"anomaly": 1}, "field 'anomaly' is int, not dict"),
        ({"silence": "2h"}, "field 'silence' is str, not dict"),
        ({"ping": []}, "field 'ping' is list, not dict"),
    ],
)
def test_a_sections_fields_are_checked_on_read(data, why):
    with pytest.raises(ValueError, match=why):
        JobState.from_dict(data)


# -- who writes a section ------------------------------------------------------------------

PACKAGE = Path(state_module.__file__).parents[1]
_MUTATORS = frozenset(
    {"update", "pop", "popitem", "clear", "setdefault", "append", "extend", "insert", "remove", "sort", "reverse"}
)


def _written(node: ast.expr) -> tuple[str, str | None] | None:
    """The section (and key) an expression written to names: ``x.<section>``,
    ``x.<section>.<key>``, ``x.<section>.<key>[...]…``; ``None`` for anything else."""
    while isinstance(node, ast.Subscript):
        node = node.value
    if not isinstance(node, ast.Attribute):
        return None
    if node.attr in state_module._SECTIONS:
        return node.attr, None
    inner = node.value
    if isinstance(inner, ast.Attribute) and inner.attr in state_module._SECTIONS:
        return inner.attr, node.attr
    return None


def _targets(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, (ast.Tuple, ast.List)):
        return [t for item in node.elts for t in _targets(item)]
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    return [node]


def section_writes(tree: ast.AST) -> list[tuple[int, str, str | None]]:
    """(line, section, key) of every write to a section in ``tree``: assignments, ``del``,
    augmented assignments, ``setattr``/``delattr`` and the mutating methods of a dict or list
    (a write through an alias of the section is not seen: write it out)."""
    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = [t for target in node.targets for t in _targets(target)]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = [t for target in node.targets for t in _targets(target)]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in ("setattr", "delattr") and len(node.args) >= 2:
                obj, name = node.args[0], node.args[1]
                hit = _written(obj)
                if hit is not None and hit[1] is None:
                    key = name.value if isinstance(name, ast.Constant) and isinstance(name.value, str) else "?"
                    found.append((node.lineno, hit[0], key))
                elif isinstance(name, ast.Constant) and name.value in state_module._SECTIONS:
                    found.append((node.lineno, name.value, None))
            elif isinstance(func, ast.Attribute) and func.attr in _MUTATORS:
                hit = _written(func.value)
                if hit is not None and hit[1] is not None:
                    found.append((node.lineno, *hit))
        for target in targets:
            hit = _written(target)
            if hit is not None:
                found.append((target.lineno, *hit))
    return found


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _owns(module: str, section: str) -> bool:
    owners = state_module._SECTIONS[section].owners
    return any(module == owner or module.startswith(owner + ".") for owner in owners)


def test_each_section_is_written_only_by_its_owners():
    """A feature's section is written only by the modules its ``owners`` name (read anywhere):
    each write to ``x.<section>`` or ``x.<section>.<key>`` over the package, found by walking its
    syntax, is in one of them."""
    strays = []
    writes = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        for line, section, key in section_writes(ast.parse(path.read_text(), str(path))):
            writes += 1
            if not _owns(module, section):
                strays.append(f"{module}:{line} writes {section}{'.' + key if key else ''}")
    assert not strays, "a section written outside its owners (JobState's section docstrings):\n" + "\n".join(strays)
    assert writes >= 10  # the walk sees the owners' own writes


def test_the_owners_are_modules_that_exist():
    for name, cls in state_module._SECTIONS.items():
        assert cls.owners, name
        for owner in cls.owners:
            base = PACKAGE.parent / owner.replace(".", "/")
            assert base.with_suffix(".py").is_file() or (base / "__init__.py").is_file(), (name, owner)


def test_a_key_of_a_section_is_never_set_on_the_state_itself():
    """``setattr(state, "silence", …)`` would set an attribute ``to_dict`` never writes: a key
    named by string is set on its section (``setattr(state.silencing, "silence", …)``)."""
    keys = {key for key, spec in state_module._KEYS.items() if spec.section is not None}
    strays = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id in ("setattr", "delattr") and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and name.value in keys and _written(node.args[0]) is None:
                    strays.append(f"{_module(path)}:{node.lineno} {node.func.id}(…, {name.value!r})")
    assert not strays, "\n".join(strays)


PLANTED = """
def tamper(state):
    state.skips.consecutive_skips = 0
    state.alerting = None
    state.notifications.notify["sent"] = {}
    state.notifications.ping.update(queue=[])
    setattr(state.silencing, "silence", None)
    setattr(state, "skips", None)
    del state.notifications.notify["x"]
    state.skips.consecutive_skips += 1
    a, state.alerting.anomaly = 1, None
    state.notifications.notify.get("sent")  # a read
    print(state.skips.skipped_since)  # a read
"""


def test_the_walk_sees_each_kind_of_write():
    """What the ownership test would flag in a module that owns nothing, and what it reads past."""
    assert [(s, k) for _, s, k in sorted(section_writes(ast.parse(PLANTED)))] == [
        ("skips", "consecutive_skips"),
        ("alerting", None),
        ("notifications", "notify"),
        ("notifications", "ping"),
        ("silencing", "silence"),
        ("skips", None),
        ("notifications", "notify"),
        ("skips", "consecutive_skips"),
        ("alerting", "anomaly"),
    ]
    assert not _owns("jobrunner.observe.health", "skips") and _owns("jobrunner.notify.throttle", "notifications")


def test_the_design_names_each_section_and_its_keys():
    """docs/design.md's table of the sections: each section, its class and its keys."""
    design = (PACKAGE.parent / "docs" / "design.md").read_text()
    for name, cls in state_module._SECTIONS.items():
        (row,) = [line for line in design.splitlines() if line.startswith(f"| `{name}` (`{cls.__name__}`) |")]
        for key in FILE_KEYS[name]:
            assert f"`{key}`" in row, (name, key)


def test_skips_count_until_a_run_runs(tmp_path):
    """``note_finish`` writes the skips section: each skip counts and remembers since when and who
    held the lock; the next run that runs ends the skipping (the last skip's time stays)."""
    store = StateStore("j", str(tmp_path))
    run = {"exit_code": 75, "started": 100.0, "duration_s": 0.0, "attempts": 0, "outcome": "skipped"}
    store.apply(lambda s: s.note_finish(run_id="a", holder={"pid": 9, "user": "www-data"}, now=110.0, **run))
    skipped = store.apply(lambda s: s.note_finish(run_id="b", now=120.0, **run))
    assert skipped.skips == state_module.SkipState(
        last_skipped=120.0, skipped_since=110.0, consecutive_skips=2, skip_holder={"pid": 9, "user": "www-data"}
    )
    ran = store.apply(lambda s: s.note_finish(**{**run, "run_id": "c", "outcome": "success", "exit_code": 0}))
    assert ran.skips == state_module.SkipState(last_skipped=120.0) and ran.runs == {"skipped": 2, "success": 1}
    assert json.loads(Path(store.path).read_text())["last_skipped"] == 120.0
