"""The map phase: per-image work computed once per image over every worker, then the per-repeat jobs."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from agiqa_test_support import COUNT_ENV, COUNTING, COUNTING_SVR, register

from agiqa_bench.jobs import Shard, plan_shards, shard_size
from agiqa_bench.runner import execute, plan_run
from agiqa_bench.store import read_results

METRICS = ["srcc", "plcc", "krcc", "rmse"]


def rows(out):
    frame = read_results(out)
    return frame.sort_values(["method", "target", "repeat"])[["method", "target", "repeat", *METRICS]].reset_index(
        drop=True)


def counts(path):
    lines = [tuple(line.split("\t")) for line in path.read_text().splitlines()] if path.exists() else []
    return collections.Counter(lines)


def test_shards_are_sorted_fixed_slices_of_the_distinct_images(tiny_agiqa3k, monkeypatch):
    register(monkeypatch, COUNTING, COUNTING_SVR)
    plan = plan_run(["counting", "counting_svr", "cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=3)
    shards = plan_shards(plan.jobs(), 5)
    by_method = collections.defaultdict(list)
    for shard in shards:
        by_method[shard.method.name].append(shard)
    tests = {i for s in plan.splits.splits for i in s.test}
    every = {i for s in plan.splits.splits for i in (*s.train, *s.val, *s.test)}
    for name, want in (("counting", tests), ("cpbd", tests), ("counting_svr", every)):
        ids = [i for shard in by_method[name] for i in shard.item_ids]
        assert ids == sorted(want) and all(len(s.item_ids) <= 5 for s in by_method[name])
        assert [s.number for s in by_method[name]] == list(range(len(by_method[name])))
    assert shard_size(32, 12) == 36 and shard_size(32, 0) == 32 and shard_size(5, 8) == 8
    assert plan_shards(plan.jobs(), 5) == shards  # deterministic


@pytest.mark.parametrize("executor, workers", [("serial", 1), ("local", 2)])
def test_every_image_is_computed_once_per_method(executor, workers, tiny_agiqa3k, tmp_path, monkeypatch):
    """Several repeats, each image's values once per method however the jobs are spread, rows as serial."""
    register(monkeypatch, COUNTING, COUNTING_SVR)
    count_file = tmp_path / "count.tsv"
    monkeypatch.setenv(COUNT_ENV, str(count_file))
    plan = plan_run(["counting", "counting_svr"], "agiqa3k", data_root=tiny_agiqa3k, repeats=4)
    out = tmp_path / executor
    execute(plan, out=out, executor=executor, workers=workers, shard_size=5, threads_per_job=1)
    seen = counts(count_file)
    assert seen and max(seen.values()) == 1, [k for k, v in seen.items() if v > 1]
    tests = {i for s in plan.splits.splits for i in s.test}
    every = {i for s in plan.splits.splits for i in (*s.train, *s.val, *s.test)}
    assert {i for m, i in seen if m == "counting"} == tests
    assert {i for m, i in seen if m == "counting_svr"} == every
    assert len(read_results(out)) == 4 * 2 * 2  # 4 repeats x 2 targets x 2 methods
    # a rerun finds every row and starts no shard; a new repeat computes only the images it adds
    count_file.unlink()
    execute(plan_run(["counting", "counting_svr"], "agiqa3k", data_root=tiny_agiqa3k, repeats=4), out=out,
            executor=executor, workers=workers, shard_size=5)
    assert not count_file.exists()


def test_local_and_serial_rows_are_bitwise_equal(tiny_agiqa3k, tmp_path, monkeypatch):
    register(monkeypatch, COUNTING, COUNTING_SVR)
    plan = plan_run(["counting", "counting_svr", "cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=3)
    serial, local = tmp_path / "serial", tmp_path / "local"
    execute(plan, out=serial, executor="serial", threads_per_job=1, shard_size=7)
    execute(plan, out=local, executor="local", workers=2, threads_per_job=1, shard_size=7)
    a, b = rows(serial), rows(local)
    assert len(a) == 3 * 2 * 3  # 3 repeats x 2 targets x 3 methods
    assert a.equals(b), (a, b)


def test_map_progress_is_reported(tiny_agiqa3k, tmp_path, monkeypatch):
    register(monkeypatch, COUNTING)
    events = []
    plan = plan_run(["counting"], "agiqa3k", data_root=tiny_agiqa3k, repeats=2)
    execute(plan, out=tmp_path / "o", executor="serial", shard_size=4, on_event=lambda k, p: events.append((k, p)))
    method = next(p for k, p in events if k == "method")
    mapped = [p for k, p in events if k == "mapped"]
    assert method["images"] == sum(p["images"] for p in mapped) > 0
    assert next(p for k, p in events if k == "start")["shards"] == len(mapped)
    assert isinstance(plan_shards(plan.jobs(), 4)[0], Shard) and np.all([p["error"] is None for p in mapped])
