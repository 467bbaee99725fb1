"""The results store: one SQLite file per output folder.

One row per (dataset, data hash, target, method, method config, split hash,
repeat), where the split hash is that of the repeat's own train/val/test parts
(so extending a run from 10 to 20 repeats reuses the first 10), with every metric, timings, the harness version and the full method
configuration; per-item predictions in a second table.  All rows of one
(method, repeat) are written in a single transaction, so a run killed at any
moment leaves either all of them or none, and a rerun redoes exactly what is
missing.  Failed keys are stored with status 'error' and are retried on rerun.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from agiqa_bench.errors import StoreError
from agiqa_bench.outputs import check_target, output_error

DB_NAME = "results.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    dataset TEXT NOT NULL,
    data_hash TEXT NOT NULL,
    target TEXT NOT NULL,
    method TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    split_protocol TEXT NOT NULL,
    split_family TEXT NOT NULL,
    split_hash TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    srcc REAL, plcc REAL, krcc REAL, plcc_logistic REAL, rmse REAL,
    n_train INTEGER, n_val INTEGER, n_test INTEGER,
    fit_seconds REAL, predict_seconds REAL,
    config_json TEXT NOT NULL,
    overrides_json TEXT NOT NULL,
    info_json TEXT NOT NULL,
    harness_version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    method_json TEXT,
    train_dataset TEXT, train_data_hash TEXT, test_data_hash TEXT,
    UNIQUE (dataset, data_hash, target, method, config_hash, split_hash, repeat)
);
CREATE TABLE IF NOT EXISTS predictions (
    result_id INTEGER NOT NULL REFERENCES results(id) ON DELETE CASCADE,
    item_id TEXT NOT NULL,
    prediction REAL NOT NULL,
    mos REAL NOT NULL,
    item_group TEXT,
    generator TEXT,
    attributes TEXT,
    PRIMARY KEY (result_id, item_id)
);
"""

#: SQLite's `application_id` of a results store ("AGQB"): a store is recognised by it, or (stores written before
#: it was set) by having exactly our tables with at least our key columns.  Anything else is refused, and never
#: migrated: `--out` may point at a folder whose results.sqlite belongs to another program.
APPLICATION_ID = 0x41475142
_OUR_TABLES = {"results", "predictions"}
_CORE_COLUMNS = {"results": {"id", "dataset", "data_hash", "target", "method", "config_hash", "split_hash", "repeat",
                             "status", "config_json", "info_json"},
                 "predictions": {"result_id", "item_id", "prediction", "mos"}}


def recognise(conn: sqlite3.Connection, path: Path) -> bool:
    """True for our store (or an empty database), False for an older store of ours without the marker; a
    StoreError naming the file for anything else."""
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    if app == APPLICATION_ID:
        return True
    if app != 0:
        raise StoreError(f"{path} is not an agiqa-bench results store (SQLite application id {app:#x}); "
                         "choose another --out")
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return True
    foreign = sorted(tables - _OUR_TABLES - {"sqlite_sequence"})
    lacking = [f"{t}.{c}" for t in sorted(tables & _OUR_TABLES)
               for c in sorted(_CORE_COLUMNS[t] - {row[1] for row in conn.execute(f"PRAGMA table_info({t})")})]
    if foreign or lacking:
        what = f"tables {', '.join(foreign)}" if foreign else f"columns {', '.join(lacking[:4])} missing"
        raise StoreError(f"{path} is not an agiqa-bench results store ({what}); it is left untouched: choose "
                         "another --out")
    return False


KEY_FIELDS = ("dataset", "data_hash", "target", "method", "config_hash", "split_hash", "repeat")


@dataclass
class ResultRow:
    """One (method, target, repeat) outcome, ready to store."""

    dataset: str
    data_hash: str
    target: str
    method: str
    config_hash: str
    split_protocol: str
    split_family: str
    split_hash: str
    repeat: int
    status: str  # "ok" | "error"
    config: dict
    overrides: dict
    harness_version: str
    error: str | None = None
    metrics: dict = field(default_factory=dict)
    n_train: int = 0
    n_val: int = 0
    n_test: int = 0
    fit_seconds: float = 0.0
    predict_seconds: float = 0.0
    info: dict = field(default_factory=dict)
    item_ids: Sequence[str] = ()
    predictions: np.ndarray | None = None
    mos: np.ndarray | None = None
    item_groups: Sequence[str] = ()  # the split unit of each test item (for the cluster bootstrap)
    item_generators: Sequence[str] = ()  # the model that made each test image ("" if unknown)
    #: Each test item's other attributes (the dataset's `attributes`: style, object class, ...)
    item_attributes: Sequence[dict] = ()
    #: A cross-dataset row's training dataset and the label hashes of both sides (None otherwise);
    #: `data_hash` is then the pair's hash
    train_dataset: str | None = None
    train_data_hash: str | None = None
    test_data_hash: str | None = None
    #: What a report needs about the method without the registry: family, direction, approximation note,
    #: summary, reference, method version, weights identity, ablation components (MethodRun.provenance).
    method_info: dict = field(default_factory=dict)

    def key(self) -> tuple:
        return tuple(getattr(self, f) for f in KEY_FIELDS)


