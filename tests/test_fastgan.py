"""FastGAN (``fastgan``, Liu et al., ICLR 2021, arXiv:2101.04775): shapes at every resolution, parameter counts against
the released code, the self-supervised reconstruction term, and tickets, RG-GAN and AdvAug on it from the CLI."""

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import random_image_folder
from torch import nn

import degan.lottery.techniques  # noqa: F401  (registers the built-in techniques, recon included)
from degan.augment import build_augment
from degan.augment.advaug import AdvAugObjective, AdvAugSettings, split_D, split_G
from degan.cli import main
from degan.config import resolve
from degan.errors import ConfigError
from degan.losses import GANObjective
from degan.lottery import load_masks
from degan.lottery.layout import StageLayout
from degan.models import create_model
from degan.models.fastgan import RESOLUTIONS, take_quadrant
from degan.pruning import add_masks, get_mask, ones_like_mask, prune_global_magnitude, raw_weight, set_mask
from degan.recon import ReconObjective, l1_distance, load_lpips
from degan.train import Trainer, load_checkpoint, make_state, save_checkpoint
from degan.train.technique import StageContext, build_techniques

TINY = dict(resolution=32, width=1 / 16, z_dim=16)
CLI_TINY = ["--model", "fastgan", "--preset", "fastgan_cpu", "--resolution", "32", "--width", "0.0625",
            "--set", "model.z_dim=16", "--batch", "4", "--snap", "0.016", "--metrics", "none", "--no-progress",
            "--set", "train.log_kimg=0.008", "--set", "train.keep_checkpoints=10",
            "--set", "eval.monitor_every_kimg=null"]

# Parameter counts of the released code (odegeasslbc/FastGAN-pytorch, the authors' commit 4963d49 of 2021-01-12,
# models.py: Generator(ngf=64, nz=256, im_size=R), Discriminator(ndf=64, im_size=R)), counted by instantiating it.
# degan's G lacks the released G's 128 px side output `to_128` (a 64 -> 3 conv1x1: 192 weights), see the module
# docstring; D is the same network.
RELEASED_PARAMS = {256: (29_127_846, 11_526_160), 512: (29_174_392, 11_526_496), 1024: (29_176_512, 11_528_192)}
TO_128 = 64 * 3


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def only(outdir, prefix):
    (r,) = [p for p in outdir.iterdir() if p.name.startswith(prefix)]
    return r


def stats_of(stage):
    return [json.loads(line) for line in (stage / "stats.jsonl").read_text().splitlines()]


@pytest.fixture
def folder(tmp_path):
    return random_image_folder(tmp_path / "imgs", 12, size=32)


# --- networks ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("R", RESOLUTIONS)
def test_shapes_at_every_resolution(R):
    torch.manual_seed(0)
    G, D = create_model("fastgan", resolution=R, width=1 / 32, z_dim=8)
    z = torch.randn(2, 8)
    img = G(z)
    assert img.shape == (2, 3, R, R) and img.abs().max() <= 1
    assert G.input_layer(z).shape == (2, G.c0, 4, 4)
    assert D(img).shape == (2,) and D.features(img).shape == (2, D.feature_dim)
    assert D.out.patch_logits(D.features(img)).shape == (2, 50)  # 2 heads x 5 x 5 patches
    # SLE: G from r/16 into r for r in 64..512; D from 8s into s for s in 32, 16, 8 (where the source exists)
    assert sorted(map(int, G.sle)) == [r for r in (64, 128, 256, 512) if r <= R]
    assert sorted(map(int, D.sle)) == sorted(s for s in (32, 16, 8) if 8 * s <= min(R, 256))
    t = min(128, R)
    pairs = D.reconstruction_pairs(img, torch.tensor([0, 3]))
    assert [n for n, _, _ in pairs] == ["all", "small", "part"]
    for _, rec, target in pairs:
        assert rec.shape == target.shape == (2, 3, t, t) and rec.abs().max() <= 1


