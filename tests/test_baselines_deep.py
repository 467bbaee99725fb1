"""Deep baselines (CNNIQA, DBCNN, HyperIQA, ResNet-50) and the training-loop options they use.

Nothing here touches the network: every test runs with an empty torch hub cache
and a socket that refuses to connect.
"""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from torch import nn

from agiqa_bench.datasets import load_dataset
from agiqa_bench.errors import MethodUnavailable
from agiqa_bench.method import MethodContext
from agiqa_bench.registry import create_method, get_spec, weights_status
from agiqa_bench.splits import make_splits
from agiqa_bench.training import TrainConfig, fit_regressor, lr_factor, predict_batches
from agiqa_bench.batches import ImageBank, crop_positions, normalise
from baselines import deep

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"image_size": 40, "crop_size": 32, "epochs": 1, "batch_size": 4, "selection": "last"}
RANDOM = {"cnniqa": {}, "dbcnn": {"backbone_weights": "", "scnn_weights": "", "fc_epochs": 1},
          "hypernet": {"backbone_weights": "", "crops_per_image": 2, "test_crops": 2}, "resnet50": {}}


@pytest.fixture(autouse=True)
def _offline(no_network):
    """Every test here runs with no network and an empty torch hub cache (conftest's `no_network`)."""


@pytest.fixture(scope="module")
def data(tiny_agiqa3k_shared):
    ds = load_dataset("agiqa3k", tiny_agiqa3k_shared)
    split = make_splits(ds, "grouped", repeats=1, seed=1)[0]
    return ds, ds.subset(split.train), ds.subset(split.val), ds.subset(split.test)


class Const(nn.Module):
    """Predicts a learnable constant per target; remembers every training input."""

    def __init__(self, k: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(k))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.bias.expand(len(x), -1) + 0 * x.mean()


# -- training-loop options --------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["l1", "mse"])
def test_loss_option_sets_the_gradient(data, loss):
    """One full-batch SGD step from 0 (loss = mean over B x K): L1 moves by lr / K (every MOS > 0), MSE by
    lr * 2 * mean(MOS) / K."""
    ds, train, _, _ = data
    model = Const(len(ds.targets))
    cfg = TrainConfig(epochs=1, batch_size=len(train), lr=0.1, image_size=16, hflip=False, selection="last",
                      loss=loss, optimizer="sgd", momentum=0.0)
    result = fit_regressor(model, [{"params": model.parameters(), "lr": 0.1}], train, [], ds.targets, cfg)
    mos = np.array([[it.targets[t] for t in ds.targets] for it in train])
    k = len(ds.targets)
    expected = np.full(k, 0.1 / k) if loss == "l1" else 0.1 * 2 * mos.mean(0) / k
    np.testing.assert_allclose(model.bias.detach().numpy(), expected, rtol=1e-5)
    assert ("train_mse" in result.history[0]) == (loss == "mse")


def test_random_crops_are_windows_of_the_image_and_change_between_epochs(data):
    ds, train, _, _ = data
    model = Const(1)
    cfg = TrainConfig(epochs=2, batch_size=6, image_size=20, crop_size=12, crops_per_image=3, hflip=False,
                      selection="last")
    fit_regressor(model, [{"params": model.parameters(), "lr": 1e-3}], train, [], ds.targets[:1], cfg, seed=3)
    per_epoch = len(train) * 3 // 6
    assert len(model.seen) == 2 * per_epoch
    assert all(x.shape == (6, 3, 12, 12) for x in model.seen)
    first, second = torch.cat(model.seen[:per_epoch]), torch.cat(model.seen[per_epoch:])
    assert not torch.equal(first, second)
    full = normalise(ImageBank.get(train, 20))
    windows = full.unfold(2, 12, 1).unfold(3, 12, 1)  # (N, 3, 9, 9, 12, 12)
    for crop in first[:5]:
        diff = (windows - crop.view(1, 3, 1, 1, 12, 12)).abs().amax(dim=(1, 4, 5))
        assert diff.min() < 1e-6, "a training crop is not a window of a resized training image"


def test_crop_positions():
    assert crop_positions(64, 32, 1, "grid") == [(16, 16)]
    assert crop_positions(64, 32, 4, "grid") == [(0, 0), (0, 32), (32, 0), (32, 32)]
    tiles = crop_positions(512, 32, 256, "grid")
    assert len(set(tiles)) == 256 and {t for t, _ in tiles} == set(range(0, 512, 32))
    a = crop_positions(64, 32, 5, "random", np.random.default_rng(0))
    assert a == crop_positions(64, 32, 5, "random", np.random.default_rng(0)) and len(set(a)) > 1
    assert all(0 <= v <= 32 for p in a for v in p)


class MeanPixel(nn.Module):
    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(len(x))
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)


