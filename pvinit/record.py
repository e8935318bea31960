"""Typed records: pvinit's models, without the cost of ``dataclasses`` at boot.

Every model in pvinit (state, run specs, journals, reports ...) is a small
typed record with ``from_dict``/``to_dict``.  They were stdlib dataclasses;
this module replaces them because a device pays for them on every boot:
``import dataclasses`` pulls in ``inspect`` (with ``ast``, ``dis``,
``tokenize``): ~1.3 MiB of the supervisor's resident memory, for as long
as the device runs, and ~7 ms; then each ``@dataclass`` compiles four to
six generated methods (and, for a class without a docstring, calls
``inspect.signature``): ~0.4 ms a class, ~20 ms for the ~50 records the
supervisor imports (docs/benchmarks-history.md).

:func:`record` keeps the part of the dataclass contract pvinit uses --
``frozen``, ``kw_only``, ``eq``, :func:`field` (``default``,
``default_factory``, ``repr``, ``compare``), ``__post_init__`` and
:func:`replace` -- and costs one small ``__init__`` per class, compiled
once the class has been built a few times (before that, a generic one
binds the arguments: most records a boot builds, it builds only once):
``__eq__``, ``__hash__``, ``__repr__`` and the frozen ``__setattr__`` are
shared functions reading the class's field list.  Type checkers see it as
a dataclass through :func:`typing.dataclass_transform` (PEP 681), so mypy
checks constructor calls, field order and frozenness as before; not the
keywords of :func:`replace` (mypy special-cases ``dataclasses.replace``
only), where a wrong one is a TypeError at run time.

Not supported, because nothing here needs them: inheritance between
records, ``init=False`` fields, ordering, ``__slots__``.
"""

from __future__ import annotations

from pvinit.typecheck import TYPE_CHECKING, dataclass_transform, overload

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

_MISSING: Any = type("_Missing", (), {"__repr__": lambda self: "MISSING"})()
"""No default given (``None`` is a valid default)."""


class FrozenRecordError(AttributeError):
    """Assignment to a field of a frozen record (as ``dataclasses.FrozenInstanceError``)."""


