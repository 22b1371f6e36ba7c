"""Name -> class registries for pluggable policies, their parameters and collaborators.

Adding a policy is one class and one line::

    @ROUTERS.register("join-shortest-queue", params=JoinShortestQueueParams)
    class JoinShortestQueueRouter(Router): ...

``params`` is the policy's :class:`~sincere.core.params.Params` model (left out: it takes
none) and ``needs`` the collaborators it is handed (:class:`Needs`: a random generator,
a predictor, a step-time model), on top of those every entry of the registry takes.
Lookups of unknown names and duplicate registrations raise, listing the valid names.

:meth:`Registry.build` is the one way to make an entry from config:
``build(name, params, **collaborators)`` checks the parameters (every problem at once,
in one :class:`~sincere.core.params.ParamsError`), checks and completes the
collaborators, and calls ``entry(params=<checked model>, **collaborators)``.
:meth:`Registry.problems` checks without building anything, for config edges that
validate a whole file first. A parameter that names another registered entry (a
router's output-length predictor) is a :class:`Spec` marked with :class:`Uses`, checked
against that registry too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from sincere.core.errors import ConfigError
from sincere.core.params import (
    NoParams,
    Params,
    Problem,
    Spec,
    Uses,
    check_params,
    format_loc,
    param_rows,
    raise_problems,
)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Needs:
    """A collaborator an entry is handed: an object passed to ``build`` by keyword.

    When the caller does not pass it, ``default`` makes one from the checked parameters
    (e.g. the predictor a router's parameters name); without a default it is required,
    unless ``optional`` (then the class's own default applies).
    """

    name: str  # the constructor's keyword
    kind: type[Any] | tuple[type[Any], ...]  # what it must be an instance of
    what: str  # what it is, in words (errors, docs)
    default: Callable[[Any], object] | None = None  # makes one from the checked params
    optional: bool = False  # may be left out without a default


def build_spec(registry: Registry[Callable[..., R]], spec: Spec, **collaborators: object) -> R:
    """The entry ``spec`` names, built by ``registry``."""
    return registry.build(spec.name, spec.params, **collaborators)


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    obj: T
    params: type[Params] | None
    needs: tuple[Needs, ...]


class Registry(Generic[T]):
    """A named collection of policy classes (or factories) with their parameter models."""

    def __init__(self, kind: str, *, needs: Sequence[Needs] = ()) -> None:
        self.kind = kind
        self.needs_all = tuple(needs)  # collaborators every entry takes
        self._entries: dict[str, _Entry[T]] = {}

    def register(
        self, name: str, *, params: type[Params] | None = None, needs: Sequence[Needs] = ()
    ) -> Callable[[T], T]:
        """Decorator adding ``obj`` under ``name``; a taken name raises ``ConfigError``.

        ``obj`` is called as ``obj(params=<checked params>, **collaborators)``, without
        ``params`` when it declares none.
        """

        def add(obj: T) -> T:
            if name in self._entries:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = _Entry(obj, params, (*self.needs_all, *needs))
            return obj

        return add

    def _entry(self, name: str) -> _Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind}", value=name, allowed=sorted(self._entries)
            ) from None

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises, listing the known ones."""
        return self._entry(name).obj

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def params_model(self, name: str) -> type[Params]:
        """The parameter model of ``name`` (:class:`NoParams` when it takes none)."""
        return self._entry(name).params or NoParams

    def param_names(self, name: str) -> list[str]:
        """The parameters ``name`` takes, in declaration order."""
        return list(self.params_model(name).model_fields)

    def needs(self, name: str) -> tuple[Needs, ...]:
        """The collaborators ``name`` is handed."""
        return self._entry(name).needs

    def label(self, name: str) -> str:
        """How errors name an entry: ``router 'power-of-two'``."""
        return f"{self.kind} {name!r}"

    # --- checking ---------------------------------------------------------------------

    def problems(
        self, name: str, params: object = None, *, name_at: str = "", params_at: str = ""
    ) -> list[Problem]:
        """Every problem with entry ``name`` and its ``params``; builds nothing.

        ``name_at`` and ``params_at`` are the config paths of the name and of the
        parameters' mapping (each problem's path starts with them).
        """
        return self._check(name, params, name_at, params_at)[1]

    def validate(
        self, name: str, params: object = None, *, name_at: str = "", params_at: str = ""
    ) -> Params:
        """The checked parameters of ``name``; raises one ``ParamsError`` listing every problem."""
        model, problems = self._check(name, params, name_at, params_at)
        raise_problems(problems, f"invalid {self.label(name)} parameters")
        assert model is not None  # no problems: the model was made
        return model

    def _check(
        self, name: str, params: object, name_at: str, params_at: str
    ) -> tuple[Params | None, list[Problem]]:
        if name not in self._entries:
            return None, [Problem(name_at, f"unknown {self.kind}", name, ", ".join(self.names()))]
        cls = self.params_model(name)
        model, problems = check_params(cls, params, self.label(name), params_at)
        if isinstance(params, Mapping):
            problems += _nested_problems(cls, params, params_at)
        return (model if not problems else None), problems

    # --- building ---------------------------------------------------------------------

    @overload
    def build(
        self: Registry[type[R]],
        name: str,
        params: object = None,
        where: str = "",
        /,
        **collaborators: object,
    ) -> R: ...

    @overload
    def build(
        self: Registry[Callable[..., R]],
        name: str,
        params: object = None,
        where: str = "",
        /,
        **collaborators: object,
    ) -> R: ...

    def build(
        self, name: str, params: object = None, where: str = "", /, **collaborators: object
    ) -> Any:
        """Entry ``name`` made from ``params`` (a mapping or its checked model).

        Raises ``ConfigError``: an unknown name, every problem with the parameters at
        once (paths under ``where``), a collaborator missing, unknown or of the wrong
        kind, or one given both as an object and as a parameter naming one.
        """
        entry = self._entry(name)
        checked = self.validate(name, params, params_at=where)
        kwargs = self._collaborators(name, entry, checked, collaborators)
        if entry.params is not None:
            kwargs["params"] = checked
        obj: Any = entry.obj
        return obj(**kwargs)

    def _collaborators(
        self, name: str, entry: _Entry[T], checked: Params, given: Mapping[str, object]
    ) -> dict[str, object]:
        known = [n.name for n in entry.needs]
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise ConfigError(
                f"{self.label(name)} takes no collaborator", value=unknown, allowed=known or "none"
            )
        out: dict[str, object] = {}
        for need in entry.needs:
            if need.name in given:
                out[need.name] = self._given(name, need, checked, given[need.name])
            elif need.default is not None:
                out[need.name] = need.default(checked)
            elif not need.optional:
                raise ConfigError(
                    f"{self.label(name)} needs {need.what} as {need.name!r}; none was given"
                )
        return out

    def _given(self, name: str, need: Needs, checked: Params, obj: object) -> object:
        if not isinstance(obj, need.kind):
            raise ConfigError(
                f"{self.label(name)}: collaborator {need.name!r} must be {need.what}",
                value=type(obj).__name__,
            )
        if need.name in checked.model_fields_set:
            raise ConfigError(
                f"{self.label(name)}: {need.name!r} given both as an object and as a "
                "parameter naming one",
                value=str(getattr(checked, need.name)),
                allowed="one of the two",
            )
        return obj

    def split(
        self, name: str, values: Mapping[str, object]
    ) -> tuple[dict[str, object], dict[str, object]]:
        """``values`` as ``(params, collaborators)``: a key that names a collaborator of
        ``name`` and holds an object of its kind is a collaborator, anything else a
        parameter (so ``length_predictor="max-tokens"`` stays a parameter)."""
        kinds = {n.name: n.kind for n in self.needs(name)}
        params: dict[str, object] = {}
        collaborators: dict[str, object] = {}
        for key, value in values.items():
            is_object = key in kinds and isinstance(value, kinds[key])
            (collaborators if is_object else params)[key] = value
        return params, collaborators

    # --- docs -------------------------------------------------------------------------

    def param_rows(self, name: str) -> list[tuple[str, str, str, str]]:
        """``(parameter, allowed, default, meaning)`` of each parameter of ``name``."""
        return param_rows(self.params_model(name))


def _nested_problems(cls: type[Params], params: Mapping[Any, Any], params_at: str) -> list[Problem]:
    """Problems of the :class:`Spec` fields of ``params`` against the registries they use."""
    out = []
    for field_name, field in cls.model_fields.items():
        uses = [m for m in field.metadata if isinstance(m, Uses)]
        raw = params.get(field_name)
        if not uses or raw is None:
            continue
        at = format_loc((field_name,), params_at) if params_at else field_name
        if isinstance(raw, str):
            out += uses[0].registry.problems(raw, {}, name_at=at)
        elif (
            isinstance(raw, Mapping)
            and isinstance(raw.get("name"), str)
            and isinstance(raw.get("params", {}), Mapping)
        ):
            out += uses[0].registry.problems(
                raw["name"], raw.get("params"), name_at=f"{at}.name", params_at=f"{at}.params"
            )
    return out