def test_parameter_counts_match_the_released_code():
    for R, (n_g, n_d) in RELEASED_PARAMS.items():
        G, D = create_model("fastgan", resolution=R, spectral_norm=False)
        assert sum(p.numel() for p in G.parameters()) == n_g - TO_128
        assert sum(p.numel() for p in D.parameters()) == n_d
    # the released code's channel widths at 256 px: G 1024 (4x4) ... 32 (256x256); D 16 (256x256) ... 512 (8x8)
    assert [b.conv1.out_channels // 2 for b in G.blocks][:6] == [512, 256, 128, 128, 64, 32]
    assert G.c0 == 1024


def test_bad_resolution_and_activation_are_clear():
    with pytest.raises(ValueError, match="resolution must be one of 32, 64, 128, 256, 512, 1024"):
        create_model("fastgan", resolution=48)
    with pytest.raises(ValueError, match="sle_activation"):
        create_model("fastgan", sle_activation="relu", **TINY)
    G, D = create_model("fastgan", **TINY)
    with pytest.raises(ValueError, match="h must be float"):
        G.synthesis(torch.zeros(1, 3, 4, 4))


def test_bad_resolution_from_the_cli_writes_nothing(tmp_path, folder):
    args = ["train", "--model", "fastgan", "--resolution", "48", "--data", folder, "--outdir", tmp_path / "bad",
            "--metrics", "none"]
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code != 0 and "resolution must be one of 32, 64, 128, 256, 512, 1024" in res.output
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_take_quadrant_matches_slicing():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    expect = {0: x[:, :, :2, :2], 1: x[:, :, :2, 2:], 2: x[:, :, 2:, :2], 3: x[:, :, 2:, 2:]}
    for q0 in range(4):
        for q1 in range(4):
            out = take_quadrant(x, torch.tensor([q0, q1]))
            assert torch.equal(out[0], expect[q0][0]) and torch.equal(out[1], expect[q1][1])


# --- the reconstruction term ------------------------------------------------------------------------------------


def test_reconstruction_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    _, D = create_model("fastgan", **TINY)
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    obj = ReconObjective(GANObjective("hinge"))
    losses = []
    for _ in range(12):
        term, parts = obj.term(D, real, torch.Generator().manual_seed(1))
        opt.zero_grad()
        term.backward()
        opt.step()
        losses.append(float(term.detach()))
        assert set(parts) == {"all", "small", "part"}
    assert losses[-1] < 0.8 * losses[0] and losses[-1] == min(losses), losses


def test_recon_objective_reuses_the_pass_that_scored_the_reals():
    torch.manual_seed(0)
    G, D = create_model("fastgan", spectral_norm=False, **TINY)  # no power iteration: a re-run gives equal maps
    calls = []
    trunk = D.trunk
    D.trunk = lambda x: calls.append(x.shape[0]) or trunk(x)
    augment = build_augment("diffaug:color,translation")
    obj = ReconObjective(GANObjective("hinge", augment), weight=2.0)
    real, z = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 16)
    gen = torch.Generator().manual_seed(5)
    loss, stats = obj.d_loss(G, D, real, z, gen)
    assert len(calls) == 2  # reals and fakes; the decoders read the recorded real maps
    assert stats["loss_recon"] > 0 and {"recon_all", "recon_small", "recon_part", "loss_D"} <= set(stats)
    assert loss.item() == pytest.approx(stats["loss_D"] + 2.0 * stats["loss_recon"], rel=1e-5)
    # the same augmented reals and quadrant draw, trunk run again: the same term
    gen2 = torch.Generator().manual_seed(5)
    real_aug = augment(real, generator=gen2)
    augment(G(z), generator=gen2)
    again, _ = obj.term(D, real_aug, gen2)
    assert again.item() == pytest.approx(stats["loss_recon"], rel=1e-5)
    assert D._records is None  # nothing recorded outside the step
    # gradients of the term reach every decoder
    D.zero_grad()
    loss.backward()
    for dec in (D.decoder_big, D.decoder_small, D.decoder_part):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dec.parameters())


