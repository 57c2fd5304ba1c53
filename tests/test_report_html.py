"""The HTML report: every image it references exists and decodes, warnings show, and headless Chromium renders it
without console errors into a non-blank page (skipped where Chromium is absent)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from degan.cli import main
from degan.report.html import ASSETS_DIR, write_html_report

TINY = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--snap", "0.032",
        "--metrics", "none", "--no-progress", "--set", "train.log_kimg=0.016"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-level IMP run (levels 0 and 1) on 12 random 16 px images, with the D monitor and TensorBoard on."""
    tmp = tmp_path_factory.mktemp("html")
    rng = np.random.default_rng(0)
    folder = tmp / "imgs"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    run(["ticket", "--outdir", tmp / "runs", "--data", folder, "--levels", "1", "--kimg", "0.064", "--subset", "9",
         *TINY, "--set", "eval.monitor_every_kimg=0.016", "--set", "eval.tensorboard=true"])
    (root,) = list((tmp / "runs").iterdir())
    return root


def _img_srcs(page: Path) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', page.read_text(encoding="utf-8"))


def _check_images(page: Path) -> list[str]:
    srcs = _img_srcs(page)
    for src in srcs:
        assert not re.match(r"^[a-z]+:", src), f"non-relative image source {src}"
        p = page.parent / src
        assert p.is_file(), f"{src} is referenced but missing"
        with Image.open(p) as im:
            im.load()
            assert im.size[0] > 8 and im.size[1] > 8
    return srcs


def test_report_command_writes_html_with_all_images(tiny_run):
    out = run(["report", tiny_run])
    page = tiny_run / "report.html"
    assert str(page) in out and (tiny_run / "report.md").is_file()
    srcs = _check_images(page)
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert "level_0-monitor.png" in text and "level_1-curves.png" in text and "level_0-reals.png" in text
    assert any("level_0-fakes" in s for s in srcs) and any("level_1-fakes" in s for s in srcs)  # grids per level
    assert "<td>0</td>" in text and "<td>1</td>" in text and "0.8000" in text  # level 1 has density 0.8
    assert "eval.monitor_every_kimg" in text  # config summary lists non-default settings
    for lv in ("level_0", "level_1"):
        assert list((tiny_run / lv / "tensorboard").glob("events.out.tfevents.*"))


def test_html_dir_elsewhere_leaves_the_run_folder_alone(tiny_run, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*")}
    out = run(["report", tiny_run, "--html-dir", tmp_path / "html"])
    assert str(tmp_path / "html" / "report.html") in out
    assert {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*")} == before
    _check_images(tmp_path / "html" / "report.html")


def test_warnings_and_fid_plot_of_a_recorded_run(tmp_path):
    from test_report import make_run  # a fake 4-level run with FID/KID, costs, a branch and an unfinished level

    root = make_run(tmp_path / "run")
    mon = [{"kimg": k, "cur_nimg": 1000 * k, "acc_train": 0.5 + 0.12 * k, "acc_heldout": 0.5 - 0.1 * k,
            "logit_train": 0.0, "r_t": 0.1, "num_heldout": 10,
            "warning": "D is memorising the training images: test" if k >= 3 else None} for k in range(5)]
    (root / "level_1" / "monitor.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mon))
    (root / "level_2" / "memorization.json").write_text(json.dumps({"warnings": ["mode collapse: test"]}))
    page = write_html_report(root)
    text = page.read_text(encoding="utf-8")
    assert "level_1: D is memorising the training images: test" in text and "level_2: mode collapse: test" in text
    assert "unfinished stages" in text and "level_4" in text
    assert "fid_vs_density.png" in text and (root / ASSETS_DIR / "fid_vs_density.png").is_file()
    assert "1.2 PFLOP" in text and "random_ticket" in text
    _check_images(page)
    with pytest.raises(FileNotFoundError):
        write_html_report(tmp_path / "nothing")


def _render(page: Path, shot: Path, profile: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", f"--screenshot={shot}",
           "--window-size=1280,2000", page.resolve().as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    return res.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it with apt-get where "
                                              "it can: apt-get install -y chromium)")
def test_chromium_renders_the_report_without_errors(tiny_run, tmp_path):
    run(["report", tiny_run, "--html-dir", tmp_path / "html"])
    log = _render(tmp_path / "html" / "report.html", tmp_path / "shot.png", tmp_path / "profile")
    for bad in ("Uncaught", "Failed to load resource", "ERR_FILE_NOT_FOUND", "Not allowed to load local resource"):
        assert bad not in log, log[-2000:]
    arr = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"))
    assert arr.shape[:2] == (2000, 1280)
    assert arr.std() > 20  # not a blank page
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 200  # text, tables, plots and sample grids


def test_config_section_compares_a_run_with_its_own_model_preset(tmp_path):
    from degan.config import dump_yaml, resolve, set_dotted
    from degan.report.html import _config_section

    cfg = set_dotted(resolve(preset="dcgan"), "train.seed", 7)
    (tmp_path / "config.yaml").write_text(dump_yaml(cfg))
    html, _ = _config_section(tmp_path)
    assert "differ from the <code>dcgan</code> preset" in html
    rows = html.split("<details>")[0]
    assert "train.seed" in rows and "model.name" not in rows and "train.batch_D" not in rows
