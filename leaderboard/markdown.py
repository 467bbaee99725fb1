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


ABLATION_COMPONENTS = ("Image2Prompt", "Integral prompt", "[QA]")


def ablation_components(config: dict) -> tuple[bool, bool, bool]:
    """Which of the paper's Table 3 components an IP-IQA configuration has."""
    mode = config.get("use_image2prompt", "no")
    i2p = mode == "yes" or (mode == "auto" and bool(config.get("image2prompt")))
    prompt = bool(config.get("use_prompt", False))
    return i2p, prompt, prompt and bool(config.get("qa_token", False))


def ablation_table(part: pd.DataFrame) -> str:
    """Table 3: IP-IQA variants with check marks per component, SRCC / PLCC / KRCC per target."""
    import json

    rows = part[part["method"].str.startswith("ipiqa")]
    targets = _targets(rows)
    header = ["Variant", *ABLATION_COMPONENTS] + [f"{t} {label}" for t in targets for _, label in SHOWN]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    variants = rows.drop_duplicates("label")
    order = sorted(variants.itertuples(), key=lambda r: ablation_components(json.loads(r.config_json)))
    best = {(t, m): rows[rows["target"] == t][f"{m}_mean"].max() for t in targets for m, _ in SHOWN}
    for r in order:
        marks = ["✓" if on else "" for on in ablation_components(json.loads(r.config_json))]
        cells = [r.label, *marks]
        for t in targets:
            hit = rows[(rows["label"] == r.label) & (rows["target"] == t)]
            for metric, _ in SHOWN:
                if hit.empty:
                    cells.append("—")
                    continue
                mean = hit.iloc[0][f"{metric}_mean"]
                cells.append(_cell(mean, hit.iloc[0][f"{metric}_std"], not math.isnan(mean) and math.isclose(mean, best[(t, metric)])))
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
        if part["method"].str.startswith("ipiqa").sum() and part[part["method"].str.startswith("ipiqa")]["label"].nunique() > 1:
            out.append(f"### Ablation of IP-IQA on {dataset} (Table 3 layout)")
            out.append("")
            out.append(ablation_table(part))
            out.append("")
        versions = ", ".join(sorted(set(part["harness_version"])))
        out.append(
            f"Mean ± sample std over repeats; PLCC on raw scores; trainable methods select their epoch on the "
            f"validation groups unless labelled [test-oracle] (selected on the test part, as the IP-IQA paper did: "
            f"optimistic); best per column in bold. Harness {versions}."
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
