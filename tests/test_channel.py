"""Channel-pruned tickets: proximal L1 math, distillation, channel selection, compact rebuild, export, a tiny run."""

import copy
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from degan.config import resolve
from degan.errors import CheckpointError
from degan.export import export_compact, load_compact, load_stage_generator
from degan.fileio import write_json
from degan.losses import GANObjective
from degan.lottery.layout import StageLayout
from degan.lottery.runner import save_G_ema
from degan.models import create_model
from degan.pruning import add_masks, get_mask, ones_like_mask, prune_global_magnitude, raw_weight, set_mask
from degan.pruning.slimming import (
    GeneratorDistillation,
    SlimmingProximal,
    bn_scales,
    build_compact_generator,
    compact_generator,
    count_params,
    flops_ratio,
    proximal_l1,
    select_channels,
    slice_mask,
    zero_channels,
)
from degan.train import make_state

TINY = {"dcgan": {"resolution": 16, "width": 0.25, "z_dim": 16}, "sngan32": {"width": 0.0625, "z_dim": 16}}


def gen(name="dcgan", seed=0, masks=True, **kw):
    torch.manual_seed(seed)
    G, D = create_model(name, pre_sn_hook=add_masks if masks else None, **{**TINY[name], **kw})
    return G, D


@torch.no_grad()
def scramble_norms(G, seed=1):
    """Random gammas (both signs), betas and running statistics, so equalities are not trivially true."""
    g = torch.Generator().manual_seed(seed)
    for m in G.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.bias.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return G


def random_kept(G, seed=2, frac=0.5):
    g = torch.Generator().manual_seed(seed)
    return {n: sorted(torch.randperm(m.num_features, generator=g)[: max(1, int(m.num_features * frac))].tolist())
            for n, m in bn_scales(G).items()}


# ------------------------------------------------------------------------------------------------ proximal step


def test_proximal_operator_on_hand_values():
    x = torch.tensor([0.5, -0.5, 1e-4, -1e-4, 0.0, 2e-3])
    out = proximal_l1(x, 1e-3)
    assert torch.allclose(out, torch.tensor([0.499, -0.499, 0.0, 0.0, 0.0, 1e-3]), atol=1e-7)
    assert (out[2:5] == 0).all()  # exactly zero, not tiny


def test_slimming_callback_shrinks_gammas_by_rho_times_lr_and_logs_zero_fraction():
    G, D = gen()
    state = make_state(G, D, lr_G=0.01, lr_D=0.01, betas=(0.0, 0.9))
    trainer = SimpleNamespace(state=state)
    cb = SlimmingProximal(rho=0.5)  # threshold rho * lr = 0.005
    cb.on_train_start(trainer)
    bn0 = G.bn0
    with torch.no_grad():
        bn0.weight.copy_(torch.linspace(-0.01, 0.01, bn0.num_features))
    before = {n: m.weight.detach().clone() for n, m in bn_scales(G).items()}
    stats = {"loss_G": 1.0}
    cb.on_step_end(trainer, stats)
    for n, m in bn_scales(G).items():
        expect = torch.sign(before[n]) * torch.clamp(before[n].abs() - 0.005, min=0)
        assert torch.allclose(m.weight, expect, atol=1e-8), n
    zeros = int((bn0.weight == 0).sum())
    assert zeros == int((before["bn0"].abs() <= 0.005).sum()) > 0
    total = sum(m.num_features for m in bn_scales(G).values())
    assert stats["slim_zero_frac"] == pytest.approx(zeros / total)
    assert "slim_gamma_abs" in stats and stats["loss_G"] == 1.0
    with pytest.raises(ValueError, match="rho"):
        SlimmingProximal(rho=-1)


def test_selecting_norms_follow_the_dependency_graph():
    G, _ = gen("dcgan")
    assert list(bn_scales(G)) == ["bn0", "blocks.2", "blocks.6"]  # every BN of the DCGAN generator
    G, _ = gen("sngan32")
    # bn1 of a residual block shares its input with the 1x1 shortcut: gamma = 0 does not silence the channel
    assert list(bn_scales(G)) == ["blocks.0.bn2", "blocks.1.bn2", "blocks.2.bn2", "bn"]


