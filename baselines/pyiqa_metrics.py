"""`pyiqa:<metric>`: any no-reference metric of the installed pyiqa as a zero-shot method.

pyiqa (chaofengc/IQA-PyTorch) keeps one table of its metrics,
``pyiqa.default_model_configs.DEFAULT_CONFIGS``: per public name, the network
and its options, ``metric_mode`` (``NR``: scores an image alone; ``FR``: needs
a pristine reference, which AGIQA datasets do not have), ``lower_better`` and
a rough ``score_range``.  This module turns every ``NR`` entry into a method
named ``pyiqa:<name>`` through a `SpecFamily` (registered under the
``agiqa_bench.methods`` entry points like any spec), so the registry itself
knows no metric and no pyiqa:

- Names: ``pyiqa:musiq``, ``pyiqa:topiq_nr``, ``pyiqa:clipiqa+`` ... exactly as
  pyiqa spells them (`agiqa-bench methods --pyiqa` lists what the installed
  version offers).  A full-reference metric is refused in one line, an unknown
  name in one line with the close matches; pyiqa's dataset-level metrics
  (``fid``, ``sfid``, ``fid_dinov2``, ``inception_score``: one number per image
  *set*, which pyiqa's own ``InferenceModel.forward`` special-cases) too.
- Direction: the spec's ``lower_is_better`` is pyiqa's ``lower_better`` (NIQE,
  BRISQUE, PIQE, ILNIQE, PI ...), so the harness negates those scores before
  every correlation, as for the built-in NIQE.
- Metadata is read from pyiqa's table file without importing pyiqa (whose
  package import loads torch and takes seconds): names are checked when a run
  is planned, and listing methods stays free of model code.
- Scoring: each image through `agiqa_bench.images.load_rgb` (the pixel cap,
  8-bit RGB), as a (1, 3, H, W) float32 tensor in [0, 1] (what pyiqa's own
  ``imread2tensor`` makes of a file), on ``MethodContext.device``, one image at
  a time (sizes differ), through ``pyiqa.create_metric(name)``.  Scores are
  cached per image in the run's `FeatureCache` (``OUT/cache/.../features``, as
  every zero-shot score), so the repeats of a run and later runs score each
  image once.  ``pyiqa:clipscore`` reads the prompt (pyiqa's ``caption_list``);
  its cache key includes a digest of the prompt.
- Weights: pyiqa fetches what a metric needs itself, into its own cache
  (``pyiqa.utils.download_util.DEFAULT_CACHE_DIR`` = torch's hub folder +
  ``/pyiqa``: ``$TORCH_HOME/hub/pyiqa``, by default ``~/.cache/torch/hub/pyiqa``)
  and, for backbones, torch hub's (torchvision), the CLIP loaders' and Hugging
  Face's (timm, transformers) caches.  While the metric is built, the URL
  downloaders are guarded (`DOWNLOADERS`): with downloads off
  (`agiqa_bench.hub.offline`) a file that is not cached fails at once, and a
  failed download fails, as one line naming the file, its URL, the folder it
  is looked for in and how to put it there by hand (or
  ``--set pyiqa:<metric>.pretrained_model_path=PATH`` where pyiqa's network
  takes one); a Hugging Face file is named from the hub call that failed
  (`hub_file`), a missing Python package (Q-Align's) by its name.  Which
  files a metric needs is only known once pyiqa builds it, so a missing file
  is recorded by the job (once: the other repeats are skipped), not at plan
  time; a ``pretrained_model_path`` given to a network that takes none is
  refused at plan time.  The configuration hash holds pyiqa's version
  (its hosted files are fixed per version) and the identity of a local
  ``pretrained_model_path``.

Works offline with nothing downloaded (measured with pyiqa 0.1.16, an empty
torch hub folder and ``HF_HUB_OFFLINE=1``: ``python benchmarks/pyiqa_offline.py``):
``piqe`` and ``entropy`` (`NO_DOWNLOAD`).  Every other NR metric needs a
download first: ``niqe``, ``niqe_matlab``, ``ilniqe``, ``brisque``,
``brisque_matlab``, ``nrqm`` and ``pi`` their ``.mat``/``.pth`` parameter
files from pyiqa's hub, the deep ones their checkpoints (and backbones).

Fidelity: the scores are pyiqa's own; the only code of ours on the path is
the image decoding.  Checked against ``pyiqa.create_metric(name)(path)`` (pyiqa
reading the file itself) on the built-in synthetic set: identical (max
absolute difference 0, `tests/test_pyiqa_methods.py`, ``piqe`` and
``entropy``).

Trust: pyiqa loads its checkpoints with ``torch.load(weights_only=False)``.
Files from pyiqa's hub count as trusted (like every hub tag); a local
``pretrained_model_path`` that is a torch file is first opened with
``weights_only=True``, and refused if it carries pickled code.
Licence: pyiqa is PolyForm Noncommercial 1.0, its hosted weights CC BY-NC-SA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

import numpy as np

from agiqa_bench.cache import FeatureCache, namespace_for
from agiqa_bench.errors import ConfigError, DataError, MethodUnavailable
from agiqa_bench.hub import offline
from agiqa_bench.images import load_rgb
from agiqa_bench.method import Method, MethodSpec, SpecFamily, Weights
from agiqa_bench.params import param
from agiqa_bench.records import Item
from agiqa_bench.weights import OFFLINE_WHY, identity, is_local, torch_hub_dir

PREFIX = "pyiqa"
#: Bump when the way scores are computed here changes (cached scores are then recomputed).
SCORE_VERSION = "1"
#: NR metrics that build and score with nothing downloaded (measured: benchmarks/pyiqa_offline.py, pyiqa 0.1.16).
NO_DOWNLOAD = frozenset({"piqe", "entropy"})
#: pyiqa networks of handcrafted (training-free, natural-scene-statistics) metrics: Table 1's "handcrafted" rows.
HANDCRAFTED_TYPES = frozenset({"NIQE", "ILNIQE", "BRISQUE", "PIQE", "NRQM", "PI", "Entropy"})
#: NR metrics that read a caption besides the image, and the keyword pyiqa's network takes it by.
PROMPT_KEYWORDS = {"clipscore": "caption_list"}
INSTALL_HINT = ("install the optional extra: `pip install \"agiqa-bench[pyiqa]\"` (in a checkout: "
                "`pip install -e \".[pyiqa]\"`); pyiqa is licensed PolyForm Noncommercial 1.0")


# -- pyiqa's table, read without importing pyiqa ------------------------------------------------------
def installed() -> bool:
    return importlib.util.find_spec(PREFIX) is not None


@functools.cache
def pyiqa_version() -> str:
    from importlib import metadata

    try:
        return metadata.version(PREFIX)
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def configs() -> Mapping[str, Mapping[str, Any]]:
    """pyiqa's DEFAULT_CONFIGS (metric name -> options).

    Read from its file, not through `import pyiqa` (which loads torch and every network, seconds): the file
    is a plain table.  If that ever fails (pyiqa moved it), the ordinary import is used.
    """
    found = importlib.util.find_spec(PREFIX)
    if found is None:
        raise ConfigError(f"pyiqa:<metric> methods need the pyiqa package, which is not installed: {INSTALL_HINT}")
    if PREFIX not in sys.modules:
        for folder in found.submodule_search_locations or ():
            path = Path(folder) / "default_model_configs.py"
            try:
                spec = importlib.util.spec_from_file_location("_agiqa_bench_pyiqa_table", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                table = module.DEFAULT_CONFIGS
            except Exception:
                break
            if isinstance(table, Mapping):
                return table
    return importlib.import_module(f"{PREFIX}.default_model_configs").DEFAULT_CONFIGS


def per_image(metric: str) -> bool:
    """False for pyiqa's set-level metrics (FID family, Inception Score), which its InferenceModel feeds folders."""
    return "fid" not in metric and metric != "inception_score"


