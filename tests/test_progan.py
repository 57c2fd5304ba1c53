"""ProGAN (``progan``, Karras et al., ICLR 2018, arXiv:1710.10196): the growth levels and their fade-in (G's output,
D's input and the reals blended alike), the growing schedule as a technique, WGAN-GP, resume mid-fade, and tickets,
RG-GAN and bad input from the CLI."""

import json
import math
import shutil

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import degan.lottery.techniques  # noqa: F401  (registers the built-in techniques, grow and gp included)
from degan.cli import main
from degan.config import PRESETS, resolve
from degan.errors import ConfigError
from degan.losses import GANObjective
from degan.lottery import load_masks
from degan.models import create_model
from degan.models.progan import RESOLUTIONS, EqualizedConv2d, pixel_norm, progan_channels, progressive_view
from degan.train import Trainer, load_checkpoint, make_state, save_checkpoint
from degan.train.gp import GradientPenaltyObjective, gradient_penalty
from degan.train.grow import GrowthSchedule, ProgressiveGrowing, ProgressiveRealsObjective

TINY = dict(resolution=16, width=1 / 32, z_dim=16)
# schedule at CPU size: stable 4x4 [0, 16), fade 8 [16, 32), stable 8 [32, 48), fade 16 [48, 64), stable 16 [64, ...)
CLI_TINY = ["--model", "progan", "--data", "faces100", "--resolution", "16", "--width", "0.03125",
            "--set", "model.z_dim=16", "--batch", "4", "--metrics", "none", "--no-progress",
            "--set", "train.log_kimg=0.004", "--set", "grow.fade_kimg=0.016", "--set", "grow.stable_kimg=0.016",
            "--set", "eval.monitor_every_kimg=null", "--set", "train.keep_checkpoints=50"]


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def only(outdir, prefix):
    (r,) = [p for p in outdir.iterdir() if p.name.startswith(prefix)]
    return r


def stats_of(stage):
    return [json.loads(line) for line in (stage / "stats.jsonl").read_text().splitlines()]


