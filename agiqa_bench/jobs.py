"""Jobs and what runs one: the unit of work every executor hands a worker, below both the runner and executors.

A plan (`agiqa_bench.runner`) is cut into jobs; an executor (`agiqa_bench.executors`) runs them anywhere and
hands the outcomes back to the driver, which alone writes the store.  This module holds what both sides
share, so neither imports the other:

- `MethodRun`: one method of a plan, fully resolved (plain data);
- `Job`: a method run x one split x one target group, run by `job_rows` (fit on train, select on val,
  predict test, metrics) into result rows;
- `Shard`: the map phase's unit: one method's per-image work (features, zero-shot scores) on a fixed slice of
  the distinct images its jobs need, run by `shard_values` into {cache namespace: {key: vector}} that travels
  back to the driver, which merges it into the run's cache; the method's jobs then read the cache;
- `WorkerPlan`: what a worker holds of the plan (the dataset and the facts rows carry);
- `fit_predict`: the runner's contract with a method (label scales, shapes).
"""

from __future__ import annotations

import hashlib
import importlib
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from agiqa_bench import __version__
from agiqa_bench.checkpoints import as_matrix
from agiqa_bench.labels import LabelMap
from agiqa_bench.method import MethodContext, MethodSpec
from agiqa_bench.metrics import evaluate
from agiqa_bench.records import Dataset
from agiqa_bench.registry import load_class
from agiqa_bench.splits import Split
from agiqa_bench.store import ResultRow


def data_hash(dataset: Dataset) -> str:
    """Fingerprint of the labels: ids, groups and target values."""
    h = hashlib.sha256()
    for item in dataset.items:
        h.update(f"{item.id}|{item.group}|{sorted(item.targets.items())}\n".encode())
    return h.hexdigest()[:16]


def method_seed(seed: int, repeat: int, method: str) -> int:
    return (seed * 1_000_003 + repeat * 7919 + zlib.crc32(method.encode())) % (2**31 - 1)


@dataclass(frozen=True)
class MethodRun:
    """One method of a plan, fully resolved: what it is, how it is configured, what it runs on.

    Plain, picklable data: no open files, no models.  `config` is the resolved parameter set
    (dataset defaults, variant and `--set` applied once, here); `config_hash` keys its rows.
    """

    name: str
    spec: MethodSpec
    overrides: dict  # the user's --set values for it (scored ones label the method in tables)
    config: dict
    config_hash: str
    targets: tuple[str, ...]
    #: How its targets are fitted: one group for joint / zero-shot methods, else one per target.
    target_groups: tuple[tuple[str, ...], ...]
    version: str = "1"
    weights: dict = field(default_factory=dict)  # param -> identity of the file it names
    runtime_params: tuple[str, ...] = ()
    #: Its per-image values are cached (`Method.per_image`): the map phase computes them before its jobs.
    per_image: bool = False
    #: Images per forward pass of a batched scorer (0: not batched): map shards hold whole batches.
    batch: int = 0

    @property
    def labelled_overrides(self) -> dict:
        """The overrides that change scores (what a table label names)."""
        return {k: v for k, v in self.overrides.items() if k not in self.runtime_params}

    def provenance(self) -> dict:
        """What a report needs to know about the method without today's registry."""
        spec = self.spec
        return {"family": spec.family, "kind": spec.kind, "lower_is_better": spec.lower_is_better,
                "approximation": spec.approximation, "summary": spec.summary, "reference": spec.reference,
                "version": self.version, "weights": self.weights,
                "components": ablation_components(spec, self.config)}


@dataclass(frozen=True)
class Job:
    """One unit of work: a method run x one split x one target group.  Picklable."""

    method: MethodRun
    split: Split
    targets: tuple[str, ...]

    def keys(self, dataset: str, data_hash: str) -> dict[str, tuple]:
        m, sp = self.method, self.split
        return {t: (dataset, data_hash, t, m.name, m.config_hash, sp.hash, sp.repeat) for t in self.targets}


#: Images per map shard by default (a batched scorer's shard is rounded up to whole batches).
SHARD_SIZE = 32


@dataclass(frozen=True)
class Shard:
    """The map phase's unit: one method's per-image work on `item_ids`, a fixed slice of the sorted distinct items
    its jobs need.  Its composition depends only on the plan and the shard size, never on the executor, so a
    batched scorer sees the same batches on any executor."""

    method: MethodRun
    item_ids: tuple[str, ...]
    number: int  # 0-based, within the method
    count: int  # shards of this method in the run

    @property
    def targets(self) -> tuple[str, ...]:
        return ()