def test_n_crop_test_averaging():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    model = MeanPixel()
    pred = predict_batches(model, images, [], "cpu", 8, False, (0, 0, 0), (1, 1, 1), crop_size=8, crops=4)
    x = images.float() / 255
    expected = torch.stack([x[:, :, t:t + 8, l:l + 8].mean(dim=(1, 2, 3)) for t, l in crop_positions(16, 8, 4, "grid")])
    np.testing.assert_allclose(pred[:, 0], expected.mean(0).numpy(), rtol=1e-5)
    assert max(model.batches) <= 8 and sum(model.batches) == 5 * 4
    whole = predict_batches(model, images, [], "cpu", 8, False, (0, 0, 0), (1, 1, 1))
    np.testing.assert_allclose(whole[:, 0], x.mean(dim=(1, 2, 3)).numpy(), rtol=1e-5)
    r1 = predict_batches(model, images, [], "cpu", 8, False, (0, 0, 0), (1, 1, 1), crop_size=8, crops=3,
                         crop_mode="random", seed=4)
    r2 = predict_batches(model, images, [], "cpu", 8, False, (0, 0, 0), (1, 1, 1), crop_size=8, crops=3,
                         crop_mode="random", seed=4)
    np.testing.assert_array_equal(r1, r2)
    assert not np.allclose(r1, pred)