def images(n=16, size=16, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# --- layers and the fixed-size contract ------------------------------------------------------------------------


def test_channels_and_parameter_count_follow_the_paper():
    # Table 2 of the paper: 512 channels at 4..32 px, halving to 16 at 1024; 23.1M parameters in G and in D
    assert [progan_channels(r) for r in (4, 32, 64, 128, 256, 512, 1024)] == [512, 512, 256, 128, 64, 32, 16]
    G, D = create_model("progan", resolution=1024)
    n_g, n_d = (sum(p.numel() for p in net.parameters()) for net in (G, D))
    assert abs(n_g - 23.1e6) < 0.01 * 23.1e6 and abs(n_d - 23.1e6) < 0.01 * 23.1e6


def test_pixel_norm_and_equalised_lr():
    x = torch.randn(3, 8, 4, 4) * 5
    assert torch.allclose(pixel_norm(x).square().mean(dim=1), torch.ones(3, 4, 4), atol=1e-4)
    torch.manual_seed(0)
    conv = EqualizedConv2d(64, 32, 3)
    assert abs(float(conv.weight.detach().std()) - 1.0) < 0.02  # stored N(0, 1)
    x = torch.randn(2, 64, 8, 8)
    expected = nn.functional.conv2d(x, conv.weight * math.sqrt(2 / (64 * 9)), conv.bias, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-5)


@pytest.mark.parametrize("R", RESOLUTIONS[:4])
def test_every_level_keeps_the_shapes(R):
    torch.manual_seed(0)
    G, D = create_model("progan", resolution=R, width=1 / 32, z_dim=8)
    assert G.growth == D.growth == (R, 1.0)  # built fully grown
    z = torch.randn(4, 8)
    for r in G.levels:
        for alpha in (0.0, 0.4, 1.0):
            G.set_growth(r, alpha)
            D.set_growth(r, alpha)
            img = G(z)
            assert img.shape == (4, 3, R, R) and img.abs().max() <= 1
            # G's output is constant on (R / r) blocks: it is the level-r image repeated
            assert torch.allclose(img, progressive_view(img, r, 1.0), atol=1e-6)
            assert D(img).shape == (4,)


def test_progressive_view_by_hand():
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    assert torch.equal(progressive_view(x, 8, 1.0), x)
    half = progressive_view(x, 4, 1.0)  # 2x2 block means repeated
    assert half[0, 0, 0, 0] == (0 + 1 + 8 + 9) / 4 and half[0, 0, 7, 7] == (54 + 55 + 62 + 63) / 4
    assert half[0, 0, 0, 1] == half[0, 0, 0, 0]
    # the fade-in blend on an 8x8 image at level (4, alpha): alpha * x_4 + (1 - alpha) * up2(x_2), repeated to 8x8
    y = torch.randn(2, 3, 8, 8)
    alpha = 0.3
    y4 = nn.functional.avg_pool2d(y, 2)
    y2 = nn.functional.avg_pool2d(y4, 2)
    blend = alpha * y4 + (1 - alpha) * y2.repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert torch.allclose(progressive_view(y, 4, alpha), blend.repeat_interleave(2, 2).repeat_interleave(2, 3))
    with pytest.raises(ValueError, match="alpha"):
        progressive_view(y, 4, 1.5)
    with pytest.raises(ValueError, match="resolution"):
        progressive_view(y, 3, 1.0)


def test_fade_in_starts_where_the_previous_level_ended():
    """alpha = 0 at level r is level r/2 exactly, in G, in D and for the reals (the smooth transition of the paper)."""
    torch.manual_seed(0)
    G, D = create_model("progan", **TINY)
    G.eval()
    z, x = torch.randn(4, 16), torch.rand(4, 3, 16, 16) * 2 - 1
    for r in (8, 16):
        outs = []
        for level in ((r, 0.0), (r // 2, 1.0)):
            G.set_growth(*level)
            D.set_growth(*level)
            outs.append((G(z), D(x), progressive_view(x, *level)))
        (g0, d0, v0), (g1, d1, v1) = outs
        assert torch.allclose(g0, g1, atol=1e-6) and torch.allclose(d0, d1, atol=1e-5) and torch.allclose(v0, v1)
    # D at level r reads only the image pooled to r, so it cannot tell x from its level-r view; during a fade the
    # blended view of the reals is what it must see (G's output is blended the same way), and it differs
    for alpha in (1.0, 0.5):
        D.set_growth(8, alpha)
        assert torch.allclose(D(x), D(progressive_view(x, 8, 1.0)), atol=1e-5)
    assert not torch.allclose(D(x), D(progressive_view(x, 8, 0.5)), atol=1e-4)


def test_unused_layers_get_no_gradient_and_the_growth_is_in_the_state_dict():
    G, D = create_model("progan", **TINY)
    for net in (G, D):
        net.set_growth(8, 0.5)
    D(G(torch.randn(4, 16))).mean().backward()
    grads = {n for n, p in [*G.named_parameters(), *D.named_parameters()] if p.grad is not None}
    assert "to_rgb.8.weight" in grads and "to_rgb.4.weight" in grads and "stages.8.conv1.weight" in grads
    assert "to_rgb.16.weight" not in grads and "from_rgb.16.weight" not in grads
    G2, _ = create_model("progan", **TINY)
    G2.load_state_dict(G.state_dict())
    assert G2.growth == (8, 0.5)
    with pytest.raises(ValueError, match="growth resolution"):
        G.set_growth(32)


# --- the schedule and the technique --------------------------------------------------------------------------------


def test_schedule_follows_the_paper():
    s = GrowthSchedule(4, 256, 600, 600)
    assert s.total_kimg == 600 + 6 * 1200  # 7800 kimg to 256 px
    assert s.at(0) == (4, 1.0) and s.at(599_999) == (4, 1.0)
    assert s.at(600_000) == (8, 0.0) and s.at(900_000) == (8, 0.5) and s.at(1_200_000) == (8, 1.0)
    assert s.at(7_199_999)[0] == 256 and s.at(7_200_000) == (256, 1.0) and s.at(10**9) == (256, 1.0)
    kinds = [(k, r) for k, r, _, _ in s.phases()]
    assert kinds[:3] == [("stable", 4), ("fade", 8), ("stable", 8)] and kinds[-1] == ("stable", 256)
    assert GrowthSchedule(8, 16, 0, 1).at(1000) == (16, 1.0)  # no fade: switch at once
    for bad in (dict(start_resolution=6), dict(start_resolution=32), dict(stable_kimg=0), dict(fade_kimg=-1)):
        with pytest.raises(ValueError, match="grow"):
            GrowthSchedule(**{**dict(start_resolution=4, final_resolution=16), **bad})


class _Capture(GANObjective):
    def d_loss(self, G, D, real, z, generator=None, **kw):
        self.seen = real
        return super().d_loss(G, D, real, z, generator, **kw)


def test_the_reals_are_faded_like_the_fakes():
    G, D = create_model("progan", **TINY)
    for net in (G, D):
        net.set_growth(8, 0.25)
    inner = _Capture("wgangp")
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    ProgressiveRealsObjective(inner).d_loss(G, D, real, torch.randn(4, 16))
    assert torch.equal(inner.seen, progressive_view(real, 8, 0.25))


def _grow_trainer(state, kimg, schedule):
    cb = ProgressiveGrowing(schedule)
    state.extras["grow"] = cb
    objective = ProgressiveRealsObjective(GradientPenaltyObjective(GANObjective("wgangp"), 10.0, 0.001))
    return Trainer(state, images(), objective, total_kimg=kimg, batch_D=4, batch_G=4, n_dis=1, ema_decay=0.9,
                   callbacks=[cb])


def test_resume_mid_fade_continues_bit_identically(tmp_path):
    schedule = GrowthSchedule(4, 16, fade_kimg=0.016, stable_kimg=0.008)  # fade 8: [8, 24), fade 16: [32, 48)

    def fresh():
        torch.manual_seed(1)
        return make_state(*create_model("progan", **TINY), lr_G=1e-3, lr_D=1e-3, betas=(0.0, 0.99), seed=2)

    full = fresh()
    _grow_trainer(full, 0.056, schedule).run()
    half = fresh()
    _grow_trainer(half, 0.04, schedule).run()  # stops in the middle of the 16 px fade
    assert half.G.growth == half.D.growth == half.G_ema.growth == (16, 0.5)
    save_checkpoint(tmp_path / "c.pt", {"state": half.state_dict()})
    resumed = fresh()
    assert resumed.G.growth == (16, 1.0)
    resumed.load_state_dict(load_checkpoint(tmp_path / "c.pt")["state"])
    assert resumed.G.growth == resumed.G_ema.growth == (16, 0.5)  # from the buffers, before any callback
    _grow_trainer(resumed, 0.056, schedule).run()
    assert full.G.growth == (16, 1.0)
    for net in ("G", "D", "G_ema"):
        a, b = getattr(full, net).state_dict(), getattr(resumed, net).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), net


# --- WGAN-GP -----------------------------------------------------------------------------------------------------


class _LinearD(nn.Module):
    def __init__(self, w: torch.Tensor, b: float = 0.3):
        super().__init__()
        self.w, self.b = nn.Parameter(w.clone()), b

    def forward(self, x, c=None):
        return (x * self.w).flatten(1).sum(dim=1) + self.b


def test_gradient_penalty_of_a_linear_D_by_hand():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4) * 0.1
    D = _LinearD(w)
    real, fake = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4)
    gp = gradient_penalty(D, real, fake, torch.rand(5, 1, 1, 1))
    # grad_x D = w everywhere, so the penalty is (||w|| - 1)^2 whatever the interpolation
    assert torch.allclose(gp, (w.norm() - 1).square(), atol=1e-6)
    gp.backward()  # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    assert torch.allclose(D.w.grad, 2 * (w.norm() - 1) * w / w.norm(), atol=1e-5)