def test_lpips_from_a_torchscript_file(tmp_path):
    class Doubled(nn.Module):  # stands in for a scripted LPIPS: any f(x, y) -> [N, 1, 1, 1]
        def forward(self, x, y):
            return 2 * (x - y).abs().mean(dim=(1, 2, 3), keepdim=True)

    x, y = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    path = tmp_path / "lpips.pt"
    with pytest.warns(DeprecationWarning):  # torch >= 2.10 deprecates TorchScript; reading it is still supported
        torch.jit.script(Doubled()).save(str(path))
    batch = torch.export.Dim("batch")
    program = torch.export.export(Doubled(), (x, y), dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, str(tmp_path / "lpips.pt2"))
    for p in (path, tmp_path / "lpips.pt2"):
        assert torch.allclose(load_lpips(p)(x, y), 2 * l1_distance(x, y))
        assert torch.allclose(load_lpips(p)(x[:2], y[:2]), 2 * l1_distance(x[:2], y[:2]))
    d = load_lpips(path)
    torch.manual_seed(0)
    _, D = create_model("fastgan", **TINY)
    D.eval()
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    t_l1, _ = ReconObjective(GANObjective(), distance=l1_distance).term(D, real, torch.Generator().manual_seed(0))
    t_lp, _ = ReconObjective(GANObjective(), distance=d).term(D, real, torch.Generator().manual_seed(0))
    assert t_lp.item() == pytest.approx(2 * t_l1.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="does not exist"):
        load_lpips(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a TorchScript module or a torch.export program"):
        load_lpips(tmp_path / "junk.pt")


class _Exp:
    def __init__(self, cfg):
        self.cfg, self.device, self.force = cfg, torch.device("cpu"), False


def test_recon_technique_is_on_for_fastgan_only(tmp_path):
    def names(preset, **sections):
        ctx = StageContext(_Exp(resolve(preset, overrides=sections)), StageLayout(tmp_path / "level_0"))
        return [t.name for t in build_techniques(ctx)]

    assert "recon" in names("fastgan_cpu")
    assert "recon" not in names("fastgan_cpu", recon={"weight": 0.0})
    assert "recon" not in names("dcgan")
    with pytest.raises(ConfigError, match="recon.lpips"):
        names("fastgan_cpu", recon={"lpips": str(tmp_path / "missing.pt")})
    with pytest.raises(ConfigError, match="recon.weight"):
        resolve("fastgan_cpu", overrides={"recon": {"weight": -1}})


def test_presets_follow_the_released_code():
    cfg = resolve("fastgan")
    m = cfg.model
    assert (m.name, cfg.data.resolution, m.width, m.spectral_norm) == ("fastgan", 256, 1.0, True)
    assert (cfg.optim.lr_G, cfg.optim.lr_D, cfg.optim.beta1, cfg.optim.beta2) == (2e-4, 2e-4, 0.5, 0.999)
    t = cfg.train
    assert (t.batch_D, t.batch_G, t.n_dis, t.loss, t.ema_decay) == (8, 8, 1, "hinge", 0.999)
    assert t.total_kimg == 50_000 * 8 / 1000 and t.augment == "diffaug:color,translation" and cfg.data.mirror
    cpu = resolve("fastgan_cpu")
    assert cpu.data.resolution == 64 and cpu.model.width == 0.125 and cpu.train.batch_D == 8


# --- training: resume, masks ------------------------------------------------------------------------------------


def _state(prune: bool):
    torch.manual_seed(0)
    G, D = create_model("fastgan", pre_sn_hook=add_masks, **TINY)
    if prune:
        set_mask(G, prune_global_magnitude(G, ones_like_mask(G), 0.5))
        set_mask(D, prune_global_magnitude(D, ones_like_mask(D), 0.5))
    return make_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.5, 0.999), seed=3)


def _trainer(state, kimg):
    images = torch.randint(0, 256, (16, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    obj = ReconObjective(GANObjective("hinge", build_augment("diffaug:color,translation")))
    return Trainer(state, images, obj, total_kimg=kimg, batch_D=4, batch_G=4, n_dis=1, ema_decay=0.999, mirror=True)


def test_resume_is_bit_identical_and_masks_survive(tmp_path):
    full = _state(prune=True)
    masks = get_mask(full.G)
    assert "init.weight" in masks  # the 4x4 transposed conv is a ticket layer (convT)
    assert any(k.startswith("decoder_part.") for k in get_mask(full.D))
    _trainer(full, 0.016).run()
    half = _state(prune=True)
    _trainer(half, 0.008).run()
    save_checkpoint(tmp_path / "c.pt", {"state": half.state_dict()})
    resumed = _state(prune=True)
    resumed.load_state_dict(load_checkpoint(tmp_path / "c.pt")["state"])
    _trainer(resumed, 0.016).run()
    for net in ("G", "D", "G_ema"):
        a, b = getattr(full, net).state_dict(), getattr(resumed, net).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), net
    for net in (full.G, full.D, full.G_ema):
        modules = dict(net.named_modules())
        for k, m in get_mask(net).items():
            assert (raw_weight(modules[k.rsplit(".", 1)[0]])[~m] == 0).all(), k
    assert all(torch.equal(masks[k], v) for k, v in get_mask(full.G).items())  # training never changes a mask


def test_advaug_objective_runs_and_block_splits_are_refused():
    torch.manual_seed(0)
    G, D = create_model("fastgan", **TINY)
    obj = ReconObjective(AdvAugObjective("hinge", build_augment("diffaug:color,translation"), AdvAugSettings(),
                                         resolution=32))
    real, z = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, 16)
    loss, stats = obj.d_loss(G, D, real, z, torch.Generator().manual_seed(0))
    assert {"loss_D_adv", "loss_D_clean", "loss_recon"} <= set(stats) and torch.isfinite(loss)
    loss, stats = obj.g_loss(G, D, z, torch.Generator().manual_seed(0))
    assert {"loss_G_adv", "loss_G_clean"} <= set(stats) and torch.isfinite(loss)
    with pytest.raises(ValueError, match="blocks"):
        split_G(G, 1)
    with pytest.raises(ValueError, match="blocks"):
        split_D(D, 1)