def nr_metrics() -> list[str]:
    """pyiqa's no-reference metrics that score one image (in pyiqa's table order)."""
    return [m for m, cfg in configs().items() if cfg.get("metric_mode") == "NR" and per_image(m)]


def knows(metric: str) -> bool:
    try:
        return metric in configs()
    except ConfigError:
        return False


def cache_dir() -> Path:
    """The folder pyiqa downloads its files into (its `DEFAULT_CACHE_DIR`: torch's hub folder + /pyiqa)."""
    return torch_hub_dir() / PREFIX


# -- the family: one spec per metric -----------------------------------------------------------------
def _refuse_unknown(metric: str) -> ConfigError:
    names = nr_metrics()
    close = difflib.get_close_matches(metric, names, n=5, cutoff=0.5)
    close += [m for m in names if m.startswith(metric[:4]) and m not in close][: max(0, 5 - len(close))]
    hint = f"close matches: {', '.join(f'{PREFIX}:{m}' for m in close)}; " if close else ""
    return ConfigError(f"pyiqa {pyiqa_version()} has no metric {metric!r} ({hint}`agiqa-bench methods --pyiqa` lists "
                       f"its {len(names)} no-reference metrics)")


def member_spec(metric: str) -> MethodSpec:
    """The spec of `pyiqa:<metric>` from pyiqa's metadata; ConfigError (one line) for a metric that cannot run."""
    name = f"{PREFIX}:{metric}"
    if not metric:
        raise ConfigError("pyiqa: name a metric after the colon (pyiqa:musiq); `agiqa-bench methods --pyiqa` lists them")
    table = configs()
    if metric not in table:
        raise _refuse_unknown(metric)
    cfg = table[metric]
    if cfg.get("metric_mode") != "NR":
        raise ConfigError(f"{name} is a full-reference metric (pyiqa metric_mode {cfg.get('metric_mode')!r}: it compares "
                          f"each image with a pristine reference, which AGIQA datasets do not have); only no-reference "
                          f"metrics run here, `agiqa-bench methods --pyiqa` lists them")
    if not per_image(metric):
        raise ConfigError(f"{name} scores a whole image set against another (a distribution metric), not one image; "
                          f"it cannot rank images: pick a per-image metric from `agiqa-bench methods --pyiqa`")
    arch = str(cfg.get("metric_opts", {}).get("type", "?"))
    lower = bool(cfg.get("lower_better", False))
    weights = () if metric in NO_DOWNLOAD else (Weights(
        f"the files pyiqa's {metric} loads (fetched by pyiqa into {cache_dir()} on first use)",
        "pretrained_model_path",
        f"offline, the job's error names each missing file and its URL: put it into {cache_dir()} by hand, or pass "
        f"--set {name}.pretrained_model_path=PATH where pyiqa's network takes a file"),)
    family = "alignment" if metric in PROMPT_KEYWORDS else "handcrafted" if arch in HANDCRAFTED_TYPES else "deep"
    return MethodSpec(
        name=name, factory="baselines.pyiqa_metrics:PyIQAMetric", kind="zero-shot", family=family,
        summary=f"pyiqa's {metric} ({arch}; score range {cfg.get('score_range', '?')}, "
                f"{'lower' if lower else 'higher'} is better)",
        inputs=("image", "prompt") if metric in PROMPT_KEYWORDS else ("image",),
        lower_is_better=lower, weights=weights, default_run=False,
        reference=f"pyiqa {pyiqa_version()} (chaofengc/IQA-PyTorch): pyiqa.create_metric({metric!r})",
    )