# ------------------------------------------------------------------------------------------------ distillation


def test_distillation_adds_the_hand_computed_mse_and_advances_bn_stats_once():
    G, D = gen(masks=False)
    teacher, _ = gen(seed=5, masks=False)
    D.eval()  # spectral norm without power iteration: D is a fixed function for the comparison
    z = torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(3))
    inner = GANObjective("hinge")
    G_ref = copy.deepcopy(G)
    ref_loss, _ = inner.g_loss(G_ref, D, z)
    with torch.no_grad():
        fake = copy.deepcopy(G).train()(z)
        target = teacher.eval()(z)
    expect = ref_loss.detach() + 0.7 * torch.mean((fake - target) ** 2)

    obj = GeneratorDistillation(inner, teacher, weight=0.7)
    loss, stats = obj.g_loss(G, D, z)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-5)
    assert stats["loss_G_dist"] == pytest.approx(torch.mean((fake - target) ** 2).item(), rel=1e-5)
    assert stats["loss_G_gan"] == pytest.approx(ref_loss.item(), rel=1e-5)
    assert stats["loss_G"] == pytest.approx(loss.item())
    # the extra forward pass leaves the running statistics as one plain G step does
    assert torch.equal(G.bn0.running_mean, G_ref.bn0.running_mean)
    # everything else is the wrapped objective's
    real = torch.rand(4, 3, 16, 16) * 2 - 1
    torch.manual_seed(0)
    a, _ = obj.d_loss(G, D, real, z[:4])
    torch.manual_seed(0)
    b, _ = inner.d_loss(G, D, real, z[:4])
    assert a.item() == pytest.approx(b.item())
    assert obj.loss is inner.loss
    assert not any(p.requires_grad for p in teacher.parameters())


# ------------------------------------------------------------------------------------------------ selection


def test_select_channels_from_hand_set_gammas():
    G, _ = gen()
    with torch.no_grad():
        for m in bn_scales(G).values():
            m.weight.fill_(1.0)
        G.bn0.weight[[1, 3]] = 0.0
        G.blocks[2].weight[0] = 1e-3
        G.blocks[2].weight[5] = -0.5
    kept = select_channels(G)
    assert kept["bn0"] == [i for i in range(G.bn0.num_features) if i not in (1, 3)]
    assert kept["blocks.2"] == list(range(G.blocks[2].num_features))
    assert 0 not in select_channels(G, threshold=1e-2)["blocks.2"]
    with torch.no_grad():
        G.blocks[6].weight.zero_()
        G.blocks[6].weight[4] = 0.0
    with pytest.warns(UserWarning, match="all 8 channels of blocks.6"):
        kept = select_channels(G)
    assert len(kept["blocks.6"]) == 1
    with pytest.raises(ValueError, match="threshold"):
        select_channels(G, threshold=-1)


def test_prune_fraction_removes_the_globally_smallest_gammas():
    G, _ = gen()
    layers = bn_scales(G)
    total = sum(m.num_features for m in layers.values())
    with torch.no_grad():
        values = torch.randperm(total).float() + 1.0  # distinct magnitudes
        start = 0
        for m in layers.values():
            m.weight.copy_(values[start:start + m.num_features] * (-1) ** start)
            start += m.num_features
    kept = select_channels(G, prune_fraction=0.25)
    assert sum(map(len, kept.values())) == total - round(0.25 * total)
    cut = torch.sort(values).values[round(0.25 * total) - 1]
    for n, m in layers.items():
        assert kept[n] == (m.weight.abs() > cut).nonzero().flatten().tolist()


# ------------------------------------------------------------------------------------------------ compact network


