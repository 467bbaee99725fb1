"""The one weights resolver (agiqa_bench.weights): what a reference names, for every caller."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from agiqa_bench import weights
from agiqa_bench.errors import MethodUnavailable
from agiqa_bench.method import Method, MethodSpec, Weights
from agiqa_bench.weights import Source, WeightsUnavailable, is_hub_file, is_local, resolve

#: (reference, is_local, is_hub_file): a local path, a tag (open_clip's, the shipped one, a method's), no file,
#: a hub file, and a whole hub repository (open_clip's own spelling of a hub model, which names no file).
REFS = [
    ("/models/RN50.pt", True, False),
    ("models/RN50.pt", True, False),
    ("./hpc.pth", True, False),
    ("~/x.pt", True, False),
    ("RN50.pt", True, False),  # a bare file name: the suffix makes it a path
    ("~/weights/imagereward", True, False),  # a folder
    ("openai", False, False),
    ("laion2b_s34b_b79k", False, False),
    ("agiqa-synth", False, False),
    ("imagenet", False, False),
    ("", False, False),
    (None, False, False),
    ("hf-hub:owner/repo/file.pt", False, True),
    ("hf-hub:owner/repo/dir/file.pt@v1.0", False, True),
    ("hf-hub:owner/repo", False, False),
]


@pytest.mark.parametrize("ref,local,hub_file", REFS)
def test_what_a_reference_names(ref, local, hub_file):
    assert is_local(ref) is local
    assert is_hub_file(ref) is hub_file


def test_the_clip_door_uses_the_one_predicate():
    """No second copy: the CLIP door imports the resolver's predicates."""
    import agiqa_bench.clip as clip

    assert clip.is_local is weights.is_local and clip.is_hub_file is weights.is_hub_file


# -- resolve: the caller that defines the references -------------------------------------------
def test_resolve_local_tag_and_hub(tmp_path, monkeypatch):
    local = tmp_path / "w.pt"
    local.write_bytes(b"x")
    assert resolve(str(local), method="m", param="p") == local
    shipped = Source("the shipped file", shipped=local)
    assert resolve("agiqa-synth", method="m", param="p", sources={"agiqa-synth": shipped}) == local
    cached = tmp_path / "cached.pt"
    cached.write_bytes(b"y")
    seen = []
    monkeypatch.setattr(weights, "hf_cached", lambda repo, filename, revision=None: (
        seen.append((repo, filename, revision)) or str(cached)))
    assert resolve("hf-hub:owner/repo/dir/file.pt@v1", method="m", param="p") == cached
    assert seen == [("owner/repo", "dir/file.pt", "v1")]
    with pytest.raises(WeightsUnavailable, match=r"m\.p: .*hf-hub:owner/repo/path/to/file.*--set m\.p=PATH$"):
        resolve("hf-hub:owner/repo", method="m", param="p")  # a whole repository is no file
    with pytest.raises(WeightsUnavailable, match=r"'openai' is neither a file path nor a known tag"):
        resolve("openai", method="m", param="p")


def test_problem_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "hf_cached", lambda *a, **k: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = weights.problem("hf-hub:owner/repo/file.pt", method="m", param="p")
    assert text == ("m.p: the weights file (file.pt) is not available (" + weights.OFFLINE_WHY + "). "
                    "Source: hf-hub:owner/repo/file.pt. Supply a local copy with --set m.p=PATH")
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "AGIQA_BENCH_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    assert weights.problem("hf-hub:owner/repo/file.pt", method="m", param="p") is None  # fetched on first use
    assert "no such file" in weights.problem(str(tmp_path / "gone.pt"), method="m", param="p")


# -- Method.weights_identity (and IP-IQA's): local files only ------------------------------------
class _Toy(Method):
    params: ClassVar[dict[str, Any]] = {"w": ""}


def test_default_weights_identity_counts_local_files(tmp_path):
    spec = MethodSpec(name="toy", factory="x:y", kind="zero-shot", summary="s", weights=(Weights("w", "w", "h"),))
    local = tmp_path / "w.pt"
    local.write_bytes(b"abc")
    assert _Toy(spec, {"w": str(local)}).weights_identity() == {"w": weights.identity(local)}
    for ref in ("openai", "", "hf-hub:owner/repo/file.pt", "hf-hub:owner/repo"):
        assert _Toy(spec, {"w": ref}).weights_identity() == {}


# -- the CLIP door: local files, hub files, open_clip tags ---------------------------------------
def test_clip_door_tells_files_from_tags(tmp_path, monkeypatch):
    from agiqa_bench.clip import check_weights, clip_weights_problem, open_clip_identity

    monkeypatch.setattr(weights, "hf_cached", lambda *a, **k: None)
    local = tmp_path / "RN50.pt"
    assert check_weights({"clip_model": "RN50", "pretrained": str(local)}) is False
    local.write_bytes(b"x")
    assert check_weights({"clip_model": "RN50", "pretrained": str(local)}) is True
    assert check_weights({"clip_model": "RN50", "pretrained": "openai"}) is None  # a tag: cheap check cannot tell
    assert check_weights({"clip_model": "RN50", "pretrained": "hf-hub:owner/repo/RN50.pt"}) is False  # not cached
    assert check_weights({"clip_model": "RN50", "pretrained": "hf-hub:owner/repo"}) is None  # no file: not a path
    assert check_weights({"clip_model": "RN50", "pretrained": ""}) is True  # random weights

    text = clip_weights_problem("RN50", "hf-hub:owner/repo/RN50.pt", "clipiqa")
    assert text.startswith("clipiqa.pretrained: CLIP weights for 'RN50' (RN50.pt) is not available (")
    assert text.endswith("Source: hf-hub:owner/repo/RN50.pt. Supply a local copy with --set clipiqa.pretrained=PATH")
    assert "no such file" in clip_weights_problem("RN50", str(tmp_path / "gone.pt"), "clipiqa")

    assert open_clip_identity("RN50", str(local), 0)["file"] == weights.identity(local)
    assert "file" not in open_clip_identity("RN50", "openai", 0)
    assert "file" not in open_clip_identity("RN50", "hf-hub:owner/repo/RN50.pt", 0)  # not here yet
    monkeypatch.setattr(weights, "hf_cached", lambda *a, **k: str(local))
    assert open_clip_identity("RN50", "hf-hub:owner/repo/RN50.pt", 0)["file"] == weights.identity(local)


