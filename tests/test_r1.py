"""R1 regularisation (degan.train.r1): hand-computed values, gradient through the augmentation, lazy schedule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from degan.augment import DiffAugmentModule
from degan.config import resolve
from degan.errors import ConfigError
from degan.losses import GANObjective
from degan.train.r1 import R1, R1Objective, r1_penalty


class LinearD(nn.Module):
    """D(x) = <a, x> per sample (gradient a everywhere); records the labels it was called with."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())
        self.seen_c: list = []

    def forward(self, x, c=None):
        self.seen_c.append(c)
        return (x * self.a).flatten(1).sum(1)


class StubObjective:
    """Inner objective: zero loss, remembers its kwargs; ``augment`` is what R1 should use."""

    def __init__(self, augment=None) -> None:
        self.augment = augment
        self.kwargs: list = []

    def d_loss(self, G, D, real, z, generator=None, **kwargs):
        self.kwargs.append(kwargs)
        return torch.zeros(()), {"loss_D": 0.0}

    def g_loss(self, G, D, z, generator=None, **kwargs):
        self.kwargs.append(kwargs)
        return torch.zeros(()), {"loss_G": 0.0}


def _a(shape=(3, 8, 8), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_r1_of_a_linear_D_is_gamma_half_norm_a_squared():
    a = _a()
    D = LinearD(a)
    x = torch.rand(5, 3, 8, 8)
    assert float(r1_penalty(D, x, create_graph=False)) == pytest.approx(float(a.square().sum()), rel=1e-5)
    gamma, interval = 4.0, 1
    obj = R1(gamma, interval).wrap(StubObjective())
    loss, stats = obj.d_loss(None, D, x, torch.zeros(5, 2))
    assert float(loss.detach()) == pytest.approx(gamma / 2 * float(a.square().sum()), rel=1e-5)
    assert stats["r1_on"] == 1.0 and stats["r1_penalty"] == pytest.approx(float(a.square().sum()), rel=1e-5)
    # the penalty back-propagates into D: d/da (gamma/2 ||a||^2) = gamma * a
    loss.backward()
    assert torch.allclose(D.a.grad, gamma * a, atol=1e-4)


def test_gradient_goes_through_the_augmentation_to_the_unaugmented_reals():
    a = torch.ones(3, 16, 16)  # energy everywhere, so a shift that pushes pixels out of frame lowers the norm
    D = LinearD(a)
    aug = DiffAugmentModule("translation")
    x = torch.rand(6, 3, 16, 16)
    pen = r1_penalty(D, x, aug, torch.Generator().manual_seed(7), create_graph=False)
    # <a, T(x)> with T a zero-fill shift: grad_x = T^T a, ||T^T a||^2 = sum a^2 over the output pixels T fills
    filled = aug(torch.ones(6, 3, 16, 16), generator=torch.Generator().manual_seed(7))
    expected = (a.square() * filled).flatten(1).sum(1).mean()
    assert float(pen) == pytest.approx(float(expected), rel=1e-5)
    assert float(pen) < float(a.square().sum()) - 1  # not the gradient w.r.t. the augmented image (= ||a||^2)


def test_lazy_schedule_scales_by_interval_and_survives_checkpoints():
    a = _a()
    D = LinearD(a)
    r1 = R1(gamma=2.0, interval=4)
    obj = R1Objective(StubObjective(), r1)
    x = torch.rand(2, 3, 8, 8)
    values = [float(obj.d_loss(None, D, x, torch.zeros(2, 1))[0]) for _ in range(9)]
    full = 4 * 2.0 / 2 * float(a.square().sum())
    assert [v > 0 for v in values] == [True, False, False, False, True, False, False, False, True]
    assert values[0] == pytest.approx(full, rel=1e-5)
    other = R1(gamma=2.0, interval=4)
    other.load_state_dict(r1.state_dict())
    assert other.d_steps == 9 and not other.due()
    assert [R1(0.0, 1).due()] == [False]  # gamma 0 = off


def test_labels_are_passed_through():
    a = _a()
    D = LinearD(a)
    inner = StubObjective()
    obj = R1(1.0, 1).wrap(inner)
    real_c, gen_c = torch.tensor([0, 1]), torch.tensor([1, 1])
    obj.d_loss(None, D, torch.rand(2, 3, 8, 8), torch.zeros(2, 1), None, c=(real_c, gen_c))
    assert inner.kwargs[-1]["c"][0] is real_c and inner.kwargs[-1]["c"][1] is gen_c
    assert D.seen_c[-1] is real_c  # D scores the reals with the real labels
    obj.g_loss(None, D, torch.zeros(2, 1), None, c=gen_c)
    assert inner.kwargs[-1]["c"] is gen_c


def test_r1_runs_in_fp32_under_autocast():
    a = _a()
    D = LinearD(a)
    x = torch.rand(4, 3, 8, 8)
    ref = r1_penalty(D, x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        pen = r1_penalty(D, x)
    assert pen.dtype == torch.float32 and float(pen) == pytest.approx(float(ref), rel=1e-6)


def test_invalid_settings():
    with pytest.raises(ValueError, match="gamma"):
        R1(-1.0)
    with pytest.raises(ValueError, match="interval"):
        R1(1.0, 0)
    with pytest.raises(ConfigError, match="r1.gamma"):
        resolve(sets=["r1.gamma=-1"])
    with pytest.raises(ConfigError, match="r1.interval"):
        resolve(sets=["r1.interval=0"])
    with pytest.raises(ConfigError, match="ema_kimg"):
        resolve(sets=["train.ema_kimg=0"])


def test_r1_with_diffaugment_on_stylegan2_backpropagates():
    from degan.models import create_model

    torch.manual_seed(0)
    G, D = create_model("stylegan2", resolution=32, width=1 / 32, z_dim=16, mapping_layers=2)
    inner = GANObjective("nonsaturating", DiffAugmentModule("color,translation,cutout"))
    obj = R1(10.0, 16).wrap(inner)
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    loss, stats = obj.d_loss(G, D, real, torch.randn(4, 16), torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and stats["r1_penalty"] > 0
    assert float(loss) == pytest.approx(stats["loss_D"] + 16 * 10.0 / 2 * stats["r1_penalty"], rel=1e-4)
    loss.backward()
    grads = [p.grad for p in D.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_separate_phase_has_the_in_step_schedule_and_value_and_leaves_the_d_loss_alone():
    a = _a()
    D = LinearD(a)
    obj = R1Objective(StubObjective(), R1(gamma=2.0, interval=4, separate=True))
    x = torch.rand(2, 3, 8, 8)
    asked, values = [], []
    for _ in range(9):
        loss, stats = obj.d_loss(None, D, x, torch.zeros(2, 1))
        values.append(float(loss))
        n = obj.d_reg_batch(2)
        asked.append(n)
        if n:
            reg, reg_stats = obj.d_reg_loss(None, D, x[:n])
            assert float(reg.detach()) == pytest.approx(4 * 2.0 / 2 * float(a.square().sum()), rel=1e-5)
            assert reg_stats["r1_on"] == 1.0
    assert values == [0.0] * 9  # nothing added to the D steps themselves
    assert asked == [2, 0, 0, 0, 2, 0, 0, 0, 2]
    in_step = R1Objective(StubObjective(), R1(gamma=2.0, interval=4))
    assert [in_step.d_reg_batch(2) for _ in range(3)] == [0, 0, 0]  # the default variant has no phase


def test_separate_phase_takes_its_own_d_step_with_interval_corrected_adam(tmp_path):
    """Through the CLI: the phase's steps show up as D optimizer steps and D's Adam gets lr * c, beta ** c."""
    from click.testing import CliRunner

    from degan.cli import main

    out = tmp_path / "runs"
    common = ["train", "--data", "faces100", "--model", "dcgan", "--width", "0.125", "--batch", "8", "--kimg", "0.04",
              "--metrics", "none", "--no-progress", "--r1-gamma", "1", "--set", "r1.interval=2"]
    for sep in ("false", "true"):
        res = CliRunner().invoke(main, [*common, "--set", f"r1.separate={sep}", "--outdir", str(out / sep)],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
    import glob

    def last_state(folder):
        (ckpt,) = sorted(glob.glob(str(folder / "*" / "level_0" / "checkpoints" / "*.pt")))[-1:]
        return torch.load(ckpt, weights_only=True)["state"]

    plain, sep = last_state(out / "false"), last_state(out / "true")
    steps = lambda st: max(v["step"] for v in st["opt_D"]["state"].values())  # noqa: E731
    assert steps(sep) == steps(plain) + 3  # 5 D steps; phases after the 1st, 3rd and 5th
    c = 2 / 3
    g_plain, g_sep = plain["opt_D"]["param_groups"][0], sep["opt_D"]["param_groups"][0]
    assert g_sep["lr"] == pytest.approx(g_plain["lr"] * c)
    assert g_sep["betas"][1] == pytest.approx(g_plain["betas"][1] ** c)