@pytest.mark.parametrize("name", ["dcgan", "sngan32"])
def test_compact_generator_is_smaller_and_identical_to_the_zeroed_network(name):
    G, _ = gen(name)
    scramble_norms(G)
    kept = random_kept(G)
    z = torch.randn(5, G.z_dim, generator=torch.Generator().manual_seed(4))
    G.eval()
    with torch.no_grad():
        before = G(z)
    small = compact_generator(G, kept)
    masked = zero_channels(copy.deepcopy(G), kept)
    assert count_params(small) < count_params(G)
    assert 0 < flops_ratio(small, G) < 1
    assert not any("mask" in k or "parametrizations" in k for k in small.state_dict())
    for mode in ("eval", "train"):
        small.train(mode == "train")
        masked.train(mode == "train")
        with torch.no_grad():
            assert (small(z) - masked(z)).abs().max().item() < 1e-5, mode
    # the source network is untouched (weights, and parametrizations still work)
    with torch.no_grad():
        assert torch.equal(G.eval()(z), before)
    for n, idx in kept.items():
        assert dict(small.named_modules())[n].num_features == len(idx)


@pytest.mark.parametrize("name", ["dcgan", "sngan32"])
def test_zero_gamma_channels_of_a_fresh_generator_are_removed_exactly(name):
    """At init every beta is 0, so zeroing only the gammas already silences the channels."""
    G, _ = gen(name)
    kept = random_kept(G, seed=3, frac=0.3)
    modules = dict(G.named_modules())
    with torch.no_grad():
        for n, idx in kept.items():
            drop = torch.ones(modules[n].num_features, dtype=torch.bool)
            drop[idx] = False
            modules[n].weight[drop] = 0.0
    assert select_channels(G) == kept
    small = compact_generator(G, select_channels(G))
    z = torch.randn(4, G.z_dim)
    with torch.no_grad():
        assert (small.eval()(z) - G.eval()(z)).abs().max().item() < 1e-5


def test_compact_of_an_imp_masked_generator_folds_the_mask():
    G, _ = gen()
    scramble_norms(G)
    mask = prune_global_magnitude(G, ones_like_mask(G), 0.6)
    set_mask(G, mask)
    kept = random_kept(G, seed=7)
    small = compact_generator(G, kept)
    small_mask = slice_mask(G, kept, mask)
    z = torch.randn(4, G.z_dim)
    with torch.no_grad():
        assert (small.eval()(z) - zero_channels(copy.deepcopy(G), kept).eval()(z)).abs().max() < 1e-5
    for name, m in small_mask.items():
        w = dict(small.named_parameters())[name]
        assert m.shape == w.shape and m.dtype == torch.bool
        assert (w[~m] == 0).all()
    add_masks(small)
    set_mask(small, small_mask)  # fits the compact layers


def test_slicing_theta0_keeps_exactly_the_kept_indices():
    G0, _ = gen(masks=True)
    kept = {"bn0": [0, 2, 5, 31], "blocks.2": [1, 2, 3], "blocks.6": [7]}
    small = compact_generator(G0, kept)
    k0, k1, k2 = (torch.tensor(kept[n]) for n in ("bn0", "blocks.2", "blocks.6"))
    W = raw_weight  # theta_0 of a (possibly masked) layer
    rows = (k0[:, None] * 16 + torch.arange(16)).flatten()  # fc output c*16..c*16+15 is channel c at 4x4
    assert torch.equal(small.fc.weight, W(G0.fc)[rows])
    assert torch.equal(small.bn0.weight, G0.bn0.weight[k0]) and torch.equal(small.bn0.bias, G0.bn0.bias[k0])
    assert torch.equal(small.blocks[1].weight, W(G0.blocks[1])[k1][:, k0])
    assert torch.equal(small.blocks[5].weight, W(G0.blocks[5])[k2][:, k1])
    assert torch.equal(small.to_img.weight, W(G0.to_img)[:, k2])
    assert torch.equal(small.to_img.bias, G0.to_img.bias)
    assert small.c0 == 4 and small(torch.randn(2, G0.z_dim)).shape == (2, 3, 16, 16)


