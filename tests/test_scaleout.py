"""Scale-out: the executors give the same rows as the serial loop, survive a killed worker, keep one run per
--out, and share caches safely; Ray for real (a local instance, and a cluster joined by address)."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from agiqa_test_support import BRIGHTNESS, register
from typer.testing import CliRunner

from agiqa_bench.cli import app
from agiqa_bench.registry import get_spec
from agiqa_bench.outputs import RunLock
from agiqa_bench.runner import execute, plan_run
from agiqa_bench.store import read_results

METHODS = ["cpbd", "ceiq", "ipiqa", "cnniqa"]
SMOKE = {name: dict(get_spec(name)[0].smoke) for name in ("ipiqa", "cnniqa")}  # the fast contract-test configs
METRICS = ["srcc", "plcc", "krcc", "rmse"]


def stored(out: Path) -> pd.DataFrame:
    frame = read_results(out, status=None)
    return frame.sort_values(["method", "target", "repeat"]).reset_index(drop=True)


def small_plan(root):
    return plan_run(METHODS, "agiqa3k", data_root=root, repeats=2, overrides=SMOKE)


@pytest.fixture(scope="module")
def serial_store(tmp_path_factory):
    from conftest import make_tiny_agiqa3k

    root = make_tiny_agiqa3k(tmp_path_factory.mktemp("scale") / "tiny3k")
    out = tmp_path_factory.mktemp("serial")
    summary = execute(small_plan(root), out=out, executor="serial", threads_per_job=1, device="cpu")
    assert not summary.failed, summary.failed
    return root, out


def test_local_workers_store_the_same_rows_as_the_serial_loop(serial_store, tmp_path):
    root, serial_out = serial_store
    summary = execute(small_plan(root), out=tmp_path, executor="local", workers=2, threads_per_job=1, device="cpu")
    assert summary.executor == "local" and summary.workers == 2 and not summary.failed
    a, b = stored(serial_out), stored(tmp_path)
    assert len(a) == len(b) == 4 * 2 * 2  # 4 methods x 2 targets x 2 repeats (IP-IQA fits both at once)
    assert (a[["method", "target", "repeat", "config_hash"]].values == b[["method", "target", "repeat", "config_hash"]].values).all()
    np.testing.assert_array_equal(a[METRICS].to_numpy(), b[METRICS].to_numpy())  # bitwise


def test_a_worker_killed_mid_job_is_retried_and_every_row_is_stored_once(tiny_agiqa3k, tmp_path, monkeypatch):
    register(monkeypatch, BRIGHTNESS)
    marker = tmp_path / "killed"
    monkeypatch.setenv("AGIQA_TEST_KILL_ONCE", f"1:{marker}")
    plan = plan_run(["brightness", "cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=3, targets=["quality"])
    summary = execute(plan, out=tmp_path / "runs", executor="local", workers=2)
    assert marker.exists()  # a worker really died (SIGKILL) in the middle of repeat 1
    assert not summary.failed and summary.done == 6
    rows = stored(tmp_path / "runs")
    assert len(rows) == 6 and not rows.duplicated(["method", "target", "repeat"]).any()
    assert (rows["status"] == "ok").all()


def test_a_job_that_always_kills_its_worker_is_recorded_after_three_tries(tiny_agiqa3k, tmp_path, monkeypatch):
    register(monkeypatch, BRIGHTNESS)
    monkeypatch.setenv("AGIQA_TEST_KILL_AT", "0")
    plan = plan_run(["brightness"], "agiqa3k", data_root=tiny_agiqa3k, repeats=2, targets=["quality"])
    summary = execute(plan, out=tmp_path / "runs", executor="local", workers=2)
    assert [(m, r) for m, _, r, _ in summary.failed] == [("brightness", 0)]
    assert "stopped" in summary.failed[0][3] and "3 tries" in summary.failed[0][3]
    rows = stored(tmp_path / "runs")
    assert sorted(zip(rows["repeat"], rows["status"])) == [(0, "error"), (1, "ok")]


def test_a_second_run_on_the_same_out_is_refused_with_one_line(tiny_agiqa3k, tmp_path):
    out = tmp_path / "runs"
    with RunLock(out):
        result = CliRunner().invoke(app, ["run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root",
                                          str(tiny_agiqa3k), "--repeats", "1", "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert "is in use by another agiqa-bench run (pid" in text and "--wait" in text
    assert not (out / "results.sqlite").exists()  # nothing interleaved


def _fill(root: str, start: int, barrier) -> None:
    from agiqa_bench.cache import FeatureCache
    from agiqa_bench.records import Item

    items = [Item(id=f"img{i}", image=Path(root) / f"img{i}.png", prompt="", group="g", targets={})
             for i in range(start, start + 40)]
    barrier.wait()
    FeatureCache(root).get("shared-ns", items, lambda it: np.array([float(it.id[3:])]), save_every=3)


def test_concurrent_writers_of_one_cache_namespace_lose_no_entry(tmp_path):
    from agiqa_bench.cache import FeatureCache
    from agiqa_bench.records import Item

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_fill, args=(str(tmp_path), 40 * k, barrier)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    items = [Item(id=f"img{i}", image=tmp_path / f"img{i}.png", prompt="", group="g", targets={}) for i in range(160)]
    computed = []
    values = FeatureCache(tmp_path).get("shared-ns", items, lambda it: computed.append(it) or np.array([-1.0]))
    assert computed == []  # all 160 entries of the 4 writers are on disk
    np.testing.assert_array_equal(values[:, 0], np.arange(160.0))


# -- Ray, for real ------------------------------------------------------------------------------
def _ray_env() -> dict:
    env = dict(os.environ)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # resolve the node address to 127.0.0.1 (loopback only here)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return env


@pytest.fixture()
def ray_env(monkeypatch):
    for key, value in _ray_env().items():  # before Ray is imported: it reads them then
        monkeypatch.setenv(key, value)
    pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_ray_local_instance_stores_the_same_rows(serial_store, tmp_path, ray_env):
    root, serial_out = serial_store
    try:
        summary = execute(small_plan(root), out=tmp_path, executor="ray", workers=2, threads_per_job=1, device="cpu")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"Ray cannot start a local instance here: {exc}")
    assert summary.executor == "ray" and not summary.failed, summary.failed
    a, b = stored(serial_out), stored(tmp_path)
    np.testing.assert_array_equal(a[METRICS].to_numpy(), b[METRICS].to_numpy())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_run_joins_a_ray_cluster_by_address(tiny_agiqa3k, tmp_path, ray_env):
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the `ray` command is not on PATH")
    port = _free_port()
    temp = Path("/tmp") / f"ray-agiqa-{os.getpid()}"
    start = subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                            "--num-cpus", "2", "--include-dashboard", "false", "--temp-dir", str(temp),
                            "--disable-usage-stats"], capture_output=True, text=True, env=_ray_env(), timeout=120)
    if start.returncode != 0:
        pytest.skip(f"`ray start --head` failed here: {start.stderr.strip()[-300:]}")
    try:
        for address in ("auto", f"127.0.0.1:{port}"):
            out = tmp_path / address.replace(":", "_")
            result = CliRunner().invoke(app, ["run", "--methods", "cpbd", "--dataset", "agiqa3k", "--data-root",
                                              str(tiny_agiqa3k), "--repeats", "2", "--out", str(out),
                                              "--ray-address", address])
            assert result.exit_code == 0, result.output
            assert "on the ray executor" in result.output
            assert len(stored(out)) == 4
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, env=_ray_env(), timeout=120)
        time.sleep(1)


def test_ctrl_c_stops_the_workers_and_keeps_finished_jobs(tiny_agiqa3k, tmp_path, monkeypatch):
    """Ctrl-C in the driver (here: raised from the progress callback) terminates the worker processes at once;
    the finished jobs are in the store and the same call resumes without redoing them."""
    import multiprocessing

    from agiqa_bench import executors

    made = []
    real_pool = executors.LocalExecutor._new_pool

    def spy(self, ctx):
        pool = real_pool(self, ctx)
        made.append(pool)
        return pool

    monkeypatch.setattr(executors.LocalExecutor, "_new_pool", spy)
    plan = plan_run(["cpbd"], "agiqa3k", data_root=tiny_agiqa3k, repeats=4, targets=["quality"])

    def interrupt(kind, payload):
        if kind == "done":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute(plan, out=tmp_path, executor="local", workers=2, on_event=interrupt)
    time.sleep(0.5)
    assert made and not any(p.is_alive() for p in multiprocessing.active_children())
    assert len(stored(tmp_path)) == 1
    again = execute(plan, out=tmp_path, executor="local", workers=2)
    assert again.skipped == 1 and again.done == 3 and len(stored(tmp_path)) == 4


DRIVER = """
import sys, os
sys.path.insert(0, {tests!r})
from agiqa_test_support import SLEEPER
from agiqa_bench import registry
registry.register(SLEEPER)
from agiqa_bench.cli_progress import terminate_as_interrupt
from agiqa_bench.runner import execute, plan_run
plan = plan_run(["sleeper"], "agiqa3k", data_root={root!r}, repeats=4, targets=["quality"])
try:
    with terminate_as_interrupt() as terminated:
        execute(plan, out={out!r}, executor="local", workers=2)