def test_wgangp_objective_adds_penalty_and_drift():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4) * 0.5
    D = _LinearD(w)
    G = nn.Sequential(nn.Linear(8, 48), nn.Tanh(), nn.Unflatten(1, (3, 4, 4)))
    real, z = torch.rand(6, 3, 4, 4) * 2 - 1, torch.randn(6, 8)
    base = GANObjective("wgangp")
    loss0, _ = base.d_loss(G, D, real, z)
    with torch.no_grad():
        d_real, d_fake = D(real), D(G(z))
    assert torch.allclose(loss0, d_fake.mean() - d_real.mean(), atol=1e-6)  # L_D = E[D(G(z))] - E[D(x)]
    loss_g, _ = base.g_loss(G, D, z)
    assert torch.allclose(loss_g, -d_fake.mean(), atol=1e-6)
    loss, stats = GradientPenaltyObjective(GANObjective("wgangp"), 10.0, 0.001).d_loss(G, D, real, z)
    expected = loss0 + 10.0 * (w.norm() - 1).square() + 0.001 * d_real.square().mean()
    assert torch.allclose(loss, expected, atol=1e-5)
    assert stats["gp_penalty"] == pytest.approx(float((w.norm() - 1).square()), rel=1e-5)
    with pytest.raises(ValueError, match="gp.weight"):
        GradientPenaltyObjective(base, -1.0)


