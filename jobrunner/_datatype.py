"""``@datatype``: the part of ``@dataclass`` the runtime's data types use, without its start-up cost.

``dataclasses`` writes each class's ``__init__``, ``__repr__``, ``__eq__`` … as source and
compiles it (``exec``) when the class is created: 0.3–1.7 ms a class, 7 ms for the nine
classes on the path of ``jobrunner run``, paid on every timer tick (``bench/startup.py``).
``@datatype`` makes the same methods as closures over the field list, which costs microseconds,
and accepts the same class bodies: annotated fields, defaults, ``dataclasses.field(default=,
default_factory=, init=, repr=, compare=)``, ``frozen=True`` (assignment raises
``dataclasses.FrozenInstanceError``) and ``__post_init__``. Type checkers read it as a
dataclass (``typing.dataclass_transform``). What it does not do (``order=``, ``slots=``,
``kw_only=``, ``InitVar``, inheritance of fields) no data type here needs; ``field_names(cls)`` stands
for ``dataclasses.fields()`` and ``replace(obj, **changes)`` for ``dataclasses.replace()``. Use ``dataclasses`` where a class needs more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, Field, FrozenInstanceError, field
from typing import Any, TypeVar, dataclass_transform, overload

__all__ = ["datatype", "field_names", "replace"]

T = TypeVar("T")


class _Spec:
    __slots__ = ("name", "default", "factory", "init", "repr", "compare")

    def __init__(self, name: str, value: Any) -> None:
        self.name = name
        self.init = self.repr = self.compare = True
        self.default: Any = MISSING
        self.factory: Any = MISSING
        if isinstance(value, Field):
            self.default, self.factory = value.default, value.default_factory
            self.init, self.repr, self.compare = value.init, value.repr, bool(value.compare)
        else:
            self.default = value


def _specs(cls: type) -> list[_Spec]:
    specs: list[_Spec] = []
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        if text.startswith(("ClassVar", "typing.ClassVar")):
            continue
        spec = _Spec(name, cls.__dict__.get(name, MISSING))
        if spec.default is MISSING and spec.factory is MISSING and spec.init:
            if any(s.default is not MISSING or s.factory is not MISSING for s in specs if s.init):
                raise TypeError(f"{cls.__name__}: non-default argument {name!r} follows default argument")
        if spec.default is MISSING and name in cls.__dict__:
            delattr(cls, name)  # a field() without a default: no class attribute, as dataclasses does
        elif spec.default is not MISSING:
            setattr(cls, name, spec.default)
        specs.append(spec)
    return specs


def _build(cls: type[T], frozen: bool) -> type[T]:
    specs = _specs(cls)
    init_names = [s.name for s in specs if s.init]
    accepted = frozenset(init_names)
    shown = [s.name for s in specs if s.repr]
    compared = [s.name for s in specs if s.compare]
    post_init = getattr(cls, "__post_init__", None)
    qualname = cls.__qualname__

    required = frozenset(s.name for s in specs if s.init and s.default is MISSING and s.factory is MISSING)
    optional = [(s.name, s.default, s.factory, s.init) for s in specs if s.name not in required]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        # Straight into the instance's __dict__ (no __setattr__, frozen or not): an object read
        # in bulk (a history of thousands of runs) pays microseconds, not a loop of checks.
        if args:
            if len(args) > len(init_names):
                raise TypeError(f"{qualname}() takes {len(init_names)} positional arguments but {len(args)} were given")
            for name, value in zip(init_names, args, strict=False):
                if name in kwargs:
                    raise TypeError(f"{qualname}() got multiple values for argument {name!r}")
                kwargs[name] = value
        if not accepted.issuperset(kwargs):
            unexpected = next(k for k in kwargs if k not in accepted)
            raise TypeError(f"{qualname}() got an unexpected keyword argument {unexpected!r}")
        if not required.issubset(kwargs):
            missing = next(n for n in init_names if n in required and n not in kwargs)
            raise TypeError(f"{qualname}() missing required argument: {missing!r}")
        values = self.__dict__
        values.update(kwargs)
        for name, default, factory, init in optional:
            if init and name in kwargs:
                continue
            if default is not MISSING:
                values[name] = default
            elif factory is not MISSING:
                values[name] = factory()
            # else: init=False and no default: set by __post_init__
        if post_init is not None:
            self.__post_init__()

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{qualname}({inner})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in compared)

    methods: dict[str, Callable[..., Any] | None] = {"__init__": __init__, "__repr__": __repr__, "__eq__": __eq__}
    if frozen:

        def __setattr__(self: Any, name: str, value: Any) -> None:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")

        def __delattr__(self: Any, name: str) -> None:
            raise FrozenInstanceError(f"cannot delete field {name!r}")

        def __hash__(self: Any) -> int:
            return hash(tuple(getattr(self, n) for n in compared))

        methods.update(__setattr__=__setattr__, __delattr__=__delattr__, __hash__=__hash__)
    else:
        methods["__hash__"] = None  # mutable and compared by value: unhashable, as dataclasses does
    cls.__datatype_fields__ = tuple(s.name for s in specs)  # type: ignore[attr-defined]
    cls.__datatype_init__ = tuple(init_names)  # type: ignore[attr-defined]
    for name, method in methods.items():
        if method is not None:
            method.__qualname__ = f"{qualname}.{name}"
        setattr(cls, name, method)
    return cls


@overload
def datatype(cls: type[T], /) -> type[T]: ...
@overload
def datatype(*, frozen: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(field,))
def datatype(cls: type[T] | None = None, /, *, frozen: bool = False) -> type[T] | Callable[[type[T]], type[T]]:
    """Make ``cls`` a data type: like ``@dataclass`` / ``@dataclass(frozen=True)`` (see the module)."""
    if cls is not None:
        return _build(cls, frozen)
    return lambda c: _build(c, frozen)


def field_names(cls: type) -> tuple[str, ...]:
    """The names of a data type's fields, in declaration order."""
    names: tuple[str, ...] = cls.__dict__["__datatype_fields__"]
    return names


def replace(obj: T, /, **changes: Any) -> T:
    """A new object of ``obj``'s data type with ``changes`` (``dataclasses.replace``): the
    fields taken by ``__init__`` are copied, the others (``init=False``) are made again by
    ``__post_init__``, and every check it makes runs on the result."""
    names: tuple[str, ...] = type(obj).__dict__["__datatype_init__"]
    unknown = set(changes).difference(names)
    if unknown:
        raise TypeError(f"{type(obj).__qualname__} has no field {sorted(unknown)[0]!r} to replace")
    return type(obj)(**{**{name: getattr(obj, name) for name in names}, **changes})
