"""The benchmark runner: dataset -> splits -> method.fit/predict -> metrics -> store.

For every method, repeat and target it trains on the train part (with the
validation part available for model selection), predicts the test part,
computes the metrics and writes the rows atomically.  Finished keys are skipped
on rerun (`force=True` redoes them).  A failing method is recorded with its
error and the run goes on with the others.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from agiqa_bench import __version__
from agiqa_bench.datasets import load_dataset
from agiqa_bench.device import resolve_device
from agiqa_bench.errors import AgiqaBenchError, ConfigError, MethodUnavailable
from agiqa_bench.method import MethodContext, MethodSpec
from agiqa_bench.metrics import evaluate
from agiqa_bench.records import Dataset
from agiqa_bench.registry import (
    canonical_name,
    create_method,
    default_methods,
    get_spec,
    load_class,
    method_params,
    split_name,
)
from agiqa_bench.splits import SplitSet, make_splits
from agiqa_bench.store import ResultRow, ResultStore


def data_hash(dataset: Dataset) -> str:
    """Fingerprint of the labels: ids, groups and target values."""
    h = hashlib.sha256()
    for item in dataset.items:
        h.update(f"{item.id}|{item.group}|{sorted(item.targets.items())}\n".encode())
    return h.hexdigest()[:16]


def config_hash(method: str, config: dict, runtime: Sequence[str] = ()) -> str:
    """Hash of what a method's scores depend on: its name and parameters, less the runtime-only ones."""
    scored = {k: v for k, v in config.items() if k not in runtime}
    body = json.dumps({"method": method, "config": scored}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:12]


def parse_overrides(pairs: Sequence[str]) -> dict[str, dict[str, str]]:
    """['ceiq.C=10', 'ceiq.grid.cv_folds=3'] -> {'ceiq': {'C': '10'}, 'ceiq.grid': {'cv_folds': '3'}}."""
    out: dict[str, dict[str, str]] = {}
    for pair in pairs:
        lhs, sep, value = pair.partition("=")
        method, dot, key = lhs.strip().rpartition(".")
        if not sep or not dot or not method or not key:
            raise ConfigError(f"--set takes method.param=value (e.g. ceiq.C=10), got {pair!r}")
        out.setdefault(method, {})[key] = value
    return out


