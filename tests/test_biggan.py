"""BigGAN (``biggan``): hierarchical z, shared embedding, conditional BN, self-attention, spectral norm in G and D,
masks before spectral norm, AdvAug split points, presets, training through the CLI."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from degan.augment.advaug import split_D, split_G
from degan.cli import main
from degan.config import PRESETS, resolve
from degan.models import create_model
from degan.models.biggan import BIGGAN_ARCH, CondAffine, GBlock, SelfAttention
from degan.models.layers import has_spectral_norm
from degan.pruning.mask import add_masks, get_mask, masked_layers, prunable_modules, set_mask

WIDTH = {32: 0.05, 64: 0.02, 128: 0.01}  # tiny widths (at least 2 channels per block) so the tests run on a CPU


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread: with two, every small op waits for the other OpenMP thread, which on
    a busy 2-core machine made these tests ~10x slower (measured: a 4-step BigGAN CLI run 4 s vs 21-54 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(**kw):
    torch.manual_seed(0)
    kw.setdefault("width", WIDTH.get(kw.get("resolution", 32), 0.05))
    return create_model("biggan", **kw)


# ---------------------------------------------------------------------------------------------------------------------
# architecture


@pytest.mark.parametrize("res,chunks", [(32, 4), (64, 5), (128, 6)])
def test_hierarchical_z_chunks_and_shared_embedding(res, chunks):
    G, D = build(resolution=res, num_classes=7)
    assert G.z_dim == 20 * chunks and G.n_chunks == chunks
    z = torch.randn(3, G.z_dim)
    parts = G.split_z(z)
    assert len(parts) == chunks and all(p.shape == (3, 20) for p in parts)
    assert torch.equal(torch.cat(parts, 1), z)
    ys = G.conditioning(z, torch.tensor([0, 3, 6]))
    assert len(ys) == chunks - 1 and all(y.shape == (3, 128 + 20) for y in ys)
    assert torch.equal(ys[1][:, 128:], parts[2])  # block i gets chunk i + 1 after the shared embedding
    assert torch.equal(ys[0][:, :128], ys[-1][:, :128])  # one embedding shared by all blocks
    assert G.shared.weight.shape == (7, 128) and D.out.embed.weight.shape == (7, D.feature_dim)
    assert sum(isinstance(b, GBlock) for b in G.blocks) == chunks - 1
    # the first linear sees chunk 0 only: changing the other chunks leaves the 4x4 map unchanged
    z2 = z.clone()
    z2[:, 20:] += 1.0
    c = torch.zeros(3, dtype=torch.long)
    G.eval()  # no spectral-norm power iteration between the two calls
    assert torch.equal(G.input_layer(z, c), G.input_layer(z2, c))
    with torch.no_grad():
        assert not torch.allclose(G(z, c), G(z2, c))


def test_z_dim_must_split_evenly_and_options_are_checked():
    with pytest.raises(ValueError, match="multiple of 4"):
        build(z_dim=81)
    assert build(z_dim=128)[0].chunk == 32
    with pytest.raises(ValueError, match="resolution must be one of"):
        build(resolution=48)
    with pytest.raises(ValueError, match="attn_resolution"):
        build(attn_resolution=4)
    G, D = build(attn_resolution=0)
    assert not any(isinstance(m, SelfAttention) for m in [*G.modules(), *D.modules()])


@pytest.mark.parametrize("res,k", [(32, 0), (32, 5), (64, 5), (128, 0), (128, 5)])
def test_output_shapes_and_ranges(res, k):
    G, D = build(resolution=res, num_classes=k)
    z = torch.randn(2, G.z_dim)
    c = torch.tensor([1, 4]) if k else None
    x = G(z, c)
    assert x.shape == (2, 3, res, res) and x.dtype == torch.float32
    assert x.abs().max() <= 1.0 and x.std() > 0
    f = D.features(x, c)
    assert f.shape == (2, D.feature_dim) and (f >= 0).all()
    s = D(x, c)
    assert s.shape == (2,) and torch.isfinite(s).all()
    if res == 32:
        g = build(resolution=res, num_classes=k, img_channels=1)[0]
        assert g(z, c).shape == (2, 1, res, res)


def test_paper_widths_at_32px():
    arch = BIGGAN_ARCH[32]  # width 1: G 384 / D 192 channels in every block (SPEC §6)
    assert {m * arch["ch_G"] for m in arch["G_mult"]} == {384} and {m * arch["ch_D"] for m in arch["D_out"]} == {192}
    G, D = build(num_classes=10, width=0.25)  # a quarter of it, to keep the test fast
    assert G.c0 == 96 and all(b.conv1.out_channels == 96 for b in G.blocks if isinstance(b, GBlock))
    assert D.feature_dim == 48
    # self-attention after G block 2 (16x16) and D block 1 (16x16), SPEC §6
    kinds = [type(b).__name__ for b in G.blocks]
    assert kinds == ["GBlock", "GBlock", "SelfAttention", "GBlock"]
    assert type(D.blocks[1]).__name__ == "SelfAttention"


def test_self_attention_starts_as_identity_and_learns():
    att = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(att(x), x)
    with torch.no_grad():
        att.gamma.fill_(1.0)
    assert not torch.allclose(att(x), x)


def test_orthogonal_init_and_conditional_bn():
    G, D = create_model("biggan", width=0.05, spectral_norm=False, num_classes=3)
    w = G.blocks[0].conv1.weight.flatten(1)  # [out, in*9], out <= in*9: orthonormal rows
    assert torch.allclose(w @ w.T, torch.eye(w.shape[0]), atol=1e-4)
    bn = G.blocks[0].bn1
    assert isinstance(bn.gain, CondAffine) and not bn.bn.affine
    x, y = torch.randn(4, bn.bn.num_features, 4, 4), torch.randn(4, bn.gain.weight.shape[1])
    with torch.no_grad():
        bn.gain.weight.zero_(), bn.bias.weight.zero_(), bn.bias.bias.fill_(0.5)
    assert torch.allclose(bn(x, y), bn.bn(x) + 0.5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# spectral norm, masks, pruning


def test_spectral_norm_in_G_and_D_and_what_is_prunable():
    G, D = build(num_classes=3)
    assert has_spectral_norm(G.linear) and has_spectral_norm(G.to_img) and has_spectral_norm(G.blocks[0].bn1.gain)
    assert has_spectral_norm(D.out.linear) and has_spectral_norm(D.out.embed)
    assert not has_spectral_norm(G.shared, "weight")  # G's shared embedding is plain, as in BigGAN
    for net in (G, D):
        names = [n for n, _ in prunable_modules(net, "conv,linear")]
        assert names and all("bn" not in n and "shared" not in n and "embed" not in n for n in names)
    assert any(n.startswith("linear") for n, _ in prunable_modules(G, "conv,linear"))
    assert not any(n.startswith("linear") for n, _ in prunable_modules(G, "conv"))


def test_masks_compose_with_spectral_norm():
    torch.manual_seed(0)
    G, D = create_model("biggan", width=0.05, num_classes=3, pre_sn_hook=lambda n: add_masks(n, "conv,linear"))
    for net in (G, D):
        mask = {k: torch.rand(v.shape) > 0.5 for k, v in get_mask(net).items()}
        set_mask(net, mask)
        for name, module, _ in masked_layers(net):
            kinds = [type(p).__name__ for p in module.parametrizations.weight]
            assert kinds == ["WeightMask", "_SpectralNorm"]  # mask first, then spectral norm (SPEC §3)
        net.train()
        for _ in range(30):  # power iterations converge in training-mode forwards
            for _, module, _ in masked_layers(net):
                module.weight
        for name, module, _ in masked_layers(net):
            w = module.weight.detach().flatten(1)
            assert torch.linalg.matrix_norm(w, ord=2) == pytest.approx(1.0, abs=0.05), name
            raw = module.parametrizations.weight.original
            assert (module.weight.detach()[~mask[name]] == 0).all() and raw.shape == mask[name].shape


# ---------------------------------------------------------------------------------------------------------------------
# AdvAug split points


def test_advaug_split_points():
    G, D = build(num_classes=4)
    z, c = torch.randn(3, G.z_dim), torch.tensor([0, 1, 3])
    G1, G2 = split_G(G, None)
    G.eval()
    h = G1(z, c)
    assert h.shape == (3, G.c0, 4, 4)
    with torch.no_grad():
        assert torch.allclose(G2(h, c), G(z, c), atol=1e-6)
        assert not torch.allclose(G2(h + 0.1, c), G(z, c))  # the perturbation acts on the 4x4 feature
    with pytest.raises(ValueError, match="default AdvAug split"):
        split_G(G, 1)  # BigGAN's blocks need the conditioning: only the default split
    x = G(z, c)
    D.eval()
    D1, D2 = split_D(D, None)
    assert torch.allclose(D2(D1(x, c), c), D(x, c), atol=1e-5)
    for k in range(len(D.blocks)):
        D1k, D2k = split_D(D, k)
        assert torch.allclose(D2k(D1k(x, c), c), D(x, c), atol=1e-4)
    fresh = build(num_classes=4)[0]
    with pytest.raises(RuntimeError, match="input_layer"):
        fresh.synthesis(h, c)


def test_deepcopy_and_rebuild_after_a_forward():
    G, _ = build(num_classes=2)
    G1, _ = split_G(G, None)
    G1(torch.randn(2, G.z_dim), torch.tensor([0, 1]))  # leaves the conditioning of the batch on G
    G_ema = copy.deepcopy(G)
    assert G_ema._ys is None
    G2, _ = create_model("biggan", **{k: v for k, v in G.config.items() if k != "spectral_norm"})
    assert [v.shape for v in G2.state_dict().values()] == [v.shape for v in G.state_dict().values()]


# ---------------------------------------------------------------------------------------------------------------------
# presets and training


@pytest.mark.parametrize("name,res,lr_G,lr_D,batch,n_dis,num_gen", [
    ("biggan_cifar10", 32, 2e-4, 2e-4, 64, 5, 10_000),
    ("biggan_cifar100", 32, 2e-4, 2e-4, 64, 5, 10_000),
    ("biggan_tinyimagenet", 64, 4e-4, 1e-4, 256, 1, 10_000),
    ("biggan_imagenet128", 128, 2e-4, 5e-4, 256, 2, 50_000),
])
def test_presets_follow_the_paper(name, res, lr_G, lr_D, batch, n_dis, num_gen):
    assert name in PRESETS
    cfg = resolve(name)
    assert cfg.model.name == "biggan" and cfg.model.conditional and cfg.data.resolution == res
    assert (cfg.optim.lr_G, cfg.optim.lr_D, cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps) == \
        (lr_G, lr_D, 0.5, 0.999, 1e-6)
    assert (cfg.train.batch_D, cfg.train.batch_G, cfg.train.n_dis, cfg.train.loss) == (batch, batch, n_dis, "hinge")
    assert (cfg.train.ema_decay, cfg.train.ema_start_step) == (0.9999, 1000)
    assert cfg.train.total_kimg * 1000 / (n_dis * batch) == pytest.approx(100_000)  # 100k G steps
    assert cfg.eval.num_gen == num_gen and "_test" in cfg.eval.metrics


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def test_biggan_preset_trains_through_the_cli_without_nan(tmp_path):
    d = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(12):
        sub = d / "abc"[i % 3]
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    outdir = tmp_path / "runs"
    out = run(["train", "--preset", "biggan_cifar10", "--outdir", outdir, "--data", d, "--width", "0.05",
               "--batch", "4", "--kimg", "0.032", "--snap", "0.016", "--metrics", "none", "--no-progress",
               "--device", "cpu", "--set", "train.n_dis=2", "--set", "train.log_kimg=0.008",
               "--set", "train.ema_start_step=2", "--set", "eval.monitor_every_kimg=null", "--advaug"])
    assert "conditional on 3 classes" in out
    (run_dir,) = list(outdir.iterdir())
    stats = [json.loads(x) for x in (run_dir / "level_0" / "stats.jsonl").read_text().splitlines()]
    assert stats and all(math.isfinite(r["loss_D"]) and math.isfinite(r["loss_G"]) for r in stats)
    assert all(math.isfinite(r["loss_D_adv"]) for r in stats)
    gen = json.loads((run_dir / "level_0" / "generator.json").read_text())
    assert gen["model"] == "biggan" and gen["kwargs"]["num_classes"] == 3
    done = json.loads((run_dir / "level_0" / "done.json").read_text())
    assert done["step"] == 4  # 32 reals / (2 D steps x 4)


# ---------------------------------------------------------------------------------------------------------------------
# real data (slow)


@pytest.mark.slow
def test_conditional_sngan_and_biggan_on_cifar10_subset_write_fid_kid(tmp_path, shared_data):
    from degan.errors import DeganError
    from degan.metrics import find_inception_weights

    npz = shared_data / "cifar10-subset" / "cifar10_prefix_subset.npz"
    if not npz.is_file():
        pytest.skip(f"{npz} is absent")
    try:
        find_inception_weights()
    except DeganError as e:
        pytest.skip(f"Inception weights absent: {e}")
    outdir = tmp_path / "runs"
    common = ["--outdir", outdir, "--data", npz, "--cond", "--subset", "300", "--balance", "--batch", "16",
              "--kimg", "0.8", "--snap", "0.4", "--metrics", "fid_train,kid_train", "--num-gen", "200", "--no-progress",
              "--device", "cpu", "--augment", "diffaug:translation,cutout", "--set", "train.n_dis=2",
              "--set", "eval.monitor_every_kimg=0.4", "--set", "eval.batch_size=100"]
    run(["train", "--model", "sngan32", "--width", "0.125", *common])
    run(["train", "--preset", "biggan_cifar10", "--width", "0.1", *common, "--set", "train.ema_start_step=5"])
    runs = sorted(outdir.glob("train-*"))
    assert len(runs) == 2
    for run_dir in runs:
        recs = [json.loads(x) for x in (run_dir / "level_0" / "metrics.jsonl").read_text().splitlines()]
        names = {r["metric"]: r for r in recs}
        assert {"fid200_train", "kid200_train"} <= set(names), names.keys()
        assert names["fid200_train"]["value"] > 0 and math.isfinite(names["fid200_train"]["value"])
        assert names["kid200_train"]["std"] is not None and names["kid200_train"]["protocol"]["num_real"] == 300
        assert json.loads((run_dir / "data.json").read_text())["num_classes"] == 10
        stats = [json.loads(x) for x in (run_dir / "level_0" / "stats.jsonl").read_text().splitlines()]
        assert all(math.isfinite(r["loss_D"]) for r in stats)

