"""Figures of a report, written as PNG (matplotlib, no display needed).

Per (dataset, split family, target) block:
- ``srcc-*.png``: SRCC per method, mean over repeats with the 95% bootstrap
  interval as error bars (the sample std when no interval was computed);
- ``scatter-*.png``: predicted score vs MOS per method on one split (the first
  repeat every method has), with the 4-parameter logistic fitted on that split
  drawn over it (the curve behind "PLCC (logistic)");
- ``generators-*.png``: SRCC within each generator per method (mean over
  repeats), for datasets whose items name their generator; ``by-<attribute>-*.png``
  the same for any other item attribute asked for with `report --by`
  (`leaderboard.breakdown`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from agiqa_bench.metrics import fit_logistic4, logistic4
from leaderboard.aggregate import result_ids


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def srcc_bars(block: pd.DataFrame, title: str, path: Path) -> Path:
    plt = _pyplot()
    block = block.sort_values("srcc_mean", na_position="first")
    means = block["srcc_mean"].to_numpy(float)
    low = block.get("srcc_ci_low", pd.Series(np.nan, index=block.index)).to_numpy(float)
    high = block.get("srcc_ci_high", pd.Series(np.nan, index=block.index)).to_numpy(float)
    std = block["srcc_std"].fillna(0).to_numpy(float)
    have_ci = np.isfinite(low) & np.isfinite(high)
    err = np.where(have_ci, np.vstack([means - low, high - means]), np.vstack([std, std]))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(block) + 1.4))
    colours = ["#c44e52" if b else "#4c72b0" for b in block.get("is_best", pd.Series(False, index=block.index))]
    ax.barh(block["label"], np.nan_to_num(means), xerr=np.nan_to_num(np.abs(err)), color=colours, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("SRCC (mean over repeats; bars: 95% cluster-bootstrap CI, or ± std)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def scatter_grid(block: pd.DataFrame, preds: pd.DataFrame, ok: pd.DataFrame, title: str, path: Path) -> Path | None:
    plt = _pyplot()
    per_method = []
    for line in block.sort_values("srcc_mean", ascending=False).itertuples():
        rows = ok[ok["id"].isin(result_ids(line.result_ids))].sort_values("repeat")
        if rows.empty:
            continue
        first = rows.iloc[0]
        items = preds[preds["result_id"] == int(first["id"])]
        if len(items) >= 3:
            per_method.append((line.label, int(first["repeat"]), items, bool(line.lower_is_better)))
    if not per_method:
        return None
    cols = min(4, len(per_method))
    nrows = math.ceil(len(per_method) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.9 * nrows), squeeze=False)
    for ax, (label, repeat, items, flip) in zip(axes.ravel(), per_method):
        x = items["prediction"].to_numpy(float) * (-1 if flip else 1)
        y = items["mos"].to_numpy(float)
        ax.scatter(x, y, s=7, alpha=0.6)
        params = fit_logistic4(x, y) if np.ptp(x) > 0 else None
        if params is not None:
            grid = np.linspace(x.min(), x.max(), 200)
            ax.plot(grid, logistic4(grid, *params), color="#c44e52", linewidth=1.5)
        ax.set_title(f"{label} (repeat {repeat})", fontsize=8)
        ax.set_xlabel("-score" if flip else "score", fontsize=7)
        ax.set_ylabel("MOS", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(per_method):]:
        ax.axis("off")
    fig.suptitle(title + " — predicted vs MOS, logistic fit in red", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def attribute_breakdown(block: pd.DataFrame, preds: pd.DataFrame, attribute: str, title: str,
                        path: Path) -> Path | None:
    """Heatmap of the SRCC within each value of an item attribute (generator, style, ...) per method."""
    from leaderboard.breakdown import within_srcc

    plt = _pyplot()
    table = within_srcc(block, preds, attribute)
    if not table:
        return None
    values = sorted({g for row in table.values() for g in row})
    labels = list(table)
    grid = np.array([[table[m].get(g, np.nan) for g in values] for m in labels])
    heading = title + f" — SRCC within each {attribute} (mean over repeats)"
    # wide enough for the title and the method names (a few values would otherwise cut both)
    width = max(1.1 * len(values) + 3 + 0.05 * max(len(lab) for lab in labels), 0.075 * len(heading) + 0.5)
    fig, ax = plt.subplots(figsize=(width, 0.42 * len(labels) + 1.6))
    image = ax.imshow(grid, cmap="RdYlGn", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(values)), values, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for i in range(len(labels)):
        for j in range(len(values)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label=f"SRCC within {attribute}")
    ax.set_title(heading, fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def write_figures(report, folder: Path, by: tuple[str, ...] = ("generator",)) -> list[tuple[str, Path]]:
    """Every figure of the report into `folder`; returns (title, path) pairs (also kept on the report).
    `by`: the item attributes to break SRCC down by (one heatmap each per block, where items carry them).
    Text from data (method labels, generator names) is drawn literally: math text (`$...$`) is off."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        return _write_figures(report, folder, by)


def _write_figures(report, folder: Path, by: tuple[str, ...]) -> list[tuple[str, Path]]:
    if report.summary.empty:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    ok = report.frame[report.frame["status"] == "ok"]
    out: list[tuple[str, Path]] = []
    for (dataset, _, family, target), block in report.summary.groupby(["dataset", "data_hash", "split_family", "target"]):
        stem = _safe(f"{dataset}-{target}-{family.split()[0]}-{len(out)}")
        title = f"{dataset} / {target} ({family.split()[0]})"
        out.append((f"SRCC per method: {title}", srcc_bars(block, title, folder / f"srcc-{stem}.png")))
        path = scatter_grid(block, report.predictions, ok, title, folder / f"scatter-{stem}.png")
        if path:
            out.append((f"Predicted vs MOS: {title}", path))
        for attribute in by:
            name = "generators" if attribute == "generator" else f"by-{_safe(attribute)}"
            path = attribute_breakdown(block, report.predictions, attribute, title, folder / f"{name}-{stem}.png")
            if path:
                out.append((f"Per-{attribute} SRCC: {title}", path))
    report.figures = out
    return out


def _save(fig, path: Path) -> None:
    """A figure as PNG, written atomically and never through a link (`agiqa_bench.outputs.atomic_write`)."""
    from agiqa_bench.outputs import atomic_write

    atomic_write(path, lambda fh: fig.savefig(fh, dpi=110, format="png"), what="write the figure")
