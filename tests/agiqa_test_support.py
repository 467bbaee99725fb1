"""Helpers shared by the tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agiqa_bench.testing import blurred_shapes, write_tiny_agiqa3k  # noqa: F401  (blurred_shapes: re-exported)

#: The real AGIQA-1k / AGIQA-3k label files, as shipped inside the package (no test reads outside the repository).
DATASETS = Path(__file__).resolve().parents[1] / "agiqa_bench" / "datasets" / "labels"
#: The IP-IQA reference code's folds, recorded from its split procedure (see tests/fixtures/README.md).
REF_SPLITS = Path(__file__).resolve().parent / "fixtures" / "ref_ipiqa_splits.json"


def write_image(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_tiny_agiqa3k(root: Path) -> Path:
    """An AGIQA-3k-layout folder: 12 prompts x 3 generators, 128 px images (two CPBD blocks wide).

    Quality falls with blur, so sharpness methods have something to find (`agiqa_bench.testing`'s writer)."""
    return write_tiny_agiqa3k(root, size=128)


# -- methods used only by the tests ----------------------------------------------------
import os  # noqa: E402
import signal  # noqa: E402

from agiqa_bench.images import load_rgb  # noqa: E402
from agiqa_bench.method import Method, MethodSpec  # noqa: E402


class Brightness(Method):
    """Trainable toy: mean brightness, with its sign learned on the training part.

    `fail_on_repeat` raises at that repeat.  The environment variable
    AGIQA_TEST_KILL_AT=r SIGKILLs the whole process when fitting repeat r (to
    test resuming after a hard kill with an unchanged configuration);
    AGIQA_TEST_KILL_ONCE=r:FILE does so only in the first process that gets there
    (a worker killed mid-job, whose retry then succeeds).
    """

    params = {"fail_on_repeat": -1}

    def _feature(self, items):
        return np.array([load_rgb(it.image).mean() for it in items])

    def fit(self, train, val, targets):
        super().fit(train, val, targets)
        if str(self.context.repeat) == os.environ.get("AGIQA_TEST_KILL_AT"):
            os.kill(os.getpid(), signal.SIGKILL)
        once = os.environ.get("AGIQA_TEST_KILL_ONCE")  # "repeat:marker file": the first process there dies
        if once and once.split(":", 1)[0] == str(self.context.repeat):
            marker = Path(once.split(":", 1)[1])
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        if self.context.repeat == self.config["fail_on_repeat"]:
            raise RuntimeError("boom at this repeat")
        y = np.array([it.targets[targets[0]] for it in train])
        self.sign = 1.0 if np.corrcoef(self._feature(train), y)[0, 1] >= 0 else -1.0

    def predict(self, items):
        return self.sign * self._feature(items)


class BatchedBrightness(Brightness):
    """Brightness with a parameter that changes speed only (declared in `runtime_params`)."""

    params = {"fail_on_repeat": -1, "batch_size": 4}
    runtime_params = ("batch_size",)


BATCHED = MethodSpec(name="batched", factory="agiqa_test_support:BatchedBrightness", kind="trainable",
                     summary="test toy with a runtime-only parameter", default_run=False)

BRIGHTNESS = MethodSpec(name="brightness", factory="agiqa_test_support:Brightness", kind="trainable",
                        summary="test toy", default_run=False)


def register(monkeypatch, *specs):
    """Add test-only specs to the registry for one test (the autouse fixture in conftest.py forgets them)."""
    from agiqa_bench import registry

    monkeypatch.setattr(registry, "_registered", [*registry._registered, *specs])
    registry.refresh()


class WeightedBrightness(Brightness):
    """Brightness scaled by a number read from a weights file (`weights` parameter: a local path)."""

    params = {"fail_on_repeat": -1, "weights": ""}

    def predict(self, items):
        return float(Path(self.config["weights"]).read_text()) * super().predict(items)


from agiqa_bench.method import Weights  # noqa: E402

WEIGHTED = MethodSpec(name="weighted", factory="agiqa_test_support:WeightedBrightness", kind="trainable",
                      summary="test toy whose scores depend on a weights file", default_run=False,
                      weights=(Weights("a scale factor file", "weights", "a local file"),))


class Sleeper(Brightness):
    """Brightness whose fit first sleeps AGIQA_TEST_SLEEP seconds (default 120): a job that is surely running
    when a test stops the driver."""

    def fit(self, train, val, targets):
        import time

        time.sleep(float(os.environ.get("AGIQA_TEST_SLEEP", "120")))
        super().fit(train, val, targets)


SLEEPER = MethodSpec(name="sleeper", factory="agiqa_test_support:Sleeper", kind="trainable",
                     summary="test toy that sleeps in fit", default_run=False)


# -- per-image methods that count their computations (the map phase) ------------------------------------
COUNT_ENV = "AGIQA_TEST_COUNT_FILE"


def _count(method: str, item_id: str) -> None:
    """One line per per-image computation, appended to the file AGIQA_TEST_COUNT_FILE names (any process)."""
    path = os.environ.get(COUNT_ENV)
    if path:
        with open(path, "a") as fh:  # one short write in append mode: lines from several processes never mix
            fh.write(f"{method}\t{item_id}\n")


class CountingScorer(Method):
    """Zero-shot toy: mean brightness per image, cached per image, every computation counted."""

    per_image = True

    def predict(self, items):
        from agiqa_bench.cache import FeatureCache, namespace_for

        root = self.context.cache_dir / "features" if self.context.cache_dir else None

        def compute(item):
            _count("counting", item.id)
            return np.array([load_rgb(item.image).mean()])

        return FeatureCache(root).get(namespace_for("counting", {}), items, compute)[:, 0]


from baselines.svr import FeatureSVR  # noqa: E402


class CountingSVR(FeatureSVR):
    """Feature + SVR toy: channel means and spread of each image, every extraction counted."""

    feature_name = "counting-svr"

    def extract(self, rgb):
        return np.array([rgb.mean(), rgb.std(), *rgb.reshape(-1, 3).mean(axis=0)])

    def features(self, items):
        from agiqa_bench.cache import FeatureCache, namespace_for

        if self._cache is None:
            self._cache = FeatureCache(self.context.cache_dir / "features" if self.context.cache_dir else None)

        def compute(item):
            _count("counting_svr", item.id)
            return self.extract(load_rgb(item.image))

        return self._cache.get(namespace_for("counting-svr", {}), items, compute)


COUNTING = MethodSpec(name="counting", factory="agiqa_test_support:CountingScorer", kind="zero-shot",
                      summary="test toy: per-image scores, counted", default_run=False)
COUNTING_SVR = MethodSpec(name="counting_svr", factory="agiqa_test_support:CountingSVR", kind="trainable",
                          summary="test toy: per-image features + SVR, counted", default_run=False, family="svr")
