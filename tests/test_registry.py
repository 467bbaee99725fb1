"""The registry, and one contract test that every registered method must pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agiqa_bench.errors import ConfigError, MethodUnavailable
from agiqa_bench.method import MethodContext
from agiqa_bench.params import declaration
from agiqa_bench.registry import all_specs, canonical_name, create_method, default_methods, get_spec, list_methods


HEAVY = ("torch", "torchvision", "open_clip", "pyiqa", "timm", "transformers", "tokenizers", "sklearn", "skimage",
         "ipiqa.model")


def test_listing_imports_no_model_code():
    """Specs live beside their methods, but reading them (and the `methods` listing) loads no model library."""
    code = (
        "import sys; from agiqa_bench.registry import list_methods, all_specs; list_methods(); all_specs();"
        "from agiqa_bench.cli import app; from typer.testing import CliRunner;"
        "r = CliRunner().invoke(app, ['methods']); assert r.exit_code == 0, r.output;"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]; print(heavy); assert not heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_registry_names_no_method():
    """Built-ins register through the entry-point group like any plugin: the registry module names none."""
    import agiqa_bench.registry as registry

    text = Path(registry.__file__).read_text()
    for spec in all_specs():
        assert f'"{spec.name}"' not in text and f"'{spec.name}'" not in text, spec.name
        assert spec.factory.split(":")[0] not in text


def built_in(name: str) -> bool:
    """A method this project ships (an installed plugin's are not compared with the record)."""
    return get_spec(name)[0].factory.startswith(BUILT_IN)


def test_same_methods_as_recorded():
    """The renovation moved every spec beside its method; names, variants, aliases and the default run stay.
    Only the built-ins are compared: an installed plugin adds names (and never joins the default run)."""
    recorded = json.loads((Path(__file__).parent / "fixtures" / "method_names.json").read_text())
    assert sorted(n for n in list_methods() if built_in(n)) == sorted(recorded["methods"])
    assert sorted(n for n in default_methods() if built_in(n)) == sorted(recorded["default_run"])
    for alias, canonical in recorded["aliases"].items():
        assert canonical_name(alias) == canonical


def test_names_variants_and_aliases():
    assert canonical_name("dsiqa") == "cpbd"
    spec, variant = get_spec("ceiq.grid")
    assert spec.name == "ceiq" and variant == "grid"
    assert "ceiq.grid" in list_methods() and list_methods("ceiq*") == ["ceiq", "ceiq.grid"]
    # the longest registered prefix wins: dotted canonical names and dotted variants
    assert get_spec("sisblim")[0].name == "sisblim.approx" and get_spec("sisblim.approx")[1] is None
    assert get_spec("higrade.1.grid")[1] == "1.grid" and canonical_name("higrade.2") == "higrade.2"
    # HIGRADE's two models run by default, not the bare name
    assert {"higrade.1", "higrade.2"} <= set(default_methods()) and "higrade" not in default_methods()
    with pytest.raises(ConfigError, match="no variant 'nope'"):
        get_spec("ceiq.nope")
    with pytest.raises(ConfigError, match="unknown method"):
        get_spec("not-a-method")


def test_specs_are_complete():
    for spec in all_specs():
        assert spec.kind in ("zero-shot", "trainable")
        assert ":" in spec.factory and spec.summary
        assert set(spec.inputs) <= {"image", "prompt"}


#: The packages of the built-in methods (test-support methods keep dict declarations: the legacy path).
BUILT_IN = ("baselines.", "ipiqa.")


def test_every_method_declares_its_parameters_as_a_dataclass():
    """One declaration per method: a frozen dataclass of `param(...)` fields, each default inside its own range, and
    every variant, dataset default and smoke configuration inside the declared ranges too."""
    import dataclasses
    from collections.abc import Mapping

    from agiqa_bench.registry import load_class, method_params

    specs = [spec for spec in all_specs() if spec.factory.startswith(BUILT_IN)]
    assert len(specs) >= 18
    for spec in specs:
        params = load_class(spec).params
        assert dataclasses.is_dataclass(params) and isinstance(params, type), spec.name
        assert not isinstance(params, Mapping) and params.__dataclass_params__.frozen, spec.name
        for key, p in declaration(params).items():
            assert p.help, f"{spec.name}.{key} has no help"
            if isinstance(p.default, (int, float)) and not isinstance(p.default, bool) or p.choices is not None:
                assert p.check(p.default, f"{spec.name}.{key}") == p.default
        for name in [spec.name, *(f"{spec.name}.{v}" for v in spec.variants)]:
            for dataset in (None, "synthetic", *spec.dataset_defaults):
                method_params(name, None, dataset)
        method_params(spec.name, spec.smoke, "synthetic")


def test_extensions_keep_the_inherited_ranges():
    """`with_defaults` changes a default and keeps the range; an extension adds its own parameters."""
    from baselines.cnniqa import CNNIQAParams
    from baselines.deep import DeepIQAParams
    from baselines.hypernet import HyperIQAParams

    base, cnn, hyper = declaration(DeepIQAParams), declaration(CNNIQAParams), declaration(HyperIQAParams)
    assert cnn["lr"].default == 1e-3 and base["lr"].default == 1e-4 and cnn["lr"].gt == base["lr"].gt == 0
    assert cnn["lr_schedule"].choices == base["lr_schedule"].choices and "lcn" in cnn and "lcn" not in base
    assert "hyperiqa" in hyper["lr_schedule"].choices and "hyperiqa" not in base["lr_schedule"].choices
    assert list(cnn)[:len(base)] == list(base)  # inherited parameters keep their place


@pytest.mark.parametrize("name, setting, message", [
    ("dbcnn", {"epochs": "0"}, "dbcnn.epochs: must be an integer >= 1; got 0"),
    ("ipiqa", {"lr": "0"}, "ipiqa.lr: must be a number > 0; got 0.0"),
    ("cnniqa", {"optimizer": "lbfgs"}, "cnniqa.optimizer: must be one of adamw, adam, sgd; got 'lbfgs'"),
    ("ipiqa", {"dropout": "1"}, "ipiqa.dropout: must be a number >= 0 and < 1; got 1.0"),
])
def test_a_range_violation_is_refused_by_the_plan_before_any_training(name, setting, message, tiny_agiqa3k,
                                                                      monkeypatch):
    from agiqa_bench.runner import plan_run

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the plan should have refused the configuration")

    monkeypatch.setattr("baselines.deep.fit_regressor", no_training)
    monkeypatch.setattr("ipiqa.method.fit_regressor", no_training)
    with pytest.raises(ConfigError) as err:
        plan_run([name], "agiqa3k", data_root=tiny_agiqa3k, repeats=1, overrides={name: setting})
    assert str(err.value) == message


def test_entry_point_plugins_are_picked_up(monkeypatch):
    from agiqa_bench import registry
    from agiqa_bench.method import MethodSpec

    class FakeEntryPoint:
        name, value = "toy", "toy_pkg:SPEC"

        def load(self):
            return MethodSpec(name="toy", factory="agiqa_test_support:Brightness", kind="trainable", summary="plugin")

    real = registry.metadata.entry_points
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: [*real(group=group), FakeEntryPoint()])
    registry.refresh()
    try:
        assert "toy" in list_methods() and "cpbd" in list_methods()
        assert create_method("toy").spec.summary == "plugin"
    finally:
        monkeypatch.undo()
        registry.refresh()
    assert "toy" not in list_methods()


