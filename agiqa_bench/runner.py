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
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from agiqa_bench.cache import merge
from agiqa_bench.datasets import load_dataset
from agiqa_bench.device import resolve_device
from agiqa_bench.errors import ConfigError
from agiqa_bench.jobs import (  # noqa: F401  (re-exported: the runner's public names)
    SHARD_SIZE,
    Job,
    MethodRun,
    Shard,
    WorkerPlan,
    ablation_components,
    cache_dir,
    data_hash,
    fit_predict,
    job_rows,
    method_seed,
    plan_shards,
    row_base,
    run_job,
)
from agiqa_bench.method import MethodSpec
from agiqa_bench.outputs import RunLock
from agiqa_bench.records import Dataset
from agiqa_bench.registry import (
    build_method,
    canonical_name,
    default_methods,
    get_spec,
    load_class,
    method_params,
    split_name,
)
from agiqa_bench.splits import SplitSet, make_splits
from agiqa_bench.store import ResultRow, ResultStore


def config_hash(method: str, config: dict, runtime: Sequence[str] = (), *, version: str = "1",
                weights: dict[str, str] | None = None, labels: str | None = None) -> str:
    """Hash of what a method's scores depend on: name, method version, parameters (less the runtime-only
    ones), the identity (size + sha256 prefix) of every weights file the parameters name and, for a
    trainable method, the label scale its training labels are put on (`agiqa_bench.labels`)."""
    scored = {k: v for k, v in config.items() if k not in runtime}
    body = {"method": method, "config": scored}
    if version != "1":
        body["version"] = version
    if weights:
        body["weights"] = weights
    if labels:
        body["labels"] = labels
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:12]


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


@dataclass
class Plan:
    """A validated run: what will be computed, before any work starts."""

    dataset: Dataset
    splits: SplitSet
    methods: list[MethodRun]
    data_hash: str
    #: How a worker process rebuilds the dataset (None: the dataset was given in memory and is shipped).
    source: Any = None
    cross: dict | None = None  # see WorkerPlan.cross

    def worker_plan(self) -> WorkerPlan:
        return WorkerPlan(dataset=self.dataset, data_hash=self.data_hash, split_protocol=self.splits.protocol,
                          split_family=self.splits.family, split_params=dict(self.splits.params), cross=self.cross)

    @property
    def store_dataset(self) -> str:
        return self.worker_plan().store_dataset

    @property
    def targets(self) -> dict[str, tuple[str, ...]]:
        return {m.name: m.targets for m in self.methods}

    def jobs(self) -> list[Job]:
        """Every job, method by method, split by split (the serial order).  Under the cross-dataset protocol a
        zero-shot method is scored once: its repeats would only vary a training part it does not use."""
        from agiqa_bench.crossdata import PROTOCOL as CROSS

        once = self.splits.protocol == CROSS
        return [Job(m, split, group) for m in self.methods
                for split in (self.splits.splits[:1] if once and m.spec.kind == "zero-shot" else self.splits.splits)
                for group in m.target_groups]