class Field:
    """One field of a record: its name and how it is built, compared and shown."""

    __slots__ = ("compare", "default", "default_factory", "kw_only", "name", "repr")

    def __init__(
        self,
        default: Any = _MISSING,
        default_factory: Callable[[], Any] | None = None,
        repr: bool = True,
        compare: bool = True,
    ) -> None:
        if default is not _MISSING and default_factory is not None:
            raise ValueError("a field cannot have both a default and a default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.compare = compare
        self.kw_only = False

    @property
    def has_default(self) -> bool:
        return self.default is not _MISSING or self.default_factory is not None

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


def field(
    *,
    default: Any = _MISSING,
    default_factory: Callable[[], Any] | None = None,
    repr: bool = True,
    compare: bool = True,
) -> Any:
    """Describe a field that needs more than a plain default (as ``dataclasses.field``)."""
    return Field(default, default_factory, repr, compare)


def fields(obj: object) -> tuple[Field, ...]:
    """The fields of a record class or instance, in declaration order."""
    found: tuple[Field, ...] | None = getattr(obj, "__record_fields__", None)
    if found is None:
        raise TypeError(f"{obj!r} is not a record")
    return found


def is_record(obj: object) -> bool:
    return hasattr(obj, "__record_fields__")


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of record *obj* with some fields changed; validation runs again."""
    for record_field in fields(obj):
        if record_field.name not in changes:
            changes[record_field.name] = getattr(obj, record_field.name)
    return obj.__class__(**changes)


@overload
def record(cls: type[T], /) -> type[T]: ...


@overload  # ruff knows overload only from typing: hence the noqa on F811 below
def record(  # noqa: F811
    *, frozen: bool = False, kw_only: bool = False, eq: bool = True
) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(field, Field))
def record(  # noqa: F811
    cls: type[T] | None = None,
    /,
    *,
    frozen: bool = False,
    kw_only: bool = False,
    eq: bool = True,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Make *cls* a record: ``__init__`` from its annotated fields, plus eq/hash/repr.

    Used as ``@record`` or ``@record(frozen=True, kw_only=True)``, exactly
    where ``@dataclass`` would be.
    """

    def wrap(klass: type[T]) -> type[T]:
        return _build(klass, frozen=frozen, kw_only=kw_only, eq=eq)

    return wrap if cls is None else wrap(cls)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar", "Final[ClassVar"))


def _collect(cls: type, kw_only: bool) -> tuple[Field, ...]:
    for base in cls.__mro__[1:]:
        if "__record_fields__" in base.__dict__:
            raise TypeError(f"{cls.__qualname__}: records do not inherit from records")
    found: list[Field] = []
    # Only this class's own annotations, in order (no ``inspect``: see above).
    own_annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    for name, annotation in own_annotations.items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, _MISSING)
        if isinstance(value, Field):
            record_field = value
            if record_field.default is _MISSING:
                delattr(cls, name)  # a factory default is built per instance
            else:
                setattr(cls, name, record_field.default)
        else:
            record_field = Field(default=value)
        record_field.name = name
        record_field.kw_only = kw_only
        found.append(record_field)
    return tuple(found)


def _init_source(record_fields: tuple[Field, ...], frozen: bool, post_init: bool) -> str:
    """Source of ``__init__``: defaults and factories are looked up in its globals."""
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for record_field in record_fields:
        name = record_field.name
        if record_field.default_factory is not None:
            param = f"{name}=_MISSING"
            value = f"_factory_{name}() if {name} is _MISSING else {name}"
        elif record_field.default is not _MISSING:
            param = f"{name}=_default_{name}"
            value = name
        else:
            param = name
            value = name
        (keyword if record_field.kw_only else positional).append(param)
        if frozen:
            body.append(f"  _setattr(self, {name!r}, {value})")
        else:
            body.append(f"  self.{name} = {value}")
    if post_init:
        body.append("  self.__post_init__()")
    params = ["self", *positional]
    if keyword:
        params += ["*", *keyword]
    return f"def __init__({', '.join(params)}) -> None:\n" + ("\n".join(body) or "  pass") + "\n"


def _values(self: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple([getattr(self, name) for name in names])


def _record_eq(self: Any, other: Any) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented  # type: ignore[no-any-return]
    names: tuple[str, ...] = self.__record_compare__
    return _values(self, names) == _values(other, names)


def _record_hash(self: Any) -> int:
    return hash(_values(self, self.__record_compare__))


def _record_repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__record_repr__)
    return f"{self.__class__.__qualname__}({shown})"


def _frozen_setattr(self: Any, name: str, value: object) -> None:
    kind = self.__class__.__name__
    raise FrozenRecordError(f"cannot assign to field {name!r} of a frozen {kind}")


def _frozen_delattr(self: Any, name: str) -> None:
    kind = self.__class__.__name__
    raise FrozenRecordError(f"cannot delete field {name!r} of a frozen {kind}")


def _check_order(cls: type, record_fields: tuple[Field, ...]) -> None:
    """Refuse a positional field without a default after one with (as a def would)."""
    defaulted = False
    for record_field in record_fields:
        if record_field.kw_only:
            continue
        if record_field.has_default:
            defaulted = True
        elif defaulted:
            raise TypeError(
                f"{cls.__qualname__}: non-default field {record_field.name!r} follows a default"
            )


def _compile_init(
    cls: type, record_fields: tuple[Field, ...], *, frozen: bool
) -> Callable[..., None]:
    namespace: dict[str, Any] = {"_MISSING": _MISSING, "_setattr": object.__setattr__}
    for record_field in record_fields:
        namespace[f"_default_{record_field.name}"] = record_field.default
        namespace[f"_factory_{record_field.name}"] = record_field.default_factory
    source = _init_source(record_fields, frozen, post_init=hasattr(cls, "__post_init__"))
    # Generated from field names only (identifiers), as dataclasses does.
    exec(compile(source, f"<record {cls.__qualname__}>", "exec"), namespace)  # noqa: S102
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


INTERPRETED_CALLS = 16
"""Constructions of a record class served by :func:`_bind` before its ``__init__`` is compiled."""


def _bind(
    cls: type, record_fields: tuple[Field, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> list[tuple[str, Any]]:
    """(name, value) of every field for a call ``cls(*args, **kwargs)``, as the compiled init binds.

    Raises TypeError as a def would: too many positional arguments, an
    unknown or repeated keyword, a required field missing.
    """
    qualname = f"{cls.__qualname__}.__init__()"
    positional = [f.name for f in record_fields if not f.kw_only]
    if len(args) > len(positional):
        raise TypeError(f"{qualname} takes {len(positional) + 1} positional arguments "
                        f"but {len(args) + 1} were given")
    given = dict(zip(positional, args, strict=False))  # fewer args than fields: fine
    known = {f.name for f in record_fields}
    for name, value in kwargs.items():
        if name not in known:
            raise TypeError(f"{qualname} got an unexpected keyword argument {name!r}")
        if name in given:
            raise TypeError(f"{qualname} got multiple values for argument {name!r}")
        given[name] = value
    bound: list[tuple[str, Any]] = []
    missing: list[str] = []
    for record_field in record_fields:
        name = record_field.name
        value = given.get(name, _MISSING)
        if value is _MISSING:
            if record_field.default_factory is not None:
                value = record_field.default_factory()
            elif record_field.default is not _MISSING:
                value = record_field.default
            else:
                missing.append(name)
                continue
        bound.append((name, value))
    if missing:
        raise TypeError(f"{qualname} missing {len(missing)} required argument(s): "
                        + ", ".join(repr(name) for name in missing))
    return bound


def _deferred_init(cls: type, record_fields: tuple[Field, ...], *, frozen: bool) -> object:
    """An ``__init__`` that binds generically at first, then compiles the real one.

    Compiling costs ~75 us a class, and a boot builds ~30 record classes
    only a handful of times each (~2 ms of the supervisor's start, issue 3).
    A class built more than :data:`INTERPRETED_CALLS` times gets the
    compiled ``__init__`` in its place, as fast as a dataclass's.
    """
    calls = 0

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls > INTERPRETED_CALLS:
            init = _compile_init(cls, record_fields, frozen=frozen)
            type.__setattr__(cls, "__init__", init)
            init(self, *args, **kwargs)
            return
        assign = object.__setattr__ if frozen else setattr
        for name, value in _bind(cls, record_fields, args, kwargs):
            assign(self, name, value)
        if hasattr(cls, "__post_init__"):
            self.__post_init__()

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _build(cls: type[T], *, frozen: bool, kw_only: bool, eq: bool) -> type[T]:
    record_fields = _collect(cls, kw_only)
    _check_order(cls, record_fields)
    init = _deferred_init(cls, record_fields, frozen=frozen)
    own = cls.__dict__
    attributes: dict[str, Any] = {
        "__record_fields__": record_fields,
        "__record_compare__": tuple(f.name for f in record_fields if f.compare),
        "__record_repr__": tuple(f.name for f in record_fields if f.repr),
        "__match_args__": tuple(f.name for f in record_fields if not f.kw_only),
        "__init__": init,
        "__repr__": _record_repr,
    }
    if eq:
        attributes["__eq__"] = _record_eq
        if "__hash__" not in own or own["__hash__"] is None:
            attributes["__hash__"] = _record_hash if frozen else None
    if frozen:
        if "__setattr__" in own or "__delattr__" in own:
            raise TypeError(f"{cls.__qualname__}: a frozen record cannot define __setattr__")
        attributes["__setattr__"] = _frozen_setattr
        attributes["__delattr__"] = _frozen_delattr
    for name, value in attributes.items():
        if name.startswith("__record_") or name not in own or name == "__hash__":
            setattr(cls, name, value)
    return cls
