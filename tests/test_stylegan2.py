"""StyleGAN2 (Karras et al. 2020): shapes, modulation math, masks with equalised lr, truncation, split points, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from degan.cli import main
from degan.config import TrainConfig, resolve
from degan.models import create_model
from degan.models.stylegan2 import (
    EqualConv2d,
    ModulatedConv2d,
    conv2d_down,
    conv2d_up,
    downsample2d,
    fir_kernel,
    interpolate_styles,
    minibatch_stddev,
    modulated_conv2d,
    path_length_penalty,
    path_lengths,
    upsample2d,
)
from degan.pruning.mask import (
    add_masks,
    enforce_masks,
    get_mask,
    prunable_modules,
    raw_weight,
    set_mask,
)

TINY = dict(width=1 / 32, z_dim=32, mapping_layers=2)


def tiny(resolution=32, **kw):
    torch.manual_seed(0)
    return create_model("stylegan2", resolution=resolution, **{**TINY, **kw})


# ---------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("resolution", [32, 64])
def test_shapes_and_ranges(resolution):
    G, D = tiny(resolution)
    z = torch.randn(5, 32)
    img = G(z)
    assert img.shape == (5, 3, resolution, resolution) and img.dtype == torch.float32
    assert img.abs().max() <= 1 and img.std() > 0.05
    assert D(img).shape == (5,)
    assert D.features(img).shape == (5, D.feature_dim)
    h = G.input_layer(z)
    assert h.shape == (5, G.h_channels, 4, 4)
    # resolution blocks 4 .. R in G, R .. 8 in D
    assert len(G.blocks) == int(math.log2(resolution)) - 1 and len(D.blocks) == int(math.log2(resolution)) - 1
    G_lin, _ = tiny(resolution, tanh_output=False)
    assert G_lin(z).abs().max() > 1  # the paper's linear output is not squashed


def test_bad_resolution_and_options():
    for r in (16, 48, 512):
        with pytest.raises(ValueError, match="resolution"):
            create_model("stylegan2", resolution=r, **TINY)
    with pytest.raises(ValueError, match="mapping_layers"):
        create_model("stylegan2", resolution=32, **{**TINY, "mapping_layers": 0})


def test_full_size_channel_schedule():
    G, D = create_model("stylegan2", resolution=256)
    assert [b.conv1.conv.out_channels for b in G.blocks] == [512, 512, 512, 512, 512, 256, 128]
    assert G.z_dim == G.w_dim == 512 and len(G.mapping_net) == 8
    assert G.mapping_net[0].lr_mul == 0.01
    G, _ = create_model("stylegan2", resolution=32, channel_base=4096)  # DiffAugment's CIFAR model
    assert [b.conv1.conv.out_channels for b in G.blocks] == [512, 512, 256, 128]


# ---------------------------------------------------------------------------------------------- modulation math


def test_modulated_conv_hand_computed_1x1():
    # weight (o, i) = [[1, 2], [3, 4]], styles [2, 0.5] -> w' = [[2, 1], [6, 2]]; row norms sqrt(5), sqrt(40)
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(2, 2, 1, 1)
    styles = torch.tensor([[2.0, 0.5]])
    x = torch.tensor([1.0, -1.0]).reshape(1, 2, 1, 1).expand(1, 2, 3, 3)
    out = modulated_conv2d(x, weight, styles, demodulate=True, eps=0.0)
    expected = torch.tensor([1 / math.sqrt(5), 4 / math.sqrt(40)])
    assert torch.allclose(out[0, :, 1, 1], expected, atol=1e-6)
    out = modulated_conv2d(x, weight, styles, demodulate=False)
    assert torch.allclose(out[0, :, 1, 1], torch.tensor([1.0, 4.0]), atol=1e-6)


def test_modulated_conv_matches_per_sample_loop_3x3():
    torch.manual_seed(1)
    x, weight, styles = torch.randn(3, 2, 6, 6), torch.randn(2, 2, 3, 3), torch.rand(3, 2) + 0.5
    for demod in (True, False):
        out = modulated_conv2d(x, weight, styles, demodulate=demod)
        for n in range(3):
            w = weight * styles[n].reshape(1, 2, 1, 1)
            if demod:
                w = w / torch.sqrt((w ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
            assert torch.allclose(out[n:n + 1], F.conv2d(x[n:n + 1], w, padding=1), atol=1e-5)
    up = modulated_conv2d(x, weight, styles, up=True)
    assert up.shape == (3, 2, 12, 12)


def test_demodulated_output_has_unit_variance():
    torch.manual_seed(2)
    x = torch.randn(8, 64, 20, 20)
    weight, styles = torch.randn(32, 64, 3, 3), torch.rand(8, 64) * 3 + 0.1
    out = modulated_conv2d(x, weight, styles)[:, :, 1:-1, 1:-1]  # interior: no zero padding in the window
    assert abs(float(out.var()) - 1.0) < 0.05
    plain = modulated_conv2d(x, weight, styles, demodulate=False)[:, :, 1:-1, 1:-1]
    assert float(plain.var()) > 5  # without demodulation the scale follows the styles


def test_downsample_and_minibatch_stddev():
    x = torch.full((2, 3, 8, 8), 2.0)
    y = downsample2d(x)
    assert y.shape == (2, 3, 4, 4) and torch.allclose(y[:, :, 1:-1, 1:-1], torch.full((2, 3, 2, 2), 2.0))
    # group of 4 samples with constant maps 0, 1, 2, 3 -> population std sqrt(1.25) everywhere
    x = torch.arange(4.0).reshape(4, 1, 1, 1).expand(4, 2, 3, 3)
    out = minibatch_stddev(x, 4)
    assert out.shape == (4, 3, 3, 3)
    assert torch.allclose(out[:, 2], torch.full((4, 3, 3), math.sqrt(1.25)), atol=1e-4)
    # N = 6 with group 4 -> groups of 3: samples (0, 2, 4) and (1, 3, 5)
    x = torch.tensor([0.0, 10, 1, 10, 2, 10]).reshape(6, 1, 1, 1)
    out = minibatch_stddev(x, 4)[:, 1, 0, 0]
    assert torch.allclose(out[0::2], torch.full((3,), math.sqrt(2 / 3)), atol=1e-4)
    assert torch.allclose(out[1::2], torch.full((3,), 1e-4), atol=1e-4)


# ---------------------------------------------------------------------------------------------- FIR resampling


def _zero_insert(x):
    n, c, h, w = x.shape
    u = torch.zeros(n, c, 2 * h, 2 * w, dtype=x.dtype)
    u[:, :, ::2, ::2] = x
    return u


def _combined_kernel(weight, gain):
    """'full' correlation kernel of a [O, I, k, k] weight and the 4x4 FIR filter: [O, I, k + 3, k + 3]."""
    o, i, k, _ = weight.shape
    f = fir_kernel(gain, weight.dtype)
    out = torch.zeros(o, i, k + 3, k + 3, dtype=weight.dtype)
    for a in range(k):
        for b in range(k):
            out[:, :, a:a + 4, b:b + 4] += weight[:, :, a:a + 1, b:b + 1] * f
    return out


def test_fir_kernel():
    k = fir_kernel()
    assert k.shape == (4, 4) and float(k.sum()) == pytest.approx(1.0)
    assert torch.allclose(k, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    assert float(fir_kernel(4.0).sum()) == pytest.approx(4.0)


def test_fir_upsampling_matches_zero_insertion_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    # image up-sampling: zero insertion, then the gain-4 filter with zero padding (2, 1) (upfirdn2d, up = 2)
    ref = F.conv2d(F.pad(_zero_insert(x), (2, 1, 2, 1)), fir_kernel(4.0, x.dtype).expand(3, 1, 4, 4), groups=3)
    up = upsample2d(x)
    assert up.shape == (2, 3, 10, 12) and torch.allclose(up, ref, atol=1e-12)
    # its interior is bilinear up-sampling; a constant stays constant away from the border
    bil = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(up[..., 1:-1, 1:-1], bil[..., 1:-1, 1:-1], atol=1e-12)
    assert not torch.allclose(up[..., 0, :], bil[..., 0, :])  # zero padding at the border, not edge replicate
    const = upsample2d(torch.full((1, 1, 4, 4), 3.0))
    assert torch.allclose(const[..., 2:-2, 2:-2], torch.full((1, 1, 4, 4), 3.0))
    # up-sampling conv (transposed conv + FIR) = zero insertion + one 'full' kernel, centred: pad (k+3)/2.. here
    for k in (1, 3):
        w = torch.randn(4, 3, k, k, dtype=torch.float64)
        p0 = (k - 1) // 2 + 2
        p1 = k + 2 - p0
        ref = F.conv2d(F.pad(_zero_insert(x), (p0, p1, p0, p1)), _combined_kernel(w, 4.0))
        out = conv2d_up(x, w)
        assert out.shape == (2, 4, 10, 12) and torch.allclose(out, ref, atol=1e-10), k
    # k = 1: the up-sampling conv is the 1x1 conv of the FIR up-sampled input
    w = torch.randn(4, 3, 1, 1, dtype=torch.float64)
    assert torch.allclose(conv2d_up(x, w), F.conv2d(upsample2d(x), w), atol=1e-10)
    with pytest.raises(ValueError, match="odd kernel"):
        conv2d_up(x, torch.randn(4, 3, 2, 2, dtype=torch.float64))


def test_fir_downsampling_matches_full_resolution_reference():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    for k in (1, 3):
        w = torch.randn(4, 3, k, k, dtype=torch.float64)
        b = torch.randn(4, dtype=torch.float64)
        pad = (k + 1) // 2
        full = F.conv2d(F.pad(x, (pad, pad + 1, pad, pad + 1)), _combined_kernel(w, 1.0), b)  # stride 1
        ref = full[:, :, ::2, ::2][:, :, :4, :5]
        out = conv2d_down(x, w, b)
        assert out.shape == (2, 4, 4, 5) and torch.allclose(out, ref, atol=1e-10), k
    # blur-down keeps constants away from the border and its output pixel j is centred on inputs 2j, 2j + 1
    assert torch.allclose(downsample2d(torch.full((1, 1, 8, 8), 2.0))[..., 1:-1, 1:-1], torch.full((1, 1, 2, 2), 2.0))
    ramp = torch.arange(8.0).reshape(1, 1, 1, 8).expand(1, 1, 8, 8)
    assert torch.allclose(downsample2d(ramp)[0, 0, 2, 1:-1], torch.tensor([2.5, 4.5]))  # (2j + 0.5)


def test_modulated_up_conv_matches_per_sample_reference():
    torch.manual_seed(2)
    x, weight, styles = torch.randn(3, 2, 5, 5), torch.randn(4, 2, 3, 3), torch.rand(3, 2) + 0.5
    out = modulated_conv2d(x, weight, styles, demodulate=True, up=True)
    assert out.shape == (3, 4, 10, 10)
    for n in range(3):
        w = weight * styles[n].reshape(1, 2, 1, 1)
        w = w / torch.sqrt((w ** 2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        ref = F.conv2d(F.pad(_zero_insert(x[n:n + 1]), (3, 2, 3, 2)), _combined_kernel(w, 4.0))
        assert torch.allclose(out[n:n + 1], ref, atol=1e-5)


# ---------------------------------------------------------------------------------------------- mixing, precision


def test_style_mixing_cuts_per_sample():
    G, _ = tiny(mixing_prob=1.0)
    assert G.num_ws == 2 * 5 - 2
    z = torch.randn(64, 32)
    G.eval()
    assert G.styles(z).shape == (64, G.w_dim)  # eval: no mixing, one w
    G.train()
    w_avg = G.w_avg.clone()
    torch.manual_seed(3)
    ws = G.styles(z)
    w = G.mapping(z, update_w_avg=False)
    assert ws.shape == (64, G.num_ws, G.w_dim)
    cuts = []
    for n in range(64):
        same = [torch.allclose(ws[n, layer], w[n], atol=1e-6) for layer in range(G.num_ws)]
        cut = same.index(False)  # layers before the cut keep w, all later ones share the second w
        assert all(same[:cut]) and not any(same[cut:]) and 1 <= cut < G.num_ws
        assert torch.allclose(ws[n, cut:], ws[n, cut:cut + 1].expand(G.num_ws - cut, -1))
        cuts.append(cut)
    assert len(set(cuts)) > 3  # the cut is drawn per sample
    assert not torch.equal(G.w_avg, w_avg)  # the first w updates w_avg ...
    G.mixing_prob = 0.0
    assert G.styles(z).shape == (64, G.w_dim) and G.styles(z, broadcast=True).shape == (64, G.num_ws, G.w_dim)
    G.mixing_prob = 0.5
    torch.manual_seed(4)
    ws = G.styles(z)
    mixed = (ws[:, -1] - ws[:, 0]).abs().amax(dim=1) > 1e-6
    assert 16 < int(mixed.sum()) < 48  # about half of the samples mix
    assert G(z).shape == (64, 3, 32, 32)
    with pytest.raises(ValueError, match="mixing_prob"):
        tiny(mixing_prob=1.5)


def test_reduced_precision_on_the_top_resolutions():
    torch.manual_seed(0)
    G32, D32 = tiny()
    G16, D16 = tiny(num_fp16_res=2)
    G16.load_state_dict(G32.state_dict())
    D16.load_state_dict(D32.state_dict())
    assert G16.fp16_resolution == 16 and D16.fp16_resolution == 16
    assert [b.reduced_dtype for b in D16.blocks] == ["auto", "auto", "auto", None]  # fromRGB@32, 32, 16, 8
    seen = {}
    for blk, r in zip(G16.blocks, G16.block_resolutions):
        blk.conv1.register_forward_hook(lambda m, i, o, r=r: seen.__setitem__(r, o.dtype))
    for net in (G32, G16, D32, D16):
        net.eval()
    z = torch.randn(8, 32)
    img32, img16 = G32(z), G16(z)
    assert seen == {4: torch.float32, 8: torch.float32, 16: torch.bfloat16, 32: torch.bfloat16}
    assert img16.dtype == torch.float32 and torch.isfinite(img16).all()
    assert (img16 - img32).abs().max() < 0.1 and (img16 - img32).abs().mean() < 0.02
    assert (img16 - img32).abs().max() > 0  # it did run in bfloat16
    x = img32.detach()
    with torch.no_grad():
        l32, l16 = D32(x), D16(x)
    assert l16.dtype == torch.float32 and torch.isfinite(l16).all()
    assert torch.allclose(l16, l32, atol=0.05 * float(l32.abs().max()) + 1e-3)
    # gradients flow through the reduced blocks in float32 parameters
    D16.train()
    G16.train()
    D16(G16(z)).mean().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in G16.parameters())
    assert G16.blocks[-1].conv1.conv.weight.grad.dtype == torch.float32
    if not torch.cuda.is_available():
        G, _ = tiny(num_fp16_res=1, reduced_dtype="fp16")
        with pytest.raises(ValueError, match="CUDA"):
            G(z)
    with pytest.raises(ValueError, match="num_fp16_res"):
        tiny(num_fp16_res=-1)


def test_mbstd_group_option():
    _, D = tiny(mbstd_group=2)
    assert D.mbstd_group == 2 and D.config["mbstd_group"] == 2
    x = torch.randn(4, 3, 32, 32)
    D.eval()
    _, D4 = tiny()
    D4.load_state_dict(D.state_dict())
    D4.eval()
    assert not torch.allclose(D(x), D4(x))  # groups of 2 vs 4 give other std features
    with pytest.raises(ValueError, match="mbstd_group"):
        tiny(mbstd_group=0)


# ---------------------------------------------------------------------------------------------- masks + equalised lr


def test_masks_compose_with_equalised_lr():
    torch.manual_seed(0)
    G, D = create_model("stylegan2", resolution=32, pre_sn_hook=lambda n: add_masks(n, "conv,linear"), **TINY)
    names_G = [n for n, _ in prunable_modules(G, "conv")]
    assert "blocks.1.conv0.conv.weight" in names_G and "blocks.0.torgb.conv.weight" in names_G  # modulated convs
    assert any(n.startswith("mapping_net") for n, _ in prunable_modules(G, "linear"))
    gen = torch.Generator().manual_seed(3)
    for net in (G, D):
        set_mask(net, {k: torch.rand(v.shape, generator=gen) > 0.5 for k, v in get_mask(net).items()})
    # a modulated conv: the effective kernel is gain * (W ⊙ m), the stored W is masked (zeroed), scaled at use
    mod = G.blocks[1].conv0.conv
    assert isinstance(mod, ModulatedConv2d)
    m = mod.parametrizations.weight[0].mask
    x, s = torch.randn(2, mod.in_channels, 4, 4), torch.rand(2, mod.in_channels) + 0.5
    expected = modulated_conv2d(x, raw_weight(mod) * m / math.sqrt(mod.in_channels * 9), s, up=True)
    assert torch.allclose(mod(x, s), expected, atol=1e-5)
    # an equalised-lr conv of D
    conv = D.blocks[0]  # fromRGB
    assert isinstance(conv, EqualConv2d)
    x = torch.randn(2, 3, 32, 32)
    w_eff = raw_weight(conv) * conv.parametrizations.weight[0].mask / math.sqrt(3)
    assert torch.allclose(conv(x), F.leaky_relu(F.conv2d(x, w_eff, conv.bias), 0.2) * math.sqrt(2), atol=1e-5)
    # pruned entries do not matter in the forward, get no gradient, and stay zero after an optimizer step
    z = torch.randn(4, 32)
    G.eval()
    before = G(z)
    with torch.no_grad():
        raw_weight(mod).add_((1 - m) * 1e3)
    assert torch.allclose(G(z), before, atol=1e-5)
    enforce_masks(G)
    G.train()
    opt = torch.optim.Adam(G.parameters(), lr=0.1)
    D(G(z)).mean().backward()
    assert float((raw_weight(mod).grad * (1 - m)).abs().max()) == 0.0
    opt.step()
    enforce_masks(G)
    assert float((raw_weight(mod).detach() * (1 - m)).abs().max()) == 0.0


def test_no_spectral_norm_and_rebuild():
    G, D = tiny()
    assert not any(hasattr(m, "parametrizations") for m in list(G.modules()) + list(D.modules()))
    G2, D2 = create_model("stylegan2", **G.config)
    assert {k: v.shape for k, v in G2.state_dict().items()} == {k: v.shape for k, v in G.state_dict().items()}


# ---------------------------------------------------------------------------------------------- sampling


def test_truncation_psi_zero_gives_the_w_avg_image():
    G, _ = tiny()
    G.train()
    for _ in range(3):
        G.mapping(torch.randn(8, 32))  # training forwards move w_avg
    assert G.w_avg.abs().sum() > 0
    G.eval()
    w_avg = G.w_avg.clone()
    G.mapping(torch.randn(8, 32))
    assert torch.equal(G.w_avg, w_avg)  # eval forwards leave it alone
    imgs = G(torch.randn(6, 32), truncation_psi=0.0)
    ref = G.synthesis_from_w(w_avg[None].expand(6, -1))
    assert torch.allclose(imgs, ref, atol=1e-6)
    assert torch.allclose(imgs, imgs[:1].expand_as(imgs), atol=1e-6)
    free = G(torch.randn(6, 32))
    assert (free - free[:1]).abs().max() > 1e-3


def test_noise_modes():
    G, _ = tiny()
    z = torch.randn(2, 32)
    for blk in G.blocks:
        for layer in (blk.conv0, blk.conv1):
            if layer is not None:
                layer.noise_strength.data.fill_(0.5)
    G.eval()
    assert torch.equal(G(z), G(z))  # const noise in eval mode
    G.train()
    assert not torch.allclose(G(z), G(z))  # fresh noise in training mode
    G.noise_mode = "bogus"
    with pytest.raises(ValueError, match="noise_mode"):
        G(z)


def test_interpolate_styles():
    G, _ = tiny()
    G.eval()
    z0, z1 = torch.randn(2, 32), torch.randn(2, 32)
    seq = interpolate_styles(G, z0, z1, steps=5)
    assert seq.shape == (5, 2, 3, 32, 32)
    assert torch.allclose(seq[0], G(z0), atol=1e-5) and torch.allclose(seq[-1], G(z1), atol=1e-5)
    w_mid = 0.5 * (G.mapping(z0) + G.mapping(z1))
    assert torch.allclose(seq[2], G.synthesis_from_w(w_mid), atol=1e-5)
    assert interpolate_styles(G, z0[0], z1[0], steps=3).shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="steps"):
        interpolate_styles(G, z0, z1, steps=1)


def test_conditional():
    G, D = tiny(num_classes=4)
    G.eval()
    z = torch.randn(3, 32).repeat(2, 1)
    c = torch.tensor([0, 1, 2, 3, 3, 3])
    img = G(z, c)
    assert img.shape == (6, 3, 32, 32) and not torch.allclose(img[:3], img[3:])
    assert D(img, c).shape == (6,)
    with pytest.raises(ValueError, match="labels"):
        G(z)
    with pytest.raises(ValueError, match="labels"):
        D(img)
    D.eval()
    assert torch.allclose(D(img, c), D.head(D.features(img, c), c), atol=1e-5)


# ---------------------------------------------------------------------------------------------- AdvAug, EMA


def test_advaug_split_points():
    from degan.augment.advaug import AdvAugObjective, AdvAugSettings, split_D, split_G

    G, D = tiny()
    G.eval()
    D.eval()
    z = torch.randn(4, 32)
    G1, G2 = split_G(G, None)
    D1, D2 = split_D(D, None)
    assert torch.allclose(G2(G1(z)), G(z), atol=1e-6)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert torch.allclose(D2(D1(x)), D(x), atol=1e-5)
    for k in range(len(D.blocks)):  # block-index split points of D (the location ablation)
        D1, D2 = split_D(D, k)
        assert torch.allclose(D2(D1(x)), D(x), atol=1e-5)
    with pytest.raises(ValueError, match="blocks"):
        split_G(G, 1)
    G.train()
    D.train()
    obj = AdvAugObjective("nonsaturating", None, AdvAugSettings(), resolution=32)
    loss_D, _ = obj.d_loss(G, D, x, z)
    loss_G, _ = obj.g_loss(G, D, z)
    (loss_D + loss_G).backward()
    assert torch.isfinite(loss_D) and torch.isfinite(loss_G)


def test_ema_half_life_in_kimg():
    t = TrainConfig(batch_G=16, ema_kimg=10.0)
    assert t.ema_beta() == pytest.approx(0.5 ** (16 / 10000))
    assert t.ema_beta() ** (10000 / 16) == pytest.approx(0.5)  # half-life: 10 kimg of G images
    assert TrainConfig(ema_decay=0.99).ema_beta() == 0.99 and TrainConfig(ema_decay=None).ema_beta() is None
    cfg = resolve("stylegan2_fewshot")
    assert (cfg.data.resolution, cfg.train.batch_G, cfg.optim.lr_G, cfg.optim.beta2, cfg.r1.gamma) == (
        256, 16, 0.002, 0.99, 10.0)
    assert cfg.train.ema_kimg == 10.0 and cfg.train.total_kimg == 300 and cfg.data.mirror
    assert cfg.train.augment == "diffaug:color,translation,cutout" and cfg.train.loss == "nonsaturating"
    cifar = resolve("stylegan2_cifar")
    assert cifar.data.resolution == 32 and cifar.r1.gamma == 0.01 and cifar.model.channel_base == 4096


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


TINY_CLI = ["--model", "stylegan2", "--width", "0.03125", "--resolution", "32", "--batch", "4",
            "--set", "model.z_dim=32", "--no-progress", "--set", "eval.monitor_every_kimg=null"]


def _cli(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def test_cli_train_stylegan2_tiny_no_nan(tmp_path, folder):
    out = _cli(["train", "--dry-run", "--data", folder, *TINY_CLI, "--r1-gamma", "0.5"])
    assert "name: stylegan2" in out and "gamma: 0.5" in out and "ema_kimg: 10.0" in out
    outdir = tmp_path / "runs"
    _cli(["train", "--outdir", outdir, "--data", folder, *TINY_CLI, "--kimg", "0.032", "--snap", "0.032",
          "--metrics", "none", "--r1-gamma", "1", "--set", "r1.interval=2", "--set", "train.log_kimg=0.008",
          "--set", "pl.weight=2", "--set", "pl.interval=2", "--set", "model.mixing_prob=0.9"])
    (run_dir,) = [d for d in outdir.iterdir() if not d.name.startswith(".")]
    stats = [json.loads(x) for x in (run_dir / "level_0" / "stats.jsonl").read_text().splitlines()]
    assert stats and all(math.isfinite(v) for s in stats for v in s.values() if isinstance(v, float))
    assert any(s["r1_penalty"] > 0 for s in stats) and 0 < stats[-1]["r1_on"] < 1
    done = json.loads((run_dir / "level_0" / "done.json").read_text())
    assert done["step"] == 8
    ckpt = max((run_dir / "level_0" / "checkpoints").glob("*.pt"))
    state = torch.load(ckpt, weights_only=True)["state"]
    assert state["extras"]["r1"]["d_steps"] == 8
    assert state["extras"]["pl"]["pl_mean"] > 0 and any(s["pl_penalty"] > 0 for s in stats)
    assert state["opt_G"]["param_groups"][0]["lr"] == pytest.approx(0.002 * 2 / 3)  # lazy G phase: lr * c
    assert state["opt_D"]["param_groups"][0]["lr"] == pytest.approx(0.002 * 2 / 3)  # lazy R1 phase (r1.separate)


@pytest.mark.slow  # ~1-2 min on 2 idle CPU cores: 25 iterations plus Inception features of 300 images
def test_slow_stylegan2_faces100_with_fid_kid(tmp_path):
    outdir = tmp_path / "runs"
    _cli(["train", "--outdir", outdir, "--data", "faces100", "--model", "stylegan2", "--width", "0.0625",
          "--resolution", "32", "--batch", "8", "--set", "model.z_dim=64", "--no-progress", "--kimg", "0.2",
          "--snap", "0.2", "--metrics", "fid_train,kid_train", "--num-gen", "200", "--r1-gamma", "1",
          "--set", "eval.monitor_every_kimg=null", "--set", "eval.batch_size=50"])
    (run_dir,) = [d for d in outdir.iterdir() if not d.name.startswith(".")]
    records = [json.loads(x) for x in (run_dir / "level_0" / "metrics.jsonl").read_text().splitlines()]
    names = {r["metric"] for r in records}
    assert any(n.startswith("fid") for n in names) and any(n.startswith("kid") for n in names)
    assert all(math.isfinite(r["value"]) for r in records)
    stats = [json.loads(x) for x in (run_dir / "level_0" / "stats.jsonl").read_text().splitlines()]
    assert all(math.isfinite(s["loss_D"]) and math.isfinite(s["loss_G"]) for s in stats)