@dataclass
class RunSummary:
    out: Path
    executor: str = "serial"
    workers: int = 1
    done: int = 0
    skipped: int = 0
    failed: list[tuple[str, str, int, str]] = field(default_factory=list)  # (method, target, repeat, error)
    #: (method, warning message) -> how many rows of this run raised it
    warnings: dict[tuple[str, str], int] = field(default_factory=dict)

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
    allow_many_repeats: bool = False,
    train_dataset: str | Dataset | None = None,
    train_data_root: str | Path | None = None,
    train_dataset_options: dict[str, Any] | None = None,
    target_map: dict[str, str] | None = None,
    splits_file: str | Path | None = None,
) -> Plan:
    """Load the dataset, resolve methods and targets, make the splits; raise on any misfit.

    With `train_dataset`, a cross-dataset run (`agiqa_bench.crossdata`): methods fit on `train_dataset` and
    are tested on every image of `dataset`; `target_map` ({test target: training target}) pairs targets
    whose names differ.  With `splits_file`, the folds come from that file (`agiqa_bench.folds`: a `splits
    export` JSON or per-fold CSV lists) instead of `split_protocol`, `repeats` and `seed`.
    """
    if repeats < 1 or (repeats > MAX_REPEATS and not allow_many_repeats):
        raise ConfigError(f"--repeats must be between 1 and {MAX_REPEATS} (papers use 10; each repeat is a split "
                          f"and a training per method), got {repeats}; pass --allow-many-repeats to go beyond")
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_root, **(dataset_options or {}))
    if not ds.targets:
        raise ConfigError(f"dataset {ds.name!r} has no targets (unlabelled, for scoring only): it cannot be benchmarked")
    cross, train_ds = None, None
    if train_dataset is not None and splits_file is not None:
        raise ConfigError("--splits gives the folds of one dataset; a cross-dataset run (--train-dataset) tests on "
                          "every image of --dataset: use one or the other")
    if train_dataset is not None:
        from agiqa_bench import crossdata

        if split_protocol not in ("grouped", crossdata.PROTOCOL):
            raise ConfigError(f"--train-dataset runs the {crossdata.PROTOCOL!r} protocol (fit on the training dataset, "
                              f"test on every image of --dataset); --split-protocol {split_protocol} does not apply")
        train_ds = train_dataset if isinstance(train_dataset, Dataset) else load_dataset(
            train_dataset, train_data_root, **(train_dataset_options or {}))
        mapping = crossdata.match_targets(train_ds, ds, targets, target_map)
        cross = {"train_dataset": train_ds.name, "train_data_hash": data_hash(train_ds), "test_dataset": ds.name,
                 "test_data_hash": data_hash(ds), "target_map": mapping}
        ds, targets, split_protocol = crossdata.combine(train_ds, ds, mapping), None, crossdata.PROTOCOL
    elif target_map:
        raise ConfigError("--target-map pairs a training dataset's targets with the test dataset's: it needs --train-dataset")
    names = [canonical_name(n) for n in (methods or default_methods())]
    names = list(dict.fromkeys(names))
    if not names:
        raise ConfigError("no method to run")
    overrides = overrides or {}
    _check_override_targets(overrides, names)
    if targets:
        unknown = [t for t in targets if t not in ds.targets]
        if unknown:
            raise ConfigError(f"dataset {ds.name!r} has no target {', '.join(unknown)}; it has: {', '.join(ds.targets)}")
    wanted = tuple(targets or ds.targets)
    resolved = []
    for name in names:
        spec, _ = get_spec(name)
        if spec.needs_prompt:
            _check_prompts(name, ds)
        tgts = tuple(t for t in wanted if spec.supports(t))
        if not tgts:
            raise ConfigError(f"method {name!r} supports targets {spec.targets}, none of {wanted}")
        if split_protocol == "all-images" and spec.kind != "zero-shot" and splits_file is None:
            raise ConfigError(
                f"split protocol 'all-images' scores every image with no training part (the AGIQA-3k paper's protocol "
                f"for zero-shot alignment metrics); {name!r} is trainable and needs a split: use --split-protocol grouped"
            )
        # a cross-dataset run's methods take the training dataset's defaults: they are trained there
        resolved.append(resolve_method(name, spec, overrides_for(name, overrides),
                                       train_ds.name if train_ds is not None else ds.name, tgts))
    if cross:
        from agiqa_bench.crossdata import cross_splits

        from agiqa_bench.datasets.spec import IMAGE_OPTIONS

        image_options = {o.name for o in IMAGE_OPTIONS}  # how images are read, not which labels: left out

        def label_options(options):
            return {k: v for k, v in (options or {}).items() if k not in image_options}

        splits = cross_splits(ds, repeats, 0 if seed is None else seed, val_fraction,
                              train_name=cross["train_dataset"], train_hash=cross["train_data_hash"],
                              train_options=label_options(train_dataset_options),
                              test_options=label_options(dataset_options))
    elif splits_file is not None:
        from agiqa_bench.folds import load_splits

        splits = load_splits(splits_file, ds, val_fraction)
    else:
        splits = make_splits(ds, split_protocol, repeats, seed, val_fraction)
    source = None
    if not isinstance(dataset, Dataset) and not isinstance(train_dataset, Dataset):
        from agiqa_bench.executors import DatasetSource

        def describe(name, root, options, ids) -> DatasetSource:
            return DatasetSource(name=name, data_root=str(root) if root is not None else None,
                                 options={k: str(v) if isinstance(v, Path) else v for k, v in (options or {}).items()},
                                 item_ids=tuple(ids))

        if cross:
            from agiqa_bench.crossdata import is_train_item, original_id

            test_ids = [original_id(it.id) for it in ds.items if not is_train_item(it.id)]
            source = describe(dataset, data_root, dataset_options, test_ids)
            source = replace(source, train=describe(train_dataset, train_data_root, train_dataset_options,
                                                    [it.id for it in train_ds.items]),
                             target_map=tuple(cross["target_map"].items()))
        else:
            source = describe(dataset, data_root, dataset_options, [it.id for it in ds.items])
    return Plan(ds, splits, resolved, data_hash(ds), source, cross)


