"""Typed parameters of pluggable policies, and the problems found when checking them.

Every registered router, scheduler, batching rule, predictor and step-time model
declares its parameters as a :class:`Params` model beside its class: a frozen pydantic
model that forbids unknown keys and is strict about types (a number is neither a string
nor a bool, an integer is not a float), with units in each field's description and
ranges as constraints. Parameters are checked once, at the config edge
(:meth:`sincere.core.registry.Registry.validate`); the class then copies the checked
values into plain attributes, so no pydantic runs while a policy decides.

A check yields :class:`Problem` s -- one per bad value, each with its config path, what
is wrong, the value and what is allowed -- and :class:`ParamsError` is the one
:class:`~sincere.core.errors.ConfigError` that lists them all.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar, Union

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic.fields import FieldInfo

from sincere.core.errors import ConfigError

_MAX_VALUE_CHARS = 60


class Params(BaseModel):
    """Base of every parameter model: frozen, no unknown keys, strict types, finite numbers.

    Fields that hold several values (tuples) also accept lists, as YAML writes them;
    a field that may be infinite says so with ``Field(allow_inf_nan=True)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class NoParams(Params):
    """The parameters of a policy that takes none."""


class _Named(Protocol):
    """What a :class:`Spec` field needs of the registry it names entries of."""

    kind: str

    def names(self) -> list[str]: ...

    def problems(
        self, name: str, params: object = None, *, name_at: str = "", params_at: str = ""
    ) -> list[Problem]: ...


@dataclass(frozen=True, slots=True)
class Uses:
    """Field metadata: this :class:`Spec` names an entry of ``registry``."""

    registry: _Named  # a sincere.core.registry.Registry


class Spec(Params):
    """A registered entry chosen in config: its name, or ``{name: ..., params: {...}}``.

    Mark the field with :class:`Uses` so the registry checks the name and parameters.
    """

    name: str
    params: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    def __str__(self) -> str:
        return self.name if not self.params else f"{self.name} {self.params}"


def format_loc(loc: Sequence[int | str], prefix: str | None = None) -> str:
    """A dotted field path: ``("tiers", 1, "name")`` -> ``tiers[1].name``."""
    text = prefix or ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def short_repr(value: object) -> str:
    """``repr(value)``, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


_NO_VALUE: Any = object()


@dataclass(frozen=True, slots=True)
class Problem:
    """One bad value found in a config."""

    where: str  # config path of the value ("" when the caller gave none)
    message: str  # what is wrong, naming the policy and the parameter
    value: object = _NO_VALUE  # what was given (left out when nothing was)
    allowed: str | None = None  # what would be accepted

    @property
    def has_value(self) -> bool:
        """Whether the problem carries the bad value."""
        return self.value is not _NO_VALUE

    def line(self) -> str:
        """``where: message; got value; allowed: ...`` (parts that are unknown left out)."""
        parts = [f"{self.where}: {self.message}" if self.where else self.message]
        if self.has_value:
            parts.append(f"got {short_repr(self.value)}")
        if self.allowed:
            parts.append(f"allowed: {self.allowed}")
        return "; ".join(parts)


class ParamsError(ConfigError):
    """Policy parameters are invalid: every problem found, one line each (``problems``)."""

    def __init__(
        self,
        problems: Sequence[Problem],
        title: str = "invalid policy parameters",
        source: str | Path | None = None,
    ) -> None:
        self.problems = tuple(problems)
        if len(self.problems) == 1:
            text = self.problems[0].line()
            text = f"{source}: {text}" if source is not None else text
        else:
            lines = [p.line() for p in self.problems]
            head = f"{source}: {title}" if source is not None else title
            text = "\n  ".join([f"{head} ({len(lines)} problems)", *lines])
        super().__init__(text)
        if len(self.problems) == 1:
            first = self.problems[0]
            self.where = first.where or None
            self.value = first.value if first.has_value else None
            self.allowed = first.allowed


def raise_problems(
    problems: Sequence[Problem],
    title: str = "invalid policy parameters",
    source: str | Path | None = None,
) -> None:
    """Raise :class:`ParamsError` listing ``problems``; nothing when there are none."""
    if problems:
        raise ParamsError(problems, title, source)


# --- what a field allows, in words (errors and the docs tables) -------------------------

_OPS = (
    (annotated_types.Ge, "ge", ">="),
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "<="),
    (annotated_types.Lt, "lt", "<"),
)


def _bounds(metadata: Iterable[object]) -> tuple[list[str], int | None]:
    """Comparison phrases (``>= 1``) and a minimum length found in field metadata."""
    found: list[str] = []
    min_length = None
    for item in metadata:
        parts = item.metadata if isinstance(item, FieldInfo) else [item]
        for part in parts:
            for cls, attr, op in _OPS:
                if isinstance(part, cls):
                    found.append(f"{op} {getattr(part, attr):g}")
            if isinstance(part, annotated_types.MinLen):
                min_length = part.min_length
    return found, min_length


def _noun(tp: Any, plural: bool) -> str:
    """What values of the plain type ``tp`` are called."""
    names = {
        bool: ("true or false", "booleans"),
        int: ("an integer", "integers"),
        float: ("a number", "numbers"),
        str: ("a string", "strings"),
        Path: ("a file path", "file paths"),
    }
    if tp in names:
        return names[tp][1 if plural else 0]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        keys = ", ".join(tp.model_fields)
        return f"mappings of {keys}" if plural else f"a mapping of {keys}"
    return "values" if plural else "a value"


def describe(annotation: Any, metadata: Sequence[object] = (), *, plural: bool = False) -> str:
    """What a field with this annotation and metadata allows, in words."""
    uses = [m for m in metadata if isinstance(m, Uses)]
    if uses:
        names = ", ".join(uses[0].registry.names())
        return f"{uses[0].registry.kind} {names} (a name, or {{name, params}})"
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return describe(args[0], [*metadata, *args[1:]], plural=plural)
    if origin in (Union, types.UnionType):
        options = [describe(a, metadata, plural=plural) for a in args if a is not type(None)]
        text = " or ".join(options)
        return f"{text}, or null" if type(None) in args else text
    if origin is Literal:
        return ", ".join(sorted(str(a) for a in args))
    bounds, min_length = _bounds(metadata)
    if origin in (tuple, list, Sequence):
        item = describe(args[0], (), plural=True) if args else "values"
        size = "non-empty list" if min_length else "list"
        return f"{size}s of {item}" if plural else f"a {size} of {item}"
    if origin in (dict, Mapping):
        return f"a mapping of names to {describe(args[1], (), plural=True)}"
    text = _noun(annotation, plural)
    return f"{text} {' and '.join(bounds)}" if bounds else text


def allowed_of(field: FieldInfo) -> str:
    """What ``field`` allows, in words (its type, range and choices), unless the field
    says it itself (``json_schema_extra={"allowed_text": ...}``)."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "allowed_text" in extra:
        return str(extra["allowed_text"])
    return describe(field.annotation, field.metadata)