def members() -> list[tuple[str, str]]:
    """(metric, description) of every NR metric of the installed pyiqa, for `agiqa-bench methods --pyiqa`."""
    out = []
    for metric in nr_metrics():
        cfg = configs()[metric]
        direction = "lower is better" if cfg.get("lower_better") else "higher is better"
        needs = "no download" if metric in NO_DOWNLOAD else "downloads"
        out.append((metric, f"{cfg.get('metric_opts', {}).get('type', '?')}; range {cfg.get('score_range', '?')}; "
                            f"{direction}; {needs}"))
    return out


FAMILY = SpecFamily(
    prefix=PREFIX,
    summary="any no-reference metric of the installed pyiqa, zero-shot (`agiqa-bench methods --pyiqa` lists them)",
    spec=member_spec, members=members, knows=knows)


# -- weights: pyiqa's downloads, guarded ---------------------------------------------------------------
def _first_line(exc: BaseException, limit: int = 160) -> str:
    return " ".join(str(exc).split())[:limit]


def missing_file(method: str, url: str, path: str | Path, why: str, cache: str, takes_path: bool) -> MethodUnavailable:
    """The one-line error of a file a pyiqa metric needs and cannot get: the file, why, its URL, the folder it is
    looked for in (`cache` says whose folder that is) and how to put it there."""
    path = Path(path)
    by_set = f", or supply a local copy with --set {method}.pretrained_model_path=PATH" if takes_path else ""
    return MethodUnavailable(
        f"{method}: {path.name}, a file pyiqa's network needs, is not available ({why}). Source: {url}. "
        f"Download it by hand into {path.parent} ({cache}){by_set}")


