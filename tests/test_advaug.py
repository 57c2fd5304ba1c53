"""AdvAug (SPEC §4): PGD direction and size per branch, eps projection, combined losses, masks, Gaussian baseline."""

import pytest
import torch
from torch import nn

from degan.augment import build_augment
from degan.augment.advaug import AdvAugObjective, AdvAugSettings, frozen_statistics, pgd_delta
from degan.config import resolve
from degan.errors import ConfigError
from degan.models import create_model
from degan.pruning import add_masks, get_mask, ones_like_mask, prune_global_magnitude, raw_weight, set_mask
from degan.train import Trainer, make_state

F_DIM = 4
W = torch.tensor([0.5, -1.0, 2.0, -0.25])
STEP = 0.01


class ToyD(nn.Module):
    """features = identity on [N, F]; head = known linear score f.w + b."""

    def features(self, x, c=None):
        return x

    def head(self, f, c=None):
        return f @ W  # known linear score; |score| << 1 on small inputs, so every hinge term is active

    def forward(self, x, c=None):
        return self.head(self.features(x))


class ToyG(nn.Module):
    z_dim = F_DIM

    def input_layer(self, z, c=None):
        return z * 1.0

    def synthesis(self, h, c=None):
        return h

    def forward(self, z, c=None):
        return self.synthesis(self.input_layer(z))


def hinge_d(real_s, fake_s):
    return torch.relu(1 - real_s).mean() + torch.relu(1 + fake_s).mean()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(5, F_DIM, generator=g), 0.1 * torch.randn(5, F_DIM, generator=g)


@pytest.mark.parametrize("direction", ["worst_case", "reference"])
def test_D_step_moves_real_and_fake_features_by_step_sign_grad(batch, direction):
    real, z = batch
    obj = AdvAugObjective("hinge", None, AdvAugSettings(networks="D", direction=direction, step_size=STEP))
    loss, stats = obj.d_loss(ToyG(), ToyD(), real, z)
    shift = STEP * W.abs().sum()  # delta = ±STEP * sign(w) changes the score by ±STEP * |w|_1
    s_real, s_fake = real @ W, z @ W
    if direction == "worst_case":  # real score lowered, fake score raised: both raise D's loss
        adv = hinge_d(s_real - shift, s_fake + shift)
    else:  # released code: D's score raised for real and fake
        adv = hinge_d(s_real + shift, s_fake + shift)
    clean = hinge_d(s_real, s_fake)
    assert stats["loss_D_clean"] == pytest.approx(clean.item(), abs=1e-6)
    assert stats["loss_D_adv"] == pytest.approx(adv.item(), abs=1e-6)
    assert loss.item() == pytest.approx(((clean + adv) / 2).item(), abs=1e-6)


@pytest.mark.parametrize("direction,sign", [("worst_case", -1.0), ("reference", 1.0)])
def test_G_step_moves_the_generated_feature_by_step_sign_grad(batch, direction, sign):
    _, z = batch
    obj = AdvAugObjective("hinge", None, AdvAugSettings(networks="G", direction=direction, step_size=STEP))
    loss, stats = obj.g_loss(ToyG(), ToyD(), z)
    s = z @ W
    adv = -(s + sign * STEP * W.abs().sum()).mean()  # hinge G loss = -D(G(z)); worst case lowers D's score
    assert stats["loss_G_clean"] == pytest.approx((-s.mean()).item(), abs=1e-6)
    assert stats["loss_G_adv"] == pytest.approx(adv.item(), abs=1e-6)
    assert loss.item() == pytest.approx(((-s.mean() + adv) / 2).item(), abs=1e-6)