def test_load_clip_reads_a_hub_file_from_the_cache(tmp_path, monkeypatch):
    import torch

    from agiqa_bench.clip import load_clip

    torch.manual_seed(3)
    state = load_clip("agiqa-tiny-rn", "").state_dict()
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    monkeypatch.setattr(weights, "hf_cached", lambda *a, **k: str(path))
    model = load_clip("agiqa-tiny-rn", "hf-hub:owner/repo/tiny.pt", option="clipscore.pretrained")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    monkeypatch.setattr(weights, "hf_cached", lambda *a, **k: None)
    with pytest.raises(MethodUnavailable, match=r"^clipscore\.pretrained: .*tiny\.pt.*Source: hf-hub:owner/repo/tiny"):
        load_clip("agiqa-tiny-rn", "hf-hub:owner/repo/tiny.pt", option="clipscore.pretrained")


# -- the older hub spelling: read by the resolver's parser alone ----------------------------------
def test_old_hub_spelling_is_an_alias(tmp_path, monkeypatch):
    """`hf://owner/repo/file` (old HPS command lines) reads as `hf-hub:owner/repo/file`; messages use the latter."""
    from agiqa_bench.method import MethodContext
    from agiqa_bench.registry import create_method

    old = "hf://xswu/HPSv2/HPS_v2.1_compressed.pt"
    assert weights.parse_hf(old) == weights.parse_hf("hf-hub:xswu/HPSv2/HPS_v2.1_compressed.pt")
    assert is_hub_file(old) and not is_local(old)
    monkeypatch.setattr(weights, "hf_cached", lambda *a, **k: None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match=r"Source: hf-hub:xswu/HPSv2/HPS_v2\.1_compressed\.pt\. "):
        resolve(old, method="hps.v2_1", param="checkpoint")
    method = create_method("hps", {"checkpoint": old}, MethodContext(cache_dir=tmp_path))
    assert "Source: hf-hub:xswu/HPSv2/HPS_v2.1_compressed.pt. " in method.weights_problem()
    cached = tmp_path / "HPS_v2.1_compressed.pt"
    cached.write_bytes(b"x")
    monkeypatch.setattr(weights, "hf_cached", lambda *a, **k: str(cached))
    assert method.checkpoint_path() == cached


# -- folders and neighbours (ImageReward's "the file or its folder"), repository ids (PickScore) --------
def test_in_folder_and_next_to(tmp_path):
    assert weights.in_folder("hf-hub:o/r", "a.pt") == "hf-hub:o/r/a.pt"
    assert weights.in_folder("hf-hub:o/r@v2", "a.pt") == "hf-hub:o/r/a.pt@v2"
    assert weights.in_folder("hf-hub:o/r/b.pt", "a.pt") == "hf-hub:o/r/b.pt"
    assert weights.in_folder(str(tmp_path), "a.pt") == str(tmp_path / "a.pt")
    assert weights.in_folder(str(tmp_path / "b.pt"), "a.pt") == str(tmp_path / "b.pt")
    assert weights.in_folder("agiqa-smoke", "a.pt") == "agiqa-smoke"
    assert weights.next_to("hf-hub:o/r/d/b.pt@v2", "c.json") == "hf-hub:o/r/d/c.json@v2"
    assert weights.next_to("hf-hub:o/r/b.pt", "c.json") == "hf-hub:o/r/c.json"
    assert weights.next_to(str(tmp_path / "b.pt"), "c.json") == str(tmp_path / "c.json")


@pytest.mark.parametrize("ref,repo", [("yuvalkirstain/PickScore_v1", True), ("bert-base-uncased", True),
                                      ("./models/pick", False), ("/models/pick", False), ("~/pick", False),
                                      ("a/b/c", False), ("hf-hub:o/r", False), ("", False)])
def test_repository_ids_for_repo_or_folder_parameters(ref, repo):
    assert weights.is_repo_id(ref) is repo


def test_legacy_repository_names_are_looked_up_in_the_cache(tmp_path, monkeypatch):
    found = tmp_path / "vocab.txt"
    found.write_text("x")
    monkeypatch.setattr(weights, "hf_cached", lambda repo, filename, revision=None: (
        str(found) if repo == "bert-base-uncased" else None))
    source = Source("bert's vocabulary", hf="google-bert/bert-base-uncased/vocab.txt",
                    hf_also=(("bert-base-uncased", "vocab.txt"),))
    assert resolve("bert", method="m", param="p", sources={"bert": source}, download=False) == found
