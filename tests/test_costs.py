"""Training cost accounting: per-layer MACs from the counter, dense and sparse-effective training FLOPs."""

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from degan.costs import FLOPS_CONVENTION, TOTAL_KEY, FlopsMeter, layer_macs
from degan.losses import GANObjective
from degan.models import create_model
from degan.pruning import add_masks, get_mask, set_mask
from degan.train import Callback, Trainer, make_state


def test_hand_computed_macs_of_conv_convT_and_linear():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2),  # 16 -> 7
                        nn.ConvTranspose2d(4, 2, 2, stride=2), nn.Flatten(), nn.Linear(2 * 14 * 14, 5))
    add_masks(net, "conv,convT,linear")
    x = torch.randn(2, 3, 16, 16)
    macs = layer_macs(net, x)
    conv1 = 2 * 8 * 16 * 16 * (3 * 3 * 3)  # batch x C_out x H_out x W_out x (C_in x k x k)
    conv2 = 2 * 4 * 7 * 7 * (8 * 3 * 3)
    convT = 2 * 4 * 7 * 7 * (2 * 2 * 2)  # every input pixel x C_in x (C_out x k x k)
    linear = 2 * (2 * 14 * 14) * 5
    assert macs == {"0.weight": conv1, "2.weight": conv2, "3.weight": convT, "5.weight": linear,
                    TOTAL_KEY: conv1 + conv2 + convT + linear}
    # MACs are per forward of the batch: linear in the batch size
    assert layer_macs(net, x[:1])["0.weight"] * 2 == conv1


