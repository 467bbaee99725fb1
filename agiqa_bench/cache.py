"""Per-item feature cache: compute once per image, reuse across repeats and runs.

Handcrafted methods extract a feature vector (or a zero-shot score) per image.
The runner gives each method a cache folder inside the run folder; features are
stored per namespace (method + feature parameters) in one `.npz`, keyed by item
id and by the image file's size and modification time, so an edited image is
recomputed.  Writes are atomic (temporary file + rename), so a killed run never
leaves a half-written cache.

Several processes may fill one namespace at once (the parallel executors): each
save takes the namespace's lock file, merges the entries already on disk with its
own, and only then replaces the file, so no writer drops another's entries.

The map phase (`agiqa_bench.jobs.Shard`) computes a method's per-image values on a
worker that may share no disk with the driver: inside `recording()`, every value a
cache hands out is also recorded (and nothing is saved locally); the recording
travels back to the driver, which `merge`s it into the run's cache.  A worker that
cannot see that cache gets the values handed to it (`seed`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from agiqa_bench.errors import StoreError
from agiqa_bench.outputs import check_target
from agiqa_bench.records import Item


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock on `path` (created if needed, never through a link), held for the `with` block."""
    from agiqa_bench.outputs import open_lock_file

    with os.fdopen(open_lock_file(path, "lock the cache"), "r+b") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _item_key(item: Item) -> str:
    try:
        st = os.stat(item.image)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"
    return f"{item.id}|{stamp}"


def namespace_for(name: str, params: dict) -> str:
    """A file-safe namespace from a feature name and the parameters it depends on."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{safe}-{digest}"


#: While a map shard runs: namespace -> {key: value} of every value a cache handed out (see `recording`).
_recording: dict[str, dict[str, np.ndarray]] | None = None
#: Values the driver handed this worker (namespace -> {key: value}), read before the disk (see `seed`).
_seeded: dict[str, dict[str, np.ndarray]] = {}


@contextlib.contextmanager
def recording():
    """Within the block, every cache records the values it hands out (read or computed) into the yielded
    dict, and saves nothing to disk: the driver merges the recording into the run's cache."""
    global _recording
    previous, _recording = _recording, {}
    try:
        yield _recording
    finally:
        _recording = previous


def seed(tables: dict[str, dict[str, np.ndarray]] | None) -> None:
    """Hand this process the values of the map phase (namespace -> {key: value}); caches read them first."""
    _seeded.clear()
    for namespace, table in (tables or {}).items():
        _seeded[namespace] = dict(table)


def merge(root: str | Path, tables: dict[str, dict[str, np.ndarray]]) -> None:
    """Add recorded values to the cache under `root`, one locked read-merge-write per namespace."""
    cache = FeatureCache(root)
    for namespace, table in tables.items():
        if table:
            cache._memory[namespace] = dict(table)
            cache._save(namespace)


class CacheWarning(UserWarning):
    """A cache file was discarded (it is only a cache: its values are recomputed)."""


class FeatureCache:
    """Vectors per item, persisted under `root` (or kept in memory when root is None)."""

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, dict[str, np.ndarray]] = {}

    def _path(self, namespace: str) -> Path:
        assert self.root is not None
        return self.root / f"{namespace}.npz"

    def _load(self, namespace: str) -> dict[str, np.ndarray]:
        if namespace in self._memory:
            return self._memory[namespace]
        table = self._read_disk(namespace) if self.root is not None else {}
        for key, value in _seeded.get(namespace, {}).items():
            table.setdefault(key, value)
        self._memory[namespace] = table
        return table

    def _read_disk(self, namespace: str) -> dict[str, np.ndarray]:
        """The table saved for `namespace`, or {} with a warning when the file is not a cache we wrote: a link or
        FIFO, a corrupt or truncated archive, compressed members (ours are stored: a compressed one could
        inflate without bound), or arrays of the wrong kind.  The file is replaced at the next save."""
        path = self._path(namespace)
        if not path.exists() and not path.is_symlink():
            return {}
        try:
            check_target(path, "read the cache")
            with zipfile.ZipFile(path) as archive:
                members = archive.infolist()
                if any(m.compress_type != zipfile.ZIP_STORED for m in members):
                    raise ValueError("compressed members (agiqa-bench stores its caches uncompressed)")
                declared = sum(m.file_size for m in members)
                if declared > path.stat().st_size + (1 << 20):
                    raise ValueError(f"members declare {declared:,} bytes in a {path.stat().st_size:,}-byte file")
            with np.load(path, allow_pickle=False) as data:
                keys = [str(k) for k in data["keys"]]
                values = data["values"]
            if values.ndim != 2 or len(values) != len(keys) or values.dtype.kind not in "biuf":
                raise ValueError(f"arrays of shape {values.shape} and dtype {values.dtype} for {len(keys)} keys")
            return {k: values[i] for i, k in enumerate(keys)}
        except (OSError, ValueError, KeyError, EOFError, StoreError, zipfile.BadZipFile, zlib.error) as exc:
            why = " ".join(str(exc).split())[:200] or type(exc).__name__
            warnings.warn(CacheWarning(f"cache {path} is unreadable ({why}); discarded, its values are recomputed"),
                          stacklevel=2)
            return {}

    def _save(self, namespace: str) -> None:
        if self.root is None or _recording is not None:  # a map shard's values go to the driver instead
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / f"{namespace}.lock"):
            table = self._memory[namespace]
            for key, value in self._read_disk(namespace).items():  # what other writers saved meanwhile
                table.setdefault(key, value)
            self._write(namespace, table)

    def _write(self, namespace: str, table: dict[str, np.ndarray]) -> None:
        keys = np.array(list(table), dtype=str)
        values = np.stack([np.atleast_1d(v) for v in table.values()]) if table else np.zeros((0, 0))
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".npz.tmp")
        os.close(fd)
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, keys=keys, values=values)
            os.replace(tmp, self._path(namespace))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get(
        self,
        namespace: str,
        items: Sequence[Item],
        compute: Callable[[Item], np.ndarray],
        *,
        progress: Callable[[int], None] | None = None,
        save_every: int = 64,
    ) -> np.ndarray:
        """Feature matrix (n, d) for `items`, computing only what is not cached."""
        table = self._load(namespace)
        keys = [_item_key(item) for item in items]
        todo = [(k, item) for k, item in zip(keys, items) if k not in table]
        for done, (key, item) in enumerate(todo, 1):
            table[key] = np.atleast_1d(np.asarray(compute(item), dtype=np.float64))
            if progress is not None:
                progress(1)
            if done % save_every == 0:
                self._save(namespace)
        if todo:
            self._save(namespace)
        if _recording is not None:
            record = _recording.setdefault(namespace, {})
            for key in keys:
                record[key] = table[key]
        return np.stack([np.atleast_1d(table[k]) for k in keys]) if keys else np.zeros((0, 0))
