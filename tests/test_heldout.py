"""`_test` metrics on a one-split source (an image folder): the images outside the training subset are the reference."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image

from degan.config import resolve
from degan.errors import DataError
from degan.lottery import experiment


def _folder(tmp_path, n=10):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(n):  # image i is a flat colour of value 20 * i: which images are held out is visible
        Image.fromarray(np.full((16, 16, 3), 20 * i, np.uint8)).save(d / f"{i:02d}.png")
    return d


def _exp(folder, indices):
    cfg = resolve(None, None, [f"data.source={folder}", "data.resolution=16"], {})
    logged = []
    exp = types.SimpleNamespace(cfg=cfg, indices=np.asarray(indices), log=logged.append)
    return exp, logged


EXTRACTOR = types.SimpleNamespace(name="fake", sha256="0" * 64, resize="bilinear")


def test_folder_test_reference_is_the_complement_of_the_subset(tmp_path):
    exp, logged = _exp(_folder(tmp_path), [0, 2, 3, 5, 8, 9])
    images, key = experiment.test_reference(exp, EXTRACTOR)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 16)
    assert images[:, 0, 0, 0].tolist() == [20, 80, 120, 140]  # images 1, 4, 6, 7: never trained on
    assert key["split"] == "heldout"
    assert len(logged) == 1 and "4 images" in logged[0] and "outside the training subset" in logged[0]
    experiment.test_reference(exp, EXTRACTOR)
    assert len(logged) == 1  # said once per run


def test_folder_used_whole_has_no_test_reference(tmp_path):
    exp, _ = _exp(_folder(tmp_path, 6), list(range(6)))
    with pytest.raises(DataError, match="--subset 0.85"):
        experiment.test_reference(exp, EXTRACTOR)
