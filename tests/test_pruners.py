"""Pruners beside IMP (layer-wise IMP, OMP, random), binary-mask checks, per-layer kept fractions."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from degan.errors import CheckpointError
from degan.pruning import (
    PRUNERS,
    add_masks,
    check_binary_mask,
    density,
    get_mask,
    layer_keep_fraction,
    ones_like_mask,
    prune_global_magnitude,
    prune_layerwise_magnitude,
    prune_one_shot_magnitude,
    prune_random,
    raw_weight,
    set_mask,
)


def toy(seed=0):
    """625 prunable weights in three conv layers of unequal size (125 + 100 + 400)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 5, 5), nn.Conv2d(5, 20, 1), nn.ConvTranspose2d(5, 20, 2))
    add_masks(net, "conv,convT")
    return net


def big_and_small():
    """Layer "0" has 100 large weights, layer "1" 100 small ones (all distinct magnitudes)."""
    net = nn.Sequential(nn.Conv2d(1, 100, 1, bias=False), nn.Conv2d(1, 100, 1, bias=False))
    add_masks(net)
    with torch.no_grad():
        raw_weight(net[0]).copy_(torch.linspace(10.0, 20.0, 100).view(100, 1, 1, 1))
        raw_weight(net[1]).copy_(torch.linspace(0.01, 0.02, 100).view(100, 1, 1, 1))
    return net


def kept(mask):
    return sum(int(m.sum()) for m in mask.values())


def test_all_pruners_registered():
    for name in ("imp_global", "imp_layerwise", "omp", "random"):
        assert name in PRUNERS
    assert PRUNERS.get("imp_layerwise") is prune_layerwise_magnitude
    assert PRUNERS.get("omp") is prune_one_shot_magnitude
    assert PRUNERS.get("random") is prune_random


def test_layerwise_prunes_ceil_rate_of_each_layer_remaining():
    net = toy()
    mask = ones_like_mask(net)
    for level in range(1, 4):
        new = prune_layerwise_magnitude(net, mask, 0.2)
        for name in mask:
            remaining = int(mask[name].sum())
            assert int(new[name].sum()) == remaining - math.ceil(0.2 * remaining), (level, name)
            assert not (new[name] & ~mask[name]).any(), "a pruned weight came back"
            # the kept weights of each layer are its largest remaining ones
            w = raw_weight(dict(net.named_modules())[name.rsplit(".", 1)[0]]).detach().abs()
            if new[name].any() and (mask[name] & ~new[name]).any():
                assert w[new[name]].min() > w[mask[name] & ~new[name]].max()
        set_mask(net, new)
        mask = new


def test_layerwise_and_global_differ_on_unequal_layers():
    net = big_and_small()
    full = ones_like_mask(net)
    g = prune_global_magnitude(net, full, 0.2)  # ceil(0.2 * 200) = 40 pruned, all from the small layer
    lw = prune_layerwise_magnitude(net, full, 0.2)  # 20 pruned in each layer
    assert int(g["0.weight"].sum()) == 100 and int(g["1.weight"].sum()) == 60
    assert int(lw["0.weight"].sum()) == 80 and int(lw["1.weight"].sum()) == 80
    assert kept(g) == kept(lw) == 160
    # layer-wise drops the 20 smallest of each layer
    assert not lw["0.weight"].flatten()[:20].any() and lw["0.weight"].flatten()[20:].all()


def test_pruners_do_not_modify_inputs():
    net = toy()
    mask = prune_global_magnitude(net, ones_like_mask(net), 0.3)
    before = {k: v.clone() for k, v in mask.items()}
    w_before = [p.detach().clone() for p in net.parameters()]
    for fn, kw in [(prune_layerwise_magnitude, {}), (prune_one_shot_magnitude, {"target_density": 0.2}),
                   (prune_random, {"seed": 1}), (prune_random, {"target_density": 0.3})]:
        out = fn(net, mask, 0.2, **kw)
        assert all(v.dtype == torch.bool and v.device.type == "cpu" for v in out.values())
        assert out is not mask and all(out[k] is not mask[k] for k in mask)
    for k in mask:
        assert torch.equal(mask[k], before[k])
    for p, b in zip(net.parameters(), w_before):
        assert torch.equal(p.detach(), b)


@pytest.mark.parametrize("target", [0.8, 0.5, 0.32768, 0.1, 0.0137, 1.0])
def test_omp_hits_target_density_within_one_weight(target):
    net = toy(seed=3)
    total = 625
    new = prune_one_shot_magnitude(net, ones_like_mask(net), target_density=target)
    assert kept(new) == round(target * total)
    assert abs(density(new) - target) <= 1 / total
    # global magnitude: every kept weight is larger than every pruned one
    mods = dict(net.named_modules())
    w = torch.cat([raw_weight(mods[k.rsplit(".", 1)[0]]).detach().abs().flatten() for k in new])
    m = torch.cat([new[k].flatten() for k in new])
    if (~m).any() and m.any():
        assert w[m].min() > w[~m].max()


def test_omp_equals_imp_global_for_one_level():
    net = toy(seed=4)
    full = ones_like_mask(net)
    imp = prune_global_magnitude(net, full, 0.2)
    omp = PRUNERS.get("omp")(net, full, 0.2, target_density=0.8)  # rate is ignored
    assert all(torch.equal(imp[k], omp[k]) for k in imp)