def test_compact_rejects_bad_selections():
    G, _ = gen("sngan32")
    with pytest.raises(ValueError, match="not channel-selecting"):
        compact_generator(G, {"blocks.0.bn1": [0]})
    with pytest.raises(ValueError, match="no channel kept"):
        compact_generator(G, {"bn": []})
    with pytest.raises(ValueError, match="distinct and in"):
        compact_generator(G, {"bn": [0, 0]})


# ------------------------------------------------------------------------------------------------ export


def tiny_cfg(tmp_path=None, **train):
    o = {"model": {"name": "dcgan", "width": 0.25, "z_dim": 16}, "data": {"resolution": 16},
         "train": {"total_kimg": 0.032, "batch_D": 8, "batch_G": 8, "n_dis": 1, "snap_kimg": 0.032,
                   "log_kimg": 0.016, "device": "cpu", **train},
         "eval": {"metrics": "none"}}
    if tmp_path is not None:
        path = tmp_path / "imgs.npz"
        np.savez(path, images=np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8))
        o["data"]["source"] = str(path)
    return resolve(overrides=o)


def fake_stage(root, G, cfg, extra=None):
    stage = StageLayout(root)
    save_G_ema(stage, G, cfg, extra)
    write_json(stage.done, {"level": 0})
    return stage


def test_export_of_an_imp_level_folds_masks_and_round_trips(tmp_path):
    cfg = tiny_cfg()
    G, _ = gen()
    scramble_norms(G)
    set_mask(G, prune_global_magnitude(G, ones_like_mask(G), 0.5))
    stage = fake_stage(tmp_path / "run" / "level_1", G.eval(), cfg)
    out = export_compact(stage.root, tmp_path / "export")
    sd = load_file(str(out / "generator.safetensors"))
    assert not any("mask" in k or "parametrizations" in k for k in sd)
    assert any(k.endswith("mask") for k in G.state_dict())
    assert sd["blocks.1.weight"].shape == G.blocks[1].weight.shape
    assert (sd["blocks.1.weight"][~get_mask(G)["blocks.1.weight"]] == 0).all()
    meta = json.loads((out / "generator.json").read_text())
    assert meta["model"] == "dcgan" and meta["kept_channels"] is None and meta["z_dim"] == 16
    assert meta["resolution"] == 16 and meta["weight_density"] < 1
    H = load_compact(out)
    z = torch.randn(4, 16)
    with torch.no_grad():
        assert (H(z) - G.eval()(z)).abs().max() < 1e-6


def test_export_of_a_channel_ticket_gives_the_small_network(tmp_path):
    cfg = tiny_cfg()
    G, _ = gen()
    kept = random_kept(G)
    small = build_compact_generator("dcgan", TINY["dcgan"], kept, prunable="conv,convT")
    scramble_norms(small)
    set_mask(small, prune_global_magnitude(small, ones_like_mask(small), 0.3))
    stage = fake_stage(tmp_path / "run" / "level_0_channel", small.eval(), cfg,
                       {"kept_channels": kept, "compact": True})
    assert (load_stage_generator(stage).bn0.num_features == len(kept["bn0"]))
    out = export_compact(stage.root, tmp_path / "export")
    H = load_compact(out)
    assert count_params(H) < count_params(gen(masks=False)[0])
    z = torch.randn(4, 16)
    with torch.no_grad():
        assert (H(z) - small(z)).abs().max() < 1e-6


def test_export_errors_are_clear(tmp_path):
    cfg = tiny_cfg()
    G, _ = gen()
    with pytest.raises(CheckpointError, match="not a finished stage"):
        (tmp_path / "run" / "level_0").mkdir(parents=True)
        export_compact(tmp_path / "run" / "level_0", tmp_path / "x")
    stage = fake_stage(tmp_path / "run" / "level_1", G.eval(), cfg)
    out = export_compact(stage.root, tmp_path / "export")
    meta = json.loads((out / "generator.json").read_text())
    write_json(out / "generator.json", {**meta, "model": "nope"})
    with pytest.raises(CheckpointError, match="known models: "):
        load_compact(out)
    write_json(out / "generator.json", {**meta, "kwargs": {**meta["kwargs"], "width": 0.5}})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_compact(out)
    with pytest.raises(CheckpointError, match="has no generator.json"):
        load_compact(tmp_path / "empty")