def default_text(field: FieldInfo) -> str:
    """A field's default as the docs show it (``required`` when it has none)."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "default_text" in extra:
        return str(extra["default_text"])
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "{}"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value) or "[]"
    return str(value)


def param_rows(model: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    """``(parameter, allowed, default, meaning)`` of each field of ``model``, in order."""
    return [
        (name, allowed_of(field), default_text(field), field.description or "")
        for name, field in model.model_fields.items()
    ]


# --- checking a mapping against a model ----------------------------------------------

P = TypeVar("P", bound=Params)


def check_params(
    cls: type[P], params: object, label: str, params_at: str = ""
) -> tuple[P | None, list[Problem]]:
    """``params`` (a mapping, ``None`` for none, or a ``cls`` instance) checked as ``cls``.

    Returns the model, or ``None`` and every problem found. ``label`` names the policy
    in the messages (``router 'power-of-two'``), ``params_at`` is the config path of the
    mapping. Specs among the fields are not followed (the registry does that).
    """
    if isinstance(params, cls):
        return params, []
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        message = f"parameters of {label} must be a mapping"
        return None, [Problem(params_at, message, params, ", ".join(cls.model_fields) or "{}")]
    try:
        return cls.model_validate(dict(params)), []
    except ValidationError as exc:
        return None, problems_of(exc, cls, label, params_at)


def validated(cls: type[P], params: object, label: str, params_at: str = "") -> P:
    """:func:`check_params`'s model; raises one ``ParamsError`` listing every problem."""
    checked, problems = check_params(cls, params, label, params_at)
    raise_problems(problems, f"invalid {label} parameters")
    assert checked is not None  # no problems: the model was made
    return checked


def params_from(cls: type[P], params: P | None, values: Mapping[str, Any], label: str) -> P:
    """``params``, or a ``cls`` made from keyword ``values``: what a constructor that takes
    either its parameter model or the model's fields as keywords uses.

    Raises ``ConfigError`` listing every problem, or when both are given.
    """
    if params is not None:
        if values:
            raise ConfigError(
                f"{label}: give parameters as {cls.__name__} or as keywords, not both",
                value=sorted(values),
            )
        return params
    return validated(cls, values, label)


# --- pydantic's errors as problems ---------------------------------------------------


def _message(err: Mapping[str, Any]) -> str:
    """Pydantic's message, shortened: ``should be >= 1``."""
    msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    msg = msg.replace("Input should be", "should be")
    for words, op in (
        ("greater than or equal to", ">="),
        ("less than or equal to", "<="),
        ("greater than", ">"),
        ("less than", "<"),
    ):
        msg = msg.replace(words, op)
    return msg


def problems_of(
    exc: ValidationError, model: type[BaseModel], label: str, params_at: str = ""
) -> list[Problem]:
    """The problems in ``exc``, raised validating ``model`` for the policy ``label``.

    ``label`` names the policy (``router 'power-of-two'``); ``params_at`` is the config
    path of the parameters' mapping, prefixed to every problem's path.
    """
    fields = model.model_fields
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err.get("loc", ()))
        kind = err.get("type")
        field = fields.get(str(loc[0])) if loc else None
        allowed = allowed_of(field) if field is not None else None
        if kind == "extra_forbidden":
            out.append(
                Problem(
                    params_at,
                    f"unknown parameter for {label}",
                    loc[-1] if loc else None,
                    ", ".join(fields) or "none",
                )
            )
        elif kind == "missing":
            where = format_loc(loc, params_at) if params_at else ""
            out.append(
                Problem(where, f"{label} needs parameter {format_loc(loc)}", allowed=allowed)
            )
        else:
            where = format_loc(loc, params_at) if params_at and loc else params_at
            name = f"parameter {format_loc(loc)} " if loc else "parameters: "
            out.append(Problem(where, f"{label} {name}{_message(err)}", err.get("input"), allowed))
    return out