def test_lr_schedules_per_epoch(data):
    step = TrainConfig(epochs=6, lr_schedule="step", lr_milestones=(2, 4), lr_gamma=0.5)
    assert [lr_factor(step, e) for e in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    cosine = TrainConfig(epochs=4, lr_schedule="cosine")
    np.testing.assert_allclose([lr_factor(cosine, e) for e in range(4)], [1, 0.853553, 0.5, 0.146447], rtol=1e-5)
    assert lr_factor(TrainConfig(), 50) == 1.0
    ds, train, _, _ = data
    model = Const(1)
    cfg = TrainConfig(epochs=5, batch_size=len(train), image_size=8, selection="last", lr_schedule="step",
                      lr_milestones=(2, 4), lr_gamma=0.5, optimizer="adam", reset_optimizer=True)
    groups = [{"params": [model.bias], "lr": 0.2}, {"params": [nn.Parameter(torch.zeros(1))], "lr": 0.02}]
    history = fit_regressor(model, groups, train, [], ds.targets[:1], cfg).history
    np.testing.assert_allclose([h["lr"] for h in history], [[0.2 * f, 0.02 * f] for f in (1, 1, 0.5, 0.5, 0.25)])
    custom = fit_regressor(Const(1), [{"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0}], train, [],
                           ds.targets[:1], TrainConfig(epochs=3, batch_size=len(train), image_size=8, selection="last"),
                           lr_at=lambda epoch, group: 10.0 ** -epoch).history
    assert [h["lr"] for h in custom] == [[1.0], [0.1], [0.01]]


def test_hyperiqa_official_learning_rates():
    method = create_method("hypernet")
    cfg = method.train_config()
    assert cfg.lr_schedule == "constant" and cfg.reset_optimizer and cfg.loss == "l1"
    lr_at = method.lr_at([{}, {}], cfg)
    hyper = [lr_at(e, 1) for e in range(16)]
    assert hyper == pytest.approx([2e-4] * 7 + [2e-5] * 3 + [2e-6] * 3 + [2e-7] * 3)
    assert {lr_at(e, 0) for e in range(16)} == {2e-5}
    assert create_method("hypernet", {"lr_schedule": "step"}).lr_at([{}, {}], cfg) is None


def test_train_config_reads_the_declared_parameters_by_name():
    """The trainer's hyperparameters are read from the method's resolved parameters, never mapped by hand."""
    import dataclasses

    from agiqa_bench.errors import ConfigError

    config = create_method("cnniqa").config
    cfg = TrainConfig.from_params(config, where="cnniqa")
    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        assert type(value) is type(f.default), f.name
        if f.name != "lr_milestones":
            assert value == config[f.name], f.name
    assert cfg.lr_milestones == (10, 20, 30, 40) and cfg.lr == 1e-3 and cfg.crop_size == 384
    ints = TrainConfig.from_params({"epochs": 3.0, "lr": 1, "hflip": 0, "selection": "last", "other": 1}, lr_gamma=0.5)
    assert (ints.epochs, ints.lr, ints.hflip, ints.lr_gamma, ints.batch_size) == (3, 1.0, False, 0.5, 32)
    assert type(ints.epochs) is int and type(ints.lr) is float
    with pytest.raises(ConfigError, match=r"cnniqa\.lr_milestones: expected comma-separated integers"):
        create_method("cnniqa", {"lr_milestones": "10,x"})
    with pytest.raises(ConfigError, match=r"crop_size must be between 0 \(no crop\) and image_size \(96\)"):
        create_method("cnniqa", {"image_size": 96, "crop_size": 128})  # a cross-field check the method keeps


# -- the methods ------------------------------------------------------------------------------
def make(name, data, tmp_path, **extra):
    base = name.split(".")[0]
    context = MethodContext(seed=5, workdir=tmp_path, dataset="tiny")
    return create_method(name, {**TINY, **RANDOM[base], **extra}, context)


@pytest.mark.parametrize("name", ["cnniqa", "dbcnn", "hypernet", "resnet50"])
def test_methods_train_offline_from_random_weights_and_predict_every_target(name, data, tmp_path):
    ds, train, val, test = data
    assert get_spec(name)[0].joint_targets
    method = make(name, data, tmp_path)
    method.fit(train[:8], val, ds.targets)
    pred = method.predict(test[:5])
    assert pred.shape == (5, 2) and np.all(np.isfinite(pred)) and np.ptp(pred, axis=0).min() > 0
    assert method.info["selection"] == "last"


def test_selection_protocols_as_ipiqa(data, tmp_path):
    ds, train, val, test = data
    method = make("cnniqa", data, tmp_path, epochs=3, selection="test-oracle")
    assert method.uses_test_oracle
    method.set_oracle(test)
    method.fit(train, [], ds.targets)
    assert method.info["selection"] == "test-oracle" and 0 <= method.info["best_epoch"] < 3
    method = make("cnniqa", data, tmp_path, epochs=2, selection="val")
    assert not method.uses_test_oracle
    method.fit(train, val, ds.targets)
    assert method.info["selection"] == "val"


def test_outputs_are_min_max_scaled_mos(data, tmp_path):
    ds, train, val, _ = data
    mos = np.array([[it.targets[t] for t in ds.targets] for it in train])
    method = make("cnniqa", data, tmp_path)
    method.fit(train, val, ds.targets)
    np.testing.assert_allclose(method.model.offset.numpy()[0], mos.min(0), rtol=1e-6)
    np.testing.assert_allclose(method.model.scale.numpy()[0], np.ptp(mos, axis=0), rtol=1e-6)
    x = torch.rand(2, 3, 40, 40)
    method.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(method.model(x), method.net(x) * method.model.scale + method.model.offset)
    raw = make("cnniqa", data, tmp_path, mos_scaling="none")
    raw.fit(train, val, ds.targets)
    assert raw.model.offset.abs().sum() == 0 and torch.all(raw.model.scale == 1)


def test_dbcnn_stage_one_trains_only_the_linear_layer(data, tmp_path):
    ds, train, val, _ = data
    method = make("dbcnn", data, tmp_path)
    method.config["lr"] = 0.0  # stage 2 at lr 0 (a value --set refuses): what changed, changed in stage 1
    method.fit(train[:8], val, ds.targets)
    torch.manual_seed(method.context.seed)
    fresh = method.build(2, {"backbone_weights": None, "scnn_weights": None})
    after, before = method.net.state_dict(), fresh.state_dict()
    assert not torch.equal(after["fc.weight"], before["fc.weight"])
    for key in ("features1.0.weight", "features1.28.weight", "features2.0.weight"):
        assert torch.equal(after[key], before[key]), key
    assert len(method.info["best_epoch"]) == 2
    assert all(p.requires_grad for p in method.net.parameters())


def test_hypernet_matches_pyiqa_forward_at_224():
    pytest.importorskip("pyiqa", reason="parity with pyiqa needs the dev extra (pip install -e .[dev])")
    from pyiqa.archs.hypernet_arch import HyperNet

    from baselines.archs.hypernet import HyperNetNet

    torch.manual_seed(0)
    net = HyperNetNet(1).eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        ours, theirs = net(x), HyperNet.forward_patch(net, x)  # pyiqa's code on our modules
    assert ours.shape == theirs.shape == (1, 1)
    torch.testing.assert_close(ours, theirs)


# -- weights ------------------------------------------------------------------------------------
# (method, the parameter set to its download tag, the other parameters at random init, the file it needs)
MISSING = [("dbcnn", {"backbone_weights": "imagenet", "scnn_weights": ""}, "backbone_weights", "vgg16-397923af.pth"),
           ("dbcnn", {"backbone_weights": "", "scnn_weights": "pyiqa"}, "scnn_weights", "DBCNN_scnn-7ea73d75.pth"),
           ("hypernet", {"backbone_weights": "imagenet"}, "backbone_weights", "resnet50-0676ba61.pth"),
           ("resnet50.imagenet", {}, "backbone_weights", "resnet50-0676ba61.pth")]


@pytest.mark.parametrize("name,weights,param,filename", MISSING)
def test_missing_weights_offline_name_the_file_and_the_fix(name, weights, param, filename, data, tmp_path,
                                                           monkeypatch):
    ds, train, val, _ = data
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    method = create_method(name, {**TINY, **weights}, MethodContext(seed=1, workdir=tmp_path))
    with pytest.raises(MethodUnavailable) as err:
        method.fit(train, val, ds.targets)
    text = str(err.value)
    base = name.split(".")[0]
    assert filename in text and f"--set {base}.{param}=" in text and "downloads are off" in text
    assert text.endswith(f"; --set {base}.{param}= trains from random weights instead.")
    assert method.model is None  # reported before anything was built or trained


def test_failed_download_is_method_unavailable(data, tmp_path, monkeypatch):
    ds, train, val, _ = data
    from agiqa_bench.hub import OFFLINE_VARIABLES

    for variable in OFFLINE_VARIABLES:  # downloads on (they fail below)
        monkeypatch.delenv(variable, raising=False)
    calls = []

    def fail(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    try:  # pyiqa (the dev extra) would download the same files: guard it too where it is installed
        import pyiqa.utils.download_util as pyiqa_download

        monkeypatch.setattr(pyiqa_download, "download_url_to_file", fail)
    except ImportError:
        pass
    for name, weights, param, filename in MISSING[:3]:
        method = create_method(name, {**TINY, **weights}, MethodContext(seed=1))
        with pytest.raises(MethodUnavailable, match="download failed") as err:
            method.fit(train, val, ds.targets)
        assert filename in str(err.value) and param in str(err.value)
    assert len(calls) == 3 and calls[0].endswith("vgg16-397923af.pth")


def test_local_files_and_cached_tags_load(data, tmp_path):
    import torchvision

    from baselines.archs.dbcnn import SCNN, vgg16_features
    from baselines.archs.hypernet import HyperNetNet
    from baselines.archs.resnet import resnet50_regressor

    torch.manual_seed(1)
    r50 = torchvision.models.resnet50(weights=None).state_dict()
    cached = deep.RESNET50_IMAGENET.cache_path()
    cached.parent.mkdir(parents=True)
    torch.save(r50, cached)  # the "imagenet" tag resolves to the torch hub cache, no download
    state = deep.load_state_dict("imagenet", deep.IMAGENET_RESNET50, "resnet50", "backbone_weights")
    assert torch.equal(resnet50_regressor(2, state).layer4[2].conv3.weight, r50["layer4.2.conv3.weight"])
    assert torch.equal(HyperNetNet(2, state).base_model.layer4[2].conv3.weight, r50["layer4.2.conv3.weight"])
    assert deep.resnet50_available({"backbone_weights": "imagenet"})

    vgg = {f"features.{k}": v + 1 for k, v in vgg16_features(None).state_dict().items()}
    vgg["classifier.0.weight"] = torch.zeros(2, 2)  # ignored: DBCNN uses the convolutional part only
    scnn = {f"module.{k}": v for k, v in SCNN().state_dict().items()}  # the official DataParallel checkpoint
    torch.save(vgg, tmp_path / "vgg.pth")
    torch.save(scnn, tmp_path / "scnn.pkl")
    ds, train, val, _ = data
    method = make("dbcnn", data, tmp_path, backbone_weights=str(tmp_path / "vgg.pth"),
                  scnn_weights=str(tmp_path / "scnn.pkl"))
    model = method.build(2, method.load_weights())
    assert torch.equal(model.features1[28].weight, vgg["features.28.weight"])
    assert torch.equal(model.features2[0].weight, scnn["module.features.0.weight"])

    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    bad = make("dbcnn", data, tmp_path, backbone_weights=str(tmp_path / "wrong.pth"))
    with pytest.raises(MethodUnavailable, match="backbone_weights: the weights do not fit"):
        bad.fit(train[:8], val, ds.targets)
    gone = make("resnet50", data, tmp_path, backbone_weights=str(tmp_path / "nope.pth"))
    with pytest.raises(MethodUnavailable, match=r"nope\.pth is not available \(no such file\)"):
        gone.fit(train, val, ds.targets)


def test_weights_checks_and_sources():
    import torchvision

    assert deep.RESNET50_IMAGENET.url == torchvision.models.ResNet50_Weights.IMAGENET1K_V1.url
    assert deep.VGG16_IMAGENET.url == torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    dbcnn_arch = pytest.importorskip("pyiqa.archs.dbcnn_arch", reason="the dev extra's pyiqa names the S-CNN URL")
    assert deep.SCNN_PYIQA.url == dbcnn_arch.default_model_urls["scnn"]
    spec, _ = get_spec("dbcnn")
    assert [ok for _, ok in weights_status(spec, {"backbone_weights": "imagenet", "scnn_weights": ""})] == [False, True]
    spec, _ = get_spec("hyperiqa")
    assert spec.name == "hypernet"
    assert [ok for _, ok in weights_status(spec, {"backbone_weights": ""})] == [True]
