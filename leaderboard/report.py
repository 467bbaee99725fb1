"""The report: statistics over the store's rows, paper-layout tables, figures, provenance.

`build_report(folder)` reads `results.sqlite` (rows and per-item predictions)
and computes, per (dataset, split family, target, method configuration):
mean ± std and median over repeats (`leaderboard.aggregate`), a 95% interval
from the prompt-cluster bootstrap, and, within each block, paired tests of
every method against the best one on the same splits (Nadeau-Bengio
corrected t-test, Holm-corrected across methods; Wilcoxon reported beside it).
See `leaderboard.statistics` for the procedures.

Renderers: `to_markdown`, `to_html` (one self-contained file, figures inlined),
`to_csv` (one row per summary line, every statistic), `to_json` (summary,
comparisons and provenance).

The paper-layout tables (1, 2, 3, cross-dataset, breakdowns) and their
significance marks are computed over the repeats that every compared line of a
block shares (`leaderboard.aggregate.shared_repeats`): a method whose job
failed in one repeat, or that was run with fewer repeats, makes the whole block
shown over the shared ones, and its caption says so, with the number of
repeats and the split-set hash.  The detail tables keep each method's own
repeats (their `n` column).  Every number carries the store row ids it was
computed from (`result_ids`), the split hashes and the configuration hash.
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from leaderboard.aggregate import result_ids, summarize, summarize_shared
from leaderboard.statistics import METRICS, SplitPredictions, cluster_bootstrap, holm, paired_comparison
from leaderboard.tables import (
    TIED,
    Table,
    md_code,
    md_escape,
    ablation_table,
    alignment_table,
    cross_label,
    cross_table,
    detail_table,
    is_cross,
    main_family,
    perceptual_table,
)

BLOCK = ["dataset", "data_hash", "split_family", "target"]
TEST_NOTE = (TIED + ": not significantly different from the block's best SRCC (Nadeau-Bengio corrected paired t-test "
             "on the per-repeat differences, Holm-corrected across methods, alpha {alpha}); a method whose "
             "per-repeat SRCC varies widely can be " + TIED + " despite a much lower mean: the test cannot tell it "
             "from the best, which is not evidence that the two are equal.")


@dataclass
class Report:
    folder: Path
    frame: pd.DataFrame  # every stored result row (ok and error)
    summary: pd.DataFrame  # one line per (block, method configuration), with intervals and tests
    comparisons: list = field(default_factory=list)  # statistics.Comparison, each method vs its block's best
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)
    n_boot: int = 1000
    seed: int = 0
    alpha: float = 0.05
    figures: list[tuple[str, Path]] = field(default_factory=list)
    #: Item attributes the results are broken down by in tables (`report --by`); figures use them too.
    by: tuple[str, ...] = ()
    #: Like `summary`, over the repeats every line of a block shares: what the paper-layout tables show.
    shared: pd.DataFrame = field(default_factory=pd.DataFrame)

    # -- tables --------------------------------------------------------------------
    def tables(self) -> list[Table]:
        if self.shared.empty:
            return []
        tail = TEST_NOTE.format(alpha=self.alpha)
        within = self.shared[~is_cross(self.shared)]  # the paper's tables: train and test on one dataset
        out = [t for t in (perceptual_table(within, tail), alignment_table(within, tail)) if t] if not within.empty else []
        for (dataset, _), part in within.groupby(["dataset", "data_hash"], sort=True):
            family = main_family(part)
            ablation = ablation_table(within, dataset, family) if family else None
            if ablation:
                out.append(ablation)
        cross = cross_table(self.shared)
        return out + ([cross] if cross else [])

    def breakdown_tables(self) -> list[Table]:
        """Per block and `by` attribute: the SRCC within each attribute value (`leaderboard.breakdown`)."""
        from leaderboard.breakdown import breakdown_table

        out = []
        if self.shared.empty or not self.by:
            return out
        for (dataset, _, family, target), part in self.shared.groupby(BLOCK, sort=True):
            for attribute in self.by:
                table = breakdown_table(part, self.predictions, attribute, f"{dataset} / {target} ({family.split()[0]})")
                if table:
                    table.key = f"by-{attribute}-{len(out)}"
                    out.append(table)
        return out

    def detail_tables(self) -> list[Table]:
        out = []
        for (dataset, data_hash, family, target), part in self.summary.groupby(BLOCK, sort=True):
            trained_on = part["train_dataset"].iloc[0] if bool(is_cross(part).any()) else None
            where = cross_label(trained_on, dataset, family) if trained_on else dataset
            table = detail_table(part, f"{where} / {target} — {family}")
            table.key = f"detail-{dataset}-{target}-{len(out)}"
            table.caption = (f"Labels {data_hash}. Mean ± sample std and median over repeats; 95% CI: prompt-cluster "
                             f"bootstrap of the mean over repeats ({self.n_boot} replicates, seed {self.seed}). "
                             + TEST_NOTE.format(alpha=self.alpha))
            out.append(table)
        return out

    # -- renderers -----------------------------------------------------------------
    def to_markdown(self, figure_root: Path | None = None) -> str:
        out = ["# agiqa-bench leaderboard", "", f"Store: `{self.folder / 'results.sqlite'}`; built "
               f"{time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
        if self.summary.empty:
            out += ["No finished results yet.", ""]
        for table in self.tables():
            out += [table.to_markdown(), ""]
        breakdowns = self.breakdown_tables()
        if breakdowns:
            out += [f"## By {md_escape(', '.join(self.by))}", ""]
            for table in breakdowns:
                out += [table.to_markdown(), ""]
        if not self.summary.empty:
            out += ["## All results", ""]
            for table in self.detail_tables():
                out += [table.to_markdown(), ""]
        if self.figures:
            out += ["## Figures", ""]
            for title, path in self.figures:
                rel = path.relative_to(figure_root) if figure_root and path.is_relative_to(figure_root) else path
                out += [f"![{md_escape(title)}](<{rel.as_posix().replace('>', '%3E')}>)", ""]
        out += self._notes_markdown()
        return "\n".join(out)

    def to_html(self) -> str:
        parts = ["<!doctype html><html><head><meta charset='utf-8'><title>agiqa-bench report</title>",
                 f"<style>{CSS}</style></head><body>", "<h1>agiqa-bench report</h1>",
                 f"<p>Store: <code>{html.escape(str(self.folder / 'results.sqlite'))}</code>; built "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}.</p>"]
        if self.summary.empty:
            parts.append("<p>No finished results yet.</p>")
        parts += [t.to_html() for t in self.tables()]
        breakdowns = self.breakdown_tables()
        if breakdowns:
            parts.append(f"<h2>By {html.escape(', '.join(self.by))}</h2>")
            parts += [t.to_html() for t in breakdowns]
        if self.figures:
            parts.append("<h2>Figures</h2>")
            for title, path in self.figures:
                data = base64.b64encode(path.read_bytes()).decode()
                parts.append(f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{html.escape(title)}</figcaption></figure>")
        if not self.summary.empty:
            parts.append("<h2>All results</h2>")
            parts += [t.to_html() for t in self.detail_tables()]
        notes = self._notes_markdown()
        if notes:
            nested = "\n".join("#" + line if line.startswith("## ") else line for line in notes)  # under the h2
            parts.append("<section class='notes'><h2>Notes and provenance</h2>" + render_markdown(nested) + "</section>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def to_latex(self) -> str:
        """The paper-layout tables (Tables 1-3, cross-dataset, the `--by` breakdowns) as booktabs tables in a
        document that compiles with a stock pdflatex (booktabs and graphicx, both in every TeX install); paste
        the table environments into a paper."""
        head = ["% agiqa-bench leaderboard: the paper-layout tables.",
                f"% Store: {' '.join(str(self.folder / 'results.sqlite').split())}; built "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}.",
                "% Each table environment needs \\usepackage{booktabs} (and graphicx for wide ones); "
                "compile this file as it is, or paste the tables into a paper.",
                "\\documentclass{article}", "\\usepackage[T1]{fontenc}", "\\usepackage{booktabs}",
                "\\usepackage{graphicx}", "\\begin{document}", ""]
        tables = self.tables() + self.breakdown_tables()
        body = [t.to_latex() + "\n" for t in tables] or ["No finished results yet.", ""]
        return "\n".join(head + body + ["\\end{document}"])

    def to_csv(self) -> str:
        return csv_safe(self.summary.drop(columns=["config_json"], errors="ignore")).to_csv(index=False)

    def to_json(self) -> str:
        body = {
            "format": "agiqa-bench/report@1",
            "store": str(self.folder / "results.sqlite"),
            "bootstrap": {"replicates": self.n_boot, "seed": self.seed, "unit": "prompt group within each split"},
            "alpha": self.alpha,
            "summary": json.loads(self.summary.to_json(orient="records")),
            # what the paper-layout tables show: each block over the repeats all of its lines share
            "shared_summary": json.loads(self.shared.to_json(orient="records")),
            "comparisons": [c.as_dict() for c in self.comparisons],
            "provenance": self.provenance(),
            "failures": self._failures(),
            "warnings": self._warnings(),
        }
        return json.dumps(body, indent=1, default=str)

    # -- provenance and notes -------------------------------------------------------
    def provenance(self) -> list[dict]:
        """Per block: the split hash of every repeat; per method: its configuration and store row ids."""
        out = []
        ok = self.frame[self.frame["status"] == "ok"]
        for key, part in ok.groupby(["dataset", "data_hash", "split_protocol", "split_family"], sort=True):
            splits = part.drop_duplicates("repeat").sort_values("repeat")
            methods = []
            for (method, chash), rows in part.groupby(["method", "config_hash"], sort=True):
                methods.append({"method": method, "config_hash": chash, "config": json.loads(rows["config_json"].iloc[0]),
                                "overrides": json.loads(rows["overrides_json"].iloc[0]),
                                "result_ids": sorted(int(i) for i in rows["id"])})
            trained_on = part["train_dataset"].dropna()
            out.append({"dataset": key[0], "data_hash": key[1], "split_protocol": key[2], "split_family": key[3],
                        "train_dataset": trained_on.iloc[0] if not trained_on.empty else None,
                        "split_hashes": {int(r): h for r, h in zip(splits["repeat"], splits["split_hash"])},
                        "harness_versions": sorted(part["harness_version"].unique()), "methods": methods})
        return out

    def _failures(self) -> list[dict]:
        errors = self.frame[self.frame["status"] == "error"]
        return [{"dataset": d, "method": m, "rows": len(p), "error": str(p["error"].iloc[0]).splitlines()[0]}
                for (d, m), p in errors.groupby(["dataset", "method"])]

    def _warnings(self) -> list[dict]:
        """Warnings the methods raised while making the finished rows, de-duplicated per dataset and method."""
        ok = self.frame[self.frame["status"] == "ok"]
        counts: dict[tuple[str, str, str], int] = {}
        for dataset, method, info in zip(ok["dataset"], ok["method"], ok["info_json"]):
            try:
                messages = json.loads(info or "{}").get("warnings", [])
            except ValueError:
                continue
            for message in messages:
                key = (dataset, method, str(message))
                counts[key] = counts.get(key, 0) + 1
        return [{"dataset": d, "method": m, "rows": n, "warning": w} for (d, m, w), n in sorted(counts.items())]

    def _notes_markdown(self) -> list[str]:
        out = approximation_notes(self.summary)
        failures = self._failures()
        if failures:
            out += ["## Failures", ""]
            out += [f"- {md_escape(f['dataset'])} / {md_escape(f['method'])}: {f['rows']} failed row(s): "
                    f"{md_escape(f['error'])}" for f in failures]
            out.append("")
        warned = self._warnings()
        if warned:
            out += ["## Warnings", "", "Raised by the methods while computing the rows above (each listed once).", ""]
            out += [f"- {md_escape(w['dataset'])} / {md_escape(w['method'])} ({w['rows']} row(s)): "
                    f"{md_escape(w['warning'])}" for w in warned]
            out.append("")
        provenance = self.provenance()
        if provenance:
            out += ["## Provenance", "", "Every number above is computed from these rows of the store "
                    "(`results.id`), these splits and these configurations.", ""]
            for block in provenance:
                hashes = ", ".join(f"{r}: {md_code(h)}" for r, h in block["split_hashes"].items())
                where = (f"{block['train_dataset']} → {block['dataset']}" if block.get("train_dataset")
                         else block["dataset"])
                out += [f"- **{md_escape(where)}** labels {md_code(block['data_hash'])}, "
                        f"{md_escape(block['split_family'])}; harness "
                        f"{md_escape(', '.join(block['harness_versions']))}; split hashes by repeat: {hashes}"]
                for m in block["methods"]:
                    ids = m["result_ids"]
                    out.append(f"  - {md_escape(m['method'])} config {md_code(m['config_hash'])} rows {ids[0]}–{ids[-1]} "
                               f"({len(ids)}): {md_code(json.dumps(m['config'], sort_keys=True))}")
            out.append("")
        return out


def render_markdown(text: str) -> str:
    """The notes' markdown (headings, lists, bold, code spans; every piece of data in it already escaped by
    `md_escape` / `md_code`) as HTML, through markdown-it (rich's own dependency), raw HTML off: a tag in the
    text shows as text."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).render(text)


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;padding:0 1.5em;max-width:1500px;color:#222;line-height:1.4}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.4em 0 1.6em;font-size:13px}.tcap{max-width:1100px;margin-top:1.4em;font-size:14px}
.cap{font-weight:normal;color:#555;display:block;margin-top:.3em;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
th{white-space:normal;vertical-align:bottom}
th:first-child,td:first-child{text-align:left}tr.section td{background:#eef;text-align:left;font-style:italic;white-space:normal}
figure{margin:1.5em 0;max-width:100%}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:14px}code{font-size:12px;background:#f4f4f4;padding:0 .2em;overflow-wrap:anywhere}
.notes li{margin:.2em 0}.notes{font-size:14px}
@media (max-width:700px){body{margin:.5em;padding:0 .5em}table{font-size:12px}
figure{overflow-x:auto}figure img{max-width:none}}"""


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula (starting with =, +, -, @, a tab or a carriage
    return) prefixed with a quote; numbers are left as they are."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = [("'" + v) if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r") else v
                           for v in out[column]]
    return out


def approximation_notes(summary) -> list[str]:
    """A note for every method in the tables that is not a faithful implementation (from the stored rows)."""
    notes = []
    if not summary.empty:
        for method, text in sorted(dict(zip(summary["method"], summary["approximation"])).items()):
            if text:
                notes.append(f"- **{md_escape(method)} is an approximation**: {md_escape(text)}.")
    return ["## Approximations", "", *notes, ""] if notes else []


# -- building -------------------------------------------------------------------------
def _split_predictions(preds: pd.DataFrame, result_ids: list[int], flip: bool) -> list[SplitPredictions]:
    out = []
    for rid in result_ids:
        rows = preds[preds["result_id"] == rid]
        if rows.empty:
            continue
        groups = rows["item_group"].where(rows["item_group"].notna(), rows["item_id"]).astype(str).to_numpy()
        sign = -1.0 if flip else 1.0
        out.append(SplitPredictions(sign * rows["prediction"].to_numpy(float), rows["mos"].to_numpy(float), groups))
    return out


def _intervals(summary: pd.DataFrame, preds: pd.DataFrame, n_boot: int, seed: int) -> pd.DataFrame:
    for metric in METRICS:
        summary[f"{metric}_ci_low"] = np.nan
        summary[f"{metric}_ci_high"] = np.nan
    if n_boot <= 0 or preds.empty:
        return summary
    by_result = {rid: part for rid, part in preds.groupby("result_id")}
    for idx, row in summary.iterrows():
        ids = result_ids(row["result_ids"])
        subset = pd.concat([by_result[i] for i in ids if i in by_result]) if any(i in by_result for i in ids) else None
        if subset is None:
            continue
        splits = _split_predictions(subset, ids, bool(row["lower_is_better"]))
        for metric in METRICS:
            low, high = cluster_bootstrap(splits, metric, n_boot, seed)
            summary.at[idx, f"{metric}_ci_low"], summary.at[idx, f"{metric}_ci_high"] = low, high
    return summary


def _comparisons(summary: pd.DataFrame, ok: pd.DataFrame, alpha: float) -> tuple[pd.DataFrame, list]:
    summary["is_best"] = False
    summary["p_nb"] = np.nan
    summary["p_wilcoxon"] = np.nan
    summary["p_holm"] = np.nan
    summary["tied_with_best"] = False
    found = []
    per_row = {int(r.id): r for r in ok.itertuples()}
    for _, block in summary.groupby(BLOCK, sort=False):
        ranked = block[~block["label"].str.endswith("[test-oracle]")]
        if ranked["srcc_mean"].notna().sum() == 0:
            continue
        best_idx = ranked["srcc_mean"].idxmax()
        summary.at[best_idx, "is_best"] = True
        best = summary.loc[best_idx]

        def by_split(line):
            rows = [per_row[i] for i in result_ids(line["result_ids"]) if i in per_row]
            return {r.split_hash: float(r.srcc) if r.srcc is not None else math.nan for r in rows}, \
                {r.split_hash: int(r.repeat) for r in rows}

        best_values, repeats = by_split(best)
        others = [i for i in ranked.index if i != best_idx]
        pvalues = []
        for idx in others:
            values, _ = by_split(summary.loc[idx])
            comp = paired_comparison(best["label"], summary.at[idx, "label"], "srcc", best_values, values, repeats,
                                     float(summary.at[idx, "n_train_mean"]), float(summary.at[idx, "n_test_mean"]))
            found.append(comp)
            summary.at[idx, "p_nb"], summary.at[idx, "p_wilcoxon"] = comp.nb_p, comp.wilcoxon_p
            pvalues.append(comp.nb_p)
        for idx, p in zip(others, holm(pvalues)):
            summary.at[idx, "p_holm"] = p
            summary.at[idx, "tied_with_best"] = bool(np.isfinite(p) and p >= alpha)
    return summary, found


def build_report(folder: str | Path = "runs", *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 by: tuple[str, ...] = ()) -> Report:
    """Statistics and comparisons of everything stored in `folder` (see the module docstring); `by`: item
    attributes to break the results down by (an attribute no stored item carries is a ConfigError)."""
    from agiqa_bench.store import read_predictions, read_results

    folder = Path(folder)
    frame = read_results(folder, status=None)
    ok = frame[frame["status"] == "ok"]
    summary = summarize(frame)
    if summary.empty:
        return Report(folder, frame, summary, n_boot=n_boot, seed=seed, alpha=alpha)
    preds = read_predictions(folder)
    preds = preds[preds["result_id"].isin(ok["id"])]
    summary = _intervals(summary, preds, n_boot, seed)
    summary, comparisons = _comparisons(summary, ok, alpha)
    shared = summarize_shared(frame)
    shared = _intervals(shared, preds, n_boot, seed)
    shared, _ = _comparisons(shared, ok, alpha)
    if by:
        from leaderboard.breakdown import check_attributes

        check_attributes(preds, list(by))
    return Report(folder, frame, summary, comparisons, preds, n_boot, seed, alpha, by=tuple(by), shared=shared)
