"""CycleGAN tickets (GAN-LTH image-to-image setting): networks, losses, image pool, IMP masks, resume, the CLI."""

import copy
import json
import math
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from degan import cyclegan as cg
from degan.cli import main
from degan.errors import ConfigError, DataError
from degan.models.cyclegan import (
    PatchDiscriminator,
    ResnetGenerator,
    create_translation_model,
    default_n_blocks,
    patch_grid_size,
)
from degan.pruning import density, get_mask

TINY = ["model.width=0.125", "model.n_blocks=1", "train.batch=2", "train.device=cpu"]


def tiny_cfg(*sets, a="a", b="b"):
    """A tiny config; sources are placeholder strings (not loaded by the tests that use this)."""
    return cg.resolve_config(sets=[f"data.source_a={a}", f"data.source_b={b}", *TINY, *sets])


class FakeExtractor(nn.Module):
    """Cheap stand-in for Inception: 12 pooled grey levels per image (float [N, 12])."""

    name, num_features = "fake_pool12", 12

    def forward(self, x):
        x = x.float().div(255).mean(1, keepdim=True)
        return nn.functional.adaptive_avg_pool2d(x, (3, 4)).flatten(1)


# ---------------------------------------------------------------------------------------------------------------------
# networks


@pytest.mark.parametrize("channels", [1, 3])
def test_generator_keeps_shape_and_range(channels):
    torch.manual_seed(0)
    G = ResnetGenerator(img_channels=channels, width=0.125, n_blocks=2, resolution=32)
    y = G(torch.rand(2, channels, 32, 32) * 2 - 1)
    assert y.shape == (2, channels, 32, 32) and y.abs().max() <= 1
    assert any(isinstance(m, nn.InstanceNorm2d) for m in G.modules())
    assert any(isinstance(m, nn.ReflectionPad2d) for m in G.modules())
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in G.modules()) == 2


@pytest.mark.parametrize("n_layers,expected", [(3, 2), (2, 6), (1, 14)])
def test_patchgan_grid_at_32px(n_layers, expected):
    D = PatchDiscriminator(img_channels=3, width=0.125, n_layers=n_layers)
    out = D(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 1, expected, expected) == (3, 1, patch_grid_size(32, n_layers), patch_grid_size(32, n_layers))


def test_patchgan_grid_sizes_and_paper_parameter_counts():
    assert patch_grid_size(256) == 30 and patch_grid_size(128) == 14  # the 70x70 PatchGAN's 30x30 map at 256 px
    assert default_n_blocks(256) == 9 and default_n_blocks(128) == 6 and default_n_blocks(32) == 6
    G, D = create_translation_model("cyclegan", resolution=256)
    # the reference CycleGAN networks: 11,378,179 (ResNet-9 G) and 2,764,737 (70x70 PatchGAN) parameters
    assert sum(p.numel() for p in G.parameters()) == 11_378_179
    assert sum(p.numel() for p in D.parameters()) == 2_764_737


def test_bad_options_raise():
    with pytest.raises(ValueError, match="multiple of 4"):
        ResnetGenerator(resolution=30)
    with pytest.raises(ValueError, match="valid options"):
        create_translation_model("cyclegan", z_dim=3)
    with pytest.raises(ValueError, match="valid names"):
        create_translation_model("pix2pix")
    with pytest.raises(ValueError, match="lower n_layers"):
        PatchDiscriminator(n_layers=4, width=0.125)(torch.randn(1, 3, 16, 16))


# ---------------------------------------------------------------------------------------------------------------------
# losses and pool


class ConstantD(nn.Module):
    def forward(self, x):
        return torch.ones(x.shape[0], 1, 2, 2)


def test_cycle_and_identity_losses_vanish_for_identity_generators():
    nets = {"G_AB": nn.Identity(), "G_BA": nn.Identity(), "D_A": ConstantD(), "D_B": ConstantD()}
    a, b = torch.rand(3, 3, 8, 8) * 2 - 1, torch.rand(3, 3, 8, 8) * 2 - 1
    loss, parts, (fake_A, fake_B) = cg.generator_loss(nets, a, b)
    assert float(parts["cycle"]) == 0.0 and float(parts["identity"]) == 0.0
    assert float(parts["gan"]) == 0.0 and float(loss) == 0.0  # D says "real" everywhere: LSGAN G loss 0
    assert torch.equal(fake_B, a) and torch.equal(fake_A, b)


