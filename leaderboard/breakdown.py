"""Results broken down by an item attribute: SRCC within each generator, style, object class, ...

The store keeps, per test prediction, the item's generator (a column) and the dataset's other attributes
(`Dataset.attributes`, a JSON column): AIGCIQA2023's prompt style and object class, AGIQA-3k's and
SynthAGIQA's style.  For one report block (dataset, split family, target) and one attribute, every method
line gets, per attribute value, the SRCC between its predictions and the MOS of the test items with that
value, computed within each repeat and averaged over repeats (values with fewer than 3 items in a repeat,
or constant predictions or MOS there, are left out of that repeat).  `agiqa-bench report --by style`.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from agiqa_bench.errors import ConfigError
from leaderboard.aggregate import result_ids

MIN_ITEMS = 3


def attribute_values(preds: pd.DataFrame, name: str) -> pd.Series:
    """Each prediction row's value of attribute `name` ("" when it has none)."""
    if name == "generator":
        return preds["generator"].fillna("").astype(str)
    if "attributes" not in preds:
        return pd.Series("", index=preds.index)

    def one(text) -> str:
        if not isinstance(text, str) or not text:
            return ""
        try:
            return value_text(json.loads(text).get(name))
        except (ValueError, AttributeError):
            return ""

    return preds["attributes"].map(one)


def value_text(value) -> str:
    """A stored attribute value as text; "" for none: JSON null, NaN, blank, or "nan" (stores written before
    empty label cells were stored as "" hold them as "nan")."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    text = str(value).strip()
    return "" if text == "nan" else text


def stored_attributes(preds: pd.DataFrame) -> list[str]:
    """The attributes some stored prediction carries: generator first, then the others by name."""
    names = ["generator"] if "generator" in preds and (preds["generator"].fillna("") != "").any() else []
    found: set[str] = set()
    if "attributes" in preds:
        for text in preds["attributes"].dropna().unique():
            try:
                found.update(k for k, v in json.loads(text).items() if value_text(v))
            except (ValueError, AttributeError):
                continue
    return names + sorted(found - {"generator"})


def check_attributes(preds: pd.DataFrame, wanted: list[str]) -> None:
    """ConfigError naming what the store offers when `--by` asks for an attribute no item carries."""
    have = stored_attributes(preds)
    missing = [a for a in wanted if a not in have]
    if missing:
        raise ConfigError(f"--by {', '.join(missing)}: no stored test item has that attribute; the results in this store "
                          f"can be broken down by: {', '.join(have) or 'nothing (their datasets name no attributes)'}")


def within_srcc(block: pd.DataFrame, preds: pd.DataFrame, attribute: str) -> dict[str, dict[str, float]]:
    """{method label: {attribute value: SRCC within that value, mean over repeats}} for one report block."""
    from scipy.stats import spearmanr

    table: dict[str, dict[str, float]] = {}
    for line in block.itertuples():
        items = preds[preds["result_id"].isin(result_ids(line.result_ids))]
        if items.empty:
            continue
        items = items.assign(_value=attribute_values(items, attribute))
        items = items[items["_value"] != ""]
        if items.empty:
            continue
        sign = -1.0 if line.lower_is_better else 1.0
        per_value: dict[str, list[float]] = {}
        for (_, value), part in items.groupby(["result_id", "_value"]):
            if len(part) >= MIN_ITEMS and np.ptp(part["prediction"]) > 0 and np.ptp(part["mos"]) > 0:
                per_value.setdefault(value, []).append(float(spearmanr(sign * part["prediction"], part["mos"]).statistic))
        if per_value:
            table[line.label] = {v: float(np.mean(s)) for v, s in per_value.items()}
    return table


def breakdown_table(block: pd.DataFrame, preds: pd.DataFrame, attribute: str, title: str):
    """A `Table`: rows methods, columns the attribute's values, cells the within-value SRCC (None: no data)."""
    from leaderboard.tables import Cell, Table, _emphasis, _fmt, _mark_lacking, lacking, repeats_note

    table_data = within_srcc(block, preds, attribute)
    if not table_data:
        return None
    ids = [i for value in block["result_ids"] for i in result_ids(value)]
    values_of = attribute_values(preds[preds["result_id"].isin(ids)], attribute)
    without = int((values_of == "").sum())
    left_out = (f"Test predictions of items without a {attribute} ({without} of {len(values_of)}) are left out. "
                if without else "")
    values = sorted({v for row in table_data.values() for v in row})
    table = Table(f"{title} — SRCC within each {attribute}", ["Method", *values], key=f"by-{attribute}")
    labels = list(table_data)
    columns = []
    for v in values:
        nums = [table_data[lab].get(v, float("nan")) for lab in labels]
        cells = [Cell(_fmt(x, 3)) for x in nums]
        _emphasis(cells, [x if not lab.endswith("[test-oracle]") else float("nan") for x, lab in zip(nums, labels)])
        columns.append(cells)
    for i, lab in enumerate(labels):
        table.rows.append([Cell(lab), *(col[i] for col in columns)])
    _mark_lacking(table, lacking(block))
    table.caption = (f"Spearman correlation between predictions and MOS among the test items of each {attribute} "
                     f"(within each repeat, at least {MIN_ITEMS} items; mean over repeats). {left_out}"
                     f"{repeats_note([('', block)])}Bold: best per column.")
    return table