def _check_override_targets(overrides: dict[str, dict[str, Any]], names: Sequence[str]) -> None:
    """Every `--set` names a known method that is in this run (a silently ignored override would mislead)."""
    in_run = {(get_spec(n)[0].name, n) for n in names}
    for key, values in overrides.items():
        spec, variant = get_spec(key)  # an unknown method is an error listing the known ones
        wanted = canonical_name(key)
        if not any(base == spec.name and (variant is None or full == wanted) for base, full in in_run):
            shown = ", ".join(f"{key}.{p}" for p in values)
            raise ConfigError(f"--set {shown}: {wanted!r} is not among the methods of this run ({', '.join(names)}); "
                              f"add it to --methods or drop the --set")


MAX_REPEATS = 1000


def resolve_method(name: str, spec: MethodSpec, overrides: dict, dataset: str, targets: tuple[str, ...]) -> MethodRun:
    """`--set` and dataset defaults resolved once; the configuration hash includes the weights' identity."""
    cls = load_class(spec)
    config = method_params(name, overrides, dataset)
    weights = build_method(name, config).weights_identity()
    groups = (targets,) if spec.joint_targets or spec.kind == "zero-shot" else tuple((t,) for t in targets)
    scale = cls.label_scale if spec.kind == "trainable" else None
    chash = config_hash(name, config, cls.runtime_params, version=cls.version, weights=weights,
                        labels=f"standardised on the training part, then {scale.describe()}" if scale else None)
    batch = int(config.get("batch_size" if spec.kind == "zero-shot" else "eval_batch_size", 0) or 0)
    return MethodRun(name=name, spec=spec, overrides=dict(overrides), config=config, config_hash=chash,
                     targets=targets, target_groups=groups, version=cls.version, weights=weights,
                     runtime_params=tuple(cls.runtime_params), per_image=bool(getattr(cls, "per_image", False)),
                     batch=batch)


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


