"""Transparent images: data.background / --background (black default, white, gray, random, #rrggbb)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from degan.cli import main
from degan.config import RunConfig, config_hash, resolve
from degan.data import dataset_id, load_dataset, parse_background
from degan.errors import ConfigError, DataError

ALPHAS = (0, 128, 255)  # columns of the 3x3 test image: transparent, half, opaque
RGB = (200, 100, 50)
# (c * a + bg * (255 - a) + 127) // 255 for c in RGB (rows) and a in ALPHAS (columns)
EXPECTED = {
    "black": [[0, 100, 200], [0, 50, 100], [0, 25, 50]],
    "white": [[255, 227, 200], [255, 177, 100], [255, 152, 50]],
    "gray": [[128, 164, 200], [128, 114, 100], [128, 89, 50]],
    "#ff8800": [[255, 227, 200], [136, 118, 100], [0, 25, 50]],
}
EXPECTED_LA = {"black": [0, 50, 100], "white": [255, 177, 100], "gray": [128, 114, 100]}  # gray 100


def _rgba(rgb=RGB) -> Image.Image:
    a = np.zeros((3, 3, 4), np.uint8)
    a[..., :3] = rgb
    a[..., 3] = ALPHAS  # per column
    return Image.fromarray(a, "RGBA")


def _la(gray: int = 100) -> Image.Image:
    a = np.zeros((3, 3, 2), np.uint8)
    a[..., 0] = gray
    a[..., 1] = ALPHAS
    return Image.fromarray(a, "LA")


def _folder(path: Path, *images: Image.Image) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(path / f"{i}.png")
    return path


def _load(src, background="black", **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(str(src), resolution=kw.pop("resolution", 3), resize=kw.pop("resize", "none"),
                            background=background, **kw)


@pytest.mark.parametrize("background", sorted(EXPECTED))
def test_rgba_png_on_each_background_exact(tmp_path, background):
    ds = _load(_folder(tmp_path / "d", _rgba(), _rgba()), background)
    assert ds.images.shape == (2, 3, 3, 3) and ds.images.dtype == np.uint8
    for row in range(3):  # every row of the image is the same
        assert ds.images[0, :, row, :].tolist() == EXPECTED[background]
    assert ds.info["background"] == background and ds.info["num_transparent"] == 2 and ds.info["num_alpha"] == 2
    assert ("composited on black" in ds.info["alpha"]) == (background == "black")


@pytest.mark.parametrize("background", sorted(EXPECTED_LA))
def test_la_png_stays_gray_on_a_gray_background(tmp_path, background):
    d = _folder(tmp_path / "d", _la(), _la())
    ds = _load(d, background, channels=1)
    assert ds.images.shape == (2, 1, 3, 3) and ds.images[0, 0, 1].tolist() == EXPECTED_LA[background]
    rgb = _load(d, background)  # replicated to 3 channels
    assert all(rgb.images[1, c, 2].tolist() == EXPECTED_LA[background] for c in range(3))


def test_la_png_on_a_colour_becomes_rgb(tmp_path):
    ds = _load(_folder(tmp_path / "d", _la(), _la()), "#ff8800")
    assert ds.images[0, :, 0, :].tolist() == [[255, 177, 100], [136, 118, 100], [0, 50, 100]]


def test_palette_with_transparency(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    for i in range(2):
        im = Image.new("P", (3, 3), 0)
        im.putpalette([9, 9, 9, 200, 100, 50] + [0] * 762)  # index 0: transparent, 1: opaque colour
        im.putpixel((2, 0), 1)
        im.save(d / f"{i}.png", transparency=0)
    for bg, value in (("black", 0), ("white", 255), ("gray", 128)):
        ds = _load(d, bg)
        assert ds.images[0, :, 1, 1].tolist() == [value] * 3, bg  # transparent: the background, not (9, 9, 9)
        assert ds.images[0, :, 0, 2].tolist() == [200, 100, 50]  # opaque: unchanged
        assert ds.info["num_transparent"] == 2


def test_rgba_npz_on_each_background(tmp_path):
    x = np.stack([np.asarray(_rgba())] * 3)  # NHWC, 4 channels
    np.savez(tmp_path / "a.npz", x_train=x)
    for bg, expected in EXPECTED.items():
        ds = _load(tmp_path / "a.npz", bg)
        assert ds.images.shape == (3, 3, 3, 3) and ds.images[2, :, 1, :].tolist() == expected, bg
        assert ds.info["num_transparent"] == 3


def test_random_is_deterministic_and_differs_between_images(tmp_path):
    clear = Image.fromarray(np.zeros((3, 3, 4), np.uint8), "RGBA")  # fully transparent: the background shows
    d = _folder(tmp_path / "d", clear, clear, clear, _rgba())
    a, b = _load(d, "random"), _load(d, "random")
    assert np.array_equal(a.images, b.images)
    colours = [tuple(a.images[i, :, 0, 0].tolist()) for i in range(3)]
    assert all((a.images[i] == np.array(colours[i], np.uint8)[:, None, None]).all() for i in range(3))  # solid
    assert len(set(colours)) == 3  # a colour per image
    assert colours[0] == (172, 114, 54)  # SHA-256("0:0")[:3]: fixed across machines and library versions
    assert a.images[3, :, 0, 2].tolist() == list(RGB)  # opaque pixels keep their colour
    x = np.stack([np.zeros((3, 3, 4), np.uint8)] * 3)
    np.savez(tmp_path / "a.npz", x_train=x)
    assert [tuple(v) for v in _load(tmp_path / "a.npz", "random").images[:, :, 0, 0].tolist()] == colours


def test_default_is_bit_identical_to_compositing_on_black_at_decode(tmp_path):
    """An RGBA image loads exactly like the RGB image composited the old way, ``(c * a + 127) // 255``, including
    resampling, channel conversion and mixed sizes."""
    rng = np.random.default_rng(0)
    old, new = tmp_path / "old", tmp_path / "new"
    for i, size in enumerate([(20, 17), (16, 16), (33, 24)]):
        a = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
        rgb = ((a[..., :3].astype(np.uint16) * a[..., 3:] + 127) // 255).astype(np.uint8)
        _folder(old / str(i), Image.fromarray(rgb, "RGB"))
        _folder(new / str(i), Image.fromarray(a, "RGBA"))
    for channels in (1, 3):
        ref = _load(old, resolution=16, channels=channels, resize="center_crop")
        for bg in ("black", "#000000"):
            got = _load(new, bg, resolution=16, channels=channels, resize="center_crop")
            assert np.array_equal(got.images, ref.images), (channels, bg)
    with warnings.catch_warnings(record=True):  # the default argument is black
        warnings.simplefilter("always")
        assert np.array_equal(load_dataset(str(new), resolution=16).images, _load(old, resolution=16,
                                                                                   resize="center_crop").images)


def test_one_warning_for_transparency_on_black_only(tmp_path):
    d = _folder(tmp_path / "d", _rgba(), _rgba(), Image.new("RGB", (3, 3)))
    opaque = _folder(tmp_path / "o", Image.new("RGBA", (3, 3), (1, 2, 3, 255)), Image.new("RGBA", (3, 3)))
    # once per source and process: evaluation and the D monitor load the training data again
    for src, bg, expected in ((d, "black", 1), (d, "white", 0), (d, "black", 0), (opaque, "black", 1)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = load_dataset(str(src), resolution=3, resize="none", background=bg)
        msgs = [str(w.message) for w in caught if "transparency" in str(w.message)]
        assert len(msgs) == expected, (src, bg, msgs)
        if msgs:
            assert "\n" not in msgs[0] and "composited on black" in msgs[0]
            assert "--background white|gray|random|#rrggbb" in msgs[0]
    assert msgs[0].startswith("1 of 2 images")  # fully opaque RGBA (alpha 255) is not transparency
    assert ds.info["num_alpha"] == 2 and ds.info["num_transparent"] == 1


def test_parse_background_and_bad_values(tmp_path):
    assert parse_background("White") == "white" and parse_background("#FF8800") == "#ff8800"
    for bad in ("purple", "#ff88", "#gg0000", "", None, 3):
        with pytest.raises(DataError, match="black, white, gray, random, keep-alpha or a hex colour #rrggbb"):
            parse_background(bad)
    with pytest.raises(DataError, match="background 'purple'"):
        load_dataset("faces100", resolution=8, background="purple")


def test_config_key_hash_and_validation():
    assert RunConfig().data.background == "black"
    assert config_hash(resolve(None, None, ["data.background=black"])) == config_hash(RunConfig())  # old hashes stay
    hashes = {config_hash(resolve(None, None, [f"data.background={bg}"])) for bg in ("white", "gray", "random",
                                                                                        "#ff8800")}
    assert len(hashes) == 4 and config_hash(RunConfig()) not in hashes
    assert resolve(None, None, ["data.background=#ff8800"]).data.background == "#ff8800"  # not a YAML comment
    with pytest.raises(ConfigError, match=r"data.background 'purple' is not valid; choose black, white, gray"):
        resolve(None, None, ["data.background=purple"])


def test_dataset_id_separates_backgrounds_for_caches():
    assert dataset_id("faces100") == dataset_id("faces100", "black") == "faces100"
    assert dataset_id("faces100", "white") == "faces100|background=white"


def _cli(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def test_cli_option_and_set(tmp_path):
    base = ["train", "--data", "faces100", "--outdir", tmp_path, "--dry-run", "--threads", "1"]
    plain = _cli(base)
    assert "background: black" in plain
    flag, via_set = _cli(base + ["--background", "white"]), _cli(base + ["--set", "data.background=white"])
    assert "background: white" in flag and flag == via_set
    assert flag.splitlines()[-1] != plain.splitlines()[-1]  # another run hash, another folder
    assert _cli(base + ["--background", "black"]) == plain
    assert "background: '#ff8800'" in _cli(["ticket", *base[1:], "--background", "#ff8800"])
    for args in (["--background", "purple"], ["--set", "data.background=purple"]):
        out = _cli(base + args, expect=2)
        assert out.startswith("error:") and len(out.strip().splitlines()) == 1
        assert "'purple' is not valid; choose black, white, gray, random, keep-alpha or a hex colour #rrggbb" in out
    assert "--background" in _cli(["train", "--help"]) and "--background" in _cli(["ticket", "--help"])


def test_cli_cyclegan_and_preview_augment(tmp_path):
    a = _folder(tmp_path / "a", _rgba(), _rgba((10, 100, 50)))
    out = _cli(["cyclegan", "--data-a", a, "--data-b", a, "--outdir", tmp_path, "--dry-run", "--background", "gray"])
    assert "background: gray" in out
    out = _cli(["preview-augment", "--data", a, "--augment", "diffaug:color", "--resolution", "3", "--resize", "none",
                "--background", "purple", "--out", tmp_path / "p.png"], expect=2)
    assert out.startswith("error:") and "purple" in out
    _cli(["preview-augment", "--data", a, "--augment", "diffaug:color", "--resolution", "3", "--resize", "none",
          "--background", "white", "--n", "2", "--rows", "1", "--upscale", "1", "--out", tmp_path / "p.png"])
    grid = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert (grid == 255).all(axis=-1).any()  # the white background shows in the first row of originals


def test_data_json_records_the_background(tmp_path):
    from degan.lottery.experiment import prepare

    d = _folder(tmp_path / "d", *[_rgba((10 * i, 100, 50)) for i in range(4)])
    cfg = resolve("dcgan", None, [f"data.source={d}", "data.resolution=16", "data.background=white",
                                  "model.width=0.25"])
    exp = prepare(cfg, tmp_path / "runs", "train", log=lambda *a: None)
    info = json.loads(exp.run.data.read_text())
    assert info["background"] == "white" and info["num_transparent"] == 4 and "white" in info["alpha"]
    assert int(exp.images[0, 0, 0, 0]) > 200  # the transparent column is white, not black