def test_pgd_exact_step_and_eps_projection():
    f = torch.randn(3, F_DIM)
    delta = pgd_delta(f, lambda x: (x @ W).sum(), steps=1, step_size=STEP)
    assert torch.equal(delta, STEP * W.sign().expand(3, -1))
    delta = pgd_delta(f, lambda x: (x @ W).sum(), steps=7, step_size=0.02, eps=0.05)
    assert delta.abs().max().item() == pytest.approx(0.05)
    g = torch.Generator().manual_seed(1)
    d1 = pgd_delta(f, lambda x: (x @ W).sum(), steps=1, step_size=0.001, eps=0.03, random_start=True, generator=g)
    assert d1.abs().max() <= 0.03 + 1e-7
    g = torch.Generator().manual_seed(1)
    d2 = pgd_delta(f, lambda x: (x @ W).sum(), steps=1, step_size=0.001, eps=0.03, random_start=True, generator=g)
    assert torch.equal(d1, d2)


def test_gradient_of_adv_branch_reaches_G1_but_not_through_delta():
    G, D = ToyG(), ToyD()
    z = torch.randn(4, F_DIM, requires_grad=True)
    obj = AdvAugObjective("hinge", None, AdvAugSettings(networks="G", step_size=STEP))
    loss, _ = obj.g_loss(G, D, z)
    (gz,) = torch.autograd.grad(loss, z)
    # d/dz of (-(zW) + -((z+delta)W)) / 2 / N with delta constant = -W / N
    assert torch.allclose(gz, (-W / 4).expand(4, -1))


