"""IMP masks: density per level, masks only shrink, pruned weights stay zero, SN after masks, G_ema masked."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from degan.errors import CheckpointError
from degan.pruning import (
    add_masks,
    density,
    enforce_masks,
    get_mask,
    ones_like_mask,
    prune_global_magnitude,
    raw_weight,
    set_mask,
)
from degan.train.state import ema_update, make_state


def toy(seed=0):
    torch.manual_seed(seed)
    # 5**4 = 625 prunable weights: ceil(0.2 * remaining) keeps density == 0.8**level exactly for 4 levels
    net = nn.Sequential(nn.Conv2d(1, 5, 5), nn.ReLU(), nn.Conv2d(5, 5, 1), nn.ReLU(), nn.Linear(3, 3),
                        nn.ConvTranspose2d(5, 20, 2))
    # conv 1*5*5*5 = 125, conv 5*5 = 25, convT 5*20*2*2 = 400 -> 550; adjust to 625 with another conv of 75
    net.add_module("extra", nn.Conv2d(3, 1, 5))  # 75
    add_masks(net, "conv,convT")
    return net


def test_density_is_exactly_point8_to_the_level_and_masks_only_shrink():
    net = toy()
    total = sum(m.numel() for m in get_mask(net).values())
    assert total == 625
    mask = ones_like_mask(net)
    for level in range(1, 5):
        # train-like perturbation between levels so the ranking changes
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
        new = prune_global_magnitude(net, mask, 0.2)
        kept = sum(int(m.sum()) for m in new.values())
        assert kept == [625, 500, 400, 320, 256][level]  # exactly 625 * 0.8**level
        assert density(new) == pytest.approx(0.8 ** level, abs=1e-12)
        for k in mask:
            assert not (new[k] & ~mask[k]).any(), "a pruned weight came back"
        set_mask(net, new)
        mask = new


def test_prune_is_global_by_magnitude():
    net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 2, 1, bias=False))
    add_masks(net)
    with torch.no_grad():
        raw_weight(net[0]).fill_(0.1)
        raw_weight(net[1]).copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
    new = prune_global_magnitude(net, ones_like_mask(net), 0.2)  # ceil(0.2*3) = 1 weight: the 0.1
    assert new["0.weight"].sum() == 0 and new["1.weight"].sum() == 2


def test_linear_not_pruned_by_default_but_configurable():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 4))
    add_masks(net)
    assert list(get_mask(net)) == ["0.weight"]
    net2 = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 4))
    add_masks(net2, "conv,linear")
    assert list(get_mask(net2)) == ["0.weight", "1.weight"]
    with pytest.raises(ValueError, match="valid kinds"):
        add_masks(nn.Linear(2, 2), "dense")


def test_pruned_weights_stay_zero_after_optimizer_steps():
    net = toy()
    mask = prune_global_magnitude(net, ones_like_mask(net), 0.5)
    set_mask(net, mask)
    opt = torch.optim.Adam(net.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(5):
        x = torch.randn(2, 1, 9, 9)
        loss = net[2](net[0](x)).square().mean() + net.extra(torch.randn(1, 3, 5, 5)).sum() + net[5](
            torch.randn(1, 5, 2, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        enforce_masks(net)
        for name, module in [("0.weight", net[0]), ("2.weight", net[2]), ("5.weight", net[5])]:
            pruned = ~mask[name]
            assert (module.weight[pruned] == 0).all()
            assert (raw_weight(module)[pruned] == 0).all()


def test_spectral_norm_after_mask_gives_unit_sigma():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3)
    add_masks(conv)
    spectral_norm(conv, n_power_iterations=1)
    names = [type(p).__name__ for p in conv.parametrizations.weight]
    assert names[0] == "WeightMask" and names[1] == "_SpectralNorm"
    mask = {"weight": torch.rand_like(conv.weight) > 0.6}
    set_mask(conv, mask)
    conv.train()
    for _ in range(100):  # power iterations converge on the masked weight
        conv(torch.randn(1, 8, 5, 5))
    conv.eval()
    W = conv.weight.detach().reshape(16, -1)
    assert (conv.weight[~mask["weight"]] == 0).all()
    assert torch.linalg.matrix_norm(W, ord=2).item() == pytest.approx(1.0, abs=1e-3)


def test_masks_on_layer_with_spectral_norm_already_is_refused():
    conv = spectral_norm(nn.Conv2d(2, 2, 3))
    with pytest.raises(ValueError, match="before spectral norm"):
        add_masks(conv)


def test_G_ema_carries_the_mask():
    G, D = toy(0), toy(1)
    mask = prune_global_magnitude(G, ones_like_mask(G), 0.36)
    set_mask(G, mask)
    state = make_state(G, D, lr_G=0.1, lr_D=0.1, betas=(0.0, 0.9))
    opt = state.opt_G
    for _ in range(3):
        loss = G[0](torch.randn(1, 1, 5, 5)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        enforce_masks(G)
        ema_update(state.G_ema, G, 0.9)
    ema_mask = get_mask(state.G_ema)
    for k in mask:
        assert torch.equal(ema_mask[k], mask[k])
        assert (raw_weight(dict(state.G_ema.named_modules())[k.rsplit(".", 1)[0]])[~mask[k]] == 0).all()


def test_set_mask_from_another_model_is_a_clear_error():
    net = toy()
    with pytest.raises(CheckpointError, match="does not fit"):
        set_mask(net, {"nope.weight": torch.ones(3, dtype=torch.bool)})
    bad = {k: torch.ones(1, dtype=torch.bool) for k in get_mask(net)}
    with pytest.raises(CheckpointError, match="shape"):
        set_mask(net, bad)


def test_rate_checked():
    net = toy()
    with pytest.raises(ValueError, match="rate"):
        prune_global_magnitude(net, ones_like_mask(net), 1.5)
    assert math.isclose(density(ones_like_mask(net)), 1.0)
