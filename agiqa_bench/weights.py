"""One resolver for every weights file, and one identity for what a file holds.

A weights reference (the value of a method parameter such as `pretrained`,
`checkpoint` or `params`) is one of:

- a local path (`~/models/RN50.pt`, `./hpc.pth`): used as is, it must exist;
- a shipped tag (`agiqa-synth`, `agiqa-smoke`): a file inside this package,
  named by the method's `Source` table;
- a hub tag (`openai`, `imagenet`, `pyiqa`, ...): a `Source` the method
  declares, fetched the normal way (Hugging Face hub or a URL into the torch
  hub cache) and reused from the cache;
- `hf-hub:owner/repo/path/in/repo[@revision]`: any file on the Hugging Face hub
  (the one spelling of a hub file in specs, docs and messages; `_hub_body` also
  reads an older spelling, so old command lines keep working);
- "" (or `none` / `random`): no file, random initialisation, where a method
  allows it.

`resolve(...)` returns the local `Path` or raises `WeightsUnavailable`, whose
message has one shape everywhere: which file, where it comes from, and the
`--set` option that supplies a local copy.  Downloads obey the one offline
switch (`agiqa_bench.hub.offline`).

`identity(path)` is the file's size and the start of its sha256 (cached by
size and mtime), which goes into every method's configuration hash: a new
checkpoint under an old name computes new rows instead of reusing old ones.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from agiqa_bench.errors import MethodUnavailable
from agiqa_bench.hub import offline

RANDOM_INIT = ("", "none", "random")
HF_PREFIX = "hf-hub:"
#: Other spellings of HF_PREFIX that references may still use (read here only; never written).
_HF_ALIASES = ("hf://",)
#: Why a file that is not cached cannot be fetched while the offline switch is on (`agiqa_bench.hub`).
OFFLINE_WHY = "not in the local cache and downloads are off (offline: AGIQA_BENCH_OFFLINE / HF_HUB_OFFLINE)"


class WeightsUnavailable(MethodUnavailable):
    """A weights file that is not here and cannot be fetched; the message says how to supply it."""


class NotCached(WeightsUnavailable):
    """A hub or URL file that is not in the local cache (raised where `resolve` may not download)."""


@dataclass(frozen=True)
class Source:
    """Where a tagged weights file comes from.

    Exactly one of `hf` (``repo/path/in/repo[@revision]`` on the Hugging Face
    hub), `url` (downloaded into the torch hub cache under `cache_folder`) or
    `shipped` (a file inside this package) is set.  `hf_also` lists other
    ``(repo, filename)`` names the hub cache may hold the same file under (a
    repository's older name); they are looked up, never downloaded.
    """

    what: str
    hf: str = ""
    url: str = ""
    cache_folder: str = "checkpoints"
    shipped: Path | None = None
    hf_also: tuple[tuple[str, str], ...] = ()

    @property
    def filename(self) -> str:
        if self.shipped is not None:
            return self.shipped.name
        if self.hf:
            return parse_hf(HF_PREFIX + self.hf)[1].rsplit("/", 1)[-1]
        return self.url.rsplit("/", 1)[-1]

    def where(self) -> str:
        if self.shipped is not None:
            return f"shipped with agiqa-bench ({self.shipped})"
        if self.hf:
            return f"{HF_PREFIX}{self.hf}"
        return self.url

    def cache_path(self) -> Path | None:
        """Where the file is (or will be) cached locally; None for hub files not yet cached."""
        if self.shipped is not None:
            return self.shipped
        if self.url:
            return torch_hub_dir() / self.cache_folder / self.filename
        repo, filename, revision = parse_hf(HF_PREFIX + self.hf)
        for repo, filename, revision in ((repo, filename, revision), *((r, f, None) for r, f in self.hf_also)):
            found = hf_cached(repo, filename, revision)
            if found:
                return Path(found)
        return None


def torch_hub_dir() -> Path:
    """torch's hub cache folder ($TORCH_HOME/hub, by default ~/.cache/torch/hub), read at call time."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub"


def is_random(ref) -> bool:
    return ref is None or str(ref).strip().lower() in RANDOM_INIT


def _hub_body(ref) -> str | None:
    """What follows the hub prefix (`hf-hub:`, or its older spelling) of a hub reference; None for any other."""
    text = str(ref or "").strip()
    for prefix in (HF_PREFIX, *_HF_ALIASES):
        if text.startswith(prefix):
            return text[len(prefix):]
    return None


def is_hub(ref) -> bool:
    """A Hugging Face hub reference: one file (`is_hub_file`) or a whole repository (`hf-hub:owner/repo`)."""
    return _hub_body(ref) is not None


def is_local(ref) -> bool:
    """A reference that names a path on this machine: it holds a path separator or has a file suffix.

    The one test every caller uses for "is this a local file (or folder)?": a tag (`openai`,
    `agiqa-synth`, `imagenet`), "" / None and every hub reference (`hf-hub:owner/repo/file`, and
    `hf-hub:owner/repo`, open_clip's spelling of a whole hub model) are not local.
    """
    text = str(ref or "").strip()
    return bool(text) and not is_hub(text) and (os.sep in text or "/" in text or Path(text).suffix != "")


def is_hub_file(ref) -> bool:
    """A reference to one file on the Hugging Face hub: `hf-hub:owner/repo/path/in/repo[@revision]`.

    The second question a caller that takes tags asks ("a file, here or on the hub, rather than a tag?"
    is `is_local(ref) or is_hub_file(ref)`).  `hf-hub:owner/repo`, a whole repository (open_clip's
    spelling of a whole model), is not a file.
    """
    if not is_hub(ref):
        return False
    try:
        parse_hf(str(ref).strip())
    except ValueError:
        return False
    return True


def is_repo_id(ref) -> bool:
    """transformers' spelling of a hub repository (`owner/name`, as `from_pretrained` takes it), not a folder.

    For a parameter that takes a hub repository *or* a local folder (PickScore's `model` and
    `processor`), where `is_local` cannot tell them apart: a value that starts with '.', '/' or '~',
    holds more than one '/', or exists here is a folder; a hub reference (`hf-hub:...`) is neither.
    """
    text = str(ref or "").strip()
    return (bool(text) and not is_hub(text) and not text.startswith((".", "/", "~", os.sep))
            and text.count("/") <= 1 and not Path(text).exists())


def in_folder(ref: str, filename: str) -> str:
    """`ref`, or the file `filename` inside it when `ref` names a folder: a local directory or a whole hub
    repository (`hf-hub:owner/repo[@revision]`), for parameters that take "the file or its folder"."""
    body = _hub_body(ref)
    if body is not None:
        repo, _, revision = body.partition("@")
        repo = repo.strip("/")
        if repo.count("/") == 1:
            return f"{HF_PREFIX}{repo}/{filename}" + (f"@{revision}" if revision else "")
        return ref
    if is_local(ref) and Path(ref).expanduser().is_dir():
        return str(Path(ref).expanduser() / filename)
    return ref


def next_to(ref: str, filename: str) -> str:
    """The file `filename` in the folder of the file `ref`: the same hub repository folder and revision, or
    the same local folder."""
    if is_hub(ref):
        repo, path, revision = parse_hf(ref)
        folder = path.rpartition("/")[0]
        return f"{HF_PREFIX}{repo}/{folder + '/' if folder else ''}{filename}" + (f"@{revision}" if revision else "")
    return str(Path(ref).expanduser().parent / filename)


def parse_hf(ref: str) -> tuple[str, str, str | None]:
    """'hf-hub:owner/repo/dir/file.pt@rev' -> ('owner/repo', 'dir/file.pt', 'rev')."""
    body = _hub_body(ref)
    body, _, revision = (ref if body is None else body).partition("@")
    parts = body.strip("/").split("/")
    if len(parts) < 3:
        raise ValueError(f"a hub reference is hf-hub:owner/repo/path/to/file[@revision], got {ref!r}")
    return "/".join(parts[:2]), "/".join(parts[2:]), (revision or None)


def hf_cached(repo: str, filename: str, revision: str | None = None) -> str | None:
    """Local path of a hub file already in the Hugging Face cache (never downloads)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo, filename, revision=revision)
    except Exception:
        return None
    return found if isinstance(found, str) else None


def unavailable(method: str, param: str, what: str, why: str, source: str = "", hint: str = "") -> WeightsUnavailable:
    """The one shape of every weights error: file, why, where it comes from, the --set that supplies it,
    and optionally, after a semicolon, the one other way out (`hint`, e.g. random weights)."""
    origin = f" Source: {source}." if source else ""
    tail = f"; {hint}" if hint else ""
    return WeightsUnavailable(
        f"{method}.{param}: {what} is not available ({why}).{origin} "
        f"Supply a local copy with --set {method}.{param}=PATH{tail}")


def resolve(ref, *, method: str, param: str, sources: Mapping[str, Source] | None = None,
            what: str = "the weights file", download: bool = True, hint: str = "") -> Path:
    """The local file a weights reference names (see the module docstring); raises `WeightsUnavailable`.

    `sources` maps the tags the method accepts to their `Source`; `download=False`
    only looks (local files and caches), as the `methods` listing does; `hint` ends
    every message (see `unavailable`).
    """
    sources = sources or {}
    text = str(ref).strip()
    if text in sources:
        source = sources[text]
        return _fetch(source, method=method, param=param, download=download, hint=hint)
    if is_hub(text):
        try:
            repo, filename, revision = parse_hf(text)
        except ValueError as exc:
            raise unavailable(method, param, what, str(exc), hint=hint) from None
        hf = f"{repo}/{filename}" + (f"@{revision}" if revision else "")
        return _fetch(Source(what, hf=hf), method=method, param=param, download=download, hint=hint)
    if is_local(text):
        path = Path(text).expanduser()
        if not path.exists():
            raise unavailable(method, param, f"{what} {path}", "no such file", hint=hint)
        return path
    known = ", ".join(repr(t) for t in sources) or "none"
    raise unavailable(method, param, what, f"{text!r} is neither a file path nor a known tag (tags: {known}; "
                                           f"or {HF_PREFIX}owner/repo/file)", hint=hint)


def problem(ref, *, method: str, param: str, sources: Mapping[str, Source] | None = None,
            what: str = "the weights file") -> str | None:
    """Why `resolve(ref, ...)` would fail here, found without downloading; None when it would succeed.

    A file that is not cached yet counts as fine while downloads are on (it is fetched on first use)
    and as missing, with the offline message, while they are off.
    """
    try:
        resolve(ref, method=method, param=param, sources=sources, what=what, download=False)
    except NotCached as exc:
        return str(exc) if offline() else None
    except WeightsUnavailable as exc:
        return str(exc)
    return None


def available(ref, *, sources: Mapping[str, Source] | None = None) -> bool:
    """True when `resolve` would succeed without a download (random init counts as available)."""
    if is_random(ref):
        return True
    try:
        resolve(ref, method="?", param="?", sources=sources, download=False)
    except MethodUnavailable:
        return False
    return True


_download_lock = threading.Lock()


def _fetch(source: Source, *, method: str, param: str, download: bool, hint: str = "") -> Path:
    what = f"{source.what} ({source.filename})"
    if source.shipped is not None:
        if source.shipped.is_file():
            return source.shipped
        raise unavailable(method, param, what, f"{source.shipped} is missing from this installation", source.where(),
                          hint)
    cached = source.cache_path()
    if cached is not None and cached.is_file():
        return cached
    if not download or offline():
        why = OFFLINE_WHY if offline() else "not in the local cache"
        raise NotCached(str(unavailable(method, param, what, why, source.where(), hint)))
    try:
        with _download_lock:  # threads of this process; the file lock below: other worker processes
            if source.url:
                import torch.hub

                from agiqa_bench.cache import file_lock

                path = source.cache_path()
                path.parent.mkdir(parents=True, exist_ok=True)
                with file_lock(path.with_name(path.name + ".lock")):
                    if not path.is_file():  # another worker may have fetched it while this one waited
                        torch.hub.download_url_to_file(source.url, str(path), progress=True)
                return path
            from huggingface_hub import hf_hub_download

            repo, filename, revision = parse_hf(HF_PREFIX + source.hf)
            return Path(hf_hub_download(repo, filename, revision=revision))
    except Exception as exc:  # network errors come in many types; all mean "not downloadable here"
        first = " ".join(str(exc).split())[:160]
        raise unavailable(method, param, what, f"the download failed: {type(exc).__name__}: {first}",
                          source.where(), hint) from None


_identity_cache: dict[tuple[str, int, int], str] = {}


def identity(path: str | Path) -> str:
    """'<size>:<sha256 prefix>' of a file (of every file, for a folder); 'missing' when absent.

    Cached by (path, size, mtime), so a large checkpoint is hashed once per process.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        parts = [f"{p.relative_to(path)}={identity(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
        return "dir:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    try:
        st = path.stat()
    except OSError:
        return "missing"
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _identity_cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _identity_cache[key] = f"{st.st_size}:{h.hexdigest()[:16]}"
    return _identity_cache[key]


#: The name the feature caches use.
file_identity = identity