#: The downloaders pyiqa's networks reach: (module, attribute, where the file goes, whose folder, pyiqa's own?).
#: pyiqa's `load_file_from_url` and torch's `load_state_dict_from_url` call `download_url_to_file(url, dst)` from
#: their module globals for a file that is not cached; the CLIP loaders (pyiqa's copy, OpenAI's) call
#: `_download(url, root)` always.
DOWNLOADERS = (
    ("pyiqa.utils.download_util", "download_url_to_file", lambda url, dst, *a, **k: dst,
     "pyiqa's cache: $TORCH_HOME/hub/pyiqa, by default ~/.cache/torch/hub/pyiqa", True),
    ("torch.hub", "download_url_to_file", lambda url, dst, *a, **k: dst,
     "torch hub's cache, where torchvision backbones are looked for: $TORCH_HOME/hub/checkpoints", False),
    ("pyiqa.archs.clip_model", "_download", lambda url, root, *a, **k: os.path.join(root, os.path.basename(url)),
     "where pyiqa's CLIP loader looks: $TORCH_HOME/hub/clip", False),
    ("clip.clip", "_download", lambda url, root, *a, **k: os.path.join(root, os.path.basename(url)),
     "OpenAI CLIP's cache, ~/.cache/clip, where pyiqa's CLIPScore looks", False),
)


@contextlib.contextmanager
def guarded_downloads(method: str, takes_path: bool):
    """While pyiqa builds a metric, every downloader it reaches (`DOWNLOADERS`) fails in one line instead of a
    network traceback: at once with downloads off, or when a download fails.  A file already there passes.
    The functions are replaced for the duration only (one metric is built at a time in a process)."""
    saved = []
    for module_name, attr, destination, cache, own in DOWNLOADERS:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # e.g. OpenAI CLIP not installed: nothing of pyiqa's can reach it either
            continue
        original = getattr(module, attr)

        def fetch(*args, _original=original, _where=destination, _cache=cache, _own=own, **kwargs):
            url, dst = str(args[0] if args else kwargs.get("url")), _where(*args, **kwargs)
            if os.path.isfile(dst):
                return _original(*args, **kwargs)
            if offline():
                raise missing_file(method, url, dst, OFFLINE_WHY, _cache, takes_path and _own)
            try:
                return _original(*args, **kwargs)
            except Exception as exc:  # network errors come in many types; all mean "not downloadable here"
                why = f"the download failed: {type(exc).__name__}: {_first_line(exc)}"
                raise missing_file(method, url, dst, why, _cache, takes_path and _own) from None

        saved.append((module, attr, original))
        setattr(module, attr, fetch)
    try:
        yield
    finally:
        for module, attr, original in saved:
            setattr(module, attr, original)