except KeyboardInterrupt:
    print("terminated" if terminated else "interrupted", flush=True)
    sys.exit(143)
"""


def _workers_of(pid: int, timeout: float = 60.0) -> list[int]:
    """The pool workers (children running a spawn_main) of process `pid`, once both are up."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        kids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == pid and b"spawn_main" in cmd and b"resource_tracker" not in cmd:
                kids.append(int(entry.name))
        if len(kids) >= 2:
            return kids
        time.sleep(0.3)
    raise AssertionError("the driver's workers did not start")


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead child not yet reaped does not compute)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (OSError, IndexError):
        return False


def _gone(pids: list[int], timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(_running(p) for p in pids):
            return True
        time.sleep(0.3)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; the parent-death signal is Linux's")
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_stopped_driver_leaves_no_worker_running(tiny_agiqa3k, tmp_path, how):
    """SIGTERM of the driver stops its workers like Ctrl-C (exit 143); even kill -9 of the driver, which runs no
    cleanup, takes the workers down (Linux parent-death signal): no orphan keeps computing."""
    import signal as sig

    script = DRIVER.format(tests=str(Path(__file__).parent), root=str(tiny_agiqa3k), out=str(tmp_path / "out"))
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "AGIQA_TEST_SLEEP": "300"})
    try:
        workers = _workers_of(driver.pid)
        time.sleep(1.0)
        driver.send_signal(sig.SIGTERM if how == "sigterm" else sig.SIGKILL)
        output, _ = driver.communicate(timeout=60)
        if how == "sigterm":
            assert driver.returncode == 143 and "terminated" in output, output
        assert _gone(workers), f"workers {workers} still running after the driver's {how}"
    finally:
        if driver.poll() is None:
            driver.kill()