def test_omp_from_a_pruned_mask_only_removes():
    net = toy()
    mask = prune_random(net, ones_like_mask(net), 0.5, seed=2)
    new = prune_one_shot_magnitude(net, mask, target_density=0.2)
    assert kept(new) == 125
    assert all(not (new[k] & ~mask[k]).any() for k in mask)


@pytest.mark.parametrize("fn", [prune_one_shot_magnitude, prune_random])
def test_unreachable_target_density_is_a_clear_error(fn):
    net = toy()
    full = ones_like_mask(net)
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"in \(0, 1\]"):
            fn(net, full, None, target_density=bad)
    half = prune_global_magnitude(net, full, 0.5)
    with pytest.raises(ValueError, match="cannot reach"):
        fn(net, half, None, target_density=0.6)
    with pytest.raises(ValueError, match="keeps no weight"):
        fn(net, full, None, target_density=1e-5)


def test_random_density_follows_imp_level_by_level():
    net = toy()
    mask = ones_like_mask(net)
    imp_mask = ones_like_mask(net)
    for level in range(1, 5):
        new = prune_random(net, mask, 0.2, seed=level)
        imp_mask = prune_global_magnitude(net, imp_mask, 0.2)
        assert kept(new) == kept(imp_mask) == round(625 * 0.8 ** level)
        assert all(not (new[k] & ~mask[k]).any() for k in mask)
        mask = new


def test_random_one_shot_target_and_seed_reproducibility():
    net = toy()
    full = ones_like_mask(net)
    a = prune_random(net, full, target_density=0.3, seed=7)
    assert kept(a) == round(0.3 * 625)
    b = prune_random(net, full, target_density=0.3, seed=7)
    c = prune_random(net, full, target_density=0.3, seed=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    # rate-based: same seed same mask, other seed other mask; no dependence on the global RNG
    torch.manual_seed(123)
    d = prune_random(net, full, 0.2, seed=0)
    torch.manual_seed(456)
    e = prune_random(net, full, 0.2, seed=0)
    f = prune_random(net, full, 0.2, seed=1)
    assert all(torch.equal(d[k], e[k]) for k in d)
    assert any(not torch.equal(d[k], f[k]) for k in d)


def test_random_is_not_magnitude_based():
    net = big_and_small()
    new = prune_random(net, ones_like_mask(net), 0.5, seed=0)
    # 100 of 200 pruned at random: both layers lose weights (global magnitude would empty the small layer)
    assert 0 < int(new["0.weight"].sum()) < 100 and 0 < int(new["1.weight"].sum()) < 100


def test_rate_and_mask_checked():
    net = toy()
    for fn in (prune_layerwise_magnitude, prune_random):
        with pytest.raises(ValueError, match="rate"):
            fn(net, ones_like_mask(net), 1.0)
    with pytest.raises(ValueError, match="do not match"):
        prune_layerwise_magnitude(net, {"nope.weight": torch.ones(2, dtype=torch.bool)}, 0.2)
    with pytest.raises(TypeError):
        prune_one_shot_magnitude(net, ones_like_mask(net), 0.2)  # target_density is required


def test_check_binary_mask():
    good = {"a.weight": torch.ones(3, dtype=torch.bool), "b.weight": torch.tensor([0.0, 1.0, 1.0])}
    check_binary_mask(good, "test")  # bool, or numeric 0/1: fine
    with pytest.raises(CheckpointError, match=r"mask b\.weight in level_03/mask\.pt has non-binary values.*0/1"):
        check_binary_mask({"b.weight": torch.tensor([0.0, 0.5, 1.0])}, "level_03/mask.pt")
    with pytest.raises(CheckpointError, match="non-binary"):
        check_binary_mask({"b.weight": torch.tensor([0.0, float("nan")])}, "x")
    with pytest.raises(CheckpointError, match="non-binary"):
        check_binary_mask({"b.weight": torch.tensor([2, 0, 1])}, "x")
    with pytest.raises(CheckpointError, match="not a tensor"):
        check_binary_mask({"b.weight": [0, 1]}, "x")


class HalfMask(nn.Module):
    """A stand-in dynamic mask: keeps the first half of the rows, exposes kept_fraction()."""

    def __init__(self, shape):
        super().__init__()
        m = torch.zeros(shape)
        m[: shape[0] // 2] = 1
        self.register_buffer("m", m)

    def forward(self, w):
        return w * self.m

    def kept_fraction(self):
        return self.m.mean()


def test_layer_keep_fraction_matches_masks():
    net = toy()
    mask = prune_global_magnitude(net, ones_like_mask(net), 0.5)
    set_mask(net, mask)
    frac = layer_keep_fraction(net)
    assert set(frac) == set(get_mask(net))
    for k, m in mask.items():
        assert frac[k] == int(m.sum()) / m.numel()
    # a dynamic-mask parametrization (no WeightMask) is read through kept_fraction()
    lin = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 2))
    parametrize.register_parametrization(lin[0], "weight", HalfMask((6, 4)))
    frac = layer_keep_fraction(lin)
    assert frac == {"0.weight": pytest.approx(0.5)}
    # both on one weight: the fractions multiply
    add_masks(lin[1], "linear")
    parametrize.register_parametrization(lin[1], "weight", HalfMask((2, 6)))
    set_mask(lin[1], {"weight": torch.tensor([[1, 1, 1, 0, 0, 0]] * 2, dtype=torch.bool)})
    assert layer_keep_fraction(lin)["1.weight"] == pytest.approx(0.25)
