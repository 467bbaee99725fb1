"""The method registry: lookup, variants and listing of the `MethodSpec`s that methods declare.

The registry knows no method by name.  Every method module declares its own
spec beside its class (`SPEC = MethodSpec(...)`, or `SPECS = [...]` for a
module with several), and is registered through the entry-point group
`agiqa_bench.methods` - the built-ins in this project's `pyproject.toml`,
third-party methods in theirs, the same way:

    [project.entry-points."agiqa_bench.methods"]
    mymethod = "my_package.my_method:SPEC"

An entry point names a `MethodSpec`, a list of them, or a callable returning
either.  Specs are collected once per process and cached.  A method module
keeps its heavy imports (torch, model libraries) inside functions, so listing
specs imports no model code; `create_method` imports the class on demand.

An entry point may also name a `SpecFamily`: methods spelled `prefix:member`
whose members another library lists (pyiqa's metrics: `pyiqa:musiq`).  The
registry knows only the prefix; when a `prefix:member` name is used it asks the
family for that member's spec (cached), so nothing enumerates or imports the
library until a member is named.  Family members take part in everything a
name does (variants aside: `prefix:member.variant` is refused by the member's
spec, which declares none), but `list_methods()` leaves them out unless asked
(`families=True`): they are the library's to list.

Names: `method` or `method.variant` (variants are parameter overrides declared
in the spec, like timm's weight tags); aliases resolve to the canonical name;
a spec with `canonical_variant` resolves its bare name to that variant.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import inspect
import warnings
from importlib import metadata
from typing import Any

from agiqa_bench.errors import ConfigError
from agiqa_bench.method import FAMILY_SEPARATOR, Method, MethodContext, MethodSpec, SpecFamily, Weights, resolve_params

ENTRY_POINT_GROUP = "agiqa_bench.methods"
#: Listing order of the table families (the paper's Table 1 sections, then Table 2's; "" = other).
FAMILY_ORDER = ("ours", "handcrafted", "svr", "deep", "correspondence", "alignment", "")


#: Specs added at run time with `register` (notebooks, tests); treated like plugins.
_registered: list[MethodSpec] = []


def register(*specs: MethodSpec) -> None:
    """Add specs in this process, as an installed plugin would (for notebooks and tests)."""
    _registered.extend(specs)
    refresh()


def _load_entry_point(ep) -> list[MethodSpec | SpecFamily]:
    obj = ep.load()
    if callable(obj) and not isinstance(obj, (MethodSpec, SpecFamily)):
        obj = obj()
    found = [obj] if isinstance(obj, (MethodSpec, SpecFamily)) else list(obj)
    return [s for s in found if isinstance(s, (MethodSpec, SpecFamily))]


@functools.cache
def _entries() -> tuple[tuple[MethodSpec, ...], tuple[SpecFamily, ...]]:
    """(specs, families) of every entry point, loaded once; the project's own first, then plugins."""
    own, plugins = [], []
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            found = _load_entry_point(ep)
        except Exception as exc:  # a broken plugin must not break the harness
            warnings.warn(f"method plugin {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=3)
            continue
        dist = getattr(getattr(ep, "dist", None), "name", "") or ""
        (own if dist.replace("_", "-") == "agiqa-bench" else plugins).append(found)
    loaded = [entry for found in own + plugins + [list(_registered)] for entry in found]
    families: dict[str, SpecFamily] = {}
    for family in (e for e in loaded if isinstance(e, SpecFamily)):
        if family.prefix in families:
            warnings.warn(f"method family {family.prefix!r} ignored: the prefix is already registered", stacklevel=3)
            continue
        families[family.prefix] = family
    return tuple(e for e in loaded if isinstance(e, MethodSpec)), tuple(families.values())


def families() -> tuple[SpecFamily, ...]:
    """Every registered method family (`prefix:member` names)."""
    return _entries()[1]


def _family_of(name: str) -> tuple[SpecFamily, str] | None:
    """(family, member) when `name` is spelled `prefix:member` with a registered prefix."""
    prefix, sep, member = name.partition(FAMILY_SEPARATOR)
    if not sep:
        return None
    for family in families():
        if family.prefix == prefix:
            return family, member
    return None


@functools.cache
def _member_spec(name: str) -> MethodSpec:
    """The spec of a family member (`prefix:member`), asked of its family once per process."""
    family, member = _family_of(name)
    spec = family.spec(member)
    if spec.name != name:
        raise ConfigError(f"method family {family.prefix!r} answered {name!r} with a spec named {spec.name!r}")
    return spec


@functools.cache
def all_specs() -> tuple[MethodSpec, ...]:
    """Every registered spec (cached): the project's own entry points first, then plugins.

    Listed by table family (`FAMILY_ORDER`), then by name; a plugin may not take a name already taken.
    Family members (`prefix:member`) are not among them: see `get_spec` and `list_methods(families=True)`.
    """
    specs: list[MethodSpec] = []
    taken: set[str] = set()
    for spec in _entries()[0]:
        names = {spec.name, *spec.aliases}
        if names & taken:
            warnings.warn(f"method {spec.name!r} ignored: the name is already registered", stacklevel=2)
            continue
        specs.append(spec)
        taken |= names
    rank = {family: i for i, family in enumerate(FAMILY_ORDER)}
    return tuple(sorted(specs, key=lambda s: (rank.get(s.family, len(rank)), s.name)))


def refresh() -> None:
    """Forget the cached specs (after installing a plugin in a running process; tests)."""
    _entries.cache_clear()
    all_specs.cache_clear()
    _by_name.cache_clear()
    _member_spec.cache_clear()


@functools.cache
def _by_name() -> dict[str, MethodSpec]:
    table: dict[str, MethodSpec] = {}
    for spec in all_specs():
        table[spec.name] = spec
        for alias in spec.aliases:
            table[alias] = spec
    return table


def split_name(name: str) -> tuple[str, str | None]:
    """'name.variant' -> ('name', 'variant'); 'name' -> ('name', None).

    The longest registered prefix wins, so a canonical name may itself contain a
    dot ('a.b' registered: 'a.b.c' is variant 'c' of 'a.b') and a variant may too.
    A family member (`prefix:member`) counts as registered when its family knows the member.
    """
    table = _by_name()
    parts = name.split(".")
    member_of = _family_of(name)
    for cut in range(len(parts), 0, -1):
        base = ".".join(parts[:cut])
        if base in table:
            return base, (".".join(parts[cut:]) or None)
        if member_of is not None:
            _, member = _family_of(base) or (None, "")
            if member and member_of[0].knows(member):
                return base, (".".join(parts[cut:]) or None)
    base, _, variant = name.partition(".")
    return base, (variant or None)


def get_spec(name: str) -> tuple[MethodSpec, str | None]:
    """The spec and variant for a (possibly aliased) `method[.variant]` name."""
    base, variant = split_name(name.strip())
    table = _by_name()
    if base in table:
        spec = table[base]
    elif _family_of(base) is not None:
        spec = _member_spec(base)  # the family refuses an unknown member in its own words
    else:
        close = ", ".join(sorted(n for n in table if n[:2] == base[:2])) or ", ".join(sorted(table))
        prefixes = "".join(f"; or {f.prefix}{FAMILY_SEPARATOR}<member>" for f in families())
        raise ConfigError(f"unknown method {name!r}. Known methods: {close}{prefixes}. See `agiqa-bench methods`.")
    if variant is None:
        variant = spec.canonical_variant
    if variant is not None and variant not in spec.variants:
        known = ", ".join(f"{spec.name}.{v}" for v in spec.variants) or "none"
        raise ConfigError(f"method {spec.name!r} has no variant {variant!r}; its variants: {known}")
    return spec, variant


def canonical_name(name: str) -> str:
    spec, variant = get_spec(name)
    return spec.name if variant is None else f"{spec.name}.{variant}"


def list_methods(pattern: str | None = None, *, families: bool = False) -> list[str]:
    """Canonical names of every method and variant, optionally filtered by a glob.

    `families=True` adds every member of every method family (`pyiqa:musiq`, ...), which may import the
    library that lists them.
    """
    names: list[str] = []
    for spec in all_specs():
        if spec.canonical_variant is None:
            names.append(spec.name)
        names.extend(f"{spec.name}.{v}" for v in spec.variants)
    if families:
        names.extend(family.full_name(member) for family in _entries()[1] for member, _ in family.members())
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def default_methods() -> list[str]:
    """What `agiqa-bench run` runs when no --methods is given."""
    names: list[str] = []
    for spec in all_specs():
        if spec.default_run:
            names.extend([f"{spec.name}.{v}" for v in spec.default_variants] or [canonical_name(spec.name)])
    return names


def load_class(spec: MethodSpec) -> type[Method]:
    module_name, _, attr = spec.factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"method {spec.name!r} cannot be imported from {module_name}: {exc}") from exc
    return getattr(module, attr)


