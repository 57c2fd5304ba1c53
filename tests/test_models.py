"""Model registry and the G/D interface, one parametrized test per registered model (tiny inputs, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from degan.models import create_model, list_models
from degan.models.layers import has_spectral_norm, is_marked_sn
from degan.models.sngan import SNGAN32_PARAMS

# Smallest sensible options per model so the test stays fast.
TINY = {"dcgan": dict(resolution=16, width=0.25, z_dim=16), "sngan32": dict(width=0.125, z_dim=16),
        "stylegan2": dict(resolution=32, width=1 / 32, z_dim=16, mapping_layers=2), "biggan": dict(width=0.05, z_dim=16),
        "fastgan": dict(resolution=64, width=1 / 16, z_dim=16), "progan": dict(resolution=16, width=1 / 32, z_dim=16)}
NO_SN = {"stylegan2", "progan"}  # families without spectral norm (StyleGAN2, ProGAN: equalised lr instead)
SN_IN_G = {"biggan", "fastgan"}  # families with spectral norm on G's tagged layers too (BigGAN, FastGAN)


def _tiny(name: str) -> dict:
    return dict(TINY.get(name, {}))


def _weighted(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding))]


def _shapes(net: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize("name", list_models())
def test_interface(name):
    torch.manual_seed(0)
    G, D = create_model(name, **_tiny(name))
    assert G.name == D.name == name
    json.dumps(G.config)
    assert G.config == D.config and G.config["spectral_norm"] is True
    n = 2
    z = torch.randn(n, G.z_dim)
    img = G(z)
    R = G.resolution
    assert img.shape == (n, G.img_channels, R, R) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1
    assert (D.resolution, D.img_channels, D.num_classes) == (G.resolution, G.img_channels, G.num_classes)

    G.eval()  # deterministic BN for the split-equality check
    h = G.input_layer(z)
    assert h.dim() == 4 and h.shape[0] == n and h.shape[2:] == (4, 4)
    assert torch.allclose(G(z), G.synthesis(h), atol=1e-6)

    D.eval()  # no power iteration, so repeated calls are identical
    x = torch.rand(n, D.img_channels, R, R) * 2 - 1
    f = D.features(x)
    assert f.dim() == 2 and f.shape == (n, D.feature_dim)
    logits = D(x)
    assert logits.shape == (n,)
    assert torch.allclose(logits, D.head(f), atol=1e-5)

    # gradients reach G through D (a grown ProGAN: all but the toRGB layers of the lower levels, which are idle)
    G.train()
    D.train()
    D(G(z)).mean().backward()
    idle = {f"to_rgb.{r}.weight" for r in getattr(G, "levels", ())[:-1]}
    idle |= {n.replace(".weight", ".bias") for n in idle}
    assert all(p.grad is not None for n, p in G.named_parameters() if p.requires_grad and n not in idle)


@pytest.mark.parametrize("name", list_models())
def test_rebuild_from_config(name):
    G, D = create_model(name, **_tiny(name))
    G2, D2 = create_model(name, **G.config)
    assert _shapes(G) == _shapes(G2) and _shapes(D) == _shapes(D2)
    G3, D3 = create_model(name, **{**G.config, "spectral_norm": False})
    assert not any(parametrize.is_parametrized(m) for m in D3.modules())


@pytest.mark.parametrize("name", list_models())
def test_spectral_norm_on_d_only_when_requested(name):
    G, D = create_model(name, **_tiny(name))
    d_layers = _weighted(D)
    if name in NO_SN:
        assert d_layers and not any(parametrize.is_parametrized(m) for m in [*D.modules(), *G.modules()])
        return
    assert d_layers and all(has_spectral_norm(m) for m in d_layers)
    assert all(is_marked_sn(m) for m in d_layers)
    if name in SN_IN_G:  # exactly G's tagged layers (BigGAN: not its shared class embedding)
        g_layers = [m for m in G.modules() if hasattr(m, "weight")]
        assert any(map(is_marked_sn, g_layers)) and all(has_spectral_norm(m) == is_marked_sn(m) for m in g_layers)
    else:
        assert not any(parametrize.is_parametrized(m) for m in G.modules())
    G, D = create_model(name, spectral_norm=False, **_tiny(name))
    assert not any(parametrize.is_parametrized(m) for m in D.modules())
    assert not any(parametrize.is_parametrized(m) for m in G.modules())


class _Dummy(nn.Module):
    def forward(self, w):
        return w


@pytest.mark.parametrize("name", list_models())
def test_pre_sn_hook_runs_before_spectral_norm(name):
    seen = []

    def hook(net):
        seen.append(net)
        for m in _weighted(net):
            parametrize.register_parametrization(m, "weight", _Dummy())

    G, D = create_model(name, pre_sn_hook=hook, **_tiny(name))
    assert seen == [G, D]
    for m in _weighted(D):
        plist = m.parametrizations.weight
        assert len(plist) == (1 if name in NO_SN else 2)
        assert isinstance(plist[0], _Dummy)
        assert name in NO_SN or type(plist[1]).__name__ == "_SpectralNorm"
    for m in _weighted(G):
        assert len(m.parametrizations.weight) == (2 if name in SN_IN_G and is_marked_sn(m) else 1)
        assert isinstance(m.parametrizations.weight[0], _Dummy)


@pytest.mark.parametrize("name", list_models())
def test_sigma_of_sn_weight_is_one(name):
    if name in NO_SN:
        pytest.skip(f"{name} has no spectral norm")
    torch.manual_seed(0)
    G, D = create_model(name, **_tiny(name))
    x = torch.rand(2, D.img_channels, D.resolution, D.resolution) * 2 - 1
    with torch.no_grad():
        for _ in range(10):
            D(x)
    D.eval()
    for m in _weighted(D):
        w = m.weight.detach()
        if isinstance(m, nn.ConvTranspose2d):
            w = w.transpose(0, 1)
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.05, (type(m).__name__, float(sigma))


@pytest.mark.parametrize("name", list_models())
def test_bad_resolution_raises(name):
    with pytest.raises(ValueError, match="resolution"):
        create_model(name, **{**_tiny(name), "resolution": 24})
    with pytest.raises(ValueError, match="img_channels"):
        create_model(name, **{**_tiny(name), "img_channels": 5})


def test_dcgan_resolutions():
    for R in (16, 32, 64):
        G, D = create_model("dcgan", resolution=R, width=0.25, z_dim=8)
        img = G(torch.randn(2, 8))
        assert img.shape == (2, 3, R, R) and D(img).shape == (2,)
    with pytest.raises(ValueError, match="power of two"):
        create_model("dcgan", resolution=8)


def test_unknown_model_and_option():
    with pytest.raises(ValueError, match="valid names are: .*dcgan.*sngan32"):
        create_model("stylegan9")
    with pytest.raises(ValueError, match="valid options are"):
        create_model("dcgan", depth=3)


def test_list_models_pattern():
    assert "dcgan" in list_models() and "sngan32" in list_models()
    assert list_models("sngan*") == ["sngan32"]


def test_sngan32_parameter_counts():
    G, D = create_model("sngan32")
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in D.parameters())
    assert abs(n_g - SNGAN32_PARAMS["G"]) <= 0.05 * SNGAN32_PARAMS["G"]
    assert abs(n_d - SNGAN32_PARAMS["D"]) <= 0.05 * SNGAN32_PARAMS["D"]
    assert abs(n_g - 4.3e6) < 0.05 * 4.3e6 and abs(n_d - 1.0e6) < 0.1 * 1.0e6
    assert G.input_layer(torch.randn(2, 128)).shape == (2, 256, 4, 4)
    assert D.feature_dim == 128


@pytest.mark.parametrize("name", list_models())
def test_conditional(name):
    G, D = create_model(name, num_classes=5, **_tiny(name))
    z = torch.randn(3, G.z_dim)
    c = torch.tensor([0, 2, 4])
    img = G(z, c)
    assert D(img, c).shape == (3,)
    with pytest.raises(ValueError, match="labels"):
        G(z)
    with pytest.raises(ValueError, match="labels"):
        D(img)
    D.eval()
    f = D.features(img, c)
    assert torch.allclose(D(img, c), D.head(f, c), atol=1e-5)
    assert name in NO_SN or has_spectral_norm(D.out.embed)


def test_bad_inputs_raise():
    G, D = create_model("dcgan", **_tiny("dcgan"))
    with pytest.raises(ValueError, match="z must be"):
        G(torch.randn(2, G.z_dim + 1))
    with pytest.raises(ValueError, match="images must be"):
        D(torch.randn(2, 3, 8, 8))


def test_sngan32_discriminator_pools_an_8x8_map_with_exact_counts():
    G, D = create_model("sngan32")
    assert D.blocks(torch.zeros(1, 3, 32, 32)).shape == (1, 128, 8, 8)  # SNGAN Table 4: two downsampling blocks
    assert sum(p.numel() for p in G.parameters()) == SNGAN32_PARAMS["G"]
    assert sum(p.numel() for p in D.parameters()) == SNGAN32_PARAMS["D"]
