"""Generation outputs: seeds are deterministic, interpolation endpoints are the seeds' images, class rows, videos."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from degan.cli import main
from degan.generate import (class_labels, class_rows, generate_images, interpolation_images, interpolation_latents,
                            seed_latents, slerp, write_outputs, write_video)
from degan.models import create_model


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    g, _ = create_model("dcgan", resolution=16, width=0.25, z_dim=8)
    return g.eval()


@pytest.fixture(scope="module")
def G_cond():
    torch.manual_seed(1)
    g, _ = create_model("dcgan", resolution=16, width=0.25, z_dim=8, num_classes=3)
    return g.eval()


def test_same_seed_same_image_whatever_the_batch(G):
    a = generate_images(G, seed_latents([0, 1, 2, 3], G.z_dim), batch_size=3)
    b = generate_images(G, seed_latents([3, 9, 1], G.z_dim), batch_size=1)
    assert a.dtype == torch.uint8 and a.shape == (4, 3, 16, 16)
    assert torch.equal(a[3], b[0]) and torch.equal(a[1], b[2]) and not torch.equal(a[0], a[1])
    with pytest.raises(ValueError):
        seed_latents([], 8)
    with pytest.raises(ValueError, match="z must be"):
        generate_images(G, torch.zeros(2, 5))


def test_interpolation_endpoints_are_the_endpoint_samples(G):
    seeds = [3, 5, 8]
    imgs = interpolation_images(G, seeds, steps=5)
    ends = generate_images(G, seed_latents(seeds, G.z_dim))
    assert imgs.shape == (2 * 5, 3, 16, 16)
    assert torch.equal(imgs[0], ends[0]) and torch.equal(imgs[4], ends[1])
    assert torch.equal(imgs[5], ends[1]) and torch.equal(imgs[9], ends[2])
    assert not torch.equal(imgs[2], ends[0]) and not torch.equal(imgs[2], ends[1])


def test_slerp_keeps_the_norm_and_lerp_is_straight():
    a, b = torch.randn(64, generator=torch.Generator().manual_seed(0)), torch.randn(64)
    t = torch.linspace(0, 1, 9)
    z = slerp(a, b, t)
    assert torch.equal(z[0], a) and torch.equal(z[-1], b)
    mid_norm = z[4].norm()
    assert abs(mid_norm - (a.norm() + b.norm()) / 2) < 0.15 * a.norm()  # not the shrunken lerp midpoint
    lerp = interpolation_latents(torch.stack([a, b]), 3, "lerp")[0]
    assert torch.allclose(lerp[1], (a + b) / 2)
    with pytest.raises(ValueError, match="at least 2"):
        interpolation_latents(a[None], 4)
    with pytest.raises(ValueError, match="mode"):
        interpolation_latents(torch.stack([a, b]), 4, "cubic")


def test_class_rows_and_labels(G, G_cond):
    rows = class_rows(G_cond, [0, 1])
    assert rows.shape == (6, 3, 16, 16)
    one = generate_images(G_cond, seed_latents([1], 8), torch.tensor([2]))
    assert torch.equal(rows[5], one[0])  # row = class 2, column = seed 1
    assert class_labels(G_cond, 5).tolist() == [0, 1, 2, 0, 1]
    assert class_labels(G_cond, 2, 1).tolist() == [1, 1]
    with pytest.raises(ValueError, match="out of range"):
        class_labels(G_cond, 2, 3)
    with pytest.raises(ValueError, match="unconditional"):
        class_labels(G, 2, 0)
    with pytest.raises(ValueError, match="class-conditional"):
        class_rows(G, [0])


def test_write_outputs_and_videos(G, G_cond, tmp_path):
    paths = write_outputs(G_cond, [0, 1], grid=tmp_path / "c.png", class_spec="all", image_dir=tmp_path / "im")
    assert Image.open(paths[0]).size == (2 * 17 + 1, 3 * 17 + 1)
    assert sorted(p.name for p in (tmp_path / "im").iterdir())[:2] == ["seed0000-class0.png", "seed0000-class1.png"]
    gif = write_video(torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8), tmp_path / "v.gif", fps=10)
    im = Image.open(gif)
    assert im.n_frames == 5 and im.size == (256, 256)
    (vid,) = write_outputs(G, [0, 1, 2], video=tmp_path / "v.mp4", fps=4)
    ffmpeg = pytest.importorskip("imageio_ffmpeg")
    reader = ffmpeg.read_frames(str(vid))
    meta = next(reader)
    frames = list(reader)
    assert len(frames) == 2 * 4 + 1 and tuple(meta["size"]) == (256, 256) and meta["fps"] == 4
    with pytest.raises(ValueError, match="at least 2 seeds"):
        write_outputs(G, [0], grid=tmp_path / "i.png", interp=True)
    with pytest.raises(ValueError, match="end in"):
        write_video(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), tmp_path / "v.avi")


def test_generate_command_on_a_tiny_run(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    tiny = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--snap", "0.032",
            "--metrics", "none", "--no-progress", "--set", "eval.monitor_every_kimg=null"]

    def run(args, expect=0):
        r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == expect, r.output
        return r.output

    run(["train", "--outdir", tmp_path / "r", "--data", folder, "--kimg", "0.016", *tiny])
    (rd,) = list((tmp_path / "r").iterdir())
    out = run(["generate", rd, "--num", "4", "--out", tmp_path / "single"])
    assert "4 images in" in out and len(list((tmp_path / "single").glob("seed*.png"))) == 4
    run(["generate", rd, "--seeds", "2,3", "--images", tmp_path / "again"])
    assert (np.asarray(Image.open(tmp_path / "single" / "seed0003.png"))
            == np.asarray(Image.open(tmp_path / "again" / "seed0003.png"))).all()
    run(["generate", rd, "--seeds", "0-2", "--interp", "--steps", "4", "--grid", tmp_path / "i.png",
         "--video", tmp_path / "i.gif", "--fps", "3"])
    assert Image.open(tmp_path / "i.png").size == (4 * 17 + 1, 2 * 17 + 1)
    assert Image.open(tmp_path / "i.gif").n_frames == 2 * 3 + 1
    assert "unconditional" in run(["generate", rd, "--class", "1"], expect=2)
    assert "not both" in run(["generate", rd, "--num", "2", "--seeds", "0-1"], expect=2)
