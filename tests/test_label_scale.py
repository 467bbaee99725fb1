"""Label scales: every trainable method ranks the same whatever affine scale the labels come in.

The runner puts a trainable method's training labels on the method's `label_scale` (fitted on the training
part only) and maps its predictions back (`agiqa_bench.labels`, `agiqa_bench.runner.fit_predict`), so
this holds for every registered method, plugins included, without any method doing it itself.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agiqa_bench.labels import AGIQA3K_SCALE, STANDARD, LabelMap, LabelScale
from agiqa_bench.params import declaration
from agiqa_bench.registry import get_spec, list_methods, load_class
from agiqa_bench.runner import fit_predict

#: (a, b) of y -> a y + b: AIGCIQA2023-like (26 + 9y), a large a with a negative b, a small a with a negative b.
TRANSFORMS = [(9.0, 26.0), (1000.0, -5000.0), (0.01, -3.0)]
TRAINABLE = [name for name in list_methods() if get_spec(name)[0].kind == "trainable"]


def affine(items, a, b):
    return [replace(it, targets={t: a * v + b for t, v in it.targets.items()}) for it in items]


@pytest.mark.parametrize("name", TRAINABLE)
def test_trainable_methods_rank_the_same_on_affine_labels(name, contract_data, image2prompt_ckpt, tmp_path):
    """Over the whole registry, with `agiqa_bench.testing.check_label_scale` (what a plugin author runs too)."""
    from agiqa_bench.testing import AFFINE_MAPS, check_label_scale

    assert any(a > 100 for a, _ in AFFINE_MAPS) and any(b < 0 for _, b in AFFINE_MAPS)
    spec, _ = get_spec(name)
    extra = {"image2prompt": str(image2prompt_ckpt)} if "image2prompt" in declaration(load_class(spec).params) else {}
    ds, _ = contract_data
    check_label_scale(name, ds, overrides=extra, workdir=tmp_path)


def test_the_label_scale_check_catches_a_method_that_fits_raw_labels(contract_data, monkeypatch):
    """A method that opts out of the harness's scaling and is not scale-free itself is caught."""
    from agiqa_test_support import BRIGHTNESS, register

    from agiqa_bench.testing import ContractError, check_label_scale
    from baselines.svr import FeatureSVR

    register(monkeypatch, BRIGHTNESS)
    monkeypatch.setattr(FeatureSVR, "label_scale", None)  # raw labels into an SVR with a fixed epsilon
    with pytest.raises(ContractError, match=r"ceiq: SRCC on quality is .* with labels y but"):
        check_label_scale("ceiq", contract_data[0])


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