def execute(
    plan: Plan,
    *,
    out: str | Path = "runs",
    device: str = "auto",
    force: bool = False,
    keep_going: bool = True,
    keep_checkpoints: bool = False,
    on_event: Callable[[str, dict], None] | None = None,
    executor: Any = "serial",
    workers: int | None = None,
    ray_address: str | None = None,
    gpus_per_job: float | None = None,
    wait_for_lock: bool = False,
    threads_per_job: int | None = None,
    shard_size: int = SHARD_SIZE,
) -> RunSummary:
    """Run a plan's jobs on an executor (`agiqa_bench.executors`: serial, local, ray, or an executor object),
    writing into `<out>/results.sqlite` here, in the driver: one transaction per job, as outcomes arrive.

    Two phases, pipelined per method.  Map: the per-image values (features, zero-shot scores) of every method
    that caches them are computed once per distinct image, in shards of `shard_size` sorted item ids
    (`agiqa_bench.jobs.plan_shards`) spread over every worker; their values come back here and are merged into
    the run's cache (`agiqa_bench.cache.merge`) as each method's shards finish.  Reduce: each (method, repeat,
    target group) job, which reads those values from the cache (fit, predict, metrics), runs once its method's
    shards are done; methods without per-image values (the torch trainings) run from the start.

    A lock file keeps a second run off the same `out` (it refuses, or waits with `wait_for_lock`).
    Every job runs with `threads_per_job` torch/BLAS threads (default: the cores shared among the workers):
    CPU results depend on the thread count, so equal counts give bitwise equal rows on any executor.
    """
    from agiqa_bench.executors import WorkerContext, make_executor

    out = Path(out)
    ds, splits = plan.dataset, plan.splits
    # a bad --device fails here, before any work; workers resolve it for themselves.  A Ray cluster's GPUs may be
    # on other nodes than the driver's, so only the local executors check that CUDA is usable here.
    ray = executor == "ray" or getattr(executor, "name", "") == "ray" or bool(ray_address)
    resolved = resolve_device(device, check=not ray)
    # local workers share this machine: they get the device resolved here, so a worker whose jobs need no torch
    # never imports it; Ray workers resolve `auto` on their own node
    worker_device = device if ray else resolved
    emit = on_event or (lambda kind, payload: None)
    summary = RunSummary(out)
    with RunLock(out, wait=wait_for_lock), ResultStore(out) as store:
        plan.splits.save(out / "splits" / f"{ds.name}-{splits.protocol}-{splits.hash}.json")
        todo = []
        for job in plan.jobs():
            if not force and all(store.finished(k) for k in job.keys(plan.store_dataset, plan.data_hash).values()):
                summary.skipped += len(job.targets)
            else:
                todo.append(job)
        shards = plan_shards(todo, shard_size)
        work = [*shards, *todo]  # the serial order: every shard before the jobs that read its values
        exe = executor if not isinstance(executor, (str, type(None))) else make_executor(
            executor, workers=workers, n_jobs=len(work), ray_address=ray_address, gpus_per_job=gpus_per_job,
            device=device)
        summary.executor, summary.workers = exe.name, exe.workers or 0
        maps: dict[str, dict] = {}
        for shard in shards:
            entry = maps.setdefault(shard.method.name, {"shards": 0, "images": 0, "values": {}})
            entry["shards"] += 1
            entry["images"] += len(shard.item_ids)
        for m in plan.methods:
            n = sum(1 for job in todo if job.method.name == m.name)
            emit("method", {"method": m.name, "repeats": len(splits), "fits": len(m.target_groups), "todo": n,
                            "images": maps.get(m.name, {}).get("images", 0)})
        emit("start", {"jobs": len(todo), "shards": len(shards), "executor": exe.name, "workers": exe.workers})
        cores = os.cpu_count() or 1
        ctx = WorkerContext(source=plan.source if plan.source is not None else _in_memory(plan), data_hash=plan.data_hash,
                            split_protocol=splits.protocol, split_family=splits.family, split_params=dict(splits.params),
                            device=worker_device, out=str(out), keep_checkpoints=keep_checkpoints, cross=plan.cross,
                            threads=threads_per_job or (max(1, cores // exe.workers) if exe.workers else 1))
        unavailable: dict[str, str] = {}  # method -> why it cannot run here (serial: recorded once, reused)
        cache_root = cache_dir(out, plan) / "features"
        try:
            for outcome in _outcomes(exe, ctx, work, unavailable, emit):
                job = work[outcome.index]
                name = job.method.name
                if isinstance(job, Shard):  # map phase: merge its values; the jobs of the method read them
                    entry = maps[name]
                    for namespace, table in (outcome.values or {}).items():
                        entry["values"].setdefault(namespace, {}).update(table)
                    if outcome.unavailable:
                        unavailable[name] = outcome.error
                    entry["shards"] -= 1
                    if entry["shards"] == 0:
                        merge(cache_root, entry.pop("values"))
                    emit("mapped", {"method": name, "images": len(job.item_ids), "error": outcome.error})
                    continue
                if outcome.rows is not None:
                    store.write(outcome.rows)
                    summary.done += len(outcome.rows)
                    for row in outcome.rows:
                        for message in row.info.get("warnings", []):
                            summary.warnings[(name, message)] = summary.warnings.get((name, message), 0) + 1
                    emit("done", {"method": name, "repeat": job.split.repeat, "targets": job.targets,
                                  "srcc": [r.metrics["srcc"] for r in outcome.rows]})
                    continue
                if outcome.unavailable:
                    unavailable[name] = outcome.error
                store.write([ResultRow(target=t, status="error", error=outcome.error, **row_base(job, plan))
                             for t in job.targets])
                for t in job.targets:
                    summary.failed.append((name, t, job.split.repeat, outcome.error.splitlines()[0] if outcome.error else ""))
                emit("error", {"method": name, "repeat": job.split.repeat, "targets": job.targets, "error": outcome.error})
                if not keep_going:
                    break
        finally:
            exe.close()
            for entry in maps.values():  # a stopped run keeps the values its finished shards computed
                if entry.get("values"):
                    merge(cache_root, entry["values"])
    return summary


def _in_memory(plan: Plan):
    from agiqa_bench.executors import DatasetSource

    return DatasetSource(name=plan.dataset.name, dataset=plan.dataset)


def _outcomes(exe, ctx, todo, unavailable, emit):
    """The executor's outcomes; the serial one skips the jobs of a method already found unavailable."""
    from agiqa_bench.executors import (
        JobOutcome,
        SerialExecutor,
        prepare_process,
        run_one,
    )

    if isinstance(exe, SerialExecutor):
        prepare_process(ctx.threads)
        for index, job in enumerate(todo):
            name = job.method.name
            emit("running", {"method": name, "repeat": job.split.repeat if isinstance(job, Job) else None})
            if name in unavailable:
                yield JobOutcome(index, error=unavailable[name], unavailable=True)
            else:
                yield run_one(ctx, index, job)
        return
    yield from exe.run(ctx, todo)


def run_benchmark(methods: Sequence[str] | None = None, dataset: str | Dataset = "synthetic", *,
                  out: str | Path = "runs", device: str = "auto", force: bool = False, keep_checkpoints: bool = False,
                  **plan_options) -> RunSummary:
    """Plan and execute a benchmark; see `plan_run` for the options.

    >>> summary = run_benchmark(["cpbd", "ceiq"], "synthetic", repeats=2, out="runs")  # doctest: +SKIP
    """
    plan = plan_run(methods, dataset, **plan_options)
    return execute(plan, out=out, device=device, force=force, keep_checkpoints=keep_checkpoints)