def layered_config(name: str, overrides: dict[str, Any] | None = None, dataset: str | None = None) -> dict[str, Any]:
    """Parameter overrides in precedence order: dataset defaults < variant < user overrides."""
    spec, variant = get_spec(name)
    merged = dict(spec.dataset_defaults.get(dataset, {})) if dataset else {}
    merged.update(spec.variants.get(variant, {}) if variant else {})
    merged.update(overrides or {})
    return merged


def method_params(name: str, overrides: dict[str, Any] | None = None, dataset: str | None = None) -> dict[str, Any]:
    """Resolved hyperparameters of `name` (dataset defaults and variant applied), without building it."""
    spec, _ = get_spec(name)
    return resolve_params(canonical_name(name), load_class(spec).params, layered_config(name, overrides, dataset))


def build_method(name: str, config: dict[str, Any], context: MethodContext | None = None) -> Method:
    """A method from an already resolved configuration (what a plan's `MethodRun` holds)."""
    spec, _ = get_spec(name)
    return load_class(spec)(spec, config, context, name=canonical_name(name))


def create_method(name: str, overrides: dict[str, Any] | None = None, context: MethodContext | None = None,
                  dataset: str | None = None) -> Method:
    """Build a method by name: `create_method('name.variant', {'param': value})`."""
    dataset = dataset if dataset is not None else (context.dataset if context else None)
    return build_method(name, method_params(name, overrides, dataset), context)


def spec_weights(spec: MethodSpec, variant: str | None) -> tuple[Weights, ...]:
    """The weights entries that apply to a variant (entries without `variants` apply to all)."""
    return tuple(w for w in spec.weights if not w.variants or (variant or "") in w.variants)


def weights_status(spec: MethodSpec, params: dict[str, Any] | None = None,
                   variant: str | None = None, *, thorough: bool = False) -> list[tuple[Weights, bool | None]]:
    """(weights, available?) for each weights file the method needs; None = cannot tell.

    The checks are file-existence checks; `thorough` lets a check that supports it
    (a `thorough` parameter) ask its model library where a hub tag lives.
    """
    out: list[tuple[Weights, bool | None]] = []
    for w in spec_weights(spec, variant):
        ok: bool | None = None
        if w.check:
            module_name, _, attr = w.check.partition(":")
            try:
                check = getattr(importlib.import_module(module_name), attr)
                kwargs = {"thorough": True} if thorough and "thorough" in inspect.signature(check).parameters else {}
                found = check(params or {}, **kwargs)
                ok = None if found is None else bool(found)
            except Exception:
                ok = None
        out.append((w, ok))
    return out