def test_loss_weights_and_values():
    shift = nn.Module()
    shift.forward = lambda x: x + 0.5
    nets = {"G_AB": shift, "G_BA": nn.Identity(), "D_A": ConstantD(), "D_B": ConstantD()}
    a, b = torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    loss, parts, _ = cg.generator_loss(nets, a, b, lambda_cycle=10.0, lambda_identity=5.0)
    # cycle: |G_BA(G_AB(a)) - a| = 0.5 and |G_AB(G_BA(b)) - b| = 0.5; identity: |G_AB(b) - b| = 0.5, |G_BA(a) - a| = 0
    assert float(parts["cycle"]) == pytest.approx(1.0) and float(parts["identity"]) == pytest.approx(0.5)
    assert float(loss) == pytest.approx(10 * 1.0 + 5 * 0.5)
    _, parts0, _ = cg.generator_loss(nets, a, b, lambda_identity=0.0)
    assert float(parts0["identity"]) == 0.0
    assert float(cg.lsgan_loss(torch.full((2, 1, 3, 3), 0.5), True)) == pytest.approx(0.25)
    assert float(cg.lsgan_loss(torch.full((2, 1, 3, 3), 0.5), False)) == pytest.approx(0.25)
    assert float(cg.lsgan_loss(torch.full((1, 1, 2, 2), 3.0), False)) == pytest.approx(9.0)


def test_image_pool_count_and_history():
    pool, gen = cg.ImagePool(4), torch.Generator().manual_seed(0)
    first = torch.arange(3.0).view(3, 1, 1, 1)
    assert torch.equal(pool.query(first, gen), first)  # not full yet: everything passes through and is stored
    history, fresh = set(), 0
    for step in range(1, 40):
        batch = (100 * step + torch.arange(3.0)).view(3, 1, 1, 1)
        out = pool.query(batch, gen)
        assert out.shape == batch.shape and len(pool.images) == 4
        for v in out.flatten().tolist():
            if v in batch.flatten().tolist():
                fresh += 1
            else:
                history.add(v)
    assert fresh > 20 and len(history) > 20  # about half fresh, half older fakes from the pool
    assert all(v < 100 * 39 for v in history)
    assert torch.equal(cg.ImagePool(0).query(first, gen), first)
    with pytest.raises(ValueError):
        cg.ImagePool(-1)


def test_lr_schedule_is_linear_to_zero():
    assert cg.lr_scale(0, 100, 0.5) == 1.0 and cg.lr_scale(49, 100, 0.5) == 1.0
    assert cg.lr_scale(75, 100, 0.5) == pytest.approx(0.5) and cg.lr_scale(100, 100, 0.5) == 0.0
    assert cg.lr_scale(90, 100, None) == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# masks, training state


@pytest.mark.parametrize("networks,pruned", [("G", {"G_AB", "G_BA"}), ("G,D", {"G_AB", "G_BA", "D_A", "D_B"})])
def test_imp_levels_compose_per_network(networks, pruned):
    cfg = tiny_cfg(f"prune.networks={networks}")
    nets = cg.build_networks(cfg)
    trained = {n: m.state_dict() for n, m in nets.items()}
    masks = {n: get_mask(m) for n, m in nets.items()}
    assert all(density(m) == 1.0 for m in masks.values())
    for k in (1, 2):
        new = cg.next_masks(cfg, trained, masks, k)
        for n in cg.NETS:
            total = sum(m.numel() for m in new[n].values())
            want = 0.8 ** k if n in pruned else 1.0
            assert abs(density(new[n]) - want) <= 2 / total, (n, k)
            assert all(bool((new[n][p] <= masks[n][p]).all()) for p in new[n])  # masks only shrink
        masks = new
    # the masked networks forward with the masks in force and pruned raw weights zeroed
    from degan.pruning import set_mask
    from degan.pruning.mask import masked_layers, raw_weight

    G = cg.build_networks(cfg)["G_AB"]
    set_mask(G, masks["G_AB"])
    assert all(bool((raw_weight(mod)[~wm.mask.bool()] == 0).all()) for _, mod, wm in masked_layers(G))
    assert {n for n in cg.NETS if density(masks[n]) < 1} == pruned


