"""Executors: where a plan's jobs run.  The driver (`runner.execute`) alone writes the store.

    serial   every job in this process, one after the other (`--workers 1`, for debugging)
    local    a pool of worker processes on this machine (`--workers N`)
    ray      Ray core tasks, on a local Ray instance or a cluster (`--ray-address auto|HOST:PORT`)

An executor receives a `WorkerContext` (what a worker needs to rebuild the dataset: its
name, root and options, or the dataset itself when it was given in memory; the splits'
facts; device, output folder) and a list of `Job`s, and yields one `JobOutcome` per job,
in completion order: the job's result rows, or its error.  Workers never open the store.

Faults: a worker process that dies mid-job (kill -9, out of memory, a lost Ray node)
leaves its job unfinished; the job is run again, up to `max_tries` times in all, then
recorded as failed with the reason.  Ctrl-C stops the workers (the driver keeps what was
stored).  Jobs run longest first (`longest_first`): trainings before feature fits before
zero-shot scoring, so the run does not end waiting on one long job.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from agiqa_bench.errors import AgiqaBenchError, ConfigError, MethodUnavailable

EXECUTORS = ("serial", "local", "ray")
MAX_TRIES = 3


@dataclass(frozen=True)
class DatasetSource:
    """How a worker rebuilds the plan's dataset: load it by name (then keep the plan's items), or use it as is.
    A cross-dataset run's source names its training dataset too (`train`) and the target map."""

    name: str | None = None
    data_root: str | None = None
    options: dict = field(default_factory=dict)
    item_ids: tuple[str, ...] = ()
    dataset: Any = None  # a Dataset given in memory (shipped whole)
    train: "DatasetSource | None" = None
    target_map: tuple[tuple[str, str], ...] = ()  # (test target, training target)

    def load(self):
        """The dataset as the driver planned it (images are not checked again: the driver did)."""
        if self.dataset is not None:
            return self.dataset
        from dataclasses import replace

        from agiqa_bench.datasets import load_dataset

        ds = load_dataset(self.name, self.data_root, **{**self.options, "check_images": False})
        if self.item_ids and len(self.item_ids) != len(ds):  # the driver dropped some (bad images)
            keep = set(self.item_ids)
            ds = replace(ds, items=[it for it in ds.items if it.id in keep])
        if self.train is not None:
            from agiqa_bench.crossdata import combine

            ds = combine(self.train.load(), ds, dict(self.target_map))
        return ds


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker needs besides the job: plain, picklable data."""

    source: DatasetSource
    data_hash: str
    split_protocol: str
    split_family: str
    split_params: dict
    device: str  # as asked (auto, cpu, cuda[:N]): resolved on the worker, which may have other devices
    out: str
    keep_checkpoints: bool = False
    threads: int | None = None  # torch / BLAS threads per worker (None: leave as is)
    cross: dict | None = None  # a cross-dataset run's facts (runner.WorkerPlan.cross)


@dataclass
class JobOutcome:
    index: int
    rows: list | None = None  # ResultRows of a finished job
    values: dict | None = None  # a finished map shard's per-image values ({namespace: {key: vector}})
    error: str | None = None  # the error message of a failed job
    unavailable: bool = False  # the error says the method cannot run here (weights, packages)
    tries: int = 1


def is_shard(job) -> bool:
    return not hasattr(job, "split")


def longest_first(jobs: Sequence) -> list[int]:
    """Job indices in the order workers take them: map shards first (the jobs of their methods wait for them),
    then zero-shot scoring without a map phase, then trainable torch methods, then the rest (feature + SVR
    fits, zero-shot metrics read from the cache); the plan's order within each class (stable).

    A zero-shot method without per-image caching runs its jobs one at a time (`exclusive`), so they start
    early: each lane then runs beside the trainings instead of forming a one-worker tail at the end.  The torch
    trainings, the longest jobs, come next, and the short fits last, so the tail is short."""
    def rank(job) -> int:
        if is_shard(job):
            return 0
        spec = job.method.spec
        if exclusive(job) is not None:
            return 1
        return 2 if spec.kind == "trainable" and spec.family in ("ours", "deep") else 3

    return sorted(range(len(jobs)), key=lambda i: rank(jobs[i]))


def exclusive(job) -> str | None:
    """The lane a job must run in alone, or None.  The jobs of a zero-shot method that has no map phase run one
    at a time, in the plan's order (a batched scorer then sees the serial loop's batches).  Methods with a map
    phase read their values from the cache, computed once per image by the shards, so their jobs, shards and
    trainings all run side by side."""
    m = job.method
    return m.name if m.spec.kind == "zero-shot" and not m.per_image and not is_shard(job) else None


class Schedule:
    """Which job a free worker takes next: longest first (`longest_first`), a zero-shot lane's jobs one at a time
    (`exclusive`), and a method's jobs only once every one of its map shards has finished (`done` counts them)."""

    def __init__(self, jobs: Sequence):
        self.jobs = jobs
        self.pending = deque(longest_first(jobs))
        self.position = {i: k for k, i in enumerate(self.pending)}
        self.busy: set = set()
        self.maps_left: dict[str, int] = {}
        for job in jobs:
            if is_shard(job):
                self.maps_left[job.method.name] = self.maps_left.get(job.method.name, 0) + 1

    def __bool__(self) -> bool:
        return bool(self.pending)

    def ready(self, i: int) -> bool:
        job = self.jobs[i]
        return is_shard(job) or not self.maps_left.get(job.method.name, 0)

    def take(self) -> int | None:
        """The first pending job that is ready and whose lane is free (removed from pending), or None."""
        for k, i in enumerate(self.pending):
            lane = exclusive(self.jobs[i])
            if self.ready(i) and (lane is None or lane not in self.busy):
                del self.pending[k]
                if lane is not None:
                    self.busy.add(lane)
                return i
        return None

    def finished(self, i: int) -> None:
        """Job `i` is over for good (done, failed, or given up): free its lane, count its shard."""
        self.busy.discard(exclusive(self.jobs[i]))
        if is_shard(self.jobs[i]):
            self.maps_left[self.jobs[i].method.name] -= 1

    def retry(self, i: int) -> None:
        """Job `i` goes back where the longest-first order had it (its lane freed)."""
        self.busy.discard(exclusive(self.jobs[i]))
        ordered = sorted([*self.pending, i], key=self.position.__getitem__)
        self.pending.clear()
        self.pending.extend(ordered)