def test_gaussian_baseline_statistics_and_seed():
    obj = AdvAugObjective("hinge", None, AdvAugSettings(mode="gaussian", sigma=0.01))
    f = torch.zeros(200, 64)
    d = obj.perturb(f, lambda x: x.sum(), torch.Generator().manual_seed(3))
    assert d.mean().abs().item() < 1e-3 and d.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.equal(d, obj.perturb(f, lambda x: x.sum(), torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("settings,msg", [
    (dict(steps=0), "steps must be >= 1"),
    (dict(step_size=-0.01), "step_size must be > 0"),
    (dict(networks="X"), "networks"),
    (dict(direction="up"), "direction"),
    (dict(random_start=True), "needs advaug.eps"),
])
def test_bad_settings_are_clear_errors(settings, msg):
    with pytest.raises(ValueError, match=msg):
        AdvAugSettings(**settings).validate()
    with pytest.raises(ConfigError, match=msg):
        resolve("dcgan", overrides={"advaug": {"enabled": True, **settings}})


def test_default_step_size_by_resolution():
    assert AdvAugSettings().gamma(32) == 0.01 and AdvAugSettings().gamma(64) == 0.001
    assert AdvAugSettings(step_size=0.05).gamma(256) == 0.05


def test_extra_passes_leave_bn_and_sn_statistics_alone():
    torch.manual_seed(0)
    G, D = create_model("dcgan", resolution=16, width=0.25, z_dim=8)
    bufs = {k: v.clone() for k, v in list(G.named_buffers()) + list(D.named_buffers())}
    with frozen_statistics(G, D):
        D(G(torch.randn(4, 8)))
    for k, v in list(G.named_buffers()) + list(D.named_buffers()):
        assert torch.equal(v, bufs[k]), k

    def run(objective):
        torch.manual_seed(0)
        G, D = create_model("dcgan", resolution=16, width=0.25, z_dim=8)
        z, x = torch.randn(4, 8), torch.rand(4, 3, 16, 16) * 2 - 1
        objective.d_loss(G, D, x, z, torch.Generator().manual_seed(0))
        objective.g_loss(G, D, z, torch.Generator().manual_seed(0))
        return dict(list(G.named_buffers()) + list(D.named_buffers()))

    plain, adv = run(AdvAugObjective.__mro__[1]("hinge")), run(AdvAugObjective("hinge"))
    for k in plain:  # only the clean passes update running statistics
        assert torch.equal(plain[k], adv[k]), k


def test_advaug_with_diffaug_on_a_pruned_network_keeps_pruned_weights_zero():
    torch.manual_seed(0)
    G, D = create_model("dcgan", resolution=16, width=0.25, z_dim=8, pre_sn_hook=add_masks)
    set_mask(G, prune_global_magnitude(G, ones_like_mask(G), 0.5))
    set_mask(D, prune_global_magnitude(D, ones_like_mask(D), 0.5))
    state = make_state(G, D, lr_G=1e-2, lr_D=1e-2, betas=(0.0, 0.9))
    imgs = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    obj = AdvAugObjective("hinge", build_augment("diffaug"), AdvAugSettings(), resolution=16)
    Trainer(state, imgs, obj, total_kimg=0.048, batch_D=8, batch_G=8).run()
    for net in (state.G, state.D, state.G_ema):
        for name, m in get_mask(net).items():
            mod = dict(net.named_modules())[name.rsplit(".", 1)[0]]
            assert (raw_weight(mod)[~m] == 0).all()


def test_same_augmentation_on_clean_and_adversarial_G_branch():
    """With delta = 0 (sigma 0), the adversarial G branch must equal the clean one, augmentation included."""
    torch.manual_seed(0)
    G, D = create_model("dcgan", resolution=16, width=0.25, z_dim=8)
    G.eval(), D.eval()
    obj = AdvAugObjective("hinge", build_augment("diffaug"), AdvAugSettings(mode="gaussian", sigma=0.0))
    _, stats = obj.g_loss(G, D, torch.randn(6, 8), torch.Generator().manual_seed(5))
    assert stats["loss_G_adv"] == pytest.approx(stats["loss_G_clean"], abs=1e-6)


@pytest.mark.parametrize("model", ["dcgan", "sngan32"])
def test_split_points_compose_to_the_networks_and_range_is_checked(model):
    from degan.augment.advaug import split_D, split_G

    torch.manual_seed(0)
    G, D = create_model(model, resolution=32, width=0.125, z_dim=8)
    G.eval(), D.eval()
    z, x = torch.randn(2, 8), torch.rand(2, 3, 32, 32) * 2 - 1
    for k in range(len(G.blocks) + 1):
        G1, G2 = split_G(G, k)
        assert torch.allclose(G2(G1(z)), G(z), atol=1e-6)
    for k in [None, *range(len(D.blocks))]:
        D1, D2 = split_D(D, k)
        assert torch.allclose(D2(D1(x)), D(x), atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        split_G(G, len(G.blocks) + 1)
    with pytest.raises(ValueError, match="out of range"):
        split_D(D, len(D.blocks))


def test_advaug_at_other_split_points_trains():
    torch.manual_seed(0)
    G, D = create_model("dcgan", resolution=16, width=0.25, z_dim=8)
    state = make_state(G, D, lr_G=1e-3, lr_D=1e-3, betas=(0.0, 0.9))
    imgs = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    obj = AdvAugObjective("hinge", build_augment("diffaug"), AdvAugSettings(split_G=1, split_D=1), resolution=16)
    Trainer(state, imgs, obj, total_kimg=0.016, batch_D=8, batch_G=8).run()
    assert state.step == 2


@pytest.mark.parametrize("loss", ["hinge", "nonsaturating"])
def test_one_step_shortcut_equals_full_pgd(loss, monkeypatch):
    """The default (worst case, PGD-1 from 0) reuses the clean gradient; it must give the same losses and grads."""
    def run(shortcut):
        monkeypatch.setattr(AdvAugObjective, "reuse_clean_gradient", property(lambda self: shortcut))
        torch.manual_seed(0)
        G, D = create_model("dcgan", resolution=16, width=0.25, z_dim=8)
        obj = AdvAugObjective(loss, build_augment("diffaug"), AdvAugSettings(), resolution=16)
        z, x = torch.randn(4, 8), torch.rand(4, 3, 16, 16) * 2 - 1
        ld, sd = obj.d_loss(G, D, x, z, torch.Generator().manual_seed(1))
        ld.backward()
        lg, sg = obj.g_loss(G, D, z, torch.Generator().manual_seed(2))
        lg.backward()
        return sd, sg, [p.grad.clone() for p in list(G.parameters()) + list(D.parameters()) if p.grad is not None]

    (sd1, sg1, g1), (sd2, sg2, g2) = run(True), run(False)
    assert sd1 == pytest.approx(sd2, abs=1e-6) and sg1 == pytest.approx(sg2, abs=1e-6)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-5)
