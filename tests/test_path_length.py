"""Path-length regularisation (degan.train.path_length, StyleGAN2 section 3.2 / Appendix B): lengths of a linear
generator by hand, the Jacobian against finite differences, the target-length EMA, the lazy G phase as its own
optimizer step with Adam's lr and betas scaled by c, config checks and presets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from degan.config import resolve
from degan.errors import ConfigError
from degan.losses import GANObjective
from degan.models import create_model
from degan.models.stylegan2 import path_length_penalty, path_lengths
from degan.train import Trainer, make_state
from degan.train.path_length import PathLength, PathLengthObjective, PathLengthTechnique, lazy_adam_scale

TINY = dict(resolution=32, width=1 / 32, z_dim=16, mapping_layers=2)


class LinearG(nn.Module):
    """ws = z reshaped [N, L, d]; img = M @ flatten(ws) reshaped [C, H, W]: J^T y = M^T y exactly."""

    def __init__(self, L=2, d=3, shape=(1, 2, 2)) -> None:
        super().__init__()
        self.L, self.d, self.shape = L, d, shape
        self.M = nn.Parameter(torch.randn(math.prod(shape), L * d, generator=torch.Generator().manual_seed(0)))

    def styles(self, z, c=None, broadcast=False):
        return (z * 1.0).reshape(z.shape[0], self.L, self.d)

    def synthesis_from_w(self, ws):
        return (ws.flatten(1) @ self.M.t()).reshape(ws.shape[0], *self.shape)


def test_lengths_of_a_linear_generator_by_hand():
    G = LinearG()
    z = torch.randn(3, 6, requires_grad=True)
    lengths = path_lengths(G, z, generator=torch.Generator().manual_seed(5))
    y = torch.randn((3, 1, 2, 2), generator=torch.Generator().manual_seed(5)) / math.sqrt(4)  # / sqrt(H W)
    g = (y.flatten(1) @ G.M).reshape(3, 2, 3)  # J^T y, per layer
    expected = g.square().sum(2).mean(1).sqrt().detach()  # sqrt(mean over layers of the squared norms)
    assert torch.allclose(lengths, expected, atol=1e-6)
    assert float(path_length_penalty(lengths.detach(), 0.0)) == pytest.approx(float(expected.square().mean()), rel=1e-5)
    pen = path_length_penalty(lengths, torch.tensor(float(expected.mean())))
    assert float(pen) == pytest.approx(float(expected.var(unbiased=False)), rel=1e-4)
    pen.backward()  # differentiable into G
    assert G.M.grad is not None and G.M.grad.abs().sum() > 0


def test_jacobian_of_stylegan2_matches_finite_differences():
    torch.manual_seed(0)
    G, _ = create_model("stylegan2", **TINY)
    G.eval()  # constant noise: the image is a deterministic function of ws
    z = torch.randn(2, 16)
    ws = G.styles(z, broadcast=True).detach().requires_grad_(True)
    assert ws.shape == (2, G.num_ws, G.w_dim)
    y = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) / 32
    (g,) = torch.autograd.grad((G.synthesis_from_w(ws) * y).sum(), ws)
    v = torch.randn_like(ws)
    eps = 1e-2
    with torch.no_grad():
        fd = ((G.synthesis_from_w(ws + eps * v) - G.synthesis_from_w(ws - eps * v)) * y).sum() / (2 * eps)
    assert float((g * v).sum()) == pytest.approx(float(fd), rel=2e-2)
    # path_lengths computes the same Jacobian product with its own y
    lengths = path_lengths(G, z, generator=torch.Generator().manual_seed(1), create_graph=False)
    assert torch.allclose(lengths, g.square().sum(2).mean(1).sqrt(), rtol=1e-4)


def test_pl_mean_ema_and_lazy_loss_scale():
    G = LinearG()
    pl = PathLength(weight=2.0, decay=0.5, batch_shrink=2, interval=4)
    obj = PathLengthObjective(GANObjective("nonsaturating"), pl)
    assert [obj.g_reg_batch(16, s) for s in range(6)] == [8, 0, 0, 0, 8, 0]
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, 6, requires_grad=True)  # the linear G's styles are z itself
    lengths = path_lengths(G, z, generator=torch.Generator().manual_seed(0))
    loss, stats = obj.g_reg_loss(G, None, z, gen)
    a = 0.5 * float(lengths.mean())  # a starts at 0: a <- a + decay * (mean - a)
    assert pl.pl_mean == pytest.approx(a, rel=1e-5) and stats["pl_mean"] == pytest.approx(a, rel=1e-5)
    assert float(loss) == pytest.approx(4 * 2.0 * float((lengths - a).square().mean()), rel=1e-4)
    assert stats["pl_length"] == pytest.approx(float(lengths.mean()), rel=1e-5)
    sd = pl.state_dict()
    pl2 = PathLength(weight=2.0, decay=0.5)
    pl2.load_state_dict(sd)
    assert pl2.pl_mean == pl.pl_mean and pl2.last_penalty == pl.last_penalty
    assert not PathLength(weight=0.0).due(0)
    for bad in (dict(weight=-1.0), dict(decay=0.0), dict(batch_shrink=0), dict(interval=1.5)):
        with pytest.raises(ValueError, match="pl\\."):
            PathLength(**bad)
    with pytest.raises(TypeError, match="mapping network"):
        obj.g_reg_loss(nn.Linear(2, 2), None, z, gen)


def test_lazy_adam_scale():
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([p], lr=0.002, betas=(0.0, 0.99))
    c = lazy_adam_scale(opt, 4)
    assert c == pytest.approx(0.8)
    g = opt.param_groups[0]
    assert g["lr"] == pytest.approx(0.0016) and g["betas"] == pytest.approx((0.0, 0.99 ** 0.8))
    with pytest.raises(ValueError, match="interval"):
        lazy_adam_scale(opt, 0)


def test_trainer_runs_the_phase_as_its_own_optimizer_step():
    torch.manual_seed(0)
    G, D = create_model("stylegan2", mixing_prob=0.9, **TINY)
    state = make_state(G, D, lr_G=0.002, lr_D=0.002, betas=(0.0, 0.99))
    tech = PathLengthTechnique(PathLength(weight=2.0, interval=2))
    tech.setup(state)
    assert state.opt_G.param_groups[0]["lr"] == pytest.approx(0.002 * 2 / 3)
    assert state.opt_D.param_groups[0]["lr"] == pytest.approx(0.002)  # D untouched
    objective = tech.wrap(GANObjective("nonsaturating"), state)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    trainer = Trainer(state, images, objective, total_kimg=0.02, batch_D=4, batch_G=4, n_dis=1, ema_decay=0.9)
    records = []

    class Keep:
        def on_train_start(self, t): pass
        def on_step_end(self, t, stats): records.append(dict(stats))
        def on_train_end(self, t): pass

    trainer.callbacks.append(Keep())
    trainer.run()
    steps = state.step
    assert steps == 5
    adam_steps = int(state.opt_G.state[G.mapping_net[0].weight]["step"])
    assert adam_steps == steps + 3  # G steps 0, 2, 4 had a regularisation phase of their own
    assert int(state.opt_D.state[D.fc.weight]["step"]) == steps
    assert [("pl_length" in r) for r in records] == [True, False, True, False, True]
    assert all(math.isfinite(r["pl_penalty"]) for r in records) and records[-1]["pl_mean"] > 0
    assert state.extras["pl"].pl_mean == records[-1]["pl_mean"]


def test_objectives_without_the_phase_leave_the_loop_unchanged():
    def run(wrap):
        torch.manual_seed(0)
        G, D = create_model("dcgan", resolution=32, width=0.125)
        state = make_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))
        obj = GANObjective("hinge")
        images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        Trainer(state, images, wrap(obj), total_kimg=0.012, batch_D=4, batch_G=4, n_dis=1).run()
        return torch.cat([p.detach().flatten() for p in G.parameters()])

    pl_off = PathLength(weight=0.0)  # a wrapper whose phase is never due: nothing drawn, nothing stepped
    assert torch.equal(run(lambda o: o), run(lambda o: PathLengthObjective(o, pl_off)))


def test_config_presets_and_bad_input():
    few = resolve("stylegan2_fewshot")
    assert (few.pl.weight, few.pl.decay, few.pl.batch_shrink, few.pl.interval) == (2.0, 0.01, 2, 4)
    assert few.model.mixing_prob == 0.9 and resolve("stylegan2").pl.weight == 2.0
    cifar = resolve("stylegan2_cifar")
    assert cifar.pl.weight == 0.0 and cifar.model.mixing_prob is None  # ADA's cifar config: both off
    with pytest.raises(ConfigError, match="mapping network"):
        resolve("sngan32", sets=["pl.weight=2"])
    with pytest.raises(ConfigError, match="model.mixing_prob is a StyleGAN2 option"):
        resolve("sngan32", sets=["model.mixing_prob=0.9"])
    with pytest.raises(ConfigError, match="pl.decay"):
        resolve("stylegan2_fewshot", sets=["pl.decay=0"])
