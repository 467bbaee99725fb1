"""Aggregate stored rows over repeats: mean, std, median and count per method and target.

`shared_repeats` restricts a block's rows to the splits every compared method has finished, so that the
paper-layout tables compare methods on the same repeats (a method whose job failed, or that was run with
fewer repeats, would otherwise be averaged over other splits than its neighbours).
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd

METRIC_COLUMNS = ("srcc", "plcc", "krcc", "plcc_logistic", "rmse")
GROUP_COLUMNS = ["dataset", "data_hash", "split_protocol", "split_family", "target", "method", "config_hash"]
#: What the paper tables compare within: one dataset's labels, one split family, one target.
BLOCK_COLUMNS = ["dataset", "data_hash", "split_family", "target"]



def result_ids(value) -> list[int]:
    """The store row ids of a summary line's `result_ids` cell ("12,13,14"), in repeat order."""
    return [int(i) for i in str(value).split(",") if i]

def _loads(text: str) -> dict:
    try:
        return json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}


def method_label(method: str, overrides_json: str, config_json: str = "{}") -> str:
    """'ceiq', 'ceiq {C=10}' when the user overrode parameters, '... [test-oracle]' when epochs
    were selected on the test part (never comparable with honest rows)."""
    overrides = _loads(overrides_json)
    label = method
    if overrides:
        label += f" {{{', '.join(f'{k}={v}' for k, v in sorted(overrides.items()))}}}"
    if _loads(config_json).get("selection") == "test-oracle":
        label += " [test-oracle]"
    return label


def registry_info(method: str, config: dict) -> dict:
    """A method's report facts from today's registry: only for stores written before rows carried them."""
    from agiqa_bench.errors import ConfigError
    from agiqa_bench.registry import get_spec
    from agiqa_bench.runner import ablation_components

    try:
        spec, _ = get_spec(method)
        components = ablation_components(spec, config)
    except (ConfigError, ImportError, AttributeError):  # a plugin no longer installed
        return {}
    return {"family": spec.family, "lower_is_better": spec.lower_is_better, "approximation": spec.approximation,
            "components": components}


def method_infos(frame: pd.DataFrame) -> dict[str, dict]:
    """Per method, what the report needs to know (family, direction, approximation, ablation components),
    read from the store (`method_json`, newest row wins); stores older than that column use the registry."""
    infos: dict[str, dict] = {}
    if "method_json" in frame:
        for method, text in zip(frame["method"], frame["method_json"]):
            if isinstance(text, str) and text:
                infos[method] = _loads(text)
    for method in set(frame["method"]) - set(infos):
        infos[method] = registry_info(method, _loads(frame.loc[frame["method"] == method, "config_json"].iloc[0]))
    return infos


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, protocol, target, method config) with mean/std/n of each metric.

    Only status 'ok' rows are aggregated.  Standard deviation is the sample std
    (ddof=1) over repeats; NaN metrics (constant predictions) are left out of
    the mean and counted in `n_nan`.
    """
    ok = frame[frame["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame(columns=GROUP_COLUMNS + ["label", "family", "n", "approximation"])
    ok["label"] = [method_label(m, o, c) for m, o, c in zip(ok["method"], ok["overrides_json"], ok["config_json"])]
    infos = method_infos(ok)
    rows = []
    for key, part in ok.groupby(GROUP_COLUMNS, sort=False):
        row = dict(zip(GROUP_COLUMNS, key))
        row["label"] = part["label"].iloc[0]
        info = infos.get(row["method"], {})
        row["family"] = info.get("family", "")
        row["lower_is_better"] = bool(info.get("lower_is_better", False))
        row["approximation"] = info.get("approximation", "")
        row["method_version"] = str(info.get("version", ""))
        row["components_json"] = json.dumps(info.get("components") or {})
        row["config_json"] = part["config_json"].iloc[0]
        if "train_dataset" in part:  # a cross-dataset line: the dataset its methods were fitted on
            row["train_dataset"] = part["train_dataset"].iloc[0]
        row["n"] = int(part["repeat"].nunique())
        row["harness_version"] = ", ".join(sorted(part["harness_version"].unique()))
        row["split_hashes"] = ",".join(part.sort_values("repeat")["split_hash"])
        row["result_ids"] = ",".join(str(i) for i in part.sort_values("repeat")["id"])  # read by `result_ids`
        row["n_train_mean"] = float(part["n_train"].mean())
        row["n_test_mean"] = float(part["n_test"].mean())
        first = part.iloc[0]
        row["n_items"] = int((first["n_train"] or 0) + (first["n_val"] or 0) + (first["n_test"] or 0))
        for metric in METRIC_COLUMNS:
            values = part[metric].astype(float)
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_std"] = values.std(ddof=1) if values.count() > 1 else float("nan")
            row[f"{metric}_median"] = values.median()
            row[f"{metric}_n_nan"] = int(values.isna().sum())
        rows.append(row)
    return pd.DataFrame(rows)


def split_set_hash(split_hashes) -> str:
    """A short hash naming a set of splits (by their split hashes, order-free)."""
    return hashlib.sha256(",".join(sorted(split_hashes)).encode()).hexdigest()[:12]


def shared_repeats(ok: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The finished rows restricted, per block, to the splits that every method configuration of the block has.

    Returns (rows, facts): `facts` has one line per (block, method configuration) with `n_stored` (its
    finished repeats), `n_block` (repeats any configuration of the block has), `n_shared` (repeats shared by
    all) and `split_set` (`split_set_hash` of the shared splits).  A block whose configurations share no
    split at all keeps every row (`n_shared` 0): its table then says the rows are not comparable.
    """
    keys = ["method", "config_hash"]
    kept, facts = [], []
    for block, part in ok.groupby(BLOCK_COLUMNS, sort=False):
        per_config = {k: set(rows["split_hash"]) for k, rows in part.groupby(keys, sort=False)}
        union = set().union(*per_config.values())
        shared = set.intersection(*per_config.values())
        kept.append(part[part["split_hash"].isin(shared)] if shared else part)
        for (method, chash), hashes in per_config.items():
            facts.append({**dict(zip(BLOCK_COLUMNS, block)), "method": method, "config_hash": chash,
                          "n_stored": len(hashes), "n_block": len(union), "n_shared": len(shared),
                          "split_set": split_set_hash(shared) if shared else ""})
    rows = pd.concat(kept) if kept else ok.iloc[0:0]
    return rows, pd.DataFrame(facts, columns=BLOCK_COLUMNS + keys + ["n_stored", "n_block", "n_shared", "split_set"])


def summarize_shared(frame: pd.DataFrame) -> pd.DataFrame:
    """`summarize` over the repeats each block's methods share (`shared_repeats`), with its facts as columns."""
    ok = frame[frame["status"] == "ok"]
    rows, facts = shared_repeats(ok)
    summary = summarize(rows)
    if summary.empty:
        return summary
    return summary.merge(facts, on=BLOCK_COLUMNS + ["method", "config_hash"], how="left")