def hub_file(exc: BaseException) -> tuple[str, str] | None:
    """(repo, file) of the Hugging Face hub file whose fetch raised `exc` (timm and transformers backbones), read
    from the `repo_id` / `filename` of the hub call in its traceback (or a chained exception's)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for frame, _ in traceback.walk_tb(exc.__traceback__):
            repo, filename = frame.f_locals.get("repo_id"), frame.f_locals.get("filename")
            if isinstance(repo, str) and isinstance(filename, str) and frame.f_code.co_filename.find("huggingface_hub") >= 0:
                return repo, filename
        exc = exc.__cause__ or exc.__context__
    return None


def build_failure(method: str, metric: str, exc: Exception) -> MethodUnavailable:
    """Why pyiqa could not build a metric, in one line: a missing package, a hub file not cached, or the error."""
    if isinstance(exc, ImportError):
        missing = getattr(exc, "name", None) or _first_line(exc)
        return MethodUnavailable(f"{method}: pyiqa's network for {metric} needs the Python package {missing!r}, "
                                 f"which is not installed: pip install {missing}")
    found = hub_file(exc)
    if found is not None:
        from huggingface_hub.constants import HF_HUB_CACHE

        repo, filename = found
        why = OFFLINE_WHY if offline() else f"the download failed: {type(exc).__name__}"
        return MethodUnavailable(
            f"{method}: {filename}, a backbone file pyiqa's network loads from the Hugging Face hub, is not available "
            f"({why}). Source: hf-hub:{repo}/{filename}. Fetch it into the Hugging Face cache ({HF_HUB_CACHE}) with "
            f"network access (`hf download {repo} {filename}`), or copy that cache from a machine that has it")
    return MethodUnavailable(f"{method}: pyiqa could not build the metric ({type(exc).__name__}: {_first_line(exc)})")


def takes_pretrained_path(metric: str) -> bool:
    """Whether pyiqa's network for `metric` takes a `pretrained_model_path` (imports pyiqa)."""
    import pyiqa.archs
    from pyiqa.archs import ARCH_REGISTRY

    arch_type = configs()[metric]["metric_opts"]["type"]
    try:
        if arch_type not in ARCH_REGISTRY:  # pyiqa imports an arch's module when it first builds it
            getattr(pyiqa.archs, "_lazy_import_arch", lambda name: None)(arch_type)
        arch = ARCH_REGISTRY.get(arch_type)
        return "pretrained_model_path" in inspect.signature(arch.__init__).parameters
    except Exception:
        return False


def refuse_pickled_code(path: Path, method: str) -> None:
    """A local torch file must load with `weights_only=True` before pyiqa opens it without that guard."""
    if path.suffix.lower() not in (".pt", ".pth", ".ckpt", ".bin", ".tar"):
        return  # .mat / .npz parameter files are read by scipy / numpy, which run no code
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MethodUnavailable(f"{method}.pretrained_model_path: {path} does not load as plain tensors "
                                f"({type(exc).__name__}: {_first_line(exc, 100)}); refused, since pyiqa would "
                                f"unpickle it with code allowed") from None


_MODEL_MEMO: dict[tuple, Any] = {}


def build_metric(metric: str, method: str, device: str, pretrained_model_path: str = ""):
    """pyiqa's InferenceModel for `metric`, built once per process (one at a time); errors are one line."""
    key = (metric, device, pretrained_model_path)
    if key in _MODEL_MEMO:
        return _MODEL_MEMO[key]
    _MODEL_MEMO.clear()  # release the previous model before building the next
    try:
        import torch

        import pyiqa
    except ImportError as exc:
        raise MethodUnavailable(f"{method}: pyiqa cannot be imported ({_first_line(exc)}); {INSTALL_HINT}") from None
    takes_path = takes_pretrained_path(metric)
    options: dict[str, Any] = {}
    if pretrained_model_path:
        if not takes_path:
            raise ConfigError(f"{method}.pretrained_model_path: pyiqa's network for {metric} takes no weights file")
        path = Path(pretrained_model_path).expanduser()
        if not path.is_file():
            raise MethodUnavailable(f"{method}.pretrained_model_path: {path} is not available (no such file). "
                                    f"Supply a local copy with --set {method}.pretrained_model_path=PATH")
        refuse_pickled_code(path, method)
        options["pretrained_model_path"] = str(path)
    with guarded_downloads(method, takes_path), contextlib.redirect_stdout(sys.stderr):  # pyiqa prints as it loads
        try:
            model = pyiqa.create_metric(metric, device=torch.device(device), **options)
        except MethodUnavailable:
            raise
        except Exception as exc:
            raise build_failure(method, metric, exc) from None
    _MODEL_MEMO[key] = model
    return model


