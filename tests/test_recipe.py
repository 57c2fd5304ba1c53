"""The recipe of `degan train --data DIR` (degan.recipe): what it reads from a folder and what it chooses."""

from __future__ import annotations

import numpy as np
import yaml
from click.testing import CliRunner
from PIL import Image

from degan.cli import main
from degan.recipe import CPU_KIMG_PER_MIN, CPU_TRAIN_MINUTES, DataSummary, choose, inspect_source


def _folder(tmp_path, n=12, size=48, alpha=False):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = rng.integers(0, 256, (size, size + 8, 4 if alpha else 3), dtype=np.uint8)
        Image.fromarray(a, "RGBA" if alpha else "RGB").save(d / ("sub" if i % 2 else ".") / f"{i}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def test_inspect_counts_images_and_reads_sides_and_alpha(tmp_path):
    s = inspect_source(_folder(tmp_path, n=12, size=48, alpha=True))
    assert s == DataSummary(num_images=12, median_side=48, has_alpha=True)
    assert inspect_source("faces100") is None  # builtins and archives have presets
    assert inspect_source(tmp_path / "missing") is None


def test_cpu_choice_and_that_given_settings_win():
    small = DataSummary(num_images=100, median_side=64, has_alpha=False)
    r = choose(small, "cpu")
    assert r.settings["model"] == {"width": 0.5, "name": "dcgan"}
    assert r.settings["data"] == {"resolution": 32, "mirror": True}
    kimg = r.settings["train"]["total_kimg"]
    assert kimg == 20 * int(CPU_KIMG_PER_MIN[(32, 0.5)] * CPU_TRAIN_MINUTES // 20)
    assert r.settings["train"]["augment"] == "diffaug:color,translation,cutout"
    assert r.settings["eval"]["num_gen"] == 1000 and len(r.reasons) >= 4
    hi = choose(small, "cpu", {"data": {"resolution": 64}})
    assert "resolution" not in hi.settings["data"] and hi.settings["model"]["width"] == 0.25
    assert hi.settings["train"]["total_kimg"] < kimg  # 64 px costs more per image
    fixed = choose(small, "cpu", {"train": {"total_kimg": 7.0}, "model": {"width": 1.0}})
    assert "total_kimg" not in fixed.settings["train"] and "width" not in fixed.settings["model"]
    assert fixed.settings["train"]["snap_kimg"] == 7.0 / 4


def test_big_folders_get_a_shorter_run_for_their_longer_evaluation():
    a = choose(DataSummary(200, 32, False), "cpu").settings["train"]["total_kimg"]
    b = choose(DataSummary(20000, 32, False), "cpu").settings["train"]["total_kimg"]
    assert b < a


def test_gpu_choice_is_fastgan():
    r = choose(DataSummary(300, 512, False), "cuda")
    assert r.settings["model"]["name"] == "fastgan" and r.settings["data"]["resolution"] == 256


def _dry(args):
    res = CliRunner().invoke(main, ["train", "--dry-run", "--outdir", "runs", *map(str, args)])
    assert res.exit_code == 0, res.output
    return yaml.safe_load(res.stdout.split("# run folder")[0]), res.stderr


def test_cli_applies_the_recipe_to_a_folder_and_prints_why(tmp_path):
    d = _folder(tmp_path)
    cfg, err = _dry(["--data", d])
    assert "[degan] recipe for 12 images" in err and "DiffAugment" in err
    assert cfg["model"]["name"] == "dcgan" and cfg["data"]["resolution"] == 32
    assert cfg["train"]["augment"] == "diffaug:color,translation,cutout" and cfg["data"]["mirror"] is True
    cfg2, _ = _dry(["--data", d, "--kimg", "3", "--augment", "none"])  # flags win
    assert cfg2["train"]["total_kimg"] == 3 and cfg2["train"]["augment"] == "none"
    plain, err3 = _dry(["--data", d, "--recipe", "none"])
    assert "recipe" not in err3 and plain["train"]["total_kimg"] != cfg["train"]["total_kimg"]
    model, err4 = _dry(["--data", d, "--model", "dcgan"])
    assert "recipe" not in err4 and model == plain
    faces, err5 = _dry(["--data", "faces100"])
    assert "recipe" not in err5