def overrides_for(name: str, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Overrides that apply to `name`: its base name's first, then its full name's."""
    base, _ = split_name(name)
    spec, _ = get_spec(name)
    merged: dict[str, Any] = {}
    for key in (spec.name, *spec.aliases, base, name):
        merged.update(overrides.get(key, {}))
    return merged


def method_seed(seed: int, repeat: int, method: str) -> int:
    return (seed * 1_000_003 + repeat * 7919 + zlib.crc32(method.encode())) % (2**31 - 1)


@dataclass
class Plan:
    """A validated run: what will be computed, before any work starts."""

    dataset: Dataset
    splits: SplitSet
    methods: list[tuple[str, MethodSpec, dict, dict]]  # (name, spec, overrides, resolved config)
    targets: dict[str, tuple[str, ...]]  # method -> targets it runs on
    data_hash: str


@dataclass
class RunSummary:
    out: Path
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, int, str]] = field(default_factory=list)  # (method, target, repeat, error)

    @property
    def ok(self) -> bool:
        return not self.failed


def plan_run(
    methods: Sequence[str] | None,
    dataset: str | Dataset = "synthetic",
    *,
    data_root: str | Path | None = None,
    dataset_options: dict[str, Any] | None = None,
    targets: Sequence[str] | None = None,
    repeats: int = 10,
    split_protocol: str = "grouped",
    seed: int | None = None,
    val_fraction: float = 0.1,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Plan:
    """Load the dataset, resolve methods and targets, make the splits; raise on any misfit."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_root, **(dataset_options or {}))
    names = [canonical_name(n) for n in (methods or default_methods())]
    names = list(dict.fromkeys(names))
    if not names:
        raise ConfigError("no method to run")
    overrides = overrides or {}
    for key in overrides:
        get_spec(key)  # unknown method in --set is an error
    if targets:
        unknown = [t for t in targets if t not in ds.targets]
        if unknown:
            raise ConfigError(f"dataset {ds.name!r} has no target {', '.join(unknown)}; it has: {', '.join(ds.targets)}")
    wanted = tuple(targets or ds.targets)
    resolved, per_method = [], {}
    for name in names:
        spec, _ = get_spec(name)
        if spec.needs_prompt:
            _check_prompts(name, ds)
        mine = overrides_for(name, overrides)
        config = method_params(name, mine, ds.name)
        tgts = tuple(t for t in wanted if spec.supports(t))
        if not tgts:
            raise ConfigError(f"method {name!r} supports targets {spec.targets}, none of {wanted}")
        if split_protocol == "all-images" and spec.kind != "zero-shot":
            raise ConfigError(
                f"split protocol 'all-images' scores every image with no training part (the AGIQA-3k paper's protocol "
                f"for zero-shot alignment metrics); {name!r} is trainable and needs a split: use --split-protocol grouped"
            )
        resolved.append((name, spec, mine, config))
        per_method[name] = tgts
    splits = make_splits(ds, split_protocol, repeats, seed, val_fraction)
    return Plan(ds, splits, resolved, per_method, data_hash(ds))


def _check_prompts(name: str, ds: Dataset) -> None:
    """A method that reads prompts needs one for every image (an empty prompt would be scored silently)."""
    missing = [it.id for it in ds.items if not it.prompt.strip()]
    if len(missing) == len(ds.items):
        raise ConfigError(f"method {name!r} scores images against their prompts, but dataset {ds.name!r} has none")
    if missing:
        raise ConfigError(
            f"method {name!r} scores images against their prompts, but {len(missing)} of {len(ds.items)} items of "
            f"{ds.name!r} have an empty prompt (first: {', '.join(missing[:3])}); fill them in or drop those rows"
        )


def _fit_predict(name, overrides, context, ds, split, targets):
    """Train one model on `targets` and return (n_test, len(targets)) predictions and timings."""
    method = create_method(name, overrides, context)
    train, val, test = ds.subset(split.train), ds.subset(split.val), ds.subset(split.test)
    if method.uses_test_oracle:
        method.set_oracle(test)  # selection on the test part, as the reference code; labelled in reports
    t0 = time.perf_counter()
    method.fit(train, val, targets)
    t1 = time.perf_counter()
    pred = np.asarray(method.predict(test), dtype=np.float64)
    t2 = time.perf_counter()
    if pred.ndim == 1:
        pred = np.repeat(pred[:, None], len(targets), axis=1)
    if pred.shape != (len(test), len(targets)):
        raise RuntimeError(f"{name}.predict returned shape {pred.shape}, expected ({len(test)}, {len(targets)})")
    info = dict(getattr(method, "info", {}) or {})
    return pred, t1 - t0, t2 - t1, info


def execute(
    plan: Plan,
    out: str | Path = "runs",
    *,
    device: str = "auto",
    force: bool = False,
    keep_going: bool = True,
    keep_checkpoints: bool = False,
    on_event: Callable[[str, dict], None] | None = None,
) -> RunSummary:
    """Run a plan, writing into `<out>/results.sqlite`."""
    out = Path(out)
    ds, splits = plan.dataset, plan.splits
    plan.splits.save(out / "splits" / f"{ds.name}-{splits.protocol}-{splits.hash}.json")
    device = resolve_device(device)
    emit = on_event or (lambda kind, payload: None)
    summary = RunSummary(out)
    with ResultStore(out) as store:
        for name, spec, mine, config in plan.methods:
            runtime = load_class(spec).runtime_params
            chash = config_hash(name, config, runtime)
            labelled = {k: v for k, v in mine.items() if k not in runtime}  # labels name what changes scores
            targets = plan.targets[name]
            groups = [targets] if spec.joint_targets or spec.kind == "zero-shot" else [(t,) for t in targets]
            emit("method", {"method": name, "repeats": len(splits), "fits": len(groups)})
            unavailable: str | None = None
            for split in splits.splits:
                for tgroup in groups:
                    keys = {t: (ds.name, plan.data_hash, t, name, chash, split.hash, split.repeat) for t in tgroup}
                    if not force and all(store.finished(k) for k in keys.values()):
                        summary.skipped += len(tgroup)
                        continue
                    base = dict(dataset=ds.name, data_hash=plan.data_hash, method=name, config_hash=chash,
                                split_protocol=splits.protocol, split_family=splits.family,
                                split_hash=split.hash, repeat=split.repeat,
                                config=config, overrides=labelled, harness_version=__version__,
                                n_train=len(split.train), n_val=len(split.val), n_test=len(split.test))
                    try:
                        if unavailable:
                            raise MethodUnavailable(unavailable)
                        context = MethodContext(
                            device=device, seed=method_seed(splits.params.get("seed", 0), split.repeat, name),
                            repeat=split.repeat, dataset=ds.name, cache_dir=out / "cache" / ds.name / plan.data_hash,
                            workdir=out, keep_checkpoints=keep_checkpoints)
                        with warnings.catch_warnings(record=True) as caught:
                            warnings.simplefilter("always")
                            pred, fit_s, pred_s, info = _fit_predict(name, mine, context, ds, split, tgroup)
                            rows = []
                            test_items = ds.subset(split.test)
                            for j, target in enumerate(tgroup):
                                mos = ds.target_array(test_items, target)
                                scores = evaluate(pred[:, j], mos, lower_is_better=spec.lower_is_better)
                                rows.append(ResultRow(target=target, status="ok", metrics=scores.as_dict(),
                                                      fit_seconds=fit_s, predict_seconds=pred_s, info=info,
                                                      item_ids=split.test, predictions=pred[:, j], mos=mos,
                                                      item_groups=[it.group for it in test_items],
                                                      item_generators=[it.generator for it in test_items], **base))
                        for row in rows:
                            row.info = {**row.info, "warnings": sorted({str(w.message) for w in caught})[:5]}
                        store.write(rows)
                        summary.done += len(rows)
                        emit("done", {"method": name, "repeat": split.repeat, "targets": tgroup,
                                      "srcc": [r.metrics["srcc"] for r in rows]})
                    except KeyboardInterrupt:
                        raise
                    except Exception as exc:  # isolate: record and continue with the rest
                        message = str(exc) if isinstance(exc, AgiqaBenchError) else (
                            f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
                        if isinstance(exc, MethodUnavailable):
                            unavailable = str(exc)
                        store.write([ResultRow(target=t, status="error", error=message, **base) for t in tgroup])
                        for t in tgroup:
                            summary.failed.append((name, t, split.repeat, message.splitlines()[0] if message else ""))
                        emit("error", {"method": name, "repeat": split.repeat, "targets": tgroup, "error": message})
                        if not keep_going:
                            return summary
    return summary


def run_benchmark(methods: Sequence[str] | None = None, dataset: str | Dataset = "synthetic", *,
                  out: str | Path = "runs", device: str = "auto", force: bool = False, keep_checkpoints: bool = False,
                  **plan_options) -> RunSummary:
    """Plan and execute a benchmark; see `plan_run` for the options.

    >>> summary = run_benchmark(["cpbd", "ceiq"], "synthetic", repeats=2, out="runs")  # doctest: +SKIP
    """
    plan = plan_run(methods, dataset, **plan_options)
    return execute(plan, out, device=device, force=force, keep_checkpoints=keep_checkpoints)
