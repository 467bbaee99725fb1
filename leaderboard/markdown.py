"""The markdown leaderboard: one table per dataset and split, targets side by side.

Laid out like the paper's Tables 1 and 2: methods as rows, SRCC / PLCC / KRCC
per target as columns, each cell `mean ± std` over repeats, the best value of
each column in bold.  PLCC is on raw predictions (as in the IP-IQA code); the
logistic-fitted PLCC is in the CSV/JSON outputs.
"""

from __future__ import annotations

import math

import pandas as pd

from leaderboard.aggregate import summarize

SHOWN = (("srcc", "SRCC"), ("plcc", "PLCC"), ("krcc", "KRCC"))
TARGET_ORDER = ("quality", "alignment", "overall")


def _cell(mean: float, std: float, bold: bool) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    text = f"{mean:.4f}" + ("" if std is None or math.isnan(std) else f" ± {std:.4f}")
    return f"**{text}**" if bold else text


def _targets(part: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(part["target"]))
    return sorted(present, key=lambda t: (TARGET_ORDER.index(t) if t in TARGET_ORDER else 99, t))


def table(part: pd.DataFrame) -> str:
    """Markdown for one (dataset, split) block of the summary."""
    targets = _targets(part)
    labels = list(dict.fromkeys(part.sort_values("label")["label"]))
    best: dict[tuple[str, str], float] = {}
    for t in targets:
        sub = part[part["target"] == t]
        for metric, _ in SHOWN:
            values = sub[f"{metric}_mean"].dropna()
            if len(values):
                best[(t, metric)] = values.max()
    header = ["Method"] + [f"{t} {label}" for t in targets for _, label in SHOWN] + ["repeats"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        cells = [label]
        counts = set()
        for t in targets:
            row = part[(part["label"] == label) & (part["target"] == t)]
            if row.empty:
                cells += ["—"] * len(SHOWN)
                continue
            r = row.iloc[0]
            counts.add(int(r["n"]))
            for metric, _ in SHOWN:
                mean = r[f"{metric}_mean"]
                is_best = (t, metric) in best and not math.isnan(mean) and math.isclose(mean, best[(t, metric)])
                cells.append(_cell(mean, r[f"{metric}_std"], is_best))
        cells.append("/".join(str(c) for c in sorted(counts)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(frame: pd.DataFrame, title: str = "agiqa-bench leaderboard") -> str:
    """The whole leaderboard document from the store's rows."""
    summary = summarize(frame)
    out = [f"# {title}", ""]
    if summary.empty:
        out.append("No finished results yet.")
    blocks = summary.groupby(["dataset", "data_hash", "split_family"], sort=True)
    for (dataset, data_hash, family), part in blocks:
        out.append(f"## {dataset}")
        out.append("")
        out.append(f"Splits: {family}; labels `{data_hash}`.")
        out.append("")
        out.append(table(part))
        out.append("")
        versions = ", ".join(sorted(set(part["harness_version"])))
        out.append(
            f"Mean ± sample std over repeats; PLCC on raw scores; model selection as configured per method; "
            f"best per column in bold. Harness {versions}."
        )
        out.append("")
    errors = frame[frame["status"] == "error"]
    if not errors.empty:
        out.append("## Failures")
        out.append("")
        for (dataset, method), part in errors.groupby(["dataset", "method"]):
            first = str(part["error"].iloc[0]).splitlines()[0]
            out.append(f"- {dataset} / {method}: {len(part)} failed row(s): {first}")
        out.append("")
    return "\n".join(out)
