"""`agiqa-bench results ...`: what an output folder's store holds, and removing rows from it.

    agiqa-bench results list [--out runs] [--method M] [--dataset D] [--json]
    agiqa-bench results delete [--out runs] --method M [--dataset D] [--target T] [--repeat R]
                               [--config HASH] [--status ok|error] --yes

Nobody needs to edit results.sqlite by hand: `delete` removes the selected rows and their per-item
predictions in one transaction, under the folder's run lock (never while a run writes there), and prints what
it removed; the next `run` recomputes them.  Mounted by `agiqa_bench.cli`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from agiqa_bench.console import console, err_console, friendly, plain, ranges
from agiqa_bench.errors import ConfigError

results_app = typer.Typer(no_args_is_help=True, help="List what a results store holds; delete rows from it.")

OUT_OPTION = typer.Option(Path("runs"), "--out", "-o", help="Output folder of `agiqa-bench run`.")


def listing(out: Path, method: Optional[str] = None, dataset: Optional[str] = None) -> list[dict]:
    """One record per (dataset and its labels, split family, method, configuration, target): repeats finished and
    failed, mean SRCC, dates."""
    from agiqa_bench.store import read_results

    frame = read_results(out, status=None)
    if method:
        frame = frame[frame["method"] == method]
    if dataset:
        frame = frame[frame["dataset"] == dataset]
    records = []
    keys = ["dataset", "data_hash", "split_family", "method", "config_hash", "target"]
    for (ds, labels, family, name, chash, target), part in frame.groupby(keys, sort=True, dropna=False):
        ok, failed = part[part["status"] == "ok"], part[part["status"] == "error"]
        overrides = json.loads(part["overrides_json"].iloc[0] or "{}")
        records.append({
            "dataset": ds, "data_hash": labels, "method": name, "config_hash": chash, "target": target,
            "overrides": overrides, "split_protocol": str(part["split_protocol"].iloc[0]), "split_family": family,
            "train_dataset": part["train_dataset"].iloc[0] if part["train_dataset"].notna().any() else None,
            "ok": len(ok), "failed": len(failed), "repeats": ranges(ok["repeat"]),
            "failed_repeats": ranges(failed["repeat"]),
            "srcc_mean": float(ok["srcc"].mean()) if len(ok) else None,
            "first": str(part["created_at"].min()), "last": str(part["created_at"].max()),
        })
    return records


@results_app.command("list")
@friendly
def results_list(
    out: Path = OUT_OPTION,
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Only this method (as stored, e.g. higrade.1)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only this dataset."),
    as_json: bool = typer.Option(False, "--json", help="Print the records as JSON."),
):
    """Per dataset, method, configuration and target: repeats finished and failed, mean SRCC, dates."""
    records = listing(out, method, dataset)
    if as_json:
        print(json.dumps(records, indent=1))
        return
    if not records:
        console.print(f"no result rows in {plain(out)}/results.sqlite" + (" match" if method or dataset else ""))
        return
    from rich import box

    table = Table(title=f"{plain(out)}/results.sqlite", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    labels = [r["method"] + (" " + json.dumps(r["overrides"], sort_keys=True) if r["overrides"] else "") for r in records]
    widest = max(len(r["method"]) for r in records)
    for col in ("method", "target", "dataset", "config", "ok", "fail", "repeats", "SRCC"):
        if col == "method":  # a method's name is never cut; the other columns fold
            table.add_column(col, min_width=widest, overflow="fold")
        else:
            table.add_column(col, justify="right" if col in ("ok", "fail", "SRCC") else "left", overflow="fold")
    for r, label in zip(records, labels):
        where = r["dataset"] if r["split_protocol"] == "grouped" else f"{r['dataset']} [{r['split_protocol']}]"
        if r["train_dataset"]:
            where = f"{r['train_dataset']} → {where}"
        table.add_row(plain(label), plain(r["target"]), plain(where), r["config_hash"][:8], str(r["ok"]),
                      str(r["failed"]) if r["failed"] else "", r["repeats"] or "—",
                      "n/a" if r["srcc_mean"] is None else f"{r['srcc_mean']:.3f}")
    console.print(table)
    err_console.print("dates and split families: --json; delete rows with `agiqa-bench results delete --method M "
                      "[--target T] [--repeat R] [--config HASH] --yes`", highlight=False)


@results_app.command("delete")
@friendly
def results_delete(
    out: Path = OUT_OPTION,
    method: str = typer.Option(..., "--method", "-m", help="The method whose rows go (as stored, e.g. higrade.1)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only this dataset's rows."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Only this target's rows."),
    repeat: Optional[int] = typer.Option(None, "--repeat", "-r", help="Only this repeat's rows."),
    config: Optional[str] = typer.Option(None, "--config", help="Only this configuration (a config hash or its first characters, as `results list` shows)."),
    status: Optional[str] = typer.Option(None, "--status", help="Only rows with this status: ok or error (e.g. clear the failures)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Delete without asking (required when input is not a terminal)."),
):
    """Delete result rows and their predictions; the next `run` recomputes them."""
    from agiqa_bench.outputs import RunLock
    from agiqa_bench.store import ResultStore, read_results

    if status not in (None, "ok", "error"):
        raise ConfigError(f"--status is ok or error, not {status!r}")
    if config is not None and not config.strip():
        raise ConfigError("--config needs a config hash (or its first characters)")
    frame = read_results(out, status=None)  # a missing or foreign store is the usual one-line error
    chosen = frame[frame["method"] == method]
    for column, value in (("dataset", dataset), ("target", target), ("repeat", repeat), ("status", status)):
        if value is not None:
            chosen = chosen[chosen[column] == value]
    if config:
        chosen = chosen[chosen["config_hash"].str.startswith(config)]
    if chosen.empty:
        known = ", ".join(sorted(frame["method"].unique())) or "none"
        raise ConfigError(f"no result row in {out}/results.sqlite matches; its methods: {known}")
    what = f"{len(chosen)} result row(s) of {method} in {out}/results.sqlite"
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"would delete {what}; add --yes to confirm (input is not a terminal)")
        if not typer.confirm(f"delete {what}?", default=False):
            err_console.print("nothing deleted")
            raise typer.Exit(1)
    with RunLock(out), ResultStore(out) as store:
        removed = store.delete(dataset=dataset, method=method, target=target, repeat=repeat, status=status,
                               config_hash=config)
    counts: dict[tuple, list[int]] = {}
    for ds, name, tgt, chash, rep, st in removed:
        counts.setdefault((ds, name, tgt, chash[:10], st), []).append(rep)
    console.print(f"deleted {len(removed)} result row(s) and their predictions:", highlight=False)
    for (ds, name, tgt, chash, st), reps in sorted(counts.items()):
        console.print(f"  {plain(ds)} / {plain(name)} / {plain(tgt)} config {chash} ({st}): repeats {ranges(reps)}",
                      highlight=False)