# -- the method ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PyIQAParams:
    """What a pyiqa metric can be told besides its name."""

    pretrained_model_path: str = param("", help="a local weights file for metrics whose pyiqa network takes one "
                                                "('' = the file pyiqa downloads)")


def pixels(rgb: np.ndarray):
    """(1, 3, H, W) float32 in [0, 1] from an RGB uint8 image, as pyiqa's own image reading makes it."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(torch.float32) / 255.0


class PyIQAMetric(Method):
    """Zero-shot: pyiqa's score of each image (the same for every target), cached per image."""

    per_image: ClassVar[bool] = True  # per-image values cached: computed once each in the map phase

    params: ClassVar[type] = PyIQAParams

    def __init__(self, spec, config=None, context=None, *, name=None):
        super().__init__(spec, config, context, name=name)
        self.metric = spec.name.partition(":")[2]
        self.info: dict[str, Any] = {"pyiqa_version": pyiqa_version(), "pyiqa_metric": self.metric}
        if self.config["pretrained_model_path"] and not takes_pretrained_path(self.metric):  # refused at plan time
            raise ConfigError(f"{spec.name}.pretrained_model_path: pyiqa's network for {self.metric} takes no "
                              f"weights file")

    def weights_identity(self) -> dict[str, str]:
        """pyiqa's version (its hosted files are fixed per version) and the identity of a local weights file."""
        out = {"pyiqa": pyiqa_version()}
        path = self.config["pretrained_model_path"]
        if is_local(path):
            out["pretrained_model_path"] = identity(path)
        return out

    def model(self):
        return build_metric(self.metric, self.spec.name, self.context.device, self.config["pretrained_model_path"])

    def score(self, model, item: Item) -> float:
        import torch

        x = pixels(load_rgb(item.image)).to(self.context.device)
        keyword = PROMPT_KEYWORDS.get(self.metric)
        kwargs = {keyword: [item.prompt]} if keyword else {}
        try:
            with torch.no_grad():
                out = model(x, **kwargs)
        except Exception as exc:
            raise DataError(f"{self.spec.name}: pyiqa could not score {item.image} "
                            f"({type(exc).__name__}: {_first_line(exc)})") from None
        out = out[0] if isinstance(out, (tuple, list)) else out
        values = torch.as_tensor(out).detach().float().reshape(-1).cpu()
        if values.numel() != 1:
            raise MethodUnavailable(f"{self.spec.name}: pyiqa returned {values.numel()} numbers for one image; "
                                    f"this metric gives no single score")
        return float(values[0])

    def predict(self, items: Sequence[Item]) -> np.ndarray:
        if not items:
            return np.zeros(0, dtype=np.float64)
        root = self.context.cache_dir / "features" if self.context.cache_dir else None
        namespace = namespace_for(f"pyiqa-{self.metric}", {"version": SCORE_VERSION, "metric": self.metric,
                                                           **self.weights_identity()})
        if self.metric in PROMPT_KEYWORDS:  # the score depends on the prompt too: key it by a digest of it
            items = [dataclasses.replace(it, id=f"{it.id}#{hashlib.sha1(it.prompt.encode()).hexdigest()[:12]}")
                     for it in items]
        state: dict[str, Any] = {}

        def compute(item: Item) -> np.ndarray:
            if "model" not in state:  # built only when an image is not cached
                state["model"] = self.model()
            return np.array([self.score(state["model"], item)])

        return FeatureCache(root).get(namespace, items, compute)[:, 0].astype(np.float64)
