"""Dataset info: checking and hashing specs reads each dataset's registered class count, input shape and
training defaults, and never builds the data (rendering scenes took most of `eis zoo suites`' 13 s)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import eis.zoo
from eis.errors import EisError
from eis.zoo import datasets
from eis.zoo.datasets import (
    DATASETS,
    DIGITS_INFO,
    SCENES_INFO,
    SHAPES_INFO,
    DatasetInfo,
    ImageData,
    dataset_info,
    get_dataset,
)
from eis.zoo.spec import CaseSpec

# Seed ids (stable across ZOO_VERSION bumps by design) as they were when validation still built the data:
# the declared info must give the same training defaults, hence the same content and ids.
SCENES_SEED_IDS = [
    ("scenes-resnet-patch-0", "38eaf3cc8fb9c09f"),
    ("scenes-resnet-patch-1", "d297e60686830144"),
    ("scenes-resnet-patch-2", "864b0e3af2a31885"),
    ("scenes-resnet-patch-3", "4d466a1f556a4c5e"),
    ("scenes-resnet-patch-4", "c8cdaef323059041"),
    ("scenes-resnet-patch-5", "e5a77074dbf418c6"),
    ("scenes-resnet-patch-6", "4a821d0b8efae173"),
    ("scenes-resnet-patch-7", "ebb887a4f5b0f34e"),
    ("scenes-resnet-patch-8", "b709d3c53f338196"),
    ("scenes-resnet-patch-9", "0652322ee83df2e8"),
]
# sha256 of the JSON list of (name, seed_id) of every case of the standard suite (digits and shapes),
# and of the detect-shapes population (its flaw targets are drawn with the class count from the info)
SUITE_DIGESTS = {"standard": ("3555d6cb1ff1f717", 26), "detect-shapes": ("86b9de762d6a5c09", 100)}


def _no_data(*_args, **_kwargs):
    raise AssertionError("a dataset was built while specs were only checked and hashed")


def test_checking_every_builtin_suite_builds_no_dataset(monkeypatch):
    before = get_dataset.cache_info()
    for name in list(DATASETS):
        monkeypatch.setitem(DATASETS._items, name, _no_data)
    monkeypatch.setattr(datasets, "get_dataset", _no_data)
    n = 0
    for suite in eis.zoo.builtin_suites():
        for spec in eis.zoo.suite_cases(suite):
            assert spec.case_id and (not isinstance(spec, CaseSpec) or spec.seed_id)
            n += 1
    assert n > 600
    assert get_dataset.cache_info() == before  # not even a cache hit


def test_case_ids_are_what_they_were():
    specs = eis.zoo.suite_cases("localize-scenes")
    assert [(s.name, s.seed_id) for s in specs] == SCENES_SEED_IDS
    for suite, (digest, count) in SUITE_DIGESTS.items():
        rows = [(s.name, s.seed_id) for s in eis.zoo.suite_cases(suite) if isinstance(s, CaseSpec)]
        assert (hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16], len(rows)) == (digest, count)


def test_declared_info_is_the_built_datas():
    assert DatasetInfo.of(get_dataset("digits")) == DIGITS_INFO == dataset_info("digits")
    from eis.zoo.scenes import SCENE_SIZE, render_scenes
    from eis.zoo.shapes import render_shapes

    rendered = {SHAPES_INFO: render_shapes(4, 32, seed=1), SCENES_INFO: render_scenes(4, SCENE_SIZE, seed=11)}
    for info, (x, y) in rendered.items():
        assert tuple(x.shape[1:]) == info.input_shape and int(y.max()) < info.num_classes
    assert (SHAPES_INFO.num_classes, SCENES_INFO.num_classes) == (10, 6)
    spec = CaseSpec("s", "shapes", "cnn", {"kind": "clean"}, train={"lr": 0.01}).validated()
    assert spec.training() == {"epochs": 7, "batch_size": 32, "lr": 0.01}


def _tiny(k: int = 3, epochs: int = 20) -> ImageData:
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % k
    return ImageData(x, y, x, y, tuple(str(i) for i in range(k)), epochs=epochs)


@pytest.fixture
def scratch(monkeypatch):
    """DATASETS as it is, restored after the test."""
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    monkeypatch.setattr(DATASETS, "_info", dict(DATASETS._info))
    yield
    get_dataset.cache_clear()


def test_a_dataset_without_info_is_built_once(scratch):
    calls = []
    DATASETS.register("tiny-no-info", lambda: calls.append(1) or _tiny(epochs=5))  # as shadows register
    spec = CaseSpec("t", "tiny-no-info", "cnn", {"kind": "patch", "target": 2}).validated()
    assert spec.training()["epochs"] == 5 and dataset_info("tiny-no-info").input_shape == (1, 8, 8)
    assert len(calls) == 1
    with pytest.raises(EisError, match="target"):  # the flaw is still checked against the class count
        CaseSpec("t", "tiny-no-info", "cnn", {"kind": "patch", "target": 3}).validated()


def test_replacing_a_dataset_drops_its_info_unless_given(scratch):
    info = DatasetInfo(num_classes=3, input_shape=(1, 8, 8))
    DATASETS.register("tiny", _no_data, info=info)
    assert dataset_info("tiny") == info  # not built
    DATASETS.register("tiny", lambda: _tiny(k=4), replace=True)  # a plain callable, as shadows/setup.py
    get_dataset.cache_clear()
    assert dataset_info("tiny").num_classes == 4
    DATASETS.unregister("tiny")
    with pytest.raises(EisError, match="unknown dataset 'tiny'"):
        dataset_info("tiny")


def test_info_that_does_not_match_the_data_is_an_error_when_built(scratch):
    DATASETS.register("tiny-wrong", _tiny, info=DatasetInfo(num_classes=10, input_shape=(1, 8, 8)))
    with pytest.raises(EisError, match="tiny-wrong.*registered as"):
        get_dataset("tiny-wrong")