# --- presets and the command line ---------------------------------------------------------------------------------


def test_presets():
    p = resolve("progan_fewshot")
    assert (p.model.name, p.data.resolution, p.train.loss, p.train.batch_D, p.train.n_dis) == ("progan", 256, "wgangp",
                                                                                              16, 1)
    assert (p.optim.lr_G, p.optim.beta1, p.optim.beta2, p.gp.weight, p.gp.drift) == (0.001, 0.0, 0.99, 10.0, 0.001)
    assert p.train.total_kimg == GrowthSchedule(4, 256, p.grow.fade_kimg, p.grow.stable_kimg).total_kimg == 7800
    assert (p.eval.metrics, p.eval.num_gen) == ("fid_train,kid_train", 5000)
    assert "resolution" not in PRESETS["progan"]["data"] and resolve("progan").train.loss == "wgangp"
    f = resolve("fastgan_fewshot")
    assert (f.model.name, f.data.resolution, f.train.batch_D, f.train.total_kimg, f.eval.num_gen) == (
        "fastgan", 256, 8, 400, 5000)


def test_train_grows_through_the_levels_from_the_cli(tmp_path):
    from degan.lottery import load_generator
    from degan.lottery.layout import StageLayout

    out = tmp_path / "t"
    log = run(["train", "--outdir", out, *CLI_TINY, "--kimg", "0.08", "--snap", "0.04"])
    assert "fading in 8x8" in log and "stable at 16x16" in log
    stage = only(out, "train-") / "level_0"
    stats = stats_of(stage)
    levels = [(s["kimg"], s["grow_resolution"], s["grow_alpha"]) for s in stats]
    assert levels[0] == (0.004, 4, 1.0) and levels[-1] == (0.08, 16, 1.0)
    assert (0.024, 8, 0.25) in levels  # the iteration from 20 real images: (20 - 16) / 16 into the 8 px fade
    assert all(math.isfinite(s["gp_penalty"]) and math.isfinite(s["drift"]) for s in stats)
    done = json.loads((stage / "done.json").read_text())
    assert done["grow"]["final_level"] == {"resolution": 16, "alpha": 1.0} and done["wgangp"]["weight"] == 10.0
    # FLOPs follow the growth: the meter measured the final level, and the total is below 20 iterations of it
    G16, D16 = create_model("progan", **TINY)
    from degan.costs import TOTAL_KEY, layer_macs

    costs = done["costs"]
    assert costs["macs_forward_G"] == layer_macs(G16, torch.zeros(1, 16))[TOTAL_KEY]
    assert costs["macs_forward_D"] == layer_macs(D16, torch.zeros(1, 3, 16, 16))[TOTAL_KEY]
    assert costs["iterations"] == 20 and costs["train_flops_dense"] < 20 * costs["flops_per_iter_dense"]
    assert (stage / "samples" / "fakes_latest.png").is_file()
    G = load_generator(StageLayout(stage))
    assert G.growth == (16, 1.0) and G(torch.randn(2, 16)).shape == (2, 3, 16, 16)