def shard_size(size: int, batch: int) -> int:
    """`size` rounded up to whole batches of `batch` (0: unbatched)."""
    return size if batch <= 0 else max(1, -(-size // batch)) * batch


def plan_shards(jobs: Sequence[Job], size: int = SHARD_SIZE) -> list[Shard]:
    """The map phase of `jobs`: for each method with per-image values, the distinct items its jobs need (a
    zero-shot method's test parts; a trainable method's train, validation and test parts), sorted by id and cut
    into shards of `size` (whole batches for a batched scorer)."""
    if size < 1:
        raise ValueError(f"shard size must be at least 1, got {size}")
    needed: dict[str, set[str]] = {}
    runs: dict[str, MethodRun] = {}
    for job in jobs:
        m = job.method
        if not m.per_image:
            continue
        runs.setdefault(m.name, m)
        split = job.split
        needed.setdefault(m.name, set()).update(
            split.test if m.spec.kind == "zero-shot" else (*split.train, *split.val, *split.test))
    out: list[Shard] = []
    for name, ids in needed.items():
        step = shard_size(size, runs[name].batch)
        ordered = sorted(ids)
        chunks = [tuple(ordered[k:k + step]) for k in range(0, len(ordered), step)]
        out += [Shard(runs[name], chunk, k, len(chunks)) for k, chunk in enumerate(chunks)]
    return out


def shard_values(shard: Shard, plan, *, device: str, out: Path) -> dict[str, dict[str, np.ndarray]]:
    """Run one map shard: the method's per-image values of its items, {cache namespace: {key: vector}}, as
    recorded from its caches (`agiqa_bench.cache.recording`); nothing is written here, the driver merges."""
    from agiqa_bench.cache import recording

    plan = plan.worker_plan() if hasattr(plan, "worker_plan") else plan
    ds, m = plan.dataset, shard.method
    context = MethodContext(device=device, seed=method_seed(plan.split_params.get("seed", 0), 0, m.name), repeat=0,
                            dataset=ds.name, cache_dir=cache_dir(out, plan), workdir=out)
    method = load_class(m.spec)(m.spec, m.config, context, name=m.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the method's jobs raise (and record) them again
        with recording() as values:
            method.precompute(ds.subset(shard.item_ids))
    return values


@dataclass(frozen=True)
class WorkerPlan:
    """What `job_rows` needs of a plan: the dataset and the facts its rows carry (what a worker holds)."""

    dataset: Dataset
    data_hash: str
    split_protocol: str
    split_family: str
    split_params: dict
    #: A cross-dataset run's facts (train/test dataset names and label hashes, the target map); None otherwise.
    cross: dict | None = None

    @property
    def store_dataset(self) -> str:
        """The dataset name rows are stored under (a cross-dataset run's: the test dataset's)."""
        return self.cross["test_dataset"] if self.cross else self.dataset.name


def ablation_components(spec: MethodSpec, config: dict) -> dict[str, bool]:
    """Which ablation components (the spec's `ablation_components` function) a configuration switches on."""
    if not spec.ablation_components:
        return {}
    module, _, attr = spec.ablation_components.partition(":")
    return dict(getattr(importlib.import_module(module), attr)(config))


def run_job(job: Job, ds: Dataset, context: MethodContext) -> tuple[np.ndarray, float, float, dict]:
    """Train one model on the job's targets; (n_test, len(targets)) predictions, fit and predict seconds, info."""
    m = job.method  # built from the job's own spec: a worker process needs no registry lookup
    method = load_class(m.spec)(m.spec, m.config, context, name=m.name)
    split = job.split
    pred, fit_s, pred_s, info = fit_predict(method, ds.subset(split.train), ds.subset(split.val),
                                            ds.subset(split.test), job.targets)
    if context.keep_checkpoints and context.workdir is not None:
        info["checkpoint"] = keep_checkpoint(method, job)
    return pred, fit_s, pred_s, info


def keep_checkpoint(method, job: Job) -> str | None:
    """Save the job's fitted model (`--keep-checkpoints`); None, with a warning, for a method without the hooks."""
    from agiqa_bench import checkpoints

    if method.spec.kind != "trainable":
        return None
    if not checkpoints.supports_checkpoints(method):
        warnings.warn(f"{method.name} keeps no checkpoint: its class does not implement checkpoint_state / "
                      "load_checkpoint_state", UserWarning, stacklevel=2)
        return None
    m, split, context = job.method, job.split, method.context
    path = checkpoints.checkpoint_path(Path(context.workdir), context.dataset, m.name, split.repeat, job.targets,
                                       m.config_hash)
    return str(checkpoints.save(method, path, config_hash=m.config_hash, split=split.hash))


def fit_predict(method, train: Sequence, val: Sequence, test: Sequence,
                targets: Sequence[str]) -> tuple[np.ndarray, float, float, dict]:
    """The runner's contract with a method: fit on `train` (selecting on `val`), predict `test`.

    A trainable method sees its labels on its `label_scale` (fitted on `train` alone, `agiqa_bench.labels`);
    its predictions come back in the dataset's units.  Returns (n_test, len(targets)) predictions, fit and
    predict seconds, and the method's info (with the label map applied, if any).
    """
    targets = tuple(targets)
    scale = type(method).label_scale if method.spec.kind == "trainable" else None
    label_map = LabelMap.fit(train, targets, scale) if scale is not None and train else None
    if label_map is not None:
        method.label_map = label_map
        train, val = label_map.items(train), label_map.items(val)
    if method.uses_test_oracle:  # selection on the test part, as the reference code; labelled in reports
        method.set_oracle(label_map.items(test) if label_map is not None else test)
    t0 = time.perf_counter()
    method.fit(train, val, targets)
    t1 = time.perf_counter()
    pred = method.predict(test)
    t2 = time.perf_counter()
    pred = as_matrix(method, pred, len(test))
    info = dict(getattr(method, "info", {}) or {})
    if label_map is not None:
        pred = label_map.inverse(pred)
        info["label_map"] = label_map.to_dict()
    return pred, t1 - t0, t2 - t1, info


def cache_dir(out: Path, plan) -> Path:
    """The run's per-dataset cache folder (features and scores under `features/`)."""
    plan = plan.worker_plan() if hasattr(plan, "worker_plan") else plan
    return Path(out) / "cache" / plan.dataset.name / plan.data_hash


def job_rows(job: Job, plan, *, device: str, out: Path, keep_checkpoints: bool) -> list[ResultRow]:
    """Run one job and turn its outcome into result rows ('ok' rows with metrics, or raise)."""
    plan = plan.worker_plan() if hasattr(plan, "worker_plan") else plan
    ds, m, split = plan.dataset, job.method, job.split
    context = MethodContext(
        device=device, seed=method_seed(plan.split_params.get("seed", 0), split.repeat, m.name),
        repeat=split.repeat, dataset=ds.name, cache_dir=cache_dir(out, plan),
        workdir=out, keep_checkpoints=keep_checkpoints)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred, fit_s, pred_s, info = run_job(job, ds, context)
        info = {**info, "threads": _threads()}
        test_items = ds.subset(split.test)
        rows = []
        for j, target in enumerate(job.targets):
            mos = ds.target_array(test_items, target)
            scores = evaluate(pred[:, j], mos, lower_is_better=m.spec.lower_is_better)
            rows.append(ResultRow(target=target, status="ok", metrics=scores.as_dict(), fit_seconds=fit_s,
                                  predict_seconds=pred_s, info=info, item_ids=split.test, predictions=pred[:, j],
                                  mos=mos, item_groups=[it.group for it in test_items],
                                  item_generators=[it.generator for it in test_items],
                                  item_attributes=[{a: ds.attribute(it, a) for a in ds.attributes} for it in test_items]
                                  if ds.attributes else (),
                                  **row_base(job, plan)))
    for row in rows:
        row.info = {**row.info, "warnings": sorted({str(w.message) for w in caught})[:5]}
    return rows


def _threads() -> int | None:
    """torch's intra-op threads for this job (CPU results depend on them), if torch is loaded."""
    import sys

    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def row_base(job: Job, plan) -> dict:
    """The fields every row of a job shares, whatever its outcome."""
    plan = plan.worker_plan() if hasattr(plan, "worker_plan") else plan
    m, split = job.method, job.split
    cross = plan.cross or {}
    return dict(dataset=plan.store_dataset, data_hash=plan.data_hash, train_dataset=cross.get("train_dataset"),
                train_data_hash=cross.get("train_data_hash"), test_data_hash=cross.get("test_data_hash"),
                method=m.name, config_hash=m.config_hash,
                split_protocol=plan.split_protocol, split_family=plan.split_family, split_hash=split.hash,
                repeat=split.repeat, config=m.config, overrides=m.labelled_overrides, harness_version=__version__,
                method_info=m.provenance(), n_train=len(split.train), n_val=len(split.val), n_test=len(split.test))