# ------------------------------------------------------------------------------------------------ end to end


def test_channel_branch_end_to_end(tmp_path):
    from degan.lottery.channel import run_channel_branch
    from degan.lottery.runner import dense_masks, initial_weights, prepare, run_stage

    t0 = time.perf_counter()
    cfg = tiny_cfg(tmp_path)
    exp = prepare(cfg, tmp_path / "runs", "ticket", log=lambda m: None)
    run_stage(exp, exp.run.level(0), initial_weights(exp), dense_masks(cfg), progress=False)
    summary = run_channel_branch(exp, exp.run.level(0), rho=0.5, prune_fraction=0.5, slim_kimg=0.016,
                                 progress=False)
    slim, chan = exp.run.branch(0, "slim"), exp.run.branch(0, "channel")
    assert slim.is_done() and chan.is_done()
    stats = [json.loads(line) for line in slim.stats.read_text().splitlines()]
    assert "slim_zero_frac" in stats[-1] and "loss_G_dist" in stats[-1]
    assert 0 < summary["flops_ratio"] < 1
    assert summary["channel_sparsity"] == pytest.approx(1 - summary["flops_ratio"])
    assert summary["params_G_compact"] < summary["params_G_dense"]
    kept = summary["kept_channels"]
    assert set(kept) == {"bn0", "blocks.2", "blocks.6"}
    meta = json.loads(chan.generator_json.read_text())
    assert meta["kept_channels"] == kept
    # the retrained ticket started from the sliced theta_0
    init = torch.load(exp.run.init, weights_only=True)["G"]
    first = torch.load(chan.checkpoints / "ckpt-000000000.pt", weights_only=True)["state"]["G"]
    assert torch.equal(first["bn0.weight"], init["bn0.weight"][kept["bn0"]])
    rows = (torch.tensor(kept["bn0"])[:, None] * 16 + torch.arange(16)).flatten()
    assert torch.equal(first["fc.weight"], init["fc.weight"][rows])
    out = export_compact(chan.root, tmp_path / "export")
    H, ref = load_compact(out), load_stage_generator(chan)
    z = torch.randn(3, 16)
    with torch.no_grad():
        assert (H(z) - ref(z)).abs().max() < 1e-6
    assert run_channel_branch(exp, exp.run.level(0), progress=False) == summary  # finished: skipped
    assert time.perf_counter() - t0 < 60


def test_onnx_export_computes_the_same_images(tmp_path):
    onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx + onnxscript (requirements-lock.txt has them)")
    pytest.importorskip("onnxscript", reason="ONNX export needs onnx + onnxscript (requirements-lock.txt has them)")
    from onnx.reference import ReferenceEvaluator

    cfg = tiny_cfg()
    G, _ = gen()
    set_mask(G, prune_global_magnitude(G, ones_like_mask(G), 0.5))
    stage = fake_stage(tmp_path / "run" / "level_1", G.eval(), cfg)
    out = export_compact(stage.root, tmp_path / "export", onnx=True)
    model = onnx.load(str(out / "generator.onnx"))
    assert [i.name for i in model.graph.input] == ["z"] and [o.name for o in model.graph.output] == ["images"]
    z = torch.randn(3, 16)  # another batch size than the export's
    (x,) = ReferenceEvaluator(model).run(None, {"z": z.numpy()})
    with torch.no_grad():
        ref = G.eval()(z)
    assert x.shape == tuple(ref.shape) and np.abs(x - ref.numpy()).max() < 1e-4
    assert "onnxruntime" in (out / "LOADING.md").read_text()


def test_onnx_export_without_the_packages_is_one_clear_error(tmp_path, monkeypatch):
    import importlib.util

    from degan.errors import DeganError
    from degan.export import write_onnx

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    G, _ = gen()
    with pytest.raises(DeganError, match="pip install onnx onnxscript"):
        write_onnx(G.eval(), tmp_path / "g.onnx")
    assert not (tmp_path / "g.onnx").exists()
