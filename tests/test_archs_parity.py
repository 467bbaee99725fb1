"""Our CNNIQA, DBCNN and HyperNet networks (`baselines/archs/`) against pyiqa's.

The networks are our own code (pyiqa is PolyForm Noncommercial and only the
optional `pyiqa:<metric>` family may import it); these tests check that they
are pyiqa's architectures: the same parameter names and shapes (state dicts
load strictly both ways), the same outputs on random inputs, and for CNNIQA,
S-CNN, DBCNN and HyperNet the same initial parameters for a seed.  pyiqa's
DBCNN and HyperNet constructors download weights, so they are built here with
their downloaders replaced (nothing touches the network).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

pytest.importorskip("pyiqa", reason="parity with pyiqa needs the dev extra (pip install -e .[dev]): pyiqa is not "
                                    "installed")

from pyiqa.archs import cnniqa_arch, dbcnn_arch, hypernet_arch

from baselines.archs.cnniqa import CNNIQANet, local_contrast_normalise
from baselines.archs.dbcnn import SCNN, DBCNNNet, vgg16_features
from baselines.archs.hypernet import HyperNetNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _offline(no_network):
    """Every test here runs with no network and an empty torch hub cache (conftest's `no_network`)."""


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    """Same keys in the same order, bitwise-equal tensors."""
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].shape == sb[key].shape, key
        assert torch.equal(sa[key], sb[key]), key


