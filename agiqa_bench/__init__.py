"""agiqa-bench: a benchmark harness for AI-generated image quality assessment.

Public API (imported lazily, so `import agiqa_bench` is cheap):

    from agiqa_bench import load_dataset, make_splits, list_methods, create_method, run_benchmark, read_results

    ds = load_dataset("synthetic")                       # or "agiqa3k", data_root="~/data/agiqa3k"
    splits = make_splits(ds, "grouped", repeats=10)     # identical for every method
    model = create_method("ceiq", {"C": 4.0})
    model.fit(ds.subset(splits[0].train), ds.subset(splits[0].val), ["quality"])
    scores = model.predict(ds.subset(splits[0].test))
    summary = run_benchmark(["cpbd", "ceiq"], "synthetic", out="runs")
    frame = read_results("runs")                         # one row per (method, target, repeat)
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "load_dataset": "agiqa_bench.datasets",
    "make_splits": "agiqa_bench.splits",
    "SplitSet": "agiqa_bench.splits",
    "list_methods": "agiqa_bench.registry",
    "create_method": "agiqa_bench.registry",
    "get_spec": "agiqa_bench.registry",
    "run_benchmark": "agiqa_bench.runner",
    "plan_run": "agiqa_bench.runner",
    "read_results": "agiqa_bench.store",
    "evaluate": "agiqa_bench.metrics",
    "Item": "agiqa_bench.records",
    "Dataset": "agiqa_bench.records",
    "Method": "agiqa_bench.method",
    "MethodSpec": "agiqa_bench.method",
    "Weights": "agiqa_bench.method",
    "param": "agiqa_bench.params",
    "check_method": "agiqa_bench.testing",
    "score": "agiqa_bench.scoring",
    "DatasetSpec": "agiqa_bench.datasets.spec",
    "DatasetOption": "agiqa_bench.datasets.spec",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'agiqa_bench' has no attribute {name!r}")