@pytest.mark.parametrize("name", list_methods())
def test_method_contract(name, contract_data, image2prompt_ckpt, tmp_path):
    """Build, fit on a tiny dataset, predict: right shape, finite, deterministic (`agiqa_bench.testing`, the
    checks a plugin author runs too)."""
    from agiqa_bench.registry import load_class
    from agiqa_bench.testing import check_contract

    ds, _ = contract_data
    spec, _ = get_spec(name)
    extra = {"image2prompt": str(image2prompt_ckpt)} if "image2prompt" in declaration(load_class(spec).params) else {}
    check_contract(name, ds, overrides=extra, workdir=tmp_path)


def test_the_contract_check_catches_a_broken_method(contract_data, monkeypatch):
    """`check_contract` fails, naming the method and the fault, on a method that breaks the contract."""
    from agiqa_test_support import BRIGHTNESS, Brightness, register

    from agiqa_bench.testing import ContractError, check_contract

    register(monkeypatch, BRIGHTNESS)
    ds, _ = contract_data
    monkeypatch.setattr(Brightness, "predict", lambda self, items: np.zeros(len(items)))
    with pytest.raises(ContractError, match="brightness: predicts one constant value"):
        check_contract("brightness", ds)
    monkeypatch.setattr(Brightness, "predict", lambda self, items: np.random.default_rng().random(len(items)))
    with pytest.raises(ContractError, match="brightness: two fits with the same seed predict differently"):
        check_contract("brightness", ds)
    monkeypatch.setattr(Brightness, "predict", lambda self, items: np.zeros((len(items), 3)))
    with pytest.raises(ContractError, match="brightness: predict returned shape"):
        check_contract("brightness", ds)