def test_layer_macs_leaves_the_network_untouched():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    add_masks(net)
    spectral_norm(net[0])
    net.train()
    bn_before = net[1].running_mean.clone()
    u_before = net[0].parametrizations.weight[1]._u.clone()
    x = torch.randn(4, 1, 5, 5)
    rng = torch.get_rng_state()
    layer_macs(net, x)
    assert net.training and net[0].training and torch.equal(net[1].running_mean, bn_before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(net[0].parametrizations.weight[1]._u, u_before)  # no power iteration of spectral norm


def tiny_state(seed=0):
    torch.manual_seed(seed)
    G, D = create_model("dcgan", resolution=16, img_channels=3, width=0.125, z_dim=16,
                        pre_sn_hook=lambda n: add_masks(n))
    return make_state(G, D, lr_G=2e-3, lr_D=2e-3, betas=(0.0, 0.9), seed=3)


def images(n=16):
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def tiny_trainer(state, iterations, callbacks, batch_D=4, batch_G=6, n_dis=2):
    return Trainer(state, images(), GANObjective("hinge"), total_kimg=iterations * n_dis * batch_D / 1000,
                   batch_D=batch_D, batch_G=batch_G, n_dis=n_dis, ema_decay=0.9, callbacks=callbacks)


def test_meter_totals_are_iterations_times_the_per_iteration_figure():
    state = tiny_state()
    meter = FlopsMeter()
    tiny_trainer(state, 3, [meter]).run()
    assert state.step == 3
    s = meter.summary()
    g = layer_macs(state.G, torch.zeros(1, 16))[TOTAL_KEY]
    d = layer_macs(state.D, torch.zeros(1, 3, 16, 16))[TOTAL_KEY]
    assert s["macs_forward_G"] == g and s["macs_forward_D"] == d
    # n_dis=2, batch_D=4, batch_G=6: G: 2*4 forwards + 6*3; D: 2*(2*4)*3 + 6*3; FLOPs = 2 x MACs
    assert s["flops_per_iter_dense"] == 2 * ((2 * 4 + 6 * 3) * g + (2 * 8 * 3 + 6 * 3) * d)
    assert s["train_flops_dense"] == 3 * s["flops_per_iter_dense"]
    assert s["train_flops_effective"] == pytest.approx(3 * s["flops_per_iter_effective"])
    assert s["flops_per_iter_effective"] == s["flops_per_iter_dense"] and s["effective_ratio"] == 1.0  # dense
    assert s["iterations"] == 3 and s["real_images"] == state.cur_nimg == 24
    assert s["convention"] == FLOPS_CONVENTION and "2 x MACs" in s["convention"]
    import json

    json.dumps(s)  # recordable in done.json


def test_half_pruned_layer_halves_its_effective_flops():
    state = tiny_state()
    mask = get_mask(state.D)
    name = "blocks.2.weight"
    m = torch.zeros(mask[name].numel(), dtype=torch.bool)
    m[: m.numel() // 2] = True
    mask[name] = m.view(mask[name].shape)
    set_mask(state.D, mask)
    meter = FlopsMeter()
    tiny_trainer(state, 1, [meter]).run()
    s = meter.summary()
    layer = s["layers"]["D"][name]
    assert layer["kept_fraction"] == 0.5
    coef_D = 2 * 8 * 3 + 6 * 3
    saved = 2 * coef_D * layer["macs_forward"] * 0.5
    assert s["flops_per_iter_dense"] - s["flops_per_iter_effective"] == pytest.approx(saved)
    assert s["macs_forward_D"] - s["macs_forward_D_effective"] == pytest.approx(layer["macs_forward"] / 2)
    assert s["effective_ratio"] < 1.0


class PruneAfterFirstStep(Callback):
    """Halves D's first layer after iteration 1, like a dynamic pruning callback."""

    def on_step_end(self, trainer, stats):
        if trainer.state.step == 1:
            mask = get_mask(trainer.state.D)
            mask["blocks.0.weight"][: mask["blocks.0.weight"].shape[0] // 2] = False
            set_mask(trainer.state.D, mask)


def test_kept_fractions_are_re_read_every_refresh_every_iterations():
    state = tiny_state()
    meter = FlopsMeter(refresh_every=2)
    tiny_trainer(state, 3, [PruneAfterFirstStep(), meter]).run()
    s = meter.summary()
    dense = s["flops_per_iter_dense"]
    assert s["flops_per_iter_effective"] < dense  # re-read after iteration 2
    # iterations 1 and 2 at the dense figure (no refresh after 1), iteration 3 at the pruned one
    assert s["train_flops_effective"] == pytest.approx(2 * dense + s["flops_per_iter_effective"])
    with pytest.raises(ValueError, match="refresh_every"):
        FlopsMeter(refresh_every=0)


def test_meter_survives_resume_and_does_not_change_training():
    plain = tiny_state()
    tiny_trainer(plain, 2, []).run()
    state = tiny_state()
    meter = FlopsMeter()
    tiny_trainer(state, 2, [meter]).run()
    for k, v in plain.G.state_dict().items():  # the meter draws no random numbers and updates no buffer
        assert torch.equal(v, state.G.state_dict()[k]), k
    saved = meter.state_dict()
    resumed = FlopsMeter()
    resumed.load_state_dict(saved)
    tiny_trainer(state, 5, [resumed]).run()
    s = resumed.summary()
    assert s["iterations"] == 5 and s["train_flops_dense"] == 5 * s["flops_per_iter_dense"]
    with pytest.warns(UserWarning, match="without saved meter state"):
        FlopsMeter().on_train_start(tiny_trainer(state, 6, []))
    with pytest.raises(ValueError, match="not a FlopsMeter state"):
        FlopsMeter().load_state_dict({"iterations": 1})


def test_convention_bounds_the_counted_cost_of_a_real_iteration():
    from torch.utils.flop_counter import FlopCounterMode

    state = tiny_state()
    meter = FlopsMeter()
    t = tiny_trainer(state, 1, [meter])
    meter.on_train_start(t)
    with FlopCounterMode(display=False) as counter:
        t.train_step()
    # the real backward skips some products (no input grad at D's first layer, no weight grads of D in the G
    # step), so "backward = 2x forward" is a slight over-count
    assert 0.8 * meter.flops_per_iter_dense <= counter.get_total_flops() <= meter.flops_per_iter_dense
