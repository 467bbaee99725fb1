"""Label scales: every trainable method ranks the same whatever affine scale the labels come in.

The runner puts a trainable method's training labels on the method's `label_scale` (fitted on the training
part only) and maps its predictions back (`agiqa_bench.labels`, `agiqa_bench.runner.fit_predict`), so
this holds for every registered method, plugins included, without any method doing it itself.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import spearmanr

from agiqa_bench.labels import AGIQA3K_SCALE, STANDARD, LabelMap, LabelScale
from agiqa_bench.method import MethodContext
from agiqa_bench.params import declaration
from agiqa_bench.registry import create_method, get_spec, list_methods, load_class
from agiqa_bench.runner import fit_predict

#: (a, b) of y -> a y + b: AIGCIQA2023-like (26 + 9y), a large a with a negative b, a small a with a negative b.
TRANSFORMS = [(9.0, 26.0), (1000.0, -5000.0), (0.01, -3.0)]
TRAINABLE = [name for name in list_methods() if get_spec(name)[0].kind == "trainable"]


def affine(items, a, b):
    return [replace(it, targets={t: a * v + b for t, v in it.targets.items()}) for it in items]


def run(name, smoke, data, a, b, tmp_path):
    ds, split = data
    spec, _ = get_spec(name)
    targets = ds.targets if spec.joint_targets else ds.targets[:1]
    parts = [affine(ds.subset(ids), a, b) for ids in (split.train, split.val, split.test)]
    method = create_method(name, smoke, MethodContext(seed=3, cache_dir=tmp_path / "cache", workdir=tmp_path))
    pred, *_ = fit_predict(method, *parts, targets)
    mos = np.array([[it.targets[t] for t in targets] for it in parts[2]])
    return pred, mos


@pytest.mark.parametrize("name", TRAINABLE)
def test_trainable_methods_rank_the_same_on_affine_labels(name, contract_data, image2prompt_ckpt, tmp_path):
    spec, _ = get_spec(name)
    smoke = dict(spec.smoke)
    if "image2prompt" in declaration(load_class(spec).params):
        smoke["image2prompt"] = str(image2prompt_ckpt)
    base, mos = run(name, smoke, contract_data, 1.0, 0.0, tmp_path)
    for a, b in TRANSFORMS:
        pred, scaled = run(name, smoke, contract_data, a, b, tmp_path)
        np.testing.assert_allclose(scaled, a * mos + b)
        for j in range(mos.shape[1]):
            want = spearmanr(base[:, j], mos[:, j]).statistic
            got = spearmanr(pred[:, j], scaled[:, j]).statistic
            assert abs(got - want) <= 1e-6, (name, a, b, j, got, want)
        # predictions come back in the labels' units: the same predictions, transformed
        np.testing.assert_allclose(pred, a * base + b, rtol=1e-4, atol=1e-4 * abs(a) * max(1.0, np.abs(base).max()))


def test_label_map_is_fitted_on_the_training_part_and_inverts():
    from agiqa_bench.records import Item

    items = [Item(str(i), None, "", {"quality": 30.0 + 10 * i, "alignment": 5.0}, str(i)) for i in range(5)]
    m = LabelMap.fit(items, ("quality", "alignment"), AGIQA3K_SCALE)
    y = np.array([30.0, 40, 50, 60, 70])
    z = m.forward("quality", y)
    assert np.isclose(z.mean(), 2.5) and np.isclose(z.std(), 1.0)
    assert m.spread[1] == 1.0 and m.forward("alignment", 5.0) == 2.5  # a constant target is only shifted
    mapped = m.items(items)
    assert [it.targets["quality"] for it in mapped] == pytest.approx(list(z)) and items[0].targets["quality"] == 30.0
    pred = np.stack([z, np.full(5, 2.5)], axis=1)
    np.testing.assert_allclose(m.inverse(pred), np.stack([y, np.full(5, 5.0)], axis=1))
    assert LabelMap.from_dict(m.to_dict()) == m
    with pytest.raises(ValueError):
        LabelScale(0.0, 0.0)


def test_the_runner_hands_a_method_labels_on_its_scale(contract_data):
    """What `fit` receives: the training part standardised (or on the declared scale); the test part never."""
    from agiqa_bench.method import Method, MethodSpec

    seen = {}

    class Spy(Method):
        label_scale = STANDARD

        def fit(self, train, val, targets):
            super().fit(train, val, targets)
            seen["train"] = np.array([it.targets[targets[0]] for it in train])
            seen["val"] = np.array([it.targets[targets[0]] for it in val])

        def predict(self, items):
            return np.full(len(items), 1.0)  # one standard deviation above the training mean

    ds, split = contract_data
    spec = MethodSpec(name="spy", factory="x:y", kind="trainable", summary="spy")
    train, val, test = (affine(ds.subset(ids), 9.0, 26.0) for ids in (split.train, split.val, split.test))
    pred, _, _, info = fit_predict(Spy(spec), train, val, test, ("quality",))
    y = np.array([it.targets["quality"] for it in train])
    np.testing.assert_allclose(seen["train"], (y - y.mean()) / y.std())
    yv = np.array([it.targets["quality"] for it in val])
    np.testing.assert_allclose(seen["val"], (yv - y.mean()) / y.std())
    np.testing.assert_allclose(pred[:, 0], y.mean() + y.std())
    assert info["label_map"]["offset"] == [pytest.approx(y.mean())]