def _finite(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


class ResultStore:
    """Append-and-replace access to `<folder>/results.sqlite`.

    `readonly=True` opens an existing store for reading only (works on a read-only folder or file);
    any write or open failure is a `StoreError` naming the file, never a traceback.
    """

    def __init__(self, folder: str | Path, *, readonly: bool = False):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        self.readonly = readonly
        for side in ("", "-wal", "-shm", "-journal"):  # never through a link, never a FIFO (it would block)
            check_target(self.path.with_name(self.path.name + side),
                         "read the results store" if readonly else "open the results store for writing")
        try:
            if readonly:
                self._conn = _open_readonly(self.path)
                recognise(self._conn, self.path)
                self._columns = {t: {row[1] for row in self._conn.execute(f"PRAGMA table_info({t})")}
                                 for t in ("results", "predictions")}
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30)
            recognise(self._conn, self.path)  # before anything is created or altered
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.executescript(SCHEMA)
            self._migrate()
            self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self._conn.commit()
        except StoreError:
            if getattr(self, "_conn", None) is not None:
                self._conn.close()
            raise
        except (sqlite3.Error, OSError) as exc:
            raise output_error(self.path, "read the results store" if readonly else "open the results store for writing",
                               exc) from None
        self._columns = {t: {row[1] for row in self._conn.execute(f"PRAGMA table_info({t})")}
                         for t in ("results", "predictions")}

    def _migrate(self) -> None:
        """Older stores get the newer columns (NULL): per-item groups, generators and attributes, the method's
        provenance, the cross-dataset facts."""
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(predictions)")}
        for column in ("item_group", "generator", "attributes"):
            if column not in have:
                self._conn.execute(f"ALTER TABLE predictions ADD COLUMN {column} TEXT")
        have = {row[1] for row in self._conn.execute("PRAGMA table_info(results)")}
        for column in ("method_json", "train_dataset", "train_data_hash", "test_data_hash"):
            if column not in have:
                self._conn.execute(f"ALTER TABLE results ADD COLUMN {column} TEXT")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------
    def write(self, rows: Iterable[ResultRow]) -> None:
        """Store rows atomically: all or nothing.  An existing row with the same key is replaced.
        A failed write (disk full, read-only file) rolls back and raises `StoreError`."""
        rows = list(rows)
        try:
            self._write(rows)
        except (sqlite3.Error, OSError) as exc:
            raise output_error(self.path, "write the results store", exc) from None

    def _write(self, rows: list[ResultRow]) -> None:
        with self._conn:  # one transaction
            for row in rows:
                where = " AND ".join(f"{f} = ?" for f in KEY_FIELDS)
                self._conn.execute(f"DELETE FROM results WHERE {where}", row.key())
                cur = self._conn.execute(
                    "INSERT INTO results (dataset, data_hash, target, method, config_hash, split_protocol, split_family, split_hash,"
                    " repeat, status, error, srcc, plcc, krcc, plcc_logistic, rmse, n_train, n_val, n_test,"
                    " fit_seconds, predict_seconds, config_json, overrides_json, info_json, harness_version, created_at,"
                    " method_json, train_dataset, train_data_hash, test_data_hash)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        row.dataset, row.data_hash, row.target, row.method, row.config_hash, row.split_protocol,
                        row.split_family, row.split_hash, row.repeat, row.status, row.error,
                        *(_finite(row.metrics.get(m)) for m in ("srcc", "plcc", "krcc", "plcc_logistic", "rmse")),
                        row.n_train, row.n_val, row.n_test, row.fit_seconds, row.predict_seconds,
                        json.dumps(row.config, sort_keys=True, default=str),
                        json.dumps(row.overrides, sort_keys=True, default=str),
                        json.dumps(row.info, sort_keys=True, default=str),
                        row.harness_version, time.strftime("%Y-%m-%dT%H:%M:%S"),
                        json.dumps(row.method_info, sort_keys=True, default=str),
                        row.train_dataset, row.train_data_hash, row.test_data_hash,
                    ),
                )
                if row.predictions is not None:
                    rid = cur.lastrowid
                    n = len(row.item_ids)
                    groups = list(row.item_groups) or [None] * n
                    generators = list(row.item_generators) or [None] * n
                    attributes = [json.dumps(a, sort_keys=True, default=str) if a else None
                                  for a in row.item_attributes] or [None] * n
                    self._conn.executemany(
                        "INSERT INTO predictions (result_id, item_id, prediction, mos, item_group, generator, attributes)"
                        " VALUES (?,?,?,?,?,?,?)",
                        [(rid, i, float(p), float(m), g, gen, a) for i, p, m, g, gen, a
                         in zip(row.item_ids, row.predictions, row.mos, groups, generators, attributes)],
                    )

    def delete(self, **where: Any) -> list[tuple]:
        """Remove the result rows (and their predictions) whose columns equal `where`'s values (None: any;
        `config_hash` matches a prefix), in one transaction.  Returns (dataset, method, target, config_hash,
        repeat, status) of each removed row."""
        clauses, params = [], []
        for column, value in where.items():
            if value is None:
                continue
            if column not in ("dataset", "method", "target", "repeat", "status", "config_hash"):
                raise ValueError(f"cannot select result rows by {column!r}")
            if column == "config_hash":
                clauses.append("substr(config_hash, 1, ?) = ?")
                params += [len(str(value)), str(value)]
            else:
                clauses.append(f"{column} = ?")
                params.append(value)
        if not clauses:
            raise ValueError("refusing to delete every result row: select some")
        condition = " AND ".join(clauses)
        try:
            with self._conn:  # all or nothing
                removed = self._conn.execute(
                    f"SELECT dataset, method, target, config_hash, repeat, status FROM results WHERE {condition} "
                    "ORDER BY dataset, method, target, config_hash, repeat", params).fetchall()
                self._conn.execute(f"DELETE FROM predictions WHERE result_id IN (SELECT id FROM results WHERE {condition})",
                                   params)
                self._conn.execute(f"DELETE FROM results WHERE {condition}", params)
        except (sqlite3.Error, OSError) as exc:
            raise output_error(self.path, "delete from the results store", exc) from None
        return removed

    # -- reading --------------------------------------------------------------------
    def finished(self, key: tuple) -> bool:
        where = " AND ".join(f"{f} = ?" for f in KEY_FIELDS)
        cur = self._conn.execute(f"SELECT 1 FROM results WHERE {where} AND status = 'ok'", key)
        return cur.fetchone() is not None

    def frame(self, status: str | None = None):
        """All result rows as a pandas DataFrame (config columns parsed)."""
        import pandas as pd

        query = "SELECT * FROM results"
        params: tuple = ()
        if status:
            query += " WHERE status = ?"
            params = (status,)
        with closing(self._conn.cursor()) as cur:
            cur.execute(query + " ORDER BY dataset, target, method, repeat", params)
            cols = [d[0] for d in cur.description]
            frame = pd.DataFrame(cur.fetchall(), columns=cols)
        for column in ("method_json", "train_dataset", "train_data_hash", "test_data_hash"):
            if column not in frame.columns:  # an old store opened read-only
                frame[column] = None
        return frame

    def predictions(self, result_id: int | None = None):
        """Per-item predictions of one result row, or of every row (with `result_id` as a column)."""
        import pandas as pd

        columns = ["result_id", "item_id", "prediction", "mos", "item_group", "generator", "attributes"]
        have = self._columns["predictions"]  # an old store opened read-only may lack the newer ones
        query = f"SELECT {', '.join(c if c in have else f'NULL AS {c}' for c in columns)} FROM predictions"
        params: tuple = ()
        if result_id is not None:
            query += " WHERE result_id = ?"
            params = (result_id,)
        cur = self._conn.execute(query + " ORDER BY result_id, rowid", params)
        frame = pd.DataFrame(cur.fetchall(), columns=columns)
        return frame.drop(columns="result_id") if result_id is not None else frame


def _existing(folder: str | Path) -> Path:
    path = Path(folder) / DB_NAME
    if not path.exists():
        from agiqa_bench.errors import DataError

        raise DataError(f"no results store at {path}; run `agiqa-bench run --out {folder}` first")
    return path


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection; a store in a read-only folder (no room for WAL side files) opens immutable."""
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        conn.execute("SELECT count(*) FROM results").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
        conn.execute("SELECT count(*) FROM results").fetchone()
        return conn


def read_results(folder: str | Path = "runs", status: str | None = "ok"):
    """Results of an output folder as a DataFrame (only successful rows by default)."""
    _existing(folder)
    with ResultStore(folder, readonly=True) as store:
        return store.frame(status)


def read_predictions(folder: str | Path = "runs"):
    """Every stored per-item prediction, with the `result_id` of its result row."""
    _existing(folder)
    with ResultStore(folder, readonly=True) as store:
        return store.predictions()
