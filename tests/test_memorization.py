"""Memorisation and collapse checks: copies are flagged at distance 0, fresh samples are not, collapse is."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from degan.cli import main
from degan.metrics.memorization import (mean_pairwise_distance, memorization_report, nearest_neighbours,
                                        pixel_vectors, save_pairs_grid)


class ProjectionFeatures(nn.Module):
    """A stand-in feature extractor: a fixed random projection of the pixels (uint8 images -> float [N, 16])."""

    num_features = 16
    name = "projection"

    def __init__(self, dim):
        super().__init__()
        self.register_buffer("w", torch.randn(dim, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, images):
        return images.flatten(1).float() @ self.w


def _imgs(n, seed, size=8):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_copies_of_training_images_are_flagged_at_distance_zero():
    reals = _imgs(40, 0)
    fakes = reals[torch.tensor([3, 7, 11, 19, 23, 31])].clone()
    rep = memorization_report(fakes, reals, ProjectionFeatures(3 * 64))
    assert rep["copying"] and not rep["collapse"] and "copy the training set" in rep["warnings"][0]
    assert set(rep["spaces"]) == {"pixel_l1", "pixel_l2", "inception"}
    for name, s in rep["spaces"].items():
        if name.startswith("pixel"):  # exact distances of identical pixels
            assert s["nn_distance_mean"] == 0.0 and s["nn_distance_min"] == 0.0
        else:  # features of a copy come from another batch: float32 kernels may round differently per batch size
            assert s["nn_distance_mean"] <= 1e-4 * s["real_nn_distance_median"]
        assert s["copy_fraction"] == 1.0
        assert s["nearest_index"] == [3, 7, 11, 19, 23, 31]
        assert s["real_nn_distance_median"] > 0


def test_fresh_samples_pass_and_a_single_repeated_sample_is_collapse():
    reals = _imgs(40, 0)
    ok = memorization_report(_imgs(30, 1), reals, ProjectionFeatures(3 * 64))
    assert not ok["copying"] and not ok["collapse"] and ok["warnings"] == []
    assert 0.7 < ok["spaces"]["pixel_l2"]["nn_ratio"] < 1.5 and 0.7 < ok["spaces"]["inception"]["diversity_ratio"] < 1.3
    same = memorization_report(_imgs(1, 2).repeat(30, 1, 1, 1), reals)
    assert same["collapse"] and not same["copying"] and "collapse" in same["warnings"][0]
    assert same["spaces"]["pixel_l2"]["diversity"] == 0.0 and "inception" not in same["spaces"]


def test_nearest_neighbours_match_brute_force_and_exclude_self():
    q, r = torch.randn(7, 5, dtype=torch.float64), torch.randn(11, 5, dtype=torch.float64)
    for space, p in (("pixel_l1", 1), ("pixel_l2", 2), ("inception", 2)):
        d, i = nearest_neighbours(q, r, space, chunk=3)
        full = torch.cdist(q, r, p=p)
        full = full / 5 if space == "pixel_l1" else (full / 5 ** 0.5 if space == "pixel_l2" else full)
        assert torch.equal(i, full.argmin(1)) and torch.allclose(d, full.min(1).values)
    d, i = nearest_neighbours(r[:4], r, "inception", exclude_index=torch.arange(4))
    assert (i != torch.arange(4)).all() and (d > 0).all()
    with pytest.raises(ValueError, match="unknown space"):
        nearest_neighbours(q, r, "lpips")
    with pytest.raises(ValueError, match="share F"):
        nearest_neighbours(q, torch.randn(3, 4))
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert mean_pairwise_distance(x, "inception") == pytest.approx((1 + 3 + 2) / 3)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="uint8"):
        memorization_report(_imgs(4, 0).float(), _imgs(4, 1))
    with pytest.raises(ValueError, match="differ"):
        memorization_report(_imgs(4, 0, 8), _imgs(4, 1, 16))
    with pytest.raises(ValueError, match="at least 2"):
        memorization_report(_imgs(1, 0), _imgs(4, 1))
    assert pixel_vectors(_imgs(2, 0)).max() <= 1.0


def test_pairs_grid_puts_each_sample_beside_its_nearest_real(tmp_path):
    reals, fakes = _imgs(10, 0), _imgs(3, 1)
    out = save_pairs_grid(fakes, reals, [4, 0, 9], tmp_path / "p.png", order=[2, 0, 1], upscale=1)
    arr = np.asarray(Image.open(out))
    tile = lambda r, c: arr[1 + r * 9:1 + r * 9 + 8, 1 + c * 9:1 + c * 9 + 8]  # noqa: E731  8 px tiles, 1 px apart
    assert np.array_equal(tile(0, 0), fakes[2].permute(1, 2, 0).numpy())
    assert np.array_equal(tile(0, 1), reals[9].permute(1, 2, 0).numpy())
    assert np.array_equal(tile(0, 3), reals[4].permute(1, 2, 0).numpy())


def test_eval_memorization_on_a_tiny_run(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    tiny = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--snap", "0.032",
            "--metrics", "none", "--no-progress", "--set", "eval.monitor_every_kimg=null"]
    r = CliRunner().invoke(main, [str(a) for a in ["train", "--outdir", tmp_path / "r", "--data", folder,
                                                   "--kimg", "0.016", *tiny]], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (run,) = list((tmp_path / "r").iterdir())
    r = CliRunner().invoke(main, [str(a) for a in ["eval", run, "--metrics", "none", "--memorization",
                                                   "--memorization-num", "6", "--no-progress"]],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "memorization" in r.output and "nearest-neighbour ratio" in r.output
    rep = json.loads((run / "level_0" / "memorization.json").read_text())
    assert rep["num_fakes"] == 6 and rep["num_reals"] == 12 and len(rep["spaces"]["pixel_l2"]["nearest_index"]) == 6
    assert Image.open(run / "level_0" / "memorization.png").size[0] > 32
    r = CliRunner().invoke(main, ["eval", str(run), "--memorization", "--memorization-num", "1"])
    assert r.exit_code == 2 and "memorization-num" in r.output