def scramble(net: nn.Module, seed: int) -> nn.Module:
    """Every float parameter and buffer redrawn (running variances positive), so that a copy shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*net.named_parameters(), *net.named_buffers()]:
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * 0.05)
    return net


def copy_both_ways(ours: nn.Module, theirs: nn.Module, seed: int) -> None:
    """Ours -> theirs (strict) after scrambling ours; then theirs -> ours after scrambling theirs."""
    theirs.load_state_dict(scramble(ours, seed).state_dict(), strict=True)
    assert_same_state(ours, theirs)
    ours.load_state_dict(scramble(theirs, seed + 1).state_dict(), strict=True)
    assert_same_state(ours, theirs)


def outputs(net: nn.Module, x: torch.Tensor, train: bool, forward=None) -> tuple[torch.Tensor, dict]:
    """The output and the parameter gradients of sum(output^2), dropout drawn from a fixed seed."""
    net.train(train)
    net.zero_grad()
    torch.manual_seed(11)
    y = (forward or net)(x)
    y.square().sum().backward()
    return y.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def assert_same_outputs(ours, theirs, x, train, ours_forward=None, theirs_forward=None, tolerance=None,
                        grad_tolerance=None) -> None:
    """Bitwise-equal outputs and gradients; with tolerances, outputs within `tolerance` (absolute) and each
    gradient within `grad_tolerance` x its largest magnitude."""
    y1, g1 = outputs(ours, x, train, ours_forward)
    y2, g2 = outputs(theirs, x, train, theirs_forward)
    assert y1.shape == y2.shape
    assert list(g1) == list(g2)
    if tolerance is None:
        assert torch.equal(y1, y2), (y1 - y2).abs().max()
        for name in g1:
            assert torch.equal(g1[name], g2[name]), name
        return
    torch.testing.assert_close(y1, y2, rtol=0, atol=tolerance)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], rtol=0, atol=grad_tolerance * float(g2[name].abs().max()),
                                   msg=name)


# -- CNNIQA ---------------------------------------------------------------------------------------
def pyiqa_cnniqa(seed: int, num_outputs: int = 1) -> nn.Module:
    """pyiqa's CNNIQA, random init (`pretrained=None`: no download); K outputs as the earlier pyiqa-based
    build made them (the one-output layer replaced)."""
    torch.manual_seed(seed)
    net = cnniqa_arch.CNNIQA(pretrained=None)
    if num_outputs != 1:
        net.fc3 = nn.Linear(net.fc2.out_features, num_outputs)
    return net


@pytest.mark.parametrize("num_outputs", [1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_cnniqa_initialises_as_pyiqa(seed, num_outputs):
    torch.manual_seed(seed)
    ours = CNNIQANet(num_outputs)
    theirs = pyiqa_cnniqa(seed, num_outputs)
    assert_same_state(ours, theirs)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    torch.manual_seed(seed)
    CNNIQANet(num_outputs)
    after_ours = torch.rand(4)
    pyiqa_cnniqa(seed, num_outputs)
    assert torch.equal(after_ours, torch.rand(4)), "the constructors consume different amounts of randomness"


@pytest.mark.parametrize("lcn", [False, True])
def test_cnniqa_state_dicts_and_outputs_match_pyiqa(lcn):
    ours, theirs = CNNIQANet(1, lcn=lcn), pyiqa_cnniqa(0)
    copy_both_ways(ours, theirs, seed=3)
    prep = local_contrast_normalise if lcn else (lambda x: x)
    for size in (32, 45):
        x = torch.rand(3, 3, size, size)
        for train in (False, True):  # train: dropout on, from the same seed
            assert_same_outputs(ours, theirs, x, train, theirs_forward=lambda v: theirs(prep(v)))


# -- DBCNN ----------------------------------------------------------------------------------------
@pytest.fixture
def offline_pyiqa_dbcnn(monkeypatch):
    """pyiqa's DBCNN constructor with its two downloads replaced: torchvision's VGG-16 built without weights
    (only `features`, initialised as torchvision does) and the S-CNN checkpoint load a no-op."""
    import torchvision

    loads = []

    def vgg16(weights=None, **kwargs):
        return SimpleNamespace(features=nn.Sequential(*vgg16_features(None), nn.MaxPool2d(2, 2)))

    monkeypatch.setattr(torchvision.models, "vgg16", vgg16)
    monkeypatch.setattr(dbcnn_arch, "load_pretrained_network", lambda net, path, *a, **k: loads.append(path))

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        net = dbcnn_arch.DBCNN(pretrained=False, default_mean=[0.0] * 3, default_std=[1.0] * 3)
        for p in net.parameters():  # pyiqa freezes the branches (its fc-only stage); we compare gradients too
            p.requires_grad_(True)
        return net

    yield build
    assert all(path == dbcnn_arch.default_model_urls["scnn"] for path in loads)


@pytest.mark.parametrize("seed", [0, 1])
def test_scnn_initialises_loads_and_runs_as_pyiqa(seed):
    torch.manual_seed(seed)
    ours = SCNN()
    torch.manual_seed(seed)
    theirs = dbcnn_arch.SCNN(use_bn=True)
    assert_same_state(ours, theirs)
    copy_both_ways(ours, theirs, seed=5)
    x = torch.randn(2, 3, 40, 40)
    for train in (False, True):
        assert_same_outputs(ours, theirs, x, train)


def test_dbcnn_initialises_as_pyiqa(offline_pyiqa_dbcnn):
    torch.manual_seed(2)
    ours = DBCNNNet(1)
    assert_same_state(ours, offline_pyiqa_dbcnn(2))


def test_dbcnn_state_dicts_and_outputs_match_pyiqa(offline_pyiqa_dbcnn):
    ours, theirs = DBCNNNet(1), offline_pyiqa_dbcnn(0)
    copy_both_ways(ours, theirs, seed=7)
    for size in (64, 72):  # at 72 px the S-CNN map (5 x 5) is resized to the VGG one (4 x 4)
        x = torch.randn(2, 3, size, size)
        for train in (False, True):
            assert_same_outputs(ours, theirs, x, train)


# -- HyperNet -------------------------------------------------------------------------------------
@pytest.fixture
def offline_pyiqa_hypernet(monkeypatch):
    """pyiqa's HyperNet constructor with timm's pretrained download off and no HyperIQA checkpoint."""
    import timm

    create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda name, pretrained=False, **kw: create(name, pretrained=False, **kw))

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return hypernet_arch.HyperNet(pretrained=False, default_mean=[0.0] * 3, default_std=[1.0] * 3)

    return build


def test_hypernet_initialises_loads_and_runs_as_pyiqa(offline_pyiqa_hypernet):
    torch.manual_seed(4)
    ours = HyperNetNet(1)
    theirs = offline_pyiqa_hypernet(4)
    assert_same_state(ours, theirs)
    copy_both_ways(ours, theirs, seed=9)
    x = torch.randn(2, 3, 224, 224)  # pyiqa's network takes 224 px crops only
    # Not bitwise: our LDA pools are adaptive (8/4/2/1 cells, so that any crop size works), pyiqa's are
    # AvgPool2d(7, stride 7); at 224 px they average the same cells but may round differently (~1e-7), and the
    # target network's weights are generated in another order, so gradients accumulate in another order
    # (measured: outputs equal or within 4e-9, gradients within 5e-6 of each tensor's largest magnitude).
    # eval: one crop each (pyiqa's eval `forward` averages its own 25-crop grid, which the harness does not use)
    tol = {"tolerance": 1e-6, "grad_tolerance": 1e-4}
    assert_same_outputs(ours, theirs, x, False, theirs_forward=theirs.forward_patch, **tol)
    assert_same_outputs(ours, theirs, x, True, **tol)  # train: pyiqa's `forward` is `forward_patch`
