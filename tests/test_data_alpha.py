"""Data as users have it (issue 16 part 4): keep-alpha (RGBA / gray + alpha training and outputs), the pad fit
policy for non-square images, --resolution RxR and the non-square error, channel rules for mixed folders."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from degan.cli import main
from degan.config import RunConfig, config_hash, resolve
from degan.data import load_dataset, parse_resolution
from degan.errors import ConfigError, DataError

# config hashes of default configs computed on main before this change (0f82a83): existing run folders keep their names
DEFAULT_HASH, DCGAN_HASH, RES64_HASH = "44136fa3", "e6d78f65", "66442e2f"


def _save(path: Path, arr: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)


def _load(src, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(str(src), **{"resolution": 4, "resize": "none", **kw})


def _rgba(w: int, h: int, rgb, alpha) -> np.ndarray:
    a = np.zeros((h, w, 4), np.uint8)
    a[..., :3] = rgb
    a[..., 3] = alpha
    return a


# ------------------------------------------------------------------------------------------------ keep-alpha


def test_keep_alpha_keeps_rgba_exactly_and_zeroes_invisible_colour(tmp_path):
    alpha = np.array([[0, 64, 128, 255]] * 4, np.uint8)
    _save(tmp_path / "d/0.png", _rgba(4, 4, (200, 100, 50), alpha), "RGBA")
    _save(tmp_path / "d/1.png", _rgba(4, 4, (9, 9, 9), 255), "RGBA")
    ds = _load(tmp_path / "d", background="keep-alpha")
    assert ds.images.shape == (2, 4, 4, 4) and ds.images.dtype == np.uint8
    assert ds.images[0, 3].tolist() == alpha.tolist()  # alpha untouched
    assert ds.images[0, :3, 0, 0].tolist() == [0, 0, 0]  # colour under alpha 0 -> 0
    assert ds.images[0, :3, 0, 1:].T.tolist() == [[200, 100, 50]] * 3  # straight (not premultiplied) colour
    assert ds.info["img_channels"] == 4 and ds.info["background"] == "keep-alpha"
    assert "kept as the last channel" in ds.info["alpha"] and ds.info["num_transparent"] == 1


def test_keep_alpha_mixed_folder_and_gray_alpha(tmp_path):
    d = tmp_path / "mixed"
    _save(d / "rgba.png", _rgba(4, 4, (10, 20, 30), 128), "RGBA")
    _save(d / "rgb.png", np.full((4, 4, 3), 77, np.uint8), "RGB")
    _save(d / "gray.png", np.full((4, 4), 99, np.uint8), "L")
    la = np.zeros((4, 4, 2), np.uint8)
    la[..., 0], la[..., 1] = 150, 40
    _save(d / "la.png", la, "LA")
    ds = _load(d, background="keep-alpha")  # folder order: gray, la, rgb, rgba
    assert ds.images.shape == (4, 4, 4, 4)
    by_name = dict(zip(["gray", "la", "rgb", "rgba"], ds.images))
    assert by_name["gray"][:, 0, 0].tolist() == [99, 99, 99, 255]  # opaque sources get alpha 255
    assert by_name["rgb"][:, 0, 0].tolist() == [77, 77, 77, 255]
    assert by_name["la"][:, 0, 0].tolist() == [150, 150, 150, 40]
    assert by_name["rgba"][:, 0, 0].tolist() == [10, 20, 30, 128]
    gray = _load(d, background="keep-alpha", channels=1)  # gray + alpha, RGB -> luma
    assert gray.images.shape == (4, 2, 4, 4)
    assert gray.images[3, :, 0, 0].tolist() == [(19595 * 10 + 38470 * 20 + 7471 * 30 + 32768) >> 16, 128]


def test_keep_alpha_resampling_is_premultiplied(tmp_path):
    """Left half transparent with a stray red stored under it, right half opaque blue: downscaled, no red bleeds
    into the edge (straight resampling would mix the invisible red in)."""
    a = _rgba(8, 8, (255, 0, 0), 0)
    a[:, 4:] = (0, 0, 255, 255)
    _save(tmp_path / "d/0.png", a, "RGBA")
    _save(tmp_path / "d/1.png", a, "RGBA")
    ds = _load(tmp_path / "d", background="keep-alpha", resolution=4, resize="stretch")
    img = ds.images[0]
    visible = img[3] > 0
    assert visible.any() and (img[3] < 255).any()  # a soft edge exists
    assert (img[0][visible] <= 1).all(), img[0]  # no red anywhere it can be seen
    assert (img[2][visible] >= 250).all(), img[2]  # the edge keeps its blue
    assert (img[:3][:, ~visible] == 0).all()


# ------------------------------------------------------------------------------------------------ fit policies


def test_pad_crop_stretch_shapes_and_pixels(tmp_path):
    d = tmp_path / "wide"
    for i in range(2):
        _save(d / f"{i}.png", np.full((2, 4, 3), 100 + i, np.uint8), "RGB")  # 4 wide, 2 high
    pad = _load(d, background="white", resize="pad", resolution=4)
    assert pad.images.shape == (2, 3, 4, 4)
    assert pad.images[0, 0].tolist() == [[255] * 4, [100] * 4, [100] * 4, [255] * 4]  # centred, white bars
    black = _load(d, resize="pad", resolution=4)
    assert black.images[1, 2].tolist() == [[0] * 4, [101] * 4, [101] * 4, [0] * 4]
    crop = _load(d, resize="center_crop", resolution=2)
    assert crop.images.shape == (2, 3, 2, 2) and (crop.images[0] == 100).all()  # crop: nothing of the pad colour
    stretch = _load(d, resize="stretch", resolution=4)
    assert stretch.images.shape == (2, 3, 4, 4) and (stretch.images[0] == 100).all()
    assert pad.info["resize"] == "pad" and "max(H, W)" in pad.info["resize_policy"]


def test_pad_colour_follows_background_and_channels(tmp_path):
    d = tmp_path / "tall"
    for i in range(3):
        _save(d / f"{i}.png", np.full((4, 2), 50, np.uint8), "L")  # 2 wide, 4 high, gray
    hexed = _load(d, background="#ff8800", resize="pad", resolution=4)
    assert hexed.images[0, :, 0, 0].tolist() == [255, 136, 0] and hexed.images[0, :, 0, 1].tolist() == [50] * 3
    luma = _load(d, background="#ff8800", resize="pad", resolution=4, channels=1)
    assert luma.images[0, 0, :, 0].tolist() == [(19595 * 255 + 38470 * 136 + 32768) >> 16] * 4
    rnd = _load(d, background="random", resize="pad", resolution=4)
    bars = [tuple(rnd.images[i, :, 0, 0].tolist()) for i in range(3)]
    assert len(set(bars)) == 3 and bars == [tuple(rnd.images[i, :, 3, 3].tolist()) for i in range(3)]
    assert bars == [tuple(_load(d, background="random", resize="pad", resolution=4).images[i, :, 0, 0].tolist())
                    for i in range(3)]  # seeded: the same on every load
    clear = _load(d, background="keep-alpha", resize="pad", resolution=4)
    assert clear.images.shape == (3, 4, 4, 4)
    assert clear.images[0, :, 0, 0].tolist() == [0, 0, 0, 0] and clear.images[0, :, 0, 1].tolist() == [50] * 3 + [255]


def test_default_fit_is_unchanged(tmp_path):
    """The default is still center_crop (what the loader did with non-square images before pad existed)."""
    assert RunConfig().data.resize == "center_crop"
    d = tmp_path / "wide"
    rng = np.random.default_rng(0)
    for i in range(2):
        _save(d / f"{i}.png", rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), "RGB")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = load_dataset(str(d), resolution=8)
    assert np.array_equal(default.images, _load(d, resize="center_crop", resolution=8).images)


# ------------------------------------------------------------------------------------------------ resolution


def test_parse_resolution():
    assert parse_resolution(64) == parse_resolution("64") == parse_resolution("64x64") == parse_resolution("64X64") == 64
    with pytest.raises(DataError, match=r"'64x48' is not square.*data.resize=center_crop.*pad.*stretch"):
        parse_resolution("64x48")
    for bad in ("abc", "0", "-3", "64x", 1.5, None, True):
        with pytest.raises(DataError, match="resolution must be a positive integer"):
            parse_resolution(bad)
    with pytest.raises(DataError, match="is not square"):
        load_dataset("faces100", resolution="32x16")


def test_config_hash_of_defaults_is_pinned():
    assert config_hash(RunConfig()) == DEFAULT_HASH
    assert config_hash(resolve("dcgan", None, [])) == DCGAN_HASH
    assert config_hash(resolve(None, None, ["data.source=/tmp/x", "data.resolution=64"])) == RES64_HASH
    assert config_hash(resolve(None, None, ["data.source=/tmp/x", "data.resolution=64x64"])) == RES64_HASH
    for key in ("data.resize=center_crop", "data.background=black", "data.channels=3"):
        assert config_hash(resolve(None, None, [key])) == DEFAULT_HASH
    assert len({config_hash(resolve(None, None, [k])) for k in
                ("data.resize=pad", "data.background=keep-alpha", "data.resize=stretch")} | {DEFAULT_HASH}) == 4


@pytest.mark.parametrize("item, message", [
    ("data.resolution=64x48", "data.resolution '64x48' is not square"),
    ("data.resize=fit", "data.resize='fit' is not valid; choose one of: center_crop, pad, stretch, none"),
    ("data.channels=4", "data.channels must be 1 or 3, got 4 (for RGBA keep 3 and set data.background=keep-alpha"),
    ("data.background=alpha", "choose black, white, gray, random, keep-alpha or a hex colour #rrggbb"),
])
def test_bad_values_name_the_valid_options(item, message):
    with pytest.raises(ConfigError) as e:
        resolve(None, None, [item])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_img_channels_of_the_config():
    assert RunConfig().data.img_channels == 3
    assert resolve(None, None, ["data.background=keep-alpha"]).data.img_channels == 4
    assert resolve(None, None, ["data.background=keep-alpha", "data.channels=1"]).data.img_channels == 2
    assert resolve(None, None, ["data.background=white", "data.channels=1"]).data.img_channels == 1


def _cli(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def test_cli_resolution_and_errors(tmp_path):
    base = ["train", "--data", "faces100", "--outdir", tmp_path, "--dry-run", "--threads", "1"]
    assert _cli(base + ["--resolution", "32x32"]) == _cli(base + ["--resolution", "32"])
    out = _cli(base + ["--resolution", "64x48"], expect=2)
    assert out.startswith("error:") and len(out.strip().splitlines()) == 1
    assert "not square" in out and "data.resize=center_crop" in out
    out = _cli(["cyclegan", "--data-a", "faces100", "--data-b", "faces100", "--dry-run", "--background", "keep-alpha"],
               expect=2)
    assert "keep-alpha is not supported by cyclegan" in out


# ------------------------------------------------------------------------------------------------ models, augment


TINY = {"dcgan": dict(resolution=16, width=0.25, z_dim=16), "sngan32": dict(width=0.125, z_dim=16),
        "stylegan2": dict(resolution=32, width=1 / 32, z_dim=16, mapping_layers=2), "biggan": dict(width=0.05, z_dim=16),
        "fastgan": dict(resolution=64, width=1 / 16, z_dim=16), "progan": dict(resolution=16, width=1 / 32, z_dim=16)}


def _model_names():
    from degan.models import list_models

    return list_models()


@pytest.mark.parametrize("name", _model_names())
def test_every_family_takes_1_to_4_channels(name):
    from degan.models import create_model

    if name not in TINY:
        pytest.skip(f"no tiny options for {name}")
    for c in (1, 2, 3, 4):
        torch.manual_seed(0)
        G, D = create_model(name, **TINY[name], img_channels=c)
        z = torch.randn(2, G.z_dim)
        x = G(z)
        assert x.shape == (2, c, G.resolution, G.resolution), (name, c)
        assert D(x).shape == (2,)
    with pytest.raises(ValueError, match=r"img_channels must be 1 \(gray\), 3 \(RGB\), 2 .* or 4 \(RGBA\)"):
        create_model(name, **TINY[name], img_channels=5)


def test_colour_augmentations_leave_alpha_alone():
    from degan.augment import build_augment

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 4, 16, 16, generator=g) * 2 - 1
    for spec in ("diffaug:color", "ada:c:p=1"):
        y = build_augment(spec)(x, generator=torch.Generator().manual_seed(1))
        assert y.shape == x.shape and torch.equal(y[:, 3], x[:, 3]), spec
        assert not torch.allclose(y[:, :3], x[:, :3]), spec
    rgb = build_augment("diffaug:color")(x[:, :3], generator=torch.Generator().manual_seed(1))
    assert torch.allclose(build_augment("diffaug:color")(x, generator=torch.Generator().manual_seed(1))[:, :3], rgb)


# ------------------------------------------------------------------------------------------------ metrics, outputs


class _MeanRGB(torch.nn.Module):
    """A stand-in extractor that, like Inception, takes uint8 with 1 or 3 channels only."""

    num_features = 3

    def forward(self, x):
        from degan.metrics.inception import check_uint8_images

        check_uint8_images(x)
        return x.float().expand(-1, 3, -1, -1).mean((2, 3)) if x.shape[1] == 1 else x.float().mean((2, 3))


def test_metrics_composite_alpha_on_black_for_reals_and_fakes():
    from degan.metrics.inception import composite_on_black, extract_features

    g = torch.Generator().manual_seed(0)
    rgba = torch.randint(0, 256, (5, 4, 6, 6), generator=g, dtype=torch.uint8)
    rgb = composite_on_black(rgba)
    assert rgb.shape == (5, 3, 6, 6)
    expected = (rgba[:, :3].int() * rgba[:, 3:].int() + 127) // 255
    assert torch.equal(rgb, expected.to(torch.uint8))  # the pixels of data.background=black
    feats = extract_features(rgba, _MeanRGB(), batch_size=2)
    assert torch.allclose(feats, extract_features(rgb, _MeanRGB()))
    fakes = extract_features(iter([rgba[:3], rgba[3:]]), _MeanRGB())  # generated batches: the same rule
    assert torch.allclose(fakes, feats)
    la = rgba[:, 2:]
    assert composite_on_black(la).shape == (5, 1, 6, 6)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        _MeanRGB()(rgba)  # the extractor itself never sees alpha


def test_grids_and_images_are_written_with_alpha(tmp_path):
    from degan.generate import save_images, write_video
    from degan.report import save_grid

    g = torch.Generator().manual_seed(0)
    rgba = torch.randint(0, 256, (4, 4, 5, 5), generator=g, dtype=torch.uint8)
    save_grid(rgba, tmp_path / "g.png", nrow=2)
    grid = Image.open(tmp_path / "g.png")
    assert grid.mode == "RGBA"
    assert np.asarray(grid)[1:6, 1:6].tolist() == rgba[0].permute(1, 2, 0).tolist()
    assert np.asarray(grid)[0, 0].tolist() == [0, 0, 0, 0]  # padding is transparent
    paths = save_images(rgba, [f"s{i}" for i in range(4)], tmp_path / "im")
    assert all(Image.open(p).mode == "RGBA" for p in paths)
    assert np.asarray(Image.open(paths[2])).tolist() == rgba[2].permute(1, 2, 0).tolist()
    la = save_images(rgba[:, 2:], ["a", "b", "c", "d"], tmp_path / "la")
    assert Image.open(la[0]).mode == "LA"
    save_grid(rgba[:, 2:], tmp_path / "la.png")
    assert Image.open(tmp_path / "la.png").mode == "LA"
    write_video(rgba, tmp_path / "v.gif", upscale=1)  # no alpha in videos: composited on black
    assert Image.open(tmp_path / "v.gif").size == (5, 5)


def test_train_and_generate_rgba_end_to_end(tmp_path):
    d = tmp_path / "emoji"
    rng = np.random.default_rng(0)
    for i in range(8):
        a = _rgba(24, 20, tuple(int(v) for v in rng.integers(0, 255, 3)), 0)
        a[4:16, 6:18, 3] = 255  # an opaque square on a transparent, non-square canvas
        _save(d / f"{i}.png", a, "RGBA")
    tiny = ["--model", "dcgan", "--width", "0.25", "--resolution", "16x16", "--batch", "4", "--snap", "0.016",
            "--metrics", "none", "--no-progress", "--augment", "diffaug:color,translation"]
    _cli(["train", "--outdir", tmp_path / "r", "--data", d, "--kimg", "0.016", "--background", "keep-alpha",
          "--set", "data.resize=pad", "--set", "train.log_kimg=0.016", *tiny])
    run = next((tmp_path / "r").iterdir())
    info = json.loads((run / "data.json").read_text())
    assert info["img_channels"] == 4 and info["resize"] == "pad" and info["num_transparent"] == 8
    assert Image.open(run / "level_0" / "samples" / "fakes_latest.png").mode == "RGBA"
    reals = np.asarray(Image.open(run / "level_0" / "samples" / "reals.png"))
    assert reals.shape[-1] == 4 and (reals[..., 3] == 0).any() and (reals[..., 3] == 255).any()
    _cli(["generate", run, "--seeds", "0-2", "--grid", tmp_path / "g.png", "--images", tmp_path / "im"])
    assert Image.open(tmp_path / "g.png").mode == "RGBA"
    assert sorted(Image.open(p).mode for p in (tmp_path / "im").glob("*.png")) == ["RGBA"] * 3


def test_one_colour_has_one_spelling_and_one_run_hash():
    """'#FF8800' and '#ff8800' (and 'Black' and the default 'black') are the same background: the same config, the
    same run folder."""
    from degan.config import RunConfig, config_hash, merge, set_dotted

    cfgs = [set_dotted(RunConfig(), "data.background", v) for v in ("#FF8800", "#ff8800")]
    cfgs.append(merge(RunConfig(), {"data": {"background": " #Ff8800 "}}))
    assert {c.data.background for c in cfgs} == {"#ff8800"}
    assert len({config_hash(c) for c in cfgs}) == 1
    assert config_hash(set_dotted(RunConfig(), "data.background", "Black")) == config_hash(RunConfig())