# -- the worker side ---------------------------------------------------------------------------
_worker_state: dict[str, Any] = {}


def _dataset_for(ctx: WorkerContext):
    """The plan's dataset, rebuilt once per worker process and checked against the plan's labels hash."""
    key = (ctx.source.name, ctx.source.data_root, repr(sorted(ctx.source.options.items())), ctx.data_hash)
    cached = _worker_state.get("dataset")
    if cached is not None and cached[0] == key:
        return cached[1]
    from agiqa_bench.jobs import data_hash

    ds = ctx.source.load()
    if data_hash(ds) != ctx.data_hash:
        raise ConfigError(f"dataset {ctx.source.name!r} on this worker ({os.uname().nodename}) differs from the "
                          f"driver's (labels hash {data_hash(ds)} vs {ctx.data_hash}); give every machine the same "
                          "files at the same path, or a --data-root valid there")
    _worker_state["dataset"] = (key, ds)
    return ds


def keep_freed_memory() -> None:
    """glibc: serve arrays up to 32 MiB from the heap and keep freed memory for reuse, instead of a fresh mmap
    (and its page faults) for every array above 128 KiB.  Per-image work (NIQE, features) allocates and frees
    such arrays by the thousand: measured here, NIQE on 1,080 images spent 45 s of 95 in the kernel; with this,
    2 workers spent 2 to 4 s there, and the two stop contending for the page-fault path.  A no-op off glibc."""
    if not sys.platform.startswith("linux") or _worker_state.get("malloc_tuned"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        libc.mallopt(m_mmap_threshold, 32 * 2**20)
        libc.mallopt(m_trim_threshold, 1 << 30)
        libc.mallopt(m_top_pad, 64 * 2**20)
        _worker_state["malloc_tuned"] = True
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


def set_threads(threads: int | None) -> None:
    """torch and BLAS threads of this process: the environment (libraries loaded later), torch, and the thread
    pools of the BLAS / OpenMP libraries already loaded (numpy's OpenBLAS reads its environment only once, at
    import: without `threadpoolctl` two workers of 1 thread each would still run 2 BLAS threads apiece and
    oversubscribe the cores several times over)."""
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - a dependency of scikit-learn
        pass
    torch = sys.modules.get("torch")  # not imported for a job that needs no torch: it reads OMP_NUM_THREADS when it is
    if torch is not None:
        torch.set_num_threads(threads)


def prepare_process(threads: int | None) -> None:
    """What every process that runs jobs does first (a local worker, a Ray task, the serial loop): its thread
    count (`set_threads`) and its allocator (`keep_freed_memory`)."""
    set_threads(threads)
    keep_freed_memory()


def run_one(ctx: WorkerContext, index: int, job) -> JobOutcome:
    """Run one job (or map shard) in this process; an error becomes an outcome, never an exception."""
    from agiqa_bench.device import resolve_device
    from agiqa_bench.jobs import WorkerPlan, job_rows, shard_values

    try:
        plan = WorkerPlan(dataset=_dataset_for(ctx), data_hash=ctx.data_hash, split_protocol=ctx.split_protocol,
                          split_family=ctx.split_family, split_params=ctx.split_params, cross=ctx.cross)
        if is_shard(job):
            return JobOutcome(index, values=shard_values(job, plan, device=resolve_device(ctx.device),
                                                         out=Path(ctx.out)))
        rows = job_rows(job, plan, device=resolve_device(ctx.device), out=Path(ctx.out),
                        keep_checkpoints=ctx.keep_checkpoints)
        return JobOutcome(index, rows=rows)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # isolate: the driver records it and goes on
        message = str(exc) if isinstance(exc, AgiqaBenchError) else (
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        return JobOutcome(index, error=message, unavailable=isinstance(exc, MethodUnavailable))


def _die_with_parent() -> None:
    """Linux: this worker gets SIGTERM when the driver process dies, however it dies (kill -9 included),
    so no orphan keeps computing for a run that is gone."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        import multiprocessing

        parent = multiprocessing.parent_process()
        if parent is not None and os.getppid() != parent.pid:  # the driver died before the call took effect
            os._exit(1)
    except (OSError, AttributeError):  # pragma: no cover - an exotic libc
        pass


def _init_local_worker(ctx: WorkerContext, counter=None, gpus: int = 0) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _die_with_parent()
    if counter is not None and gpus > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
        with counter.get_lock():  # before torch is imported here: worker k trains on GPU k % gpus
            index, counter.value = counter.value, counter.value + 1
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    prepare_process(ctx.threads)
    _worker_state["ctx"] = ctx


def _local_task(index: int, job) -> JobOutcome:
    return run_one(_worker_state["ctx"], index, job)


# -- executors -----------------------------------------------------------------------------------
class SerialExecutor:
    """Every job in this process, in the plan's order."""

    name = "serial"
    workers = 1

    def run(self, ctx: WorkerContext, jobs: Sequence) -> Iterator[JobOutcome]:
        for index, job in enumerate(jobs):
            yield run_one(ctx, index, job)

    def close(self) -> None:
        pass


def _failure(index: int, tries: int, why: str) -> JobOutcome:
    return JobOutcome(index, error=f"the worker running this job stopped ({why}) in {tries} tries; "
                                   "rerun the same command to try again", tries=tries)


class LocalExecutor:
    """A pool of `workers` spawned processes; at most `workers` jobs in flight, longest first."""

    name = "local"

    def __init__(self, workers: int, *, max_tries: int = MAX_TRIES, gpus: int = 0):
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        self.workers = workers
        self.max_tries = max_tries
        self.gpus = gpus  # > 1: worker k sees only GPU k % gpus
        self._pool = None

    def _new_pool(self, ctx: WorkerContext):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        spawn = mp.get_context("spawn")
        self._pool = ProcessPoolExecutor(self.workers, mp_context=spawn, initializer=_init_local_worker,
                                         initargs=(ctx, spawn.Value("i", 0), self.gpus))
        return self._pool

    def run(self, ctx: WorkerContext, jobs: Sequence) -> Iterator[JobOutcome]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        schedule = Schedule(jobs)
        tries = {i: 0 for i in range(len(jobs))}
        while schedule:
            pool = self._new_pool(ctx)
            inflight: dict = {}
            broken = False
            while (schedule or inflight) and not broken:
                while len(inflight) < self.workers:
                    i = schedule.take()
                    if i is None:
                        break
                    tries[i] += 1
                    inflight[pool.submit(_local_task, i, jobs[i])] = i
                if not inflight:  # nothing ready and nothing running: cannot happen with a well-formed plan
                    raise RuntimeError("the schedule has pending jobs but none is ready")
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = inflight.pop(fut)
                    try:
                        outcome = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        if tries[i] >= self.max_tries:
                            schedule.finished(i)
                            yield _failure(i, tries[i], "its process died")
                        else:
                            schedule.retry(i)
                        continue
                    outcome.tries = tries[i]
                    schedule.finished(i)
                    yield outcome
            if broken:  # every job in flight on the broken pool is run again (or given up)
                for fut, i in inflight.items():
                    if tries[i] >= self.max_tries:
                        schedule.finished(i)
                        yield _failure(i, tries[i], "its process died")
                    else:
                        schedule.retry(i)
            self.close()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for proc in list(getattr(pool, "_processes", {}).values()):  # stop running jobs now, not after them
            if proc.is_alive():
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)


def _ray_token_present() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def _ray_task(ctx: WorkerContext, index: int, job, threads: int | None, seed=None) -> JobOutcome:
    from agiqa_bench.cache import seed as seed_cache

    prepare_process(threads)
    seed_cache(seed)  # the method's map values (None for a shard): read before this node's disk
    return run_one(ctx, index, job)


class RayExecutor:
    """Ray core tasks; each asks for the CPUs (and GPU share) of its method's kind."""

    name = "ray"

    def __init__(self, workers: int | None, *, address: str | None = None, gpus_per_job: float | None = None,
                 max_tries: int = MAX_TRIES):
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError("--executor ray needs Ray: pip install -e \".[ray]\" (or pip install ray)") from None
        self.address = address
        self.gpus_per_job = gpus_per_job
        self.max_tries = max_tries
        self.workers = workers or 0  # 0: as many tasks at once as the cluster has CPUs
        self._started = False

    def _connect(self) -> None:
        if self.address and self.address != "auto":
            probe_address(self.address)  # bounded (Ray itself retries an unreachable head for minutes), and before
            # Ray is imported: it reads its environment (node address resolution) once, at import
        import ray

        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if self.address and self.address != "auto" and "RAY_AUTH_MODE" not in os.environ and _ray_token_present():
            # Ray >= 2.5x clusters started by `ray start` use token authentication; `address="auto"` finds the
            # token by itself, an explicit HOST:PORT join needs the mode said (the token comes from
            # ~/.ray/auth_token, RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH)
            os.environ["RAY_AUTH_MODE"] = "token"
        try:
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.workers or os.cpu_count() or 1, **kwargs)
        except Exception as exc:  # Ray raises many kinds (connection, auth, version)
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            why = " ".join(str(exc).split())
            hint = ("; the cluster uses token authentication: put its token in ~/.ray/auth_token or RAY_AUTH_TOKEN "
                    "(`ray get-auth-token` on the head node prints it)" if "auth" in why.lower() else
                    "; start one with `ray start --head` or pass --ray-address auto" if self.address else "")
            raise ConfigError(f"cannot connect to {where}: {type(exc).__name__}: {why[:300]}{hint}") from None
        self._started = True

    def resources(self, job) -> dict[str, float]:
        """CPUs per task (1; trainings: all a worker slot has) and a GPU share for trainable torch methods."""
        spec = job.method.spec
        torch_training = spec.kind == "trainable" and spec.family in ("ours", "deep")
        out: dict[str, float] = {"num_cpus": 1}  # a Ray CPU is a scheduling slot; threads come from the context
        if torch_training and self.gpus_per_job:
            out["num_gpus"] = float(self.gpus_per_job)
        return out

    def run(self, ctx: WorkerContext, jobs: Sequence) -> Iterator[JobOutcome]:
        """Tasks as the schedule makes them ready.  A method's jobs are handed its map values through the object
        store (`seeds`), so a node that cannot see the driver's cache folder never recomputes them."""
        self._connect()  # first: it probes an explicit address before Ray is imported
        import ray

        task = ray.remote(_ray_task)
        ctx_ref = ray.put(ctx)
        schedule = Schedule(jobs)
        limit = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        values: dict[str, dict] = {}  # method -> its shards' values so far
        seeds: dict[str, Any] = {}  # method -> object ref of all its values, once its shards are done
        inflight: dict = {}
        while schedule or inflight:
            while len(inflight) < limit:
                i = schedule.take()
                if i is None:
                    break
                job = jobs[i]
                seed = None if is_shard(job) else seeds.get(job.method.name)
                ref = task.options(max_retries=self.max_tries - 1, **self.resources(job)).remote(
                    ctx_ref, i, job, ctx.threads, seed)
                inflight[ref] = i
            if not inflight:
                raise RuntimeError("the schedule has pending jobs but none is ready")
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                i = inflight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker or its node died, after Ray's retries
                    outcome = _failure(i, self.max_tries, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
                job = jobs[i]
                if is_shard(job):
                    name = job.method.name
                    for namespace, table in (outcome.values or {}).items():
                        values.setdefault(name, {}).setdefault(namespace, {}).update(table)
                schedule.finished(i)
                if is_shard(job) and not schedule.maps_left[job.method.name]:
                    seeds[job.method.name] = ray.put(values.pop(job.method.name, {}))
                yield outcome

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def cuda_devices(device: str) -> int:
    """How many CUDA devices jobs on `device` (auto, cuda, cuda:N, cpu) may spread over."""
    if device == "cpu" or device.startswith("cuda:"):
        return 0 if device == "cpu" else 1
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        return 0


def default_workers(n_jobs: int, *, gpus: int = 0, gpus_per_job: float | None = None) -> int:
    """As many workers as cores, no more than there are jobs; on GPUs, one training per GPU (or
    1 / gpus_per_job per GPU: 0.25 packs four), so trainings never crowd a GPU by default."""
    n = max(1, min(os.cpu_count() or 1, n_jobs))
    if gpus:
        n = min(n, max(1, int(gpus / (gpus_per_job or 1.0))))
    return n


#: Seconds a `--ray-address HOST:PORT` may take to accept a TCP connection before the run gives up
#: (AGIQA_BENCH_RAY_CONNECT_TIMEOUT overrides it).
RAY_CONNECT_TIMEOUT = 10.0


def probe_address(address: str) -> None:
    """A one-line ConfigError, within `RAY_CONNECT_TIMEOUT` seconds, when nothing accepts connections at a Ray
    address (`HOST:PORT` or `ray://HOST:PORT`)."""
    import socket

    text = address.split("://", 1)[-1].strip()
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"--ray-address must be auto or HOST:PORT (e.g. 127.0.0.1:6379), got {address!r}")
    host = host.strip("[]")
    try:
        timeout = float(os.environ.get("AGIQA_BENCH_RAY_CONNECT_TIMEOUT", RAY_CONNECT_TIMEOUT))
    except ValueError:
        timeout = RAY_CONNECT_TIMEOUT
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
        raise ConfigError(f"cannot connect to the Ray cluster at {address}: {why} within {timeout:g} s; is its head "
                          f"node running (`ray start --head`) and reachable from here?") from None


def make_executor(kind: str | None, *, workers: int | None, n_jobs: int, ray_address: str | None = None,
                  gpus_per_job: float | None = None, device: str = "cpu"):
    """The executor `run` asks for: `kind` None means local when more than one worker is useful, else serial."""
    if kind is not None and kind not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, not {kind!r}")
    if ray_address and kind in (None, "ray"):
        kind = "ray"
    gpus = cuda_devices(device) if kind != "ray" else 0
    n = workers if workers is not None else default_workers(n_jobs, gpus=gpus, gpus_per_job=gpus_per_job)
    if kind is None:
        kind = "local" if n > 1 else "serial"
    if kind == "serial":
        return SerialExecutor()
    if kind == "local":
        return LocalExecutor(n, gpus=gpus)
    return RayExecutor(workers if workers is not None or ray_address else n, address=ray_address,
                       gpus_per_job=gpus_per_job)