# --- the command line -------------------------------------------------------------------------------------------


def test_train_fastgan_cpu_preset_from_the_cli(tmp_path, folder):
    from degan.lottery import load_generator

    out = tmp_path / "t"
    run(["train", "--model", "fastgan", "--preset", "fastgan_cpu", "--data", folder, "--outdir", out, "--kimg", "0.024",
         "--snap", "0.024", "--metrics", "none", "--no-progress", "--set", "train.log_kimg=0.008"])
    stage = only(out, "train-") / "level_0"
    done = json.loads((stage / "done.json").read_text())
    assert done["recon"] == {"weight": 1.0, "distance": "l1", "lpips": None} and done["step"] == 3
    assert all(s["loss_recon"] > 0 for s in stats_of(stage))
    G = load_generator(StageLayout(stage))
    with torch.no_grad():
        assert G(torch.randn(2, G.z_dim)).shape == (2, 3, 64, 64)


def test_ticket_levels_from_the_cli(tmp_path, folder):
    out = tmp_path / "ticket"
    run(["ticket", "--data", folder, "--outdir", out, "--levels", "1", "--kimg", "0.016", *CLI_TINY])
    r = only(out, "ticket-")
    done = json.loads((r / "level_1" / "done.json").read_text())
    assert done["density_G"] == pytest.approx(0.8, abs=2e-3) and done["density_D"] == pytest.approx(0.8, abs=2e-3)
    masks = load_masks(r / "level_1" / "masks.safetensors")
    assert "init.weight" in masks["G"] and "decoder_big.to_img.weight" in masks["D"]
    state = torch.load(sorted((r / "level_1" / "checkpoints").glob("ckpt-*.pt"))[-1], map_location="cpu",
                       weights_only=True)["state"]
    for net in ("G", "D", "G_ema"):
        for name, m in masks["G" if net == "G_ema" else net].items():
            w = state[net][name.replace(".weight", ".parametrizations.weight.original")]
            assert (w[~m] == 0).all(), (net, name)
    assert all("loss_recon" in s for s in stats_of(r / "level_1"))


def test_dynamic_prune_from_the_cli(tmp_path, folder):
    out = tmp_path / "rg"
    run(["train", "--data", folder, "--outdir", out, "--kimg", "0.024", "--dynamic-prune", "--set", "dynamic.lam=0.05",
         *CLI_TINY])
    stage = only(out, "train-") / "level_0"
    done = json.loads((stage / "done.json").read_text())
    assert done["variant"] == "RG" and done["density_G"] < 1.0 and done["density_D"] < 1.0
    assert all("loss_recon" in s and "thr_mean_G" in s for s in stats_of(stage))


def test_advaug_from_the_cli(tmp_path, folder):
    out = tmp_path / "adv"
    run(["train", "--data", folder, "--outdir", out, "--kimg", "0.016", "--advaug", *CLI_TINY])
    stats = stats_of(only(out, "train-") / "level_0")
    assert all({"loss_D_adv", "loss_G_adv", "loss_recon"} <= set(s) for s in stats)
    args = ["train", "--data", folder, "--outdir", tmp_path / "bad", "--advaug", "--set", "advaug.split_D=1", *CLI_TINY]
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code != 0 and "blocks" in res.output