def test_resume_latest_mid_fade_from_the_cli(tmp_path):
    """A run cut at kimg 0.024 (alpha 0.5 of the 8 px fade) and resumed ends bit-identical to an uncut one."""
    out = tmp_path / "r"
    args = ["train", "--outdir", out, *CLI_TINY, "--kimg", "0.04", "--snap", "0.008"]
    run(args)
    stage = only(out, "train-") / "level_0"
    full = torch.load(stage / "checkpoints" / "ckpt-000000040.pt", weights_only=True)["state"]
    cut = out.parent / "cut"
    shutil.copytree(out, cut)
    cstage = only(cut, "train-") / "level_0"
    (cstage / "done.json").unlink()
    for p in (cstage / "checkpoints").glob("ckpt-*.pt"):
        if int(p.stem.split("-")[1]) > 24:
            p.unlink()
    mid = torch.load(cstage / "checkpoints" / "ckpt-000000024.pt", weights_only=True)["state"]
    assert int(mid["G"]["grow_resolution"]) == 8 and float(mid["G"]["grow_alpha"]) == 0.5
    run(["train", "--outdir", cut, *args[3:], "--resume", "latest"])
    resumed = torch.load(cstage / "checkpoints" / "ckpt-000000040.pt", weights_only=True)["state"]
    for net in ("G", "D", "G_ema"):
        assert all(torch.equal(full[net][k], resumed[net][k]) for k in full[net]), net
    after = [s for s in stats_of(cstage) if s["kimg"] > 0.024]
    assert after[0]["kimg"] == 0.028 and after[0]["grow_resolution"] == 8 and after[0]["grow_alpha"] == 0.5


def test_ticket_levels_on_progan_from_the_cli(tmp_path):
    out = tmp_path / "ticket"
    run(["ticket", "--outdir", out, *CLI_TINY, "--levels", "1", "--kimg", "0.024", "--snap", "0.024"])
    r = only(out, "ticket-")
    done = json.loads((r / "level_1" / "done.json").read_text())
    assert done["density_G"] == pytest.approx(0.8, abs=2e-3) and done["density_D"] == pytest.approx(0.8, abs=2e-3)
    masks = load_masks(r / "level_1" / "masks.safetensors")
    assert "to_rgb.16.weight" in masks["G"] and "stages.16.conv1.weight" in masks["D"]
    state = torch.load(sorted((r / "level_1" / "checkpoints").glob("ckpt-*.pt"))[-1], map_location="cpu",
                       weights_only=True)["state"]
    for net in ("G", "D", "G_ema"):
        for name, m in masks["G" if net == "G_ema" else net].items():
            w = state[net][name.replace(".weight", ".parametrizations.weight.original")]
            assert (w[~m] == 0).all(), (net, name)  # masks survive training, in G_ema too
    assert int(state["G"]["grow_resolution"]) == 8  # 0.024 kimg: inside the 8 px fade


def test_dynamic_prune_on_progan_from_the_cli(tmp_path):
    out = tmp_path / "rg"
    run(["train", "--outdir", out, *CLI_TINY, "--kimg", "0.032", "--snap", "0.032", "--dynamic-prune",
         "--set", "dynamic.lam=0.05"])
    stage = only(out, "train-") / "level_0"
    done = json.loads((stage / "done.json").read_text())
    assert done["variant"] == "RG" and done["density_G"] < 1.0 and done["density_D"] < 1.0
    assert all("thr_mean_G" in s and "gp_penalty" in s and "grow_alpha" in s for s in stats_of(stage))


def test_bad_input_is_one_clear_error_before_training(tmp_path):
    for extra, message in ((["--resolution", "24"], "progan resolution must be one of"),
                           (["--set", "grow.start_resolution=32"], "grow.start_resolution=32 is above"),
                           (["--set", "grow.start_resolution=6"], "power of two"),
                           (["--set", "grow.stable_kimg=0"], "grow.stable_kimg"),
                           (["--set", "gp.weight=-1"], "gp.weight"),
                           (["--set", "train.loss=wgan-gp"], "train.loss"),
                           (["--set", "prune.prunable=conv,bn"], "prune.prunable"),
                           (["--advaug", "--set", "advaug.split_G=1"], "blocks")):
        out = tmp_path / "bad"
        res = CliRunner().invoke(main, ["train", "--outdir", str(out), *CLI_TINY, "--kimg", "0.008", *extra])
        assert res.exit_code != 0 and message in res.output, (extra, res.output)
        assert "Traceback" not in res.output
        assert not any(out.glob("*/level_0/checkpoints/*.pt")), extra  # nothing trained
    with pytest.raises(ConfigError, match="grow.fade_kimg"):
        resolve("progan", sets=["grow.fade_kimg=-1"])