#: Methods whose weights go through the one resolver (agiqa_bench.weights), by weights parameter.
RESOLVED_WEIGHTS = [("ipiqa", "pretrained"), ("clipiqa", "pretrained"), ("clipiqa.plus", "pretrained"),
                    ("clipscore", "pretrained"), ("niqe", "params"), ("dbcnn", "backbone_weights"),
                    ("dbcnn", "scnn_weights"), ("hypernet", "backbone_weights"), ("resnet50", "backbone_weights"),
                    ("hps.v2_1", "checkpoint"), ("hps.v1", "checkpoint"), ("pickscore", "model"),
                    ("pickscore", "processor"), ("imagereward", "checkpoint"), ("imagereward", "med_config"),
                    ("imagereward", "tokenizer_vocab"), ("stairreward.approx", "checkpoint"),
                    ("ipce", "pretrained"), ("ipce.zero_shot", "pretrained")]
#: Hub files that are not cached while downloads are off: (method, param, value, file, source).
HUB_WEIGHTS = [
    ("hps.v2_1", "checkpoint", "hf-hub:xswu/HPSv2/HPS_v2.1_compressed.pt", "HPS_v2.1_compressed.pt",
     "hf-hub:xswu/HPSv2/HPS_v2.1_compressed.pt"),
    ("hps.v2", "checkpoint", "hf-hub:xswu/HPSv2/HPS_v2_compressed.pt", "HPS_v2_compressed.pt",
     "hf-hub:xswu/HPSv2/HPS_v2_compressed.pt"),
    ("pickscore", "model", "yuvalkirstain/PickScore_v1", "config.json", "hf-hub:yuvalkirstain/PickScore_v1/config.json"),
    ("pickscore", "processor", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "preprocessor_config.json",
     "hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K/preprocessor_config.json"),
    ("imagereward", "checkpoint", "hf-hub:THUDM/ImageReward/ImageReward.pt", "ImageReward.pt",
     "hf-hub:THUDM/ImageReward/ImageReward.pt"),
    ("imagereward", "med_config", "hf-hub:THUDM/ImageReward/med_config.json", "med_config.json",
     "hf-hub:THUDM/ImageReward/med_config.json"),
    ("imagereward", "tokenizer_vocab", "bert-base-uncased", "vocab.txt", "hf-hub:google-bert/bert-base-uncased/vocab.txt"),
    ("stairreward.approx", "checkpoint", "hf-hub:THUDM/ImageReward/ImageReward.pt", "ImageReward.pt",
     "hf-hub:THUDM/ImageReward/ImageReward.pt"),
]


def _fit_and_predict(name, params, data, tmp_path):
    ds, split = data
    spec, _ = get_spec(name)
    method = create_method(name, params, MethodContext(seed=1, workdir=tmp_path, cache_dir=tmp_path / "c"))
    targets = ds.targets if spec.joint_targets else ds.targets[:1]
    with pytest.raises(MethodUnavailable) as err:
        method.fit(ds.subset(split.train), ds.subset(split.val), targets)
        method.predict(ds.subset(split.test))
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("name,param", RESOLVED_WEIGHTS)
def test_missing_weights_give_one_shaped_message(name, param, contract_data, tmp_path):
    """A missing weights file: one line naming the method parameter, the file, why, and the --set that supplies it."""
    import re

    spec, _ = get_spec(name)
    missing = tmp_path / "nowhere" / f"{param}.pt"
    text = _fit_and_predict(name, {**spec.smoke, param: str(missing)}, contract_data, tmp_path)
    # the deep baselines' pretrained parts also say that an empty value trains from random weights
    random = rf"; --set {re.escape(name)}\.{param}= trains from random weights instead\."
    shape = rf"{re.escape(name)}\.{param}: .*{re.escape(str(missing))}.* is not available \(.+\)\..* Supply a local copy with --set {re.escape(name)}\.{param}=PATH({random})?$"
    assert re.match(shape, text), text
    assert text.endswith("trains from random weights instead.") == (name in ("dbcnn", "hypernet", "resnet50")), text


@pytest.mark.parametrize("name,param,value,filename,source", HUB_WEIGHTS)
def test_uncached_hub_weights_give_one_shaped_message_offline(name, param, value, filename, source, contract_data,
                                                              tmp_path, monkeypatch):
    """The same shape for a hub file that is not cached while downloads are off: the file, its source, the --set."""
    import re

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("agiqa_bench.weights.hf_cached", lambda *a, **k: None)  # whatever this machine has cached
    spec, _ = get_spec(name)
    text = _fit_and_predict(name, {**spec.smoke, param: value}, contract_data, tmp_path)
    shape = (rf"{re.escape(name)}\.{param}: .*\({re.escape(filename)}\) is not available \(not in the local cache "
             rf"and downloads are off .*\)\. Source: {re.escape(source)}\. "
             rf"Supply a local copy with --set {re.escape(name)}\.{param}=PATH$")
    assert re.match(shape, text), text
