"""Hyperparameter declarations: one dataclass per method is its parameter list, defaults, types and ranges.

A method declares

    @dataclass(frozen=True)
    class SVRParams:
        C: float = param(1.0, gt=0, help="SVR regularisation")
        search: str = param("none", choices=("none", "grid"))

    class MySVR(Method):
        params = SVRParams

and the harness reads it with `declaration(MySVR.params)`: every `--set`, variant and
per-dataset default is coerced to the declared type and checked against the range
or choices while the run is planned, before any work, with the allowed values in the
message (`method.C: must be a number > 0; got -1.0`).  Subclasses extend a declaration
by subclassing the dataclass; `with_defaults` changes inherited defaults and keeps their
ranges.  `from_config` builds another dataclass (a trainer's or a model's configuration)
from the resolved parameters whose names are its fields, so a hyperparameter is declared
once and read once.  A plain dict of defaults (older plugins) still works: its types
come from the defaults and it has no ranges.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from agiqa_bench.errors import ConfigError

_KEY = "agiqa_bench.param"
T = TypeVar("T")


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its default and what values it takes."""

    name: str
    default: Any
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple | None = None
    help: str = ""

    @property
    def kind(self) -> type | None:
        """bool, int, float or str from the default (None: anything, e.g. a default of None)."""
        d = self.default
        for t in (bool, int, float, str):
            if isinstance(d, t):
                return t
        return None

    def allowed(self) -> str:
        """The allowed values in words: 'one of a, b', '> 0', 'in [0, 1]', 'a float'."""
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        low = f"> {self.gt:g}" if self.gt is not None else (f">= {self.ge:g}" if self.ge is not None else "")
        high = f"< {self.lt:g}" if self.lt is not None else (f"<= {self.le:g}" if self.le is not None else "")
        bounds = " and ".join(b for b in (low, high) if b)
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(self.kind, "any value")
        return f"{kind} {bounds}".strip()

    def check(self, value: Any, where: str | None = None) -> Any:
        """`value` (a CLI string or a Python value) converted to the declared type and checked; `where` (default:
        the parameter's name) starts the error message."""
        where = self.name if where is None else where
        value = self._convert(value, where)
        if self.choices is not None:
            if value not in self.choices:
                raise ConfigError(f"{where}: must be {self.allowed()}; got {value!r}")
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{where}: must be a finite number ({self.allowed()}); got {value!r}")
            for bound, ok in ((self.gt, lambda b: value > b), (self.ge, lambda b: value >= b),
                              (self.lt, lambda b: value < b), (self.le, lambda b: value <= b)):
                if bound is not None and not ok(bound):
                    raise ConfigError(f"{where}: must be {self.allowed()}; got {value!r}")
        return value

    def _convert(self, value: Any, where: str) -> Any:
        kind = self.kind
        if kind is None or value is None and self.default is None:
            return value
        if isinstance(value, str) and kind is not str:
            text = value.strip()
            try:
                if kind is bool:
                    low = text.lower()
                    if low in ("1", "true", "yes", "on"):
                        return True
                    if low in ("0", "false", "no", "off"):
                        return False
                    raise ValueError(text)
                if kind is int:
                    return int(text)
                return float(text)
            except ValueError:
                raise ConfigError(f"{where}: cannot read {value!r} as {self.allowed()}") from None
        # a Python value (a variant, a dataset default) is checked, not converted: its stored form stays as written
        if kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{where}: must be true or false; got {value!r}")
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            if not (isinstance(value, float) and value.is_integer()):
                raise ConfigError(f"{where}: must be {self.allowed()}; got {value!r}")
        if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ConfigError(f"{where}: must be {self.allowed()}; got {value!r}")
        return value


def param(default: Any, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
          le: float | None = None, choices: tuple | None = None, help: str = "") -> Any:
    """A dataclass field declaring a hyperparameter (see the module docstring)."""
    meta = {"gt": gt, "ge": ge, "lt": lt, "le": le, "choices": tuple(choices) if choices is not None else None,
            "help": help}
    return dataclasses.field(default=default, metadata={_KEY: meta})


def with_defaults(**changes: Any) -> Callable[[type[T]], type[T]]:
    """Class decorator, under `@dataclass`: the subclass's inherited parameters `changes` get new defaults,
    keeping their declared ranges, choices and help.

        @dataclass(frozen=True)
        @with_defaults(epochs=16, lr=2e-5)
        class HyperIQAParams(DeepIQAParams):
            backbone_weights: str = param("imagenet", help="...")
    """

    def wrap(cls: type[T]) -> type[T]:
        inherited: dict[str, dataclasses.Field] = {}
        for base in reversed(cls.__mro__[1:]):
            if dataclasses.is_dataclass(base):
                inherited.update({f.name: f for f in dataclasses.fields(base)})
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for name, default in changes.items():
            if name not in inherited:
                raise TypeError(f"{cls.__name__}: with_defaults({name}=...) names no inherited parameter")
            if name in annotations:
                raise TypeError(f"{cls.__name__}: {name} is declared in the class and in with_defaults")
            base_field = inherited[name]
            annotations[name] = base_field.type
            setattr(cls, name, dataclasses.field(default=default, metadata=base_field.metadata))
        cls.__annotations__ = annotations
        return cls

    return wrap


def from_config(target: type[T], config: Mapping[str, Any], **changes: Any) -> T:
    """An instance of the dataclass `target` from the entries of `config` named like its fields, each converted to
    the type of the field's default (bool, int or float; text and other values as they are), then `changes` as
    given.  Fields that `config` lacks keep their defaults."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(target):  # type: ignore[arg-type]
        if f.name not in config or not f.init:
            continue
        value, default = config[f.name], f.default
        for kind in (bool, int, float):
            if isinstance(default, kind):
                value = kind(value)
                break
        values[f.name] = value
    values.update(changes)
    return target(**values)


@dataclass(frozen=True)
class NoParams:
    """The declaration of a method without hyperparameters."""


def declaration(params: Any) -> dict[str, Param]:
    """name -> Param of a method's `params`: a dataclass type (or instance), or a dict of defaults."""
    if dataclasses.is_dataclass(params):
        out = {}
        for f in dataclasses.fields(params):
            meta = f.metadata.get(_KEY, {})
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            out[f.name] = Param(f.name, default, **meta)
        return out
    if isinstance(params, Mapping):
        return {k: Param(k, v) for k, v in params.items()}
    raise TypeError(f"a method's params must be a dataclass or a dict of defaults, not {type(params).__name__}")


def defaults(params: Any) -> dict[str, Any]:
    """The default of every declared parameter."""
    return {name: p.default for name, p in declaration(params).items()}
