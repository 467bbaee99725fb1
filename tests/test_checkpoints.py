"""Kept models (`agiqa_bench.checkpoints`): every trainable method's, written by a run, scored again.

The registry-wide round trip (fit, save, restore, same predictions) runs in `check_contract`
(`tests/test_registry.py::test_method_contract`); here: the run -> checkpoint -> `score` path end to end on
labels far from any method's scale, the SVR's arrays against sklearn, old formats, and the refusals.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from agiqa_bench import checkpoints, score
from agiqa_bench.cli import app
from agiqa_bench.errors import ConfigError

runner = CliRunner()
CNNIQA_FAST = ["--set", "cnniqa.image_size=48", "--set", "cnniqa.crop_size=32", "--set", "cnniqa.epochs=1",
               "--set", "cnniqa.batch_size=8", "--set", "cnniqa.test_crops=4", "--set", "cnniqa.selection=last"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
    """ceiq (SVR, one model per target) and cnniqa (deep, joint) run with --keep-checkpoints on the tiny set, its
    labels moved to 26 + 9y (an AIGCIQA2023-like scale), so the label maps matter."""
    from agiqa_test_support import make_tiny_agiqa3k

    root = tmp_path_factory.mktemp("kept")
    data = make_tiny_agiqa3k(root / "tiny3k")
    labels = pd.read_csv(data / "data.csv")
    for column in ("mos_quality", "mos_align"):
        labels[column] = 26 + 9 * labels[column]
    labels.to_csv(data / "data.csv", index=False)
    out = root / "runs"
    result = invoke("run", "--methods", "ceiq,cnniqa", "--dataset", "agiqa3k", "--data-root", data, "--repeats", 1,
                    "--out", out, "--keep-checkpoints", "--executor", "serial", *CNNIQA_FAST)
    assert result.exit_code == 0, result.output
    return data, out


def stored(out):
    from agiqa_bench.store import read_predictions, read_results

    rows, preds = read_results(out), read_predictions(out)
    return rows, preds


def test_a_kept_cnniqa_model_scores_as_the_run_predicted(kept_run, tmp_path):
    """`score --checkpoint` with a kept cnniqa model reproduces the run's stored predictions, in MOS units."""
    data, out = kept_run
    rows, preds = stored(out)
    row = rows[rows.method == "cnniqa"].iloc[0]
    info = json.loads(row.info_json)
    path = info["checkpoint"]
    ck = checkpoints.read(path)
    assert ck.method == "cnniqa" and ck.config_hash == row.config_hash and ck.split == row.split_hash
    assert ck.targets == ("quality", "alignment") and ck.label_map is not None
    assert ck.params == json.loads(row.config_json)
    items = preds[preds.result_id == row.id]
    pairs = pd.DataFrame({"image": [f"images/{i}" for i in items.item_id], "prompt": "p"})
    pairs.to_csv(data / "pairs.csv", index=False)
    result = invoke("score", "--checkpoint", path, "--csv", data / "pairs.csv", "--output", tmp_path / "s.csv",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "cnniqa (config" in result.output and "trained on agiqa3k, repeat 0" in result.output
    scored = pd.read_csv(tmp_path / "s.csv")
    assert list(scored.columns) == ["image", "prompt", "quality", "alignment"]
    for target in ("quality", "alignment"):
        want = preds[preds.result_id == rows[(rows.method == "cnniqa") & (rows.target == target)].id.iloc[0]]
        np.testing.assert_allclose(scored[target].to_numpy(), want.prediction.to_numpy(), rtol=1e-5, atol=1e-4)
    assert scored["quality"].between(20, 80).all()  # MOS units of these labels, not the method's scale


def test_kept_svr_models_score_from_python_as_the_run_predicted(kept_run):
    """One ceiq model per target, its SVR kept as arrays; `agiqa_bench.score(checkpoint=)` gives the same scores."""
    data, out = kept_run
    rows, preds = stored(out)
    ceiq = rows[rows.method == "ceiq"]
    assert sorted(ceiq.target) == ["alignment", "quality"]
    paths = {json.loads(r.info_json)["checkpoint"] for r in ceiq.itertuples()}
    assert len(paths) == 2  # one file per model
    for row in ceiq.itertuples():
        want = preds[preds.result_id == row.id]
        images = [data / "images" / i for i in want.item_id]
        got = score("ceiq", images, checkpoint=json.loads(row.info_json)["checkpoint"])
        np.testing.assert_allclose(got, want.prediction.to_numpy(), rtol=1e-9, atol=1e-9)
    with pytest.raises(ConfigError, match="holds a ceiq model, not cnniqa"):
        score("cnniqa", images, checkpoint=json.loads(row.info_json)["checkpoint"])


def test_the_svr_as_arrays_predicts_as_sklearn():
    """`RBFSVR` (what a checkpoint keeps) against the fitted `sklearn.svm.SVR`, several gammas and sizes."""
    from sklearn.svm import SVR

    from baselines.svr import RBFSVR

    rng = np.random.default_rng(0)
    for n, d, gamma in ((40, 5, 0.2), (300, 40, 1 / 40), (2000, 12, 4.0)):
        x, y = rng.uniform(-1, 1, (n, d)), rng.normal(size=n)
        model = SVR(kernel="rbf", C=2.0, gamma=gamma, epsilon=0.1).fit(x, y)
        test = rng.uniform(-1.5, 1.5, (1500, d))
        np.testing.assert_allclose(RBFSVR.of(model).predict(test), model.predict(test), rtol=1e-9, atol=1e-10)


def test_older_deep_checkpoints_still_load(contract_data, tmp_path):
    """A file in the earlier `agiqa-bench/deep@1` layout restores to the same model."""
    import torch

    from agiqa_bench.method import MethodContext
    from agiqa_bench.registry import create_method, get_spec

    ds, split = contract_data
    spec, _ = get_spec("cnniqa")
    method = create_method("cnniqa", spec.smoke, MethodContext(seed=2))
    method.fit(ds.subset(split.train), ds.subset(split.val), ds.targets)
    test = ds.subset(split.test)
    old = tmp_path / "old.pt"
    torch.save({"format": "agiqa-bench/deep@1", "method": "cnniqa", "params": method.config,
                "targets": list(ds.targets), "state_dict": method.model.state_dict(), "label_map": None}, old)
    np.testing.assert_allclose(checkpoints.restore(old).predict(test), method.predict(test), rtol=1e-6)


def test_refusals_say_what_is_wrong(contract_data, tmp_path):
    import torch

    from agiqa_bench.method import MethodContext
    from agiqa_bench.registry import create_method, get_spec

    ds, split = contract_data
    spec, _ = get_spec("ceiq")
    method = create_method("ceiq", spec.smoke, MethodContext(seed=2))
    method.fit(ds.subset(split.train), [], ("quality",))
    good = checkpoints.save(method, tmp_path / "ceiq.pt", config_hash="abc")
    payload = torch.load(good, weights_only=True)

    def variant(name, **changes):
        path = tmp_path / name
        torch.save({**payload, **changes}, path)
        return path

    with pytest.raises(ConfigError, match="made by method 'nosuch'.*lacks"):
        checkpoints.restore(variant("a.pt", method="nosuch"))
    with pytest.raises(ConfigError, match="its parameters no longer fit ceiq"):
        checkpoints.restore(variant("b.pt", params={**payload["params"], "retired_knob": 1}))
    with pytest.raises(ConfigError, match="not a model kept by agiqa-bench"):
        checkpoints.read(variant("c.pt", format="something/else"))
    with pytest.warns(checkpoints.CheckpointWarning, match="made by ceiq version 0"):
        checkpoints.restore(variant("d.pt", version="0"))
    images = [it.image for it in ds.subset(split.test)]
    with pytest.raises(ConfigError, match="drop the overrides"):
        score(None, images, checkpoint=good, overrides={"C": 3})
    ipiqa = create_method("ipiqa", get_spec("ipiqa")[0].smoke, MethodContext(seed=2))
    ipiqa.fit(ds.subset(split.train), ds.subset(split.val), ds.targets)
    joint = checkpoints.save(ipiqa, tmp_path / "ipiqa.pt")
    with pytest.raises(ConfigError, match="predicts quality, alignment; choose one with target="):
        score(None, images, ["a prompt"] * len(images), checkpoint=joint)
    with pytest.raises(ConfigError, match="scores images against their prompts"):
        score(None, images, checkpoint=joint, target="quality")
    assert score(None, images, ["a prompt"] * len(images), checkpoint=joint, target="alignment").shape == (len(images),)


def test_a_method_without_the_hooks_is_run_and_named_in_a_warning(tiny_agiqa3k, tmp_path, monkeypatch):
    from agiqa_test_support import BRIGHTNESS, register

    register(monkeypatch, BRIGHTNESS)
    out = tmp_path / "runs"
    result = invoke("run", "--methods", "brightness", "--dataset", "agiqa3k", "--data-root", tiny_agiqa3k,
                    "--repeats", 1, "--target", "quality", "--out", out, "--keep-checkpoints", "--executor", "serial")
    assert result.exit_code == 0, result.output
    rows, _ = stored(out)
    info = json.loads(rows.info_json.iloc[0])
    assert info["checkpoint"] is None
    assert not (out / "checkpoints").exists()


def test_the_contract_check_catches_a_checkpoint_that_forgets_state(contract_data, monkeypatch):
    from agiqa_bench.testing import ContractError, check_contract
    from baselines.svr import FeatureSVR

    ds, _ = contract_data
    real = FeatureSVR.checkpoint_state
    monkeypatch.setattr(FeatureSVR, "checkpoint_state", lambda self: {**real(self), "intercept": 0.0})
    with pytest.raises(ContractError, match="ceiq: the model restored from its checkpoint predicts differently"):
        check_contract("ceiq", ds)