def test_masks_round_trip_and_bad_file(tmp_path):
    cfg = tiny_cfg("prune.networks=G,D")
    nets = cg.build_networks(cfg)
    masks = cg.next_masks(cfg, {n: m.state_dict() for n, m in nets.items()}, {n: get_mask(m) for n, m in nets.items()}, 1)
    cg.save_masks(tmp_path / "m.safetensors", masks)
    back = cg.load_masks(tmp_path / "m.safetensors")
    assert all(torch.equal(back[n][p], masks[n][p]) for n in cg.NETS for p in masks[n])
    from safetensors.torch import save_file

    save_file({"G.x": torch.ones(2, dtype=torch.bool)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(Exception, match="G_AB"):
        cg.load_masks(tmp_path / "bad.safetensors")


def _trainer(cfg, state):
    gen = torch.Generator().manual_seed(1)
    A = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=gen)
    B = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=gen)
    return cg.CycleTrainer(state, A, B, cfg)


def test_pruned_weights_stay_zero_and_resume_is_exact():
    cfg = tiny_cfg("prune.networks=G,D", "model.n_layers=1", "data.resolution=16", "train.pool_size=3",
                   "train.total_kimg=0.012")
    nets = cg.build_networks(cfg)
    masks = cg.next_masks(cfg, {n: m.state_dict() for n, m in nets.items()}, {n: get_mask(m) for n, m in nets.items()}, 1)
    from degan.pruning import set_mask
    from degan.pruning.mask import masked_layers, raw_weight

    for n, m in nets.items():
        set_mask(m, masks[n])
    state = cg.make_state(nets, cfg)
    trainer = _trainer(cfg, state)
    for _ in range(3):
        stats = trainer.train_step()
    assert all(math.isfinite(v) for v in stats.values())
    for m in nets.values():
        assert all(bool((raw_weight(mod)[~wm.mask.bool()] == 0).all()) for _, mod, wm in masked_layers(m))
    saved = copy.deepcopy(state.state_dict())  # module state dicts alias the live tensors
    for _ in range(2):
        trainer.train_step()
    after = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in nets.items()}

    nets2 = cg.build_networks(cfg, seed=99)  # different init: everything must come from the checkpoint
    state2 = cg.make_state(nets2, cfg)
    state2.load_state_dict(saved)
    trainer2 = _trainer(cfg, state2)
    for _ in range(2):
        trainer2.train_step()
    assert state2.step == 5 and state2.cur_nimg == 10
    for n in cg.NETS:
        for k, v in nets2[n].state_dict().items():
            assert torch.equal(v, after[n][k]), (n, k)


# ---------------------------------------------------------------------------------------------------------------------
# data and config


def _npz(tmp_path, n=24, res=16):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8)
    y = np.arange(n, dtype=np.int64) % 3
    x[y == 1] //= 4  # domain 1 darker than domain 0
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=x, y_train=y)
    return path


def test_class_filter_and_subset(tmp_path):
    path = _npz(tmp_path)
    cfg = tiny_cfg("data.resolution=16", "model.n_layers=2", "data.subset=5", a=path, b=path)
    dom = cg.load_domain(str(path), "0,2", cfg.data, 0)
    assert dom.images.shape == (5, 3, 16, 16) and set((dom.indices % 3).tolist()) <= {0, 2}
    assert cg.parse_classes(" 2, 0 ,2") == [0, 2] and cg.parse_classes("all") is None
    with pytest.raises(DataError, match="no image with label"):
        cg.load_domain(str(path), "7", cfg.data, 0)
    with pytest.raises(ConfigError):
        cg.parse_classes("seven")


@pytest.mark.parametrize("sets,msg", [(["prune.networks=X"], "prune.networks"), (["data.resolution=30"], "multiple of 4"),
                                      (["train.bogus=1"], "unknown config key"), (["eval.metrics=is"], "fid and/or kid"),
                                      (["model.n_layers=5"], "n_layers")])
def test_bad_config_raises(sets, msg):
    with pytest.raises(ConfigError, match=msg):
        tiny_cfg(*sets)


# ---------------------------------------------------------------------------------------------------------------------
# the CLI end to end


def run_cli(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def test_cli_dry_run_writes_nothing(tmp_path):
    path = _npz(tmp_path)
    out = run_cli(["cyclegan", "--dry-run", "--data-a", path, "--data-b", path, "--classes-a", "0", "--classes-b", "1",
                   "--outdir", tmp_path / "runs", "--levels", "2"])
    assert "lambda_cycle: 10.0" in out and "levels: 2" in out and "# run folder" in out and "c0-to-toy-c1" in out
    assert not (tmp_path / "runs").exists()
    err = CliRunner().invoke(main, ["cyclegan", "--dry-run", "--data-a", str(path)])
    assert err.exit_code == 2 and "two domains" in err.output


def test_cli_two_level_ticket_run_writes_grids_masks_and_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(cg.run, "load_extractor", lambda cfg, device="cpu": FakeExtractor())
    path = _npz(tmp_path)
    args = ["cyclegan", "--data-a", path, "--data-b", path, "--classes-a", "0", "--classes-b", "1", "--outdir",
            tmp_path / "runs", "--levels", "1", "--prune", "G,D", "--width", "0.125", "--n-blocks", "1",
            "--resolution", "16", "--kimg", "0.016", "--batch", "2", "--snap", "0.008", "--device", "cpu",
            "--no-progress", "--set", "model.n_layers=1", "--set", "train.log_kimg=0.004"]
    out = run_cli(args)
    run = next((tmp_path / "runs").glob("cyclegan-*"))
    assert out.strip().endswith("report.md")
    for k, want in ((0, 1.0), (1, 0.8)):
        lv = run / f"level_{k}"
        assert (lv / "samples" / "translate_latest.png").is_file() and (lv / "translators.safetensors").is_file()
        masks = cg.load_masks(lv / "masks.safetensors")
        for n in cg.NETS:
            total = sum(m.numel() for m in masks[n].values())
            assert abs(density(masks[n]) - want) <= 2 / total
        recs = [json.loads(line) for line in (lv / "metrics.jsonl").read_text().splitlines()]
        names = {r["metric"] for r in recs}
        assert names == {"fid8_A2B_train", "kid8_A2B_train", "fid8_B2A_train", "kid8_B2A_train"}
        assert all(math.isfinite(r["value"]) for r in recs)
        assert all(r["protocol"]["extractor"] == "fake_pool12" and r["protocol"]["num_real"] == 8 for r in recs)
        stats = [json.loads(line) for line in (lv / "stats.jsonl").read_text().splitlines()]
        assert stats and all(math.isfinite(s["loss_G"]) and math.isfinite(s["loss_D"]) for s in stats)
        assert json.loads((lv / "done.json").read_text())["density_G"] == pytest.approx(want, abs=0.01)
    subset = json.loads((run / "subset.json").read_text())
    assert all(i % 3 == 0 for i in subset["A"]["indices"]) and all(i % 3 == 1 for i in subset["B"]["indices"])
    # the shared report: a table over levels with densities and the four metrics, translation grids
    report = (run / "report.md").read_text()
    assert re.search(r"\| 1 \| 0\.(8|79)\d* \| 0\.(8|79)\d* \| 20\.0 % \|", report), report
    assert "fid8_A2B_train" in report and "IMP_GD" in report
    assert "level_1/samples/translate_latest.png" in report and "G_ema" not in report
    table = run_cli(["report", "--dry-run", run])
    assert "kid8_B2A_train" in table and "| 0 | 1.0000 | 1.0000 |" in table
    # degan eval on a CycleGAN level: the same evaluation entry, appended to metrics.jsonl, report rewritten
    out = run_cli(["eval", run / "level_1", "--metrics", "fid_train", "--num-gen", "6", "--no-progress"])
    assert "level_1\tfid6_A2B_train\t" in out and "level_1\tfid6_B2A_train\t" in out
    assert "fid6_A2B_train" in (run / "level_1" / "metrics.jsonl").read_text() and out.strip().endswith("report.md")
    G = cg.load_translators(run / "level_1")
    assert G["G_AB"](torch.zeros(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    # idempotent: the re-run skips both finished levels and trains nothing
    before = sorted(p.name for p in (run / "level_1" / "checkpoints").iterdir())
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0 and res.output.count("already finished") == 2
    assert sorted(p.name for p in (run / "level_1" / "checkpoints").iterdir()) == before


def test_late_rewinding_starts_levels_from_the_dense_run(tmp_path):
    """prune.rewind=step:2 (the shared RewindPoint): level 0 saves all four networks after 2 iterations, level 1 starts
    from them (the unpruned discriminators exactly), not from theta_0; the variant says so."""
    path = _npz(tmp_path)
    run_cli(["cyclegan", "--data-a", path, "--data-b", path, "--classes-a", "0", "--classes-b", "1", "--outdir",
             tmp_path / "runs", "--levels", "1", "--width", "0.125", "--n-blocks", "1", "--resolution", "16", "--kimg",
             "0.008", "--batch", "2", "--snap", "0.008", "--device", "cpu", "--no-progress", "--metrics", "none",
             "--set", "model.n_layers=1", "--set", "prune.rewind=step:2", "--set", "train.keep_checkpoints=5"])
    run = next((tmp_path / "runs").glob("cyclegan-*"))
    saved = torch.load(run / "level_0" / "rewind.pt", weights_only=True)
    assert saved["step"] == 2 and set(cg.NETS) <= set(saved)
    start = torch.load(run / "level_1" / "checkpoints" / "ckpt-000000000.pt", weights_only=True)["state"]["nets"]
    init = torch.load(run / "init.pt", weights_only=True)["nets"]
    assert all(torch.equal(start["D_A"][k], v) for k, v in saved["D_A"].items())
    assert not all(torch.equal(start["D_A"][k], v) for k, v in init["D_A"].items())
    done = json.loads((run / "level_1" / "done.json").read_text())
    assert done["variant"] == "IMP_G@step:2" and done["rewind"] == "step:2"
    with pytest.raises(ConfigError, match="prune.rewind"):
        tiny_cfg("prune.rewind=soon")


@pytest.mark.slow
def test_fashion_mnist_sneaker_to_ankle_boot_ticket(shared_data, tmp_path):
    """Real data: Fashion-MNIST class 7 (sneaker) vs class 9 (ankle boot), 200 unpaired images each, 32 px, 1 channel;
    a dense level and one IMP_G level on a short schedule, FID/KID with the real Inception network."""
    from degan.metrics import find_inception_weights

    try:
        find_inception_weights()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"FID Inception weights unavailable: {e}")
    fm = shared_data / "fashion-mnist"
    if not fm.is_dir():
        pytest.skip(f"{fm} is absent")
    out = run_cli(["cyclegan", "--data-a", fm, "--data-b", fm, "--classes-a", "7", "--classes-b", "9", "--subset", "200",
                   "--resolution", "32", "--channels", "1", "--width", "0.25", "--n-blocks", "2", "--levels", "1",
                   "--kimg", "0.2", "--batch", "4", "--snap", "0.2", "--num-images", "48", "--device", "cpu",
                   "--outdir", tmp_path / "runs", "--no-progress"])
    run = next((tmp_path / "runs").glob("cyclegan-*"))
    assert (run / "report.md").is_file() and out.strip().endswith("report.md")
    data = json.loads((run / "data.json").read_text())
    assert data["A"]["classes"] == [7] and data["B"]["classes"] == [9] and data["A"]["num_selected"] == 200
    for k, want in ((0, 1.0), (1, 0.8)):
        done = json.loads((run / f"level_{k}" / "done.json").read_text())
        assert done["density_G"] == pytest.approx(want, abs=1e-3) and done["density_D"] == 1.0
        recs = [json.loads(x) for x in (run / f"level_{k}" / "metrics.jsonl").read_text().splitlines()]
        assert {r["metric"] for r in recs} == {"fid48_A2B_train", "kid48_A2B_train", "fid48_B2A_train",
                                              "kid48_B2A_train"}
        assert all(math.isfinite(r["value"]) and r["protocol"]["extractor_sha256"] for r in recs)
        assert all(r["value"] > 0 for r in recs if r["metric"].startswith("fid"))
